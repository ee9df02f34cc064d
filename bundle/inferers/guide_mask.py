"""MedDiff-FT's dynamic adaptive guiding mask: per sampling step, the region the sampler may change.

The paper names the part and gives no definition; this is the project's own. With ``mode="shrink"`` the guide of
step ``i`` of ``n`` is the lesion mask dilated by ``r_i`` millimetres and clipped to the host structure (the
vertebral body):

    r_max = dilation_fraction * d_eq,     d_eq = 2 sqrt(area_mm2 / pi)   (the lesion's equivalent diameter)
    r_i   = r_max * max(0, 1 - p_i / shrink_until),   p_i = i / (n - 1)
    guide_i = dilate(lesion, r_i) AND host

So the model first has room around the lesion to blend it into its host (adaptive: the room grows with the lesion's
size, in mm, so the same lesion at another pixel size gets the same physical ring), and from ``shrink_until`` of the
way on only the lesion itself changes: the last guide is ``lesion AND host``, and the sampler's result equals the
host outside it. ``mode="static"`` is the authors' release (the lesion mask at every step). The dilation is
:class:`bundle.transforms.morphology.DilateMaskMM` (whole pixels from the spacing, a box), so the guides are nested:
a guide never grows from one step to the next, and never leaves the host.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Literal

import torch

from bundle.transforms.morphology import DilateMaskMM

GuideMode = Literal["static", "shrink"]


def equivalent_diameter_mm(mask: torch.Tensor, pixel_mm: Sequence[float]) -> float:
    """The diameter (mm) of the disc with the area of the 2-D ``mask`` ``(1, H, W)`` on ``pixel_mm`` pixels."""
    area = float((torch.as_tensor(mask) > 0.5).sum()) * float(pixel_mm[0]) * float(pixel_mm[1])
    return 2.0 * math.sqrt(area / math.pi)


class GuideMaskSchedule:
    """The guiding masks of one sampling run (see the module docstring for the definition).

    Args:
        mode: ``"shrink"`` (dilated lesion shrinking to the lesion) or ``"static"`` (the lesion at every step).
        dilation_fraction: r_max as a fraction of the lesion's equivalent diameter (``shrink`` only).
        shrink_until: the fraction of the steps after which the guide is the lesion itself, in (0, 1].
    """

    def __init__(self, mode: GuideMode = "shrink", dilation_fraction: float = 0.5, shrink_until: float = 0.6) -> None:
        if mode not in ("static", "shrink"):
            raise ValueError(f"the guide mode must be 'static' or 'shrink', got {mode!r}")
        if not (math.isfinite(dilation_fraction) and dilation_fraction >= 0):
            raise ValueError(f"dilation_fraction must be a finite number >= 0, got {dilation_fraction}")
        if not 0 < shrink_until <= 1:
            raise ValueError(f"shrink_until must be in (0, 1], got {shrink_until}")
        self.mode, self.dilation_fraction, self.shrink_until = mode, float(dilation_fraction), float(shrink_until)

    def radius_fraction(self, index: int, num_steps: int) -> float:
        """r_i / r_max at step ``index`` of ``num_steps``."""
        if self.mode == "static":
            return 0.0
        progress = index / (num_steps - 1) if num_steps > 1 else 1.0
        return max(0.0, 1.0 - progress / self.shrink_until)

    def max_radius_mm(self, lesion: torch.Tensor, pixel_mm: Sequence[float]) -> float:
        """r_max of one lesion ``(1, H, W)``."""
        return self.dilation_fraction * equivalent_diameter_mm(lesion, pixel_mm)

    def __call__(
        self,
        lesion_mask: torch.Tensor,
        host_mask: torch.Tensor,
        pixel_mm: float | Sequence[float],
        num_steps: int,
    ) -> list[torch.Tensor]:
        """The guides of steps ``0 .. num_steps - 1``, each ``(B, 1, H, W)`` float32 in {0, 1}.

        Args:
            lesion_mask: the lesions ``(B, 1, H, W)`` (values above 0.5 inside), on the sampler's image grid.
            host_mask: the host structures ``(B, 1, H, W)`` the guide must stay in (e.g. the vertebral body's
                marrow: the vertebra label eroded by a few mm with :class:`bundle.transforms.morphology.ErodeMaskMM`).
            pixel_mm: the pixel size in mm: one value (square pixels, every image) or one per image.
            num_steps: the sampler's steps.

        Raises:
            ValueError: shapes that differ, or a lesion with nothing inside its host (naming the image's index).
        """
        if lesion_mask.ndim != 4 or lesion_mask.shape[1] != 1 or host_mask.shape != lesion_mask.shape:
            raise ValueError(
                f"lesion and host masks must both be (B, 1, H, W), got {tuple(lesion_mask.shape)} and "
                f"{tuple(host_mask.shape)}"
            )
        batch = lesion_mask.shape[0]
        sizes = [float(pixel_mm)] * batch if isinstance(pixel_mm, (int, float)) else [float(s) for s in pixel_mm]
        if len(sizes) != batch:
            raise ValueError(f"{len(sizes)} pixel sizes for {batch} images")
        lesion, host = (lesion_mask > 0.5).float(), (host_mask > 0.5).float()
        empty = [i for i in range(batch) if not (lesion[i] * host[i]).any()]
        if empty:
            raise ValueError(f"image {empty[0]}: the lesion mask has no pixel inside the host mask")
        radii = [self.max_radius_mm(lesion[i], [s, s]) for i, s in enumerate(sizes)]
        guides: list[torch.Tensor] = []
        for index in range(num_steps):
            fraction = self.radius_fraction(index, num_steps)
            if guides and fraction == self.radius_fraction(index - 1, num_steps):
                guides.append(guides[-1])
                continue
            grown = [
                DilateMaskMM(r * fraction, spacing_mm=[s, s])(lesion[i])
                for i, (r, s) in enumerate(zip(radii, sizes, strict=True))
            ]
            guides.append(torch.stack(grown) * host)
        return guides

    def first_guide(
        self, lesion_mask: torch.Tensor, host_mask: torch.Tensor, pixel_mm: float | Sequence[float]
    ) -> torch.Tensor:
        """The guide of a run's first step (the largest), ``(B, 1, H, W)``: see :meth:`__call__`."""
        return self(lesion_mask, host_mask, pixel_mm, num_steps=2)[0]


class FirstGuideMasks:
    """A batch's inpainting masks for fine-tuning an inpainting model: each lesion's first guiding mask (the lesion
    dilated by r_max, inside its host), the region the sampler first lets the model change.

    Args:
        schedule: the guide schedule the sampler uses.
        lesion_key, host_key: the batch's lesion masks and host masks ``(B, 1, H, W)``; ``pixel_mm`` ``(B, 2)``.
    """

    def __init__(
        self, schedule: GuideMaskSchedule, lesion_key: str = "lesion_mask", host_key: str = "soft_mask"
    ) -> None:
        self.schedule, self.lesion_key, self.host_key = schedule, lesion_key, host_key

    def __call__(self, batch: Mapping) -> torch.Tensor:
        """The masks ``(B, 1, H, W)``; all zeros for an item whose lesion has no pixel inside its host (a small
        lesion can vanish on the model grid), which the trainer leaves out."""
        lesion, host = (batch[self.lesion_key].cpu() > 0.5).float(), (batch[self.host_key].cpu() > 0.5).float()
        masks = torch.zeros_like(lesion)
        inside = (lesion * host).flatten(1).any(dim=1)
        if inside.any():
            pixel_mm = [float(size.mean()) for size, used in zip(batch["pixel_mm"], inside, strict=True) if used]
            masks[inside] = self.schedule.first_guide(lesion[inside], host[inside], pixel_mm)
        return masks
