"""MedDiff-FT's sampler: an inpainting model (mask and masked image as UNet inputs) under the dynamic guiding mask.

The soft-mask inpainting sampler (:class:`bundle.inferers.soft_mask_inpainting.SoftMaskInpaintingInferer`: guidance
over the text, the scheduler's step, the per-step blend with the schedule's guide, the input kept exactly outside
the last guide) with the inpainting model's conditions: the text, and as the UNet's extra inputs the first (largest)
guide as the mask and the image outside it, the same in both branches of guidance. Without a guide schedule the
mask is the given soft mask (binarised at 0.5).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from bundle.inferers.soft_mask_inpainting import SoftMaskInpaintingInferer
from bundle.networks.conditions import Conditions
from bundle.networks.meddiffft_inpainting import InpaintingDiffusion


class GuidedInpaintingInferer(SoftMaskInpaintingInferer):
    """Sample a lesion with an :class:`InpaintingDiffusion` model; arguments and call as
    :class:`SoftMaskInpaintingInferer`'s (``network`` the inpainting model)."""

    def model_conditions(
        self,
        network: InpaintingDiffusion,
        texts: Sequence[str],
        inputs: torch.Tensor,
        soft_mask: torch.Tensor,
        guides: Sequence[torch.Tensor] | None,
    ) -> Conditions:
        return network.conditions(texts, inputs, soft_mask if guides is None else guides[0])
