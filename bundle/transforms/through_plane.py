"""The lesion's through-plane extent: a 3-D soft mask whose profile across slices follows the lesion's size.

The soft mask of a vertebra (or a box) reaches every slice of the vertebra, 30-40 mm across; a lesion of the text's
size reaches fewer. :class:`ThroughPlaneExtentd` weights each slice of the soft mask by a profile across the slice
axis: a slab of the text's size (``lesion_size_mm``) centred on the mask's centre, blurred with the soft mask's own
Gaussian sigma, ``w(d) = (erf((d + r) / (sqrt(2) sigma)) - erf((d - r) / (sqrt(2) sigma))) / 2`` (``d`` the slice's
distance from the centre in mm, ``r`` half the size), scaled so that the centre slice keeps its full weight. At
``|d| = r`` the blurred slab is one half (0.55 after the scaling for a 10 mm lesion and sigma 3 mm), where the
phantom's lesion masks end (its lesion weight >= 0.5), so the lesion fades out where a real one of that size would.
Slices whose weight is below ``cutoff`` get no soft mask; the others are the slices a synthesis job synthesises
(:class:`bundle.engines.synthesis_job.DiffusionPredictor` goes outward from the centre slice, each slice started
from its inner neighbour's result).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping

import torch
from monai.transforms import MapTransform

from bundle.transforms.loading import voxel_spacing_mm
from bundle.utils.lesion_text import lesion_size_mm

EXTENT_CUTOFF = 0.05


def slab_profile(distances_mm: torch.Tensor, size_mm: float, sigma_mm: float) -> torch.Tensor:
    """The through-plane weights of slices at ``distances_mm`` from the centre: a slab ``size_mm`` thick blurred by a
    Gaussian of ``sigma_mm``, scaled to 1 at the centre (``sigma_mm`` 0: the slab itself, 1 inside, 0 outside)."""
    d = torch.as_tensor(distances_mm, dtype=torch.float64).abs()
    half = size_mm / 2.0
    if sigma_mm <= 0:
        return (d <= half).to(torch.float64)
    scale = math.sqrt(2.0) * sigma_mm
    weights = (torch.erf((d + half) / scale) - torch.erf((d - half) / scale)) / 2.0
    return weights / math.erf(half / scale)


class ThroughPlaneExtentd(MapTransform):
    """Limit ``d[soft_mask_key]`` across the slice axis to the lesion's extent, and say which slices to synthesise.

    Input volumes ``(1, X, Y, Z)`` in the canonical orientation (slice axis ``slice_axis``); the entry's text under
    ``text_key``. The lesion's size is ``size_mm`` if given, else the first size in mm of the text; with neither the
    soft mask is kept as it is (every slice it reaches). The centre is the mask's area-weighted mean slice (for a
    point source: the point's slice). Outputs:

    - ``d[soft_mask_key]``: the soft mask times :func:`slab_profile` per slice, zero where the weight is below
      ``cutoff`` (or beyond the ``max_slices`` slices nearest the centre);
    - ``d[guide_key]``: the slices to synthesise, ``soft mask > 0`` (for
      :class:`bundle.transforms.slices.SelectMaskSlicesd`: every slice the limited soft mask reaches);
    - ``d[window_key]``: the largest soft-mask value across the slices at each in-plane position, the same on every
      slice, so all slices of a case share one working window (their pixels line up on the model grid);
    - ``d["through_plane"]``: the centre slice, the size used (mm, None without one) and its source.
    """

    def __init__(
        self,
        soft_mask_key: str = "soft_mask",
        mask_key: str = "mask",
        text_key: str = "text",
        sigma_mm: float = 3.0,
        size_mm: float | None = None,
        cutoff: float = EXTENT_CUTOFF,
        max_slices: int | None = None,
        slice_axis: int = 0,
        guide_key: str = "slice_guide",
        window_key: str = "window_mask",
    ) -> None:
        super().__init__([soft_mask_key, mask_key], allow_missing_keys=False)
        self.soft_mask_key, self.mask_key, self.text_key = soft_mask_key, mask_key, text_key
        self.sigma_mm, self.size_mm, self.cutoff, self.max_slices = sigma_mm, size_mm, cutoff, max_slices
        self.slice_axis, self.guide_key, self.window_key = slice_axis, guide_key, window_key

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        soft_mask, mask = d[self.soft_mask_key], d[self.mask_key]
        axis = self.slice_axis + 1
        others = [a for a in range(1, 4) if a != axis]
        areas = (torch.as_tensor(mask) > 0).sum(dim=others).flatten().to(torch.float64)
        positions = torch.arange(len(areas), dtype=torch.float64)
        centre = float((areas * positions).sum() / areas.sum()) if areas.sum() > 0 else float(len(areas) // 2)
        spacing = float(voxel_spacing_mm(soft_mask.affine)[self.slice_axis])
        size, source = self.size_mm, "configured"
        if size is None:
            size, source = lesion_size_mm(str(d.get(self.text_key, ""))), "text"
        weights = (
            torch.ones_like(positions)
            if size is None
            else slab_profile((positions - centre) * spacing, size, self.sigma_mm)
        )
        weights = torch.where(weights >= self.cutoff, weights, torch.zeros_like(weights))
        if self.max_slices is not None:
            reached = torch.nonzero(weights * (torch.as_tensor(soft_mask).amax(dim=others).flatten() > 0)).flatten()
            nearest = sorted(reached.tolist(), key=lambda i: (abs(i - centre), i))[: self.max_slices]
            keep = torch.zeros_like(weights, dtype=torch.bool)
            keep[nearest] = True
            weights = torch.where(keep, weights, torch.zeros_like(weights))
        shape = [1, 1, 1, 1]
        shape[axis] = len(weights)
        limited = soft_mask * weights.view(shape).to(soft_mask.dtype)
        d[self.soft_mask_key] = limited
        d[self.guide_key] = (limited > 0).to(limited.dtype)
        d[self.window_key] = limited.amax(dim=axis, keepdim=True).expand_as(limited).clone()
        d["through_plane"] = {
            "centre_slice": int(round(centre)),
            "size_mm": None if size is None else float(size),
            "size_from": None if size is None else source,
            "sigma_mm": float(self.sigma_mm),
        }
        return d
