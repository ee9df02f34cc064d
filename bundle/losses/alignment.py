"""The stage-1 alignment loss of the Medical Semantic Controller (the paper's Eq. 4)."""

from __future__ import annotations

import torch


def alignment_loss(semantic_feature: torch.Tensor, original_feature: torch.Tensor) -> torch.Tensor:
    """``L_MSC = ||e_MSC - e_r||^2``: the squared Euclidean distance per sample, averaged over the batch."""
    return (semantic_feature - original_feature).pow(2).sum(dim=-1).mean()
