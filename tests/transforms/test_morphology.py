"""Erosion and dilation by a radius in millimetres: per-axis voxel radii from the spacing, MONAI's box filters."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from scipy import ndimage

from bundle.transforms.morphology import DilateMaskMM, DilateMaskMMd, ErodeMaskMM, ErodeMaskMMd, radius_in_voxels


def block(shape, lower, upper, spacing=None) -> MetaTensor:
    """A ``(1, *shape)`` mask with ones on the index box ``[lower, upper)``, on a grid of ``spacing`` mm."""
    values = torch.zeros((1, *shape))
    values[(slice(None), *[slice(a, b) for a, b in zip(lower, upper, strict=True)])] = 1
    spacing = spacing or [1.0] * len(shape)
    affine = torch.diag(torch.tensor([*spacing, 1.0], dtype=torch.float64))
    return MetaTensor(values, affine=affine)


def extent(mask: torch.Tensor) -> list[tuple[int, int]]:
    """Per spatial axis, the first and last index holding a mask voxel."""
    inside = torch.nonzero(mask[0] > 0)
    return [(int(inside[:, a].min()), int(inside[:, a].max())) for a in range(inside.shape[1])]


def test_radius_is_converted_per_axis_on_anisotropic_voxels():
    """0.5 x 0.5 x 4 mm voxels, 2 mm: 4 voxels in-plane, none across slices (a 4 mm slice is wider than 2 mm)."""
    mask = block((20, 20, 6), (6, 6, 2), (14, 14, 4), spacing=[0.5, 0.5, 4.0])
    assert radius_in_voxels(2.0, [0.5, 0.5, 4.0]) == [4, 4, 0]
    dilated = DilateMaskMM(2.0)(mask)
    assert extent(dilated) == [(2, 17), (2, 17), (2, 3)]
    eroded = ErodeMaskMM(1.0)(mask)
    assert extent(eroded) == [(8, 11), (8, 11), (2, 3)]
    assert isinstance(dilated, MetaTensor) and torch.equal(dilated.affine, mask.affine)
    assert set(torch.unique(dilated).tolist()) == {0.0, 1.0}


@pytest.mark.parametrize("radius_mm", [1.0, 2.5])
def test_matches_scipy_with_a_box_of_the_per_axis_radii(radius_mm):
    """Two channels of random blobs on 0.5 x 1 x 2 mm voxels: each channel on its own, as scipy's binary
    erosion (outside counts as inside) and dilation with the box of the per-axis radii."""
    generator = np.random.default_rng(3)
    values = ndimage.gaussian_filter(generator.random((2, 24, 20, 10)), sigma=(0, 2, 2, 1)) > 0.5
    mask = MetaTensor(torch.as_tensor(values, dtype=torch.float32), affine=torch.diag(torch.tensor([0.5, 1, 2, 1.0])))
    radii = radius_in_voxels(radius_mm, [0.5, 1.0, 2.0])
    box = np.ones([2 * r + 1 for r in radii], bool)
    eroded = np.stack([ndimage.binary_erosion(c, box, border_value=1) for c in values])
    dilated = np.stack([ndimage.binary_dilation(c, box) for c in values])
    assert values.any() and not np.array_equal(eroded, values) and not np.array_equal(dilated, values)
    np.testing.assert_array_equal(ErodeMaskMM(radius_mm)(mask).numpy() > 0, eroded)
    np.testing.assert_array_equal(DilateMaskMM(radius_mm)(mask).numpy() > 0, dilated)


def test_the_same_radius_gives_the_same_physical_margin_at_two_resolutions():
    """A 10 mm square grown by 3 mm is 16 mm wide at 1 mm pixels and at 0.5 mm pixels."""
    coarse = DilateMaskMM(3.0)(block((40, 40), (15, 15), (25, 25), spacing=[1.0, 1.0]))
    fine = DilateMaskMM(3.0)(block((80, 80), (30, 30), (50, 50), spacing=[0.5, 0.5]))
    assert float(coarse.sum()) * 1.0 == pytest.approx(16 * 16)
    assert float(fine.sum()) * 0.25 == pytest.approx(16 * 16)


def test_radius_below_one_voxel_changes_nothing():
    mask = block((12, 12, 12), (3, 4, 5), (9, 8, 7), spacing=[2.0, 2.0, 2.0])
    assert torch.equal(ErodeMaskMM(1.9)(mask), mask)
    assert torch.equal(DilateMaskMM(0.0)(mask), mask)


def test_explicit_spacing_and_soft_masks():
    """Plain tensors need ``spacing_mm``; a soft mask is thresholded first."""
    soft = torch.zeros(1, 16, 16)
    soft[0, 5:11, 5:11] = 0.8
    soft[0, 4, 4] = 0.2  # below the threshold: outside
    grown = DilateMaskMM(2.0, spacing_mm=[1.0, 2.0])(soft)
    assert not isinstance(grown, MetaTensor)
    assert extent(grown) == [(3, 12), (4, 11)]
    with pytest.raises(ValueError, match="no affine"):
        DilateMaskMM(2.0)(soft)
    with pytest.raises(ValueError, match="spacing_mm has 3 values"):
        DilateMaskMM(2.0, spacing_mm=[1, 1, 1])(soft)


def test_erosion_removes_structures_thinner_than_twice_the_radius():
    mask = block((30, 30), (5, 5), (25, 8))  # a 3 px wide bar
    assert float(ErodeMaskMM(1.0)(mask).sum()) == 18  # its middle row, minus one pixel at each end
    assert float(ErodeMaskMM(2.0)(mask).sum()) == 0


@pytest.mark.parametrize("radius", [-1.0, float("nan"), float("inf")])
def test_bad_radius_is_refused(radius):
    with pytest.raises(ValueError, match="radius"):
        ErodeMaskMM(radius)


@pytest.mark.parametrize("shape", [(8, 8), (1, 1, 8, 8, 8)])
def test_wrong_dimensionality_is_refused(shape):
    with pytest.raises(ValueError, match=r"channel-first 2-D \(C, H, W\) or 3-D"):
        DilateMaskMM(1.0, spacing_mm=[1.0, 1.0])(torch.zeros(shape))


def test_dictionary_twins_act_on_their_keys_only():
    mask = block((20, 20), (5, 5), (15, 15))
    data = {"lesion_mask": mask, "soft_mask": mask.clone()}
    eroded = ErodeMaskMMd("lesion_mask", radius_mm=2.0)(data)
    dilated = DilateMaskMMd(["lesion_mask"], radius_mm=2.0)(data)
    assert extent(eroded["lesion_mask"]) == [(7, 12), (7, 12)]
    assert extent(dilated["lesion_mask"]) == [(3, 16), (3, 16)]
    assert torch.equal(eroded["soft_mask"], mask) and torch.equal(data["lesion_mask"], mask)
