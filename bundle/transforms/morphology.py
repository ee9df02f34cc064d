"""Binary-mask erosion and dilation by a radius in millimetres (MONAI's morphology ops, per-axis voxel radii).

The radius is converted to a whole number of voxels along each spatial axis from the mask's spacing
(``floor(radius_mm / spacing_mm)``), so the same radius means the same physical margin on anisotropic voxels
(e.g. 0.5 x 0.5 x 4 mm: a 2 mm radius is 4 voxels in-plane and 0 across slices). The structuring element is the
box of those half-widths (MONAI's ``erode``/``dilate`` are box filters), i.e. a voxel is kept by erosion when
every voxel within ``radius_mm`` along each axis (the box, not the ball) is inside. A radius below one voxel along
an axis leaves that axis unchanged; below one voxel along every axis the mask is returned as it is (binarised).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.data.utils import affine_to_spacing
from monai.transforms import MapTransform, Transform
from monai.transforms.utils_morphological_ops import dilate, erode


def radius_in_voxels(radius_mm: float, spacing_mm: Sequence[float]) -> list[int]:
    """Whole voxels per axis within ``radius_mm``: ``floor(radius_mm / spacing_mm)`` (a small tolerance keeps
    4.0 / 2.0 at 2, not 1 after float rounding)."""
    spacing = np.asarray(spacing_mm, dtype=float)
    if (spacing <= 0).any() or not np.isfinite(spacing).all():
        raise ValueError(f"voxel spacing must be positive and finite in mm, got {spacing.tolist()}")
    return [int(v) for v in np.floor(radius_mm / spacing + 1e-6)]


class _MorphologyMM(Transform):
    """The shared body of :class:`ErodeMaskMM` and :class:`DilateMaskMM`."""

    operation = staticmethod(erode)

    def __init__(self, radius_mm: float, spacing_mm: Sequence[float] | None = None, threshold: float = 0.5) -> None:
        radius_mm = float(radius_mm)
        if not np.isfinite(radius_mm) or radius_mm < 0:
            raise ValueError(f"the radius must be a finite number of millimetres >= 0, got {radius_mm}")
        self.radius_mm = radius_mm
        self.spacing_mm = None if spacing_mm is None else [float(s) for s in spacing_mm]
        self.threshold = float(threshold)

    def _spacing(self, mask: torch.Tensor, spatial_dims: int) -> list[float]:
        if self.spacing_mm is not None:
            if len(self.spacing_mm) != spatial_dims:
                raise ValueError(
                    f"spacing_mm has {len(self.spacing_mm)} values for a mask with {spatial_dims} spatial axes"
                )
            return self.spacing_mm
        if not isinstance(mask, MetaTensor):
            raise ValueError("the mask has no affine to read its spacing from: give a MetaTensor or spacing_mm")
        return affine_to_spacing(mask.affine, r=spatial_dims).tolist()

    def _along(self, binary: torch.Tensor, axis: int, size: int) -> torch.Tensor:
        """The operation with a ``size``-voxel line along ``axis`` of the ``(C, ...)`` mask.

        MONAI 1.6 pads a filter's axes in reverse order (``F.pad`` takes the last axis first), which misplaces a
        filter whose sizes differ per axis; a ``(1, size, 1)`` filter on a 3-D view ``(C, before, axis, after)``
        is padded correctly, and a box is the product of its lines (the operations are separable).
        """
        shape = binary.shape
        view = binary.reshape(shape[0], 1, math.prod(shape[1:axis]), shape[axis], math.prod(shape[axis + 1 :]))
        return self.operation(view, filter_size=(1, size, 1)).reshape(shape)

    def __call__(self, mask: torch.Tensor) -> torch.Tensor:
        """``mask``: channel-first ``(C, H, W)`` or ``(C, X, Y, Z)``; values above ``threshold`` are inside.

        Returns a float32 ``{0, 1}`` mask of the same shape (a ``MetaTensor`` keeps its affine and metadata).
        """
        if mask.ndim not in (3, 4):
            raise ValueError(
                f"{type(self).__name__} needs a channel-first 2-D (C, H, W) or 3-D (C, X, Y, Z) mask, got shape "
                f"{tuple(mask.shape)}"
            )
        spatial_dims = mask.ndim - 1
        voxels = radius_in_voxels(self.radius_mm, self._spacing(mask, spatial_dims))
        binary = (torch.as_tensor(mask) > self.threshold).float()
        for axis, radius in enumerate(voxels, start=1):
            if radius:
                binary = self._along(binary, axis, 2 * radius + 1)
        if isinstance(mask, MetaTensor):
            out = mask.clone().float()
            out.as_tensor().copy_(binary)
            return out
        return binary


class ErodeMaskMM(_MorphologyMM):
    """Erode a binary mask by ``radius_mm`` millimetres (see the module docstring for the voxel conversion).

    Args:
        radius_mm: the margin removed, in mm (>= 0; below one voxel along an axis: no change along it).
        spacing_mm: the spacing per spatial axis in mm; ``None``: read from the ``MetaTensor``'s affine.
        threshold: values above it are inside the mask (a soft mask can be given).

    Input ``(C, H, W)`` or ``(C, X, Y, Z)``; output the same shape, float32 in {0, 1}. Outside the image counts as
    inside the mask (MONAI's padding), so a mask touching the border is not eroded from the border.
    """

    operation = staticmethod(erode)


class DilateMaskMM(_MorphologyMM):
    """Dilate a binary mask by ``radius_mm`` millimetres (see the module docstring for the voxel conversion).

    Args and shapes as :class:`ErodeMaskMM`.
    """

    operation = staticmethod(dilate)


class _MorphologyMMd(MapTransform):
    backend = _MorphologyMM

    def __init__(
        self,
        keys: KeysCollection,
        radius_mm: float,
        spacing_mm: Sequence[float] | None = None,
        threshold: float = 0.5,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = self.backend(radius_mm, spacing_mm, threshold)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.transform(d[key])
        return d


class ErodeMaskMMd(_MorphologyMMd):
    """Dictionary twin of :class:`ErodeMaskMM`: each of ``keys`` eroded in place (same arguments)."""

    backend = ErodeMaskMM


class DilateMaskMMd(_MorphologyMMd):
    """Dictionary twin of :class:`DilateMaskMM`: each of ``keys`` dilated in place (same arguments)."""

    backend = DilateMaskMM
