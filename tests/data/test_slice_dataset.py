"""The slice dataset's random transform after the cache: MONAI's ``RandFlipd`` flips a slice's image and its masks
together, on some draws and not on others, and the items stay plain float32 tensors."""

from __future__ import annotations

import torch
from monai.transforms import RandFlipd

from bundle.data.slice_dataset import SliceDataset

KEYS = ("image", "soft_mask", "masked_image", "lesion_mask")


def slices(entry: dict) -> list[dict]:
    """Two asymmetric slices per entry: every key a different random pattern."""
    generator = torch.Generator().manual_seed(int(entry["case_id"]))
    return [
        {**{key: torch.rand(1, 6, 6, generator=generator) for key in KEYS}, "text": "t", "label": "benign"}
        for _ in range(2)
    ]


def test_a_random_flip_turns_the_image_and_its_masks_together():
    entries = [{"case_id": str(n), "image": f"case{n}"} for n in range(4)]
    flip = RandFlipd(keys=KEYS, prob=0.5, spatial_axis=1).set_random_state(seed=0)
    dataset = SliceDataset(entries, slices, keys=KEYS, augment=flip)
    flipped = []
    for _ in range(3):
        for index in range(len(dataset)):
            item, stored = dataset[index], dataset.stored_item(index)
            turned = [torch.equal(item[key], stored[key].flip(-1)) for key in KEYS]
            kept = [torch.equal(item[key], stored[key]) for key in KEYS]
            assert all(turned) or all(kept), index  # never the image without its masks
            assert all(type(item[key]) is torch.Tensor and item[key].dtype == torch.float32 for key in KEYS)
            flipped.append(all(turned))
    assert 0.2 < sum(flipped) / len(flipped) < 0.8
    assert SliceDataset(entries, slices, keys=KEYS)[0]["image"].equal(dataset.stored_item(0)["image"])
