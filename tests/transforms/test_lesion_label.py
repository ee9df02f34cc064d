"""The written lesion label: eroded in millimetres (a subset of the mask, the same physical margin at any spacing),
and a label that erodes to nothing is refused by name, so its pair is dropped."""

from __future__ import annotations

import pytest
import torch
from monai.data import MetaTensor

from bundle.errors import InputError
from bundle.transforms.lesion_label import EmptyLabelError, ErodeLesionLabel, ErodeLesionLabeld


def disc(size: int, radius_px: float, spacing_mm: float) -> MetaTensor:
    """A ``(1, size, size)`` disc centred in the image, on ``spacing_mm`` pixels."""
    grid = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    inside = (grid[:, None] ** 2 + grid[None, :] ** 2) <= radius_px**2
    affine = torch.diag(torch.tensor([spacing_mm, spacing_mm, 1.0], dtype=torch.float64))
    return MetaTensor(inside[None].float(), affine=affine)


def test_the_eroded_label_lies_inside_the_mask_and_loses_the_same_margin_in_mm_at_two_spacings():
    coarse, fine = disc(40, 8, 1.0), disc(80, 16, 0.5)  # the same 16 mm disc
    eroded_coarse, eroded_fine = ErodeLesionLabel(2.0)(coarse), ErodeLesionLabel(2.0)(fine)
    assert bool((eroded_coarse <= coarse).all()) and bool((eroded_fine <= fine).all())
    area_coarse, area_fine = float(eroded_coarse.sum()) * 1.0, float(eroded_fine.sum()) * 0.25
    assert area_coarse < 0.7 * float(coarse.sum())  # a 2 mm rim of an 8 mm-radius disc is most of its area
    assert area_fine == pytest.approx(area_coarse, rel=0.1)
    assert torch.equal(ErodeLesionLabel(0.0)(coarse), coarse)


def test_a_label_that_erodes_to_nothing_is_refused_by_case():
    small = disc(21, 1.5, 1.0)  # a 3 x 3 px square
    with pytest.raises(EmptyLabelError, match=r"case_7 \(label\): the lesion label \(\d+ voxels\) erodes to nothing"):
        ErodeLesionLabeld("label", erosion_mm=2.0)({"label": small, "case_id": "case_7"})
    with pytest.raises(InputError, match="the lesion label is empty"):
        ErodeLesionLabel(0.0, spacing_mm=[1.0, 1.0])(torch.zeros(1, 8, 8))
    assert ErodeLesionLabel(1.0)(small).sum() > 0  # 1 mm leaves the centre


def test_anisotropic_pixels_erode_per_axis():
    label = MetaTensor(torch.zeros(1, 20, 20), affine=torch.diag(torch.tensor([0.5, 2.0, 1.0], dtype=torch.float64)))
    label[0, 4:16, 6:14] = 1  # 6 mm x 16 mm
    eroded = ErodeLesionLabel(2.0)(label)  # 4 px along the first axis, 1 px along the second
    rows, cols = torch.nonzero(eroded[0], as_tuple=True)
    assert (int(rows.min()), int(rows.max()), int(cols.min()), int(cols.max())) == (8, 11, 7, 12)
