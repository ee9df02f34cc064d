"""Cross-case batching of the slice predictor: a case's slices are the same whether it is sampled alone or with other
cases, and no sampler call holds more slices than the budget."""

from __future__ import annotations

import pytest
import torch

from bundle.engines.slice_batching import CrossCaseBatcher, SliceTask
from bundle.engines.synthesis_job import DiffusionPredictor
from tests.helpers.slice_sampling import neighbouring_slices, tiny_sampling


class RecordingInferer:
    """The inferer, recording the number of images of every ``inpaint`` call."""

    def __init__(self, inferer) -> None:
        self.inferer, self.sizes = inferer, []

    def inpaint(self, images, *args, **kwargs):
        self.sizes.append(images.shape[0])
        return self.inferer.inpaint(images, *args, **kwargs)


@pytest.fixture(scope="module")
def sampling(one_torch_thread):
    return tiny_sampling(steps=4)


def three_cases() -> list[list[dict]]:
    """Cases of 3, 2 and 4 slices, the last with its centre slice off the middle."""
    return [
        neighbouring_slices(3, "a", seed=0),
        neighbouring_slices(2, "b", seed=1),
        neighbouring_slices(4, "c", seed=2, centre=1),
    ]


@pytest.mark.parametrize("strength", [0.5, None], ids=["coherent", "independent"])
def test_a_case_is_sampled_alike_alone_and_with_other_cases(sampling, strength):
    model, inferer = sampling
    recording = RecordingInferer(inferer)
    predictor = DiffusionPredictor(model, recording, batch_size=8, through_plane_strength=strength)
    alone = [predictor(items) for items in three_cases()]
    calls_alone = len(recording.sizes)
    recording.sizes = []
    together = predictor.predict_cases(three_cases())
    assert len(recording.sizes) < calls_alone and max(recording.sizes) > 2  # slices of several cases in one call
    for one, batched in zip(alone, together, strict=True):
        assert len(one) == len(batched)
        for a, b in zip(one, batched, strict=True):
            torch.testing.assert_close(b, a, rtol=0, atol=1e-5)
    # and the cases differ from each other: the equality is not of three copies of one result
    assert (together[0][1] - together[1][1]).abs().max() > 0.05


def test_no_call_holds_more_slices_than_the_budget(sampling):
    model, inferer = sampling
    recording = RecordingInferer(inferer)
    predictor = DiffusionPredictor(model, recording, batch_size=2, through_plane_strength=0.5)
    cases = three_cases()
    results = predictor.predict_cases(cases)
    assert [len(r) for r in results] == [3, 2, 4]
    # the centres (3 slices), then the rings: 2 + 1 + 2 slices (c's centre is its second slice), then 0 + 0 + 1
    assert recording.sizes == [2, 1, 2, 2, 1, 1]
    recording.sizes = []
    DiffusionPredictor(model, recording, batch_size=4).predict_cases(cases)  # independent: 9 slices
    assert recording.sizes == [4, 4, 1]


def test_one_call_takes_either_start_images_or_noise(sampling):
    model, inferer = sampling
    item = neighbouring_slices(1)[0]
    tasks = [
        SliceTask(item["image"], item["soft_mask"], item["text"], 0),
        SliceTask(item["image"], item["soft_mask"], item["text"], 0, start=item["image"]),
    ]
    with pytest.raises(ValueError, match="all have a start image or none"):
        CrossCaseBatcher(model, inferer)(tasks, 0.5)
    with pytest.raises(ValueError, match="max_batch_slices"):
        CrossCaseBatcher(model, inferer, max_batch_slices=0)
