"""A 2-D classifier applied to each slice of a case, the case's logits the mean of its slices'."""

from __future__ import annotations

import torch


class SliceBagClassifier(torch.nn.Module):
    """A 2-D classifier applied to each slice of a case, the slice logits averaged: ``(B, k, C, S, S)`` ->
    ``(B, classes)``; a plain slice batch ``(B, C, S, S)`` passes straight through.

    Averaging logits (not probabilities) lets a slice that shows the lesion outweigh the case's other slices,
    which look normal, without forcing every slice of a lesion case to look like a lesion.
    """

    def __init__(self, backbone: torch.nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 5:
            return self.backbone(images)
        batch, slices = images.shape[:2]
        logits = self.backbone(images.flatten(0, 1))
        return logits.view(batch, slices, -1).mean(dim=1)
