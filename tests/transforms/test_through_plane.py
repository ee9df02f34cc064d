"""The lesion's through-plane extent: the soft mask limited across slices to the text's size, the slices to
synthesise, one working window for all of them."""

from __future__ import annotations

import math

import pytest
import torch
from monai.data import MetaTensor

from bundle.transforms.through_plane import ThroughPlaneExtentd, slab_profile

SPACING = 3.5  # mm between sagittal slices, as the demo phantom's 3.56


def test_the_slab_profile_is_one_at_the_centre_one_half_at_the_text_size_and_falls_outside():
    distances = torch.tensor([0.0, 2.0, 5.0, 8.0, 12.0])
    weights = slab_profile(distances, size_mm=10.0, sigma_mm=3.0)
    assert weights[0] == pytest.approx(1.0)
    # at the text's half size: one half of the blurred slab, before the scaling to 1 at the centre
    assert weights[2] == pytest.approx(0.5 / math.erf(5.0 / (math.sqrt(2.0) * 3.0)), abs=1e-3)
    assert torch.all(weights[1:] < weights[:-1])
    assert weights[-1] < 0.05
    assert slab_profile(distances, size_mm=10.0, sigma_mm=0.0).tolist() == [1.0, 1.0, 1.0, 0.0, 0.0]


def volume_entry(text: str, slices: range = range(1, 12), shape=(13, 20, 24)) -> dict:
    """A canonical ``(1, X, Y, Z)`` hard mask on ``slices`` of axis 0 whose in-plane extent grows towards the
    middle slice (as a vertebra's), its soft mask a blurred copy, and ``text``."""
    affine = torch.diag(torch.tensor([SPACING, 1.0, 1.0, 1.0], dtype=torch.float64))
    mask = torch.zeros(1, *shape)
    for s in slices:
        half = 8 - abs(s - 6)
        mask[0, s, 10 - half : 10 + half, 4:20] = 1.0
    soft = torch.nn.functional.avg_pool3d(mask[None], 3, stride=1, padding=1)[0]
    return {"mask": MetaTensor(mask, affine=affine), "soft_mask": MetaTensor(soft, affine=affine), "text": text}


def reached(volume: torch.Tensor) -> list[int]:
    return torch.nonzero(volume[0].amax(dim=(1, 2)) > 0).flatten().tolist()


def test_the_soft_mask_is_limited_to_the_lesion_size_around_the_mask_centre():
    entry = volume_entry("a well-circumscribed 10 mm hyperintense lesion in the L2 vertebral body")
    out = ThroughPlaneExtentd(sigma_mm=3.0)(entry)
    assert out["through_plane"] == {"centre_slice": 6, "size_mm": 10.0, "size_from": "text", "sigma_mm": 3.0}
    slices = reached(out["soft_mask"])
    assert slices == [4, 5, 6, 7, 8]  # |d| <= 7 mm: weight >= 0.05; beyond, no soft mask at all
    assert reached(out["slice_guide"]) == slices
    peak = out["soft_mask"][0].amax(dim=(1, 2))
    assert peak[6] == pytest.approx(float(entry["soft_mask"][0, 6].max()))
    assert peak[5] < peak[6] and peak[4] < 0.5 * peak[6]
    # where it is not cut, the in-plane shape is the original soft mask's, scaled
    ratio = out["soft_mask"][0, 5] / entry["soft_mask"][0, 5].clamp_min(1e-6)
    inside = entry["soft_mask"][0, 5] > 0
    assert torch.allclose(ratio[inside], ratio[inside][0].expand(int(inside.sum())), atol=1e-5)
    # one window for every slice: the largest weight at each in-plane position
    window = out["window_mask"][0]
    assert torch.equal(window[0], window[12]) and torch.equal(window[6], out["soft_mask"][0].amax(dim=0))


def test_a_larger_size_reaches_more_slices_and_a_text_without_size_keeps_the_soft_mask():
    small = reached(ThroughPlaneExtentd()(volume_entry("a 7 mm lesion"))["soft_mask"])
    large = reached(ThroughPlaneExtentd()(volume_entry("a 20 mm lesion"))["soft_mask"])
    assert len(small) < len(large) and set(small) < set(large)
    entry = volume_entry("an ill-defined hypointense lesion")
    out = ThroughPlaneExtentd()(entry)
    assert torch.equal(out["soft_mask"], entry["soft_mask"]) and out["through_plane"]["size_mm"] is None
    configured = ThroughPlaneExtentd(size_mm=7.0)(volume_entry("a 20 mm lesion"))
    assert reached(configured["soft_mask"]) == small and configured["through_plane"]["size_from"] == "configured"


def test_max_slices_keeps_the_slices_nearest_the_centre():
    out = ThroughPlaneExtentd(max_slices=3)(volume_entry("a 20 mm lesion"))
    assert reached(out["soft_mask"]) == [5, 6, 7]
    off_centre = ThroughPlaneExtentd(max_slices=1)(volume_entry("a 20 mm lesion", slices=range(2, 6)))
    assert reached(off_centre["soft_mask"]) == [off_centre["through_plane"]["centre_slice"]] == [4]
