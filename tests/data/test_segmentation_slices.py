"""Segmentation items: input channels and a binary target; entries without a lesion segmentation are left out."""

from __future__ import annotations

import pytest
import torch

from bundle.data.datalist import load_datalist
from bundle.data.segmentation_slices import SegmentationSlices
from bundle.transforms.case_to_slices import case_to_slices
from bundle.transforms.model_grid import model_grid


@pytest.fixture(scope="module")
def chain():
    keys = ["image", "soft_mask", "masked_image", "lesion_mask"]
    grid = model_grid(keys, 32, 1.0, nearest_keys=["lesion_mask"], window_key="soft_mask", window_margin_mm=4.0)
    return case_to_slices(grid, max_slices=2, lesion_guided=True, lesion_mask=True)


def test_items_and_entries_without_a_lesion_segmentation(demo_data, chain):
    entries = load_datalist(demo_data / "datalist.json", "training")
    lesion = next(e for e in entries if e["label"] != "normal")
    unmarked = {k: v for k, v in lesion.items() if k != "lesion_seg"} | {"case_id": "unmarked", "synthetic": True}
    dataset = SegmentationSlices([lesion, unmarked], chain, input_keys=["image", "soft_mask"])
    assert dataset.without_target == ["unmarked"]
    assert dataset.counts() == {
        "slices": 2,
        "slices_with_target": 2,  # lesion-guided: the slices that show the lesion
        "real_cases": 1,
        "synthetic_cases": 0,
        "left_out_without_target": 1,
    }
    item = dataset[0]
    assert item["image"].shape == (2, 32, 32) and item["label"].shape == (1, 32, 32)
    assert set(torch.unique(item["label"]).tolist()) == {0.0, 1.0}
    with pytest.raises(ValueError, match="none of the 1 entries has a 'lesion_seg'"):
        SegmentationSlices([unmarked], chain)
