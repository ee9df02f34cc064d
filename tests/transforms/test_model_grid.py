"""The slice -> model-grid chain: native square pixels (the ``sd15`` grid), the geometry it reports, and the way
back to the native slice."""

from __future__ import annotations

import pytest
import torch
from monai.data import MetaTensor

from bundle.transforms.model_grid import grid_geometry, invert_to_slice, model_grid


def slice_item(shape=(20, 50), spacing=(2.0, 0.8)) -> dict:
    """A smooth 2-D slice with rectangular pixels, as :func:`bundle.transforms.slices.take_slice` makes them."""
    rows, columns = torch.meshgrid(
        torch.arange(shape[0]) * spacing[0], torch.arange(shape[1]) * spacing[1], indexing="ij"
    )
    values = (0.5 + 0.4 * torch.sin(rows / 7.0) * torch.cos(columns / 9.0))[None].float()
    affine = torch.diag(torch.tensor([spacing[0], spacing[1], 1.0], dtype=torch.float64))
    image = MetaTensor(values, affine=affine)
    return {"image": image, "native_image": image.clone()}


def test_native_grid_makes_square_pixels_of_the_finer_spacing_and_maps_back():
    grid = model_grid(["image"], spatial_size=64, pixdim_mm=None)
    item = grid(slice_item())
    geometry = grid_geometry(item)
    assert geometry["native_spacing_mm"] == [2.0, 0.8] and geometry["native_shape"] == [20, 50]
    assert geometry["window_mm"] == pytest.approx([40.0, 40.0], abs=2.0)  # the whole slice (centre to centre + 1 px)
    assert geometry["model_pixel_mm"] == pytest.approx(40.0 / 64, abs=0.005)
    assert geometry["upsampling"] == pytest.approx(0.8 / (40.0 / 64), abs=0.01)
    back = invert_to_slice(item["image"], item["image"], grid)
    assert back.shape == (1, 20, 50)
    inner = (back - item["native_image"]).abs()[0, :-1, :-1]  # MONAI's resampled extent ends at the last centre
    assert inner.max() < 0.02  # measured 0.012: bilinear both ways


def test_a_millimetre_window_needs_a_millimetre_pixel_size():
    with pytest.raises(ValueError, match="margin is in millimetres"):
        model_grid(["image", "soft_mask"], spatial_size=64, pixdim_mm=None, window_key="soft_mask")
