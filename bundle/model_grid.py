"""Resampling 2-D slices to the model's square grid, with MONAI's inverse recorded on each ``MetaTensor``.

The chain is MONAI's own invertible transforms: ``Spacingd`` to square pixels of ``pixdim_mm`` (so anatomy
keeps its physical aspect ratio), optionally ``CropForegroundd`` to the working window (the soft mask's extent
plus ``window_margin_mm`` of surrounding anatomy, so the cost does not depend on the scan's matrix), ``Resized``
so the longest side is ``spatial_size``, and ``SpatialPadd`` to ``spatial_size x spatial_size``. :func:`invert_to_slice` maps a model-grid tensor (a prediction or a change)
back onto the slice's native pixels through the recorded operations.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.data import MetaTensor
from monai.transforms import Compose, CropForegroundd, Invertd, Resized, Spacingd, SpatialPadd

WINDOW_MASK_THRESHOLD = 0.01


class _Above:
    """``x > threshold`` as a picklable callable (MONAI's foreground selector)."""

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold

    def __call__(self, values: torch.Tensor) -> torch.Tensor:
        return values > self.threshold


def model_grid(keys: Sequence[str], spatial_size: int, pixdim_mm: float = 1.0,
               nearest_keys: Sequence[str] = (), window_key: str | None = None,
               window_margin_mm: float = 16.0) -> Compose:
    """The invertible slice -> model-grid chain for ``keys`` (2-D ``(1, H, W)`` tensors with a 2-D affine).

    Args:
        keys: keys to resample; all must be on the same slice grid.
        spatial_size: the model's side length in pixels.
        pixdim_mm: the square pixel size (mm) the slice is first resampled to.
        nearest_keys: keys resampled with nearest-neighbour (binary masks); the others use bilinear.
        window_key: the soft-mask key that defines the working window; ``None`` keeps the whole slice (the
            paper's full-image mode).
        window_margin_mm: anatomy kept around the soft mask's extent (mask > 0.01), in millimetres.
    """
    keys = list(keys)
    modes = ["nearest" if k in nearest_keys else "bilinear" for k in keys]
    window = [] if window_key is None else [
        CropForegroundd(keys, source_key=window_key, select_fn=_Above(WINDOW_MASK_THRESHOLD),
                        margin=round(window_margin_mm / pixdim_mm), allow_smaller=True)]
    return Compose([
        Spacingd(keys, pixdim=(pixdim_mm, pixdim_mm), mode=modes, padding_mode="zeros"),
        *window,
        Resized(keys, spatial_size=spatial_size, size_mode="longest",
                mode=["nearest" if m == "nearest" else "bilinear" for m in modes], anti_aliasing=False),
        SpatialPadd(keys, spatial_size=(spatial_size, spatial_size)),
    ])


def invert_to_slice(values: torch.Tensor, reference: MetaTensor, grid: Compose) -> torch.Tensor:
    """Map ``values`` ``(1, S, S)`` on the model grid back to the slice grid of ``reference``'s original.

    ``reference`` is a tensor that went through ``grid`` (its ``applied_operations`` are used).
    """
    inverter = Invertd(keys="values", transform=grid, orig_keys=grid.transforms[0].keys[0], nearest_interp=False)
    data = {"values": MetaTensor(torch.as_tensor(values).detach().float()), grid.transforms[0].keys[0]: reference}
    return torch.as_tensor(inverter(data)["values"])
