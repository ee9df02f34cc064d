"""VG-MedGen's stage-T objective (the paper's Eq. 2; weights from the authors' code):
``L = align * (cos(t_a, a_img) + cos(t_s, s_img)) + rec * MSE(E_reconstructed, E)``, each ``cos`` term
``torch.nn.CosineEmbeddingLoss`` with target 1 (``1 - cosine``, averaged over the batch). The visual targets are
frozen features: no gradient flows into them."""

from __future__ import annotations

import torch
from torch import nn


class TextAlignmentLoss(nn.Module):
    """:meth:`forward` returns ``{"anatomy", "style", "rec", "loss"}``.

    Shapes: ``t_a``, ``a_img`` ``(B, anatomy_dim)``; ``t_s``, ``s_img`` ``(B, style_dim)``; ``reconstructed``,
    ``embedding`` ``(B, input_dim)``.
    """

    def __init__(self, align: float = 1.0, rec: float = 0.5) -> None:
        super().__init__()
        self.align, self.rec = align, rec
        self.cosine = nn.CosineEmbeddingLoss()

    def forward(
        self,
        t_a: torch.Tensor,
        t_s: torch.Tensor,
        reconstructed: torch.Tensor,
        a_img: torch.Tensor,
        s_img: torch.Tensor,
        embedding: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        ones = torch.ones(t_a.shape[0], device=t_a.device)
        terms = {
            "anatomy": self.cosine(t_a, a_img.detach(), ones),
            "style": self.cosine(t_s, s_img.detach(), ones),
            "rec": nn.functional.mse_loss(reconstructed, embedding.detach()),
        }
        terms["loss"] = self.align * (terms["anatomy"] + terms["style"]) + self.rec * terms["rec"]
        return terms
