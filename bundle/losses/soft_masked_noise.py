"""The soft-mask-weighted noise-prediction loss of SMIS (the paper's Eq. 6)."""

from __future__ import annotations

import torch
from torch import nn


class SoftMaskedNoiseLoss(nn.Module):
    """``sum(m_b * (eps_pred - eps)^2) / sum(m_b)`` per sample (over channels too), averaged over the batch.

    Normalising by the mask's mass keeps the loss's scale independent of the lesion's size; a sample whose
    mask is empty raises instead of silently giving NaN or zero. ``mask_weighted=False`` is the plain MSE of
    the "without SMIS" ablation.

    Shapes: predictions and targets ``(B, C, h, w)``; ``mask`` ``(B, 1, h, w)`` in [0, 1] on the same grid.
    """

    def __init__(self, mask_weighted: bool = True, min_mass: float = 1e-3) -> None:
        super().__init__()
        self.mask_weighted = mask_weighted
        self.min_mass = min_mass

    def forward(self, prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        squared_error = (prediction.float() - target.float()).pow(2)
        if not self.mask_weighted:
            return squared_error.mean()
        weight = mask.float().expand_as(squared_error)
        mass = weight.flatten(1).sum(dim=1)
        if (mass < self.min_mass).any():
            empty = torch.nonzero(mass < self.min_mass).flatten().tolist()
            raise ValueError(f"the soft mask of batch items {empty} is empty; the masked loss is undefined there")
        return ((weight * squared_error).flatten(1).sum(dim=1) / mass).mean()
