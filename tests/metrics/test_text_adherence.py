"""Reading what a text asks for, and counting a lesion as following it or not."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bundle.metrics.lesion_measure import LesionMeasure
from bundle.metrics.text_adherence import (
    RequestedFacts,
    TextAdherence,
    adherence,
    requested_facts,
    requested_signal,
    summarise,
)


def test_requested_signal():
    assert requested_signal("a well-circumscribed hyperintense lesion") == "hyperintense"
    assert requested_signal("Hypointense marrow replacement") == "hypointense"
    assert requested_signal("normal marrow") == "unspecified"


@pytest.mark.parametrize(
    ("text", "facts"),
    [
        (
            "T1-weighted sagittal lumbar spine MRI: a well-circumscribed 13 mm hyperintense lesion in the inferior L4 "
            "vertebral body, with coarse vertical trabecular striations, without height loss.",
            RequestedFacts("hyperintense", 13.0, "central", "inferior"),
        ),
        (
            "irregular, poorly marginated T1-hypointense marrow-replacing lesion measuring 16 mm in the "
            "posterosuperior L2 vertebral body with convex bulging of the posterior cortex, without height loss",
            RequestedFacts("hypointense", 16.0, "posterior", "superior"),
        ),
        (
            "there is an infiltrative 9 mm markedly hypointense lesion with ill-defined margins in the anterior "
            "portion of the L5 vertebral body with 20% anterior height loss",
            RequestedFacts("hypointense", 9.0, "anterior", "mid"),
        ),
        ("normal L3 vertebral body with homogeneous marrow signal", RequestedFacts("unspecified", None, None, None)),
    ],
)
def test_requested_facts(text, facts):
    assert requested_facts(text) == facts


def test_adherence_counts_a_wrong_sign_and_a_wrong_size():
    facts = RequestedFacts("hyperintense", 10.0, "anterior", "mid")
    right = LesionMeasure(1, size_mm=12.5, position_ap="anterior", position_si="superior")
    wrong = LesionMeasure(-1, size_mm=13.5, position_ap="anterior", position_si="mid")
    none = LesionMeasure(0)
    assert adherence(right, facts) == {
        "direction_ok": True,
        "size_ok": True,
        "size_ratio": 1.25,
        "ap_ok": True,
        "si_ok": False,
    }
    assert adherence(wrong, facts)["direction_ok"] is False and adherence(wrong, facts)["size_ok"] is False
    assert adherence(none, facts) == {
        "direction_ok": False,
        "size_ok": False,
        "size_ratio": None,
        "ap_ok": False,
        "si_ok": False,
    }
    rows = [{"signal": "hyperintense", "adherence": adherence(m, facts)} for m in (right, wrong, none, right)]
    summary = summarise(rows)["hyperintense"]
    assert summary["count"] == 4 and summary["direction_ok"] == 0.5 and summary["size_ok"] == 0.5
    assert summary["median_size_ratio"] == pytest.approx(1.25)


def rip_slice(bright: float, size: int = 48) -> tuple[torch.Tensor, torch.Tensor]:
    """A (1, 48, 48) slice cut in RIP: a 30 x 40 px body (rows inferior, columns posterior), marrow 0.5, and a
    12-px disc of ``bright`` times the marrow at its centre."""
    rows, cols = np.mgrid[:size, :size]
    body = (abs(rows - 24) < 15) & (abs(cols - 24) < 20)
    image = np.where(body, 0.5, 0.0)
    image[((rows - 24) ** 2 + (cols - 24) ** 2 <= 36) & body] *= bright
    return torch.tensor(image[None], dtype=torch.float32), torch.tensor(body[None], dtype=torch.float32)


def test_text_adherence_metric_on_validation_slices():
    metric = TextAdherence("direction_ok", signal="hyperintense")
    bright, mask = rip_slice(1.4)
    dark, _ = rip_slice(0.6)
    texts = ["a 13 mm hyperintense lesion in the central L3", "a 13 mm hyperintense lesion in the central L3"]
    metric.update((torch.stack([bright, dark]), torch.stack([mask, mask]), texts))
    metric.update((bright[None], mask[None], ["a normal L2 vertebral body"]))  # asks for no signal: not counted
    assert metric.compute() == 0.5
    size = TextAdherence("size_ok")
    size.update((bright[None], mask[None], texts[:1]))
    assert size.compute() == 1.0
    where = TextAdherence("ap_ok")
    where.update((bright[None], mask[None], texts[:1]))
    assert where.compute() == 1.0
    assert math.isnan(TextAdherence("si_ok").compute())
    with pytest.raises(ValueError, match="statistic"):
        TextAdherence("colour")


def test_text_adherence_metric_measures_sizes_in_the_slices_own_pixel_size():
    bright, mask = rip_slice(1.4)  # a 13-px disc: 13 mm at 1 mm pixels, 26 mm at 2 mm
    text = ["a 13 mm hyperintense lesion in the central L3"]
    at_1mm, at_2mm = TextAdherence("size_ok"), TextAdherence("size_ok")
    at_1mm.update((bright[None], mask[None], text, torch.tensor([[1.0, 1.0]])))
    at_2mm.update((bright[None], mask[None], text, torch.tensor([[2.0, 2.0]])))
    assert at_1mm.compute() == 1.0 and at_2mm.compute() == 0.0
    assert at_2mm.rows[0]["measure"]["size_mm"] == pytest.approx(26.0, abs=2.0)
