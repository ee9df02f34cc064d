"""Resampling 2-D slices to the model's square grid, with MONAI's inverse recorded on each ``MetaTensor``.

The chain is MONAI's own invertible transforms: ``Spacingd`` to square pixels (of ``pixdim_mm``, or of the slice's
own finest spacing, so anatomy keeps its physical aspect ratio), optionally ``CropForegroundd`` to the working
window (the soft mask's extent plus ``window_margin_mm`` of surrounding anatomy, so the cost does not depend on the
scan's matrix), ``Resized`` so the longest side is ``spatial_size``, and ``SpatialPadd`` to
``spatial_size x spatial_size``. :func:`invert_to_slice` maps a model-grid tensor (a prediction or a change) back
onto the slice's native pixels through the recorded operations.

Two uses: the ``tiny`` profile works on a small window at 1 mm (48 px); the ``sd15`` profile gives SD 1.5 whole
slices at their native pixel size (``pixdim_mm=None``, ``window_key=None``), so its 512 px hold the scan's real
detail (a 320-512 px clinical slice is resized by 1-1.6x) rather than a 1-mm crop upsampled 4-7x.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from monai.data import MetaTensor
from monai.data.utils import affine_to_spacing
from monai.transforms import Compose, CropForegroundd, Invertd, Resized, Spacingd, SpatialPad, SpatialPadd
from monai.utils import TraceKeys

WINDOW_MASK_THRESHOLD = 0.01


class _Above:
    """``x > threshold`` as a picklable callable (MONAI's foreground selector)."""

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold

    def __call__(self, values: torch.Tensor) -> torch.Tensor:
        return values > self.threshold


class NativeSquarePixelsd(Spacingd):
    """``Spacingd`` to square pixels of the slice's own finest in-plane spacing: a slice with square pixels keeps
    its native grid, one with rectangular pixels is resampled along its coarser axis only. The spacing is read
    from the first key's 2-D affine at each call; the inverse is ``Spacingd``'s."""

    def __init__(self, keys: Sequence[str], mode: Sequence[str], padding_mode: str = "zeros") -> None:
        super().__init__(keys, pixdim=(1.0, 1.0), mode=mode, padding_mode=padding_mode)

    def __call__(self, data, lazy: bool | None = None):
        spacing = affine_to_spacing(data[self.keys[0]].affine, r=2)
        self.spacing_transform.pixdim = np.full(2, float(spacing.min()))
        return super().__call__(data, lazy)


def model_grid(
    keys: Sequence[str],
    spatial_size: int,
    pixdim_mm: float | None = 1.0,
    nearest_keys: Sequence[str] = (),
    window_key: str | None = None,
    window_margin_mm: float = 16.0,
) -> Compose:
    """The invertible slice -> model-grid chain for ``keys`` (2-D ``(1, H, W)`` tensors with a 2-D affine).

    Args:
        keys: keys to resample; all must be on the same slice grid.
        spatial_size: the model's side length in pixels.
        pixdim_mm: the square pixel size (mm) the slice is first resampled to; ``None``: the slice's own finest
            in-plane spacing (:class:`NativeSquarePixelsd`).
        nearest_keys: keys resampled with nearest neighbour (binary masks; the resize step uses torch's
            "nearest-exact", whose pixel centres match bilinear's: plain "nearest" shifts by up to half a pixel);
            the others use bilinear.
        window_key: the soft-mask key that defines the working window; ``None`` keeps the whole slice (the
            paper's full-image mode).
        window_margin_mm: anatomy kept around the soft mask's extent (mask > 0.01), in millimetres.
    """
    keys = list(keys)
    modes = ["nearest" if k in nearest_keys else "bilinear" for k in keys]
    if window_key is not None and pixdim_mm is None:
        raise ValueError(
            "the working window's margin is in millimetres: give pixdim_mm with window_key, or keep "
            "whole slices (window_key None) at their native spacing"
        )
    window = (
        []
        if window_key is None
        else [
            CropForegroundd(
                keys,
                source_key=window_key,
                select_fn=_Above(WINDOW_MASK_THRESHOLD),
                margin=round(window_margin_mm / pixdim_mm),
                allow_smaller=True,
            )
        ]
    )
    square = (
        NativeSquarePixelsd(keys, mode=modes)
        if pixdim_mm is None
        else Spacingd(keys, pixdim=(pixdim_mm, pixdim_mm), mode=modes, padding_mode="zeros")
    )
    return Compose(
        [
            square,
            *window,
            Resized(
                keys,
                spatial_size=spatial_size,
                size_mode="longest",
                mode=["nearest-exact" if m == "nearest" else "bilinear" for m in modes],
                anti_aliasing=False,
            ),
            SpatialPadd(keys, spatial_size=(spatial_size, spatial_size)),
        ]
    )


def require_nearest(grid: Compose, key: str) -> None:
    """Raise ``ValueError`` unless ``grid`` (:func:`model_grid`) resamples ``key`` with nearest neighbour (a binary
    mask must stay binary: bilinear resampling would blur its edge into fractions)."""
    first = grid.transforms[0]
    keys = list(first.keys)
    if key not in keys:
        raise ValueError(
            f"the model grid does not resample {key!r} (its keys: {keys}); add it to keys and nearest_keys"
        )
    modes = first.mode if isinstance(first.mode, (list, tuple)) else [first.mode] * len(keys)
    if str(modes[keys.index(key)]) != "nearest":
        raise ValueError(f"the model grid resamples {key!r} with {modes[keys.index(key)]!r}: add it to nearest_keys")


def invert_to_slice(values: torch.Tensor, reference: MetaTensor, grid: Compose) -> torch.Tensor:
    """Map ``values`` ``(1, S, S)`` on the model grid back to the slice grid of ``reference``'s original.

    ``reference`` is a tensor that went through ``grid`` (its ``applied_operations`` are used).
    """
    inverter = Invertd(keys="values", transform=grid, orig_keys=grid.transforms[0].keys[0], nearest_interp=False)
    data = {"values": MetaTensor(torch.as_tensor(values).detach().float()), grid.transforms[0].keys[0]: reference}
    return torch.as_tensor(inverter(data)["values"])


def grid_geometry(item: Mapping) -> dict[str, object]:
    """Where a slice item's model grid sits on its native slice, in millimetres.

    Returns ``native_spacing_mm`` (in-plane, of the slice), ``native_shape`` (pixels), ``window_mm`` (the region the
    model sees, before padding to a square), ``model_pixel_mm`` and ``upsampling`` (native pixels per model pixel
    along the finer native axis: 1 means the model sees the native detail, 6 a 6x enlargement).

    ``item`` holds ``image`` (after the grid) and ``native_image`` (the slice before it), as
    :func:`bundle.transforms.case_to_slices.case_to_slices` leaves them.
    """
    image, native = item["image"], item["native_image"]
    native_spacing = affine_to_spacing(native.affine, r=2).numpy().astype(float)
    model_pixel = float(affine_to_spacing(image.affine, r=2).numpy().astype(float).mean())
    padded = [op for op in image.applied_operations if op[TraceKeys.CLASS_NAME] == SpatialPad.__name__]
    content = padded[-1][TraceKeys.ORIG_SIZE][-2:] if padded else tuple(image.shape[-2:])
    return {
        "native_spacing_mm": [round(float(s), 3) for s in native_spacing],
        "native_shape": [int(n) for n in native.shape[-2:]],
        "window_mm": [round(float(n) * model_pixel, 1) for n in content],
        "model_pixel_mm": round(model_pixel, 4),
        "upsampling": round(float(native_spacing.min()) / model_pixel, 2),
    }
