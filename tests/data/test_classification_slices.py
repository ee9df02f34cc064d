"""The downstream classifier's items and sampler, and the slice-bag classifier."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import pytest
import torch

from bundle.data.classification_slices import ClassificationSlices, input_channel, load_test, training_sampler
from bundle.data.datalist import load_datalist
from bundle.networks.slice_classifier import SliceBagClassifier
from bundle.transforms.case_to_slices import slice_transform

CLASSES = ["normal", "benign", "malignant"]


class LabelledItems(torch.utils.data.Dataset):
    """Just the labels of a classification dataset: what the training sampler reads."""

    def __init__(self, labels: list[int]) -> None:
        self.items = [{"label": torch.tensor(label)} for label in labels]
        self.classes = CLASSES

    def __len__(self) -> int:
        return len(self.items)

    balanced_weights = ClassificationSlices.balanced_weights


def test_oversampling_draws_every_class_equally_often_and_natural_sampling_keeps_the_data():
    labels = [0] * 60 + [1] * 25 + [2] * 15
    dataset = LabelledItems(labels)
    weights = dataset.balanced_weights()
    assert [float(weights[labels.index(k)]) for k in range(3)] == pytest.approx([1 / 60, 1 / 25, 1 / 15])
    drawn = Counter(labels[i] for i in training_sampler(dataset, "balanced", num_samples=30000, seed=1))
    assert sum(drawn.values()) == 30000
    assert all(abs(drawn[k] / 30000 - 1 / 3) < 0.02 for k in range(3)), drawn
    natural = list(training_sampler(dataset, "natural", num_samples=200, seed=1))
    assert Counter(labels[i] for i in natural) == {0: 120, 1: 50, 2: 30}  # two full passes, no replacement
    assert natural == list(training_sampler(dataset, "natural", num_samples=200, seed=1))
    assert natural != list(training_sampler(dataset, "natural", num_samples=200, seed=2))
    with pytest.raises(ValueError, match="natural' or 'balanced"):
        training_sampler(dataset, "smote")


def test_bag_classifier_averages_the_slice_logits():
    torch.manual_seed(0)
    backbone = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(2 * 8 * 8, 3))
    model = SliceBagClassifier(backbone)
    bags = torch.randn(5, 4, 2, 8, 8)
    expected = torch.stack([backbone(bag).mean(dim=0) for bag in bags])
    assert torch.allclose(model(bags), expected, atol=1e-6)
    assert model(bags[0]).shape == (4, 3)  # plain slices pass straight through


def test_input_channels_are_slice_keys_or_products():
    item = {"image": torch.full((1, 4, 4), 0.5), "soft_mask": torch.zeros(1, 4, 4)}
    item["soft_mask"][0, :2] = 1.0
    product = input_channel(item, "image*soft_mask")
    assert product[0, 0, 0] == 0.5 and product[0, 3, 3] == 0
    with pytest.raises(ValueError, match="input key"):
        input_channel(item, "lesion")


def cache_files(cache: Path) -> list[Path]:
    return sorted(cache.glob("slices_*/*.safetensors"))


def test_case_bags_and_a_case_that_cannot_be_read(demo_data, tmp_path):
    entries = load_datalist(demo_data / "datalist.json", "training")[:4]
    transform = slice_transform(spatial_size=32, slices_per_case=2)
    bags = ClassificationSlices(entries, transform, CLASSES, bag_size=3)
    assert len(bags) == 4 and bags[0]["image"].shape == (3, 2, 32, 32)
    assert torch.equal(bags[0]["image"][2], bags[0]["image"][0])  # 2 slices, repeated to fill the bag
    assert [int(item["label"]) for item in bags.items] == [CLASSES.index(e["label"]) for e in entries]
    slices = ClassificationSlices(entries, transform, CLASSES)
    assert len(slices) == 8 and slices[0]["image"].shape == (2, 32, 32)
    assert torch.equal(slices[0]["image"], bags[0]["image"][0])
    missing = [*entries[:2], {**entries[2], "image": str(tmp_path / "nowhere.nii.gz")}]
    with pytest.raises(ValueError, match="1 of 3 cases could not be read"):
        ClassificationSlices(missing, transform, CLASSES)
    kept = ClassificationSlices(missing, transform, CLASSES, allow_failures=True)
    assert {item["case_id"] for item in kept.items} == {e["case_id"] for e in entries[:2]}
    assert kept.counts()[entries[2]["label"]]["real"] == sum(e["label"] == entries[2]["label"] for e in entries[:2])


def test_cached_items_equal_fresh_ones_and_arms_share_the_real_cases(demo_data, tmp_path, reads):
    entries = load_datalist(demo_data / "datalist.json", "training")[:3]
    transform = slice_transform(spatial_size=32, slices_per_case=2)
    cache = tmp_path / "cache"
    fresh = ClassificationSlices(entries, transform, CLASSES, bag_size=2)
    cached = ClassificationSlices(entries, transform, CLASSES, cache_dir=cache, bag_size=2)
    assert len(cache_files(cache)) == 3
    reads.clear()
    # another arm: the same real cases as a balanced datalist lists them (paths relative to another folder,
    # flagged real) beside a case the cache does not hold yet
    elsewhere = tmp_path / "balanced"
    elsewhere.mkdir()
    arm = [
        {**e, **{k: str(elsewhere / os.path.relpath(e[k], elsewhere)) for k in ("image", "vertebra_seg")}}
        for e in load_datalist(demo_data / "datalist.json", "training")[:4]
    ]
    arm = [{**e, "synthetic": False} for e in arm]
    shared = ClassificationSlices(arm, transform, CLASSES, cache_dir=cache, bag_size=2)
    assert set(reads) == {arm[3]["image"], arm[3]["vertebra_seg"]}, "the real cases must come from the cache"
    assert len(cache_files(cache)) == 4
    for first, second, third in zip(fresh.items, cached.items, shared.items[:3], strict=True):
        assert first["case_id"] == second["case_id"] == third["case_id"]
        assert torch.equal(first["label"], second["label"]) and torch.equal(first["label"], third["label"])
        assert type(second["image"]) is torch.Tensor and second["image"].dtype == torch.float32
        assert torch.equal(first["image"], second["image"]) and torch.equal(first["image"], third["image"])


def test_a_changed_slicing_setting_is_not_served_from_the_cache(demo_data, tmp_path, reads):
    entries = load_datalist(demo_data / "datalist.json", "training")[:2]
    cache = tmp_path / "cache"
    wide = ClassificationSlices(entries, slice_transform(spatial_size=32, sigma_mm=3.0), CLASSES, cache_dir=cache)
    reads.clear()
    sharp = ClassificationSlices(entries, slice_transform(spatial_size=32, sigma_mm=1.0), CLASSES, cache_dir=cache)
    assert all(reads[e["image"]] == 1 for e in entries), "a new sigma must not reuse the slices of the old one"
    assert not torch.equal(wide[0]["image"][1], sharp[0]["image"][1])  # the soft-mask channel
    assert len(list(cache.glob("slices_*"))) == 2 and len(cache_files(cache)) == 4


def test_a_damaged_cache_file_is_made_again(demo_data, tmp_path, reads):
    entries = load_datalist(demo_data / "datalist.json", "training")[:2]
    cache = tmp_path / "cache"
    first = ClassificationSlices(entries, slice_transform(spatial_size=32), CLASSES, cache_dir=cache)
    files = cache_files(cache)
    damaged = max(files, key=lambda p: p.stat().st_mtime_ns)
    damaged.write_bytes(damaged.read_bytes()[:100])  # a run killed mid-write on a file system without rename
    reads.clear()
    again = ClassificationSlices(entries, slice_transform(spatial_size=32), CLASSES, cache_dir=cache)
    assert sum(reads.values()) == 2, "exactly the damaged case is preprocessed again"
    assert cache_files(cache) == files and damaged.stat().st_size > 100
    assert all(torch.equal(a["image"], b["image"]) for a, b in zip(first.items, again.items, strict=True))


def test_the_test_list_must_be_real_cases(demo_data, tmp_path):
    content = json.loads((demo_data / "datalist.json").read_text())
    content["test"][0]["synthetic"] = True
    path = tmp_path / "datalist.json"
    path.write_text(
        json.dumps(
            {
                **content,
                "test": [
                    {**e, "image": str(demo_data / e["image"]), "vertebra_seg": str(demo_data / e["vertebra_seg"])}
                    for e in content["test"]
                ],
            }
        )
    )
    with pytest.raises(ValueError, match="synthetic cases"):
        load_test(path)
