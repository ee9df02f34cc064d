"""VG-MedGen's text disentanglement (stage T): a frozen text encoder's pooled embedding ``E`` split into an
anatomy vector ``t_a`` and a style vector ``t_s`` (two MLPs), with an auxiliary decoder that reconstructs ``E``
from ``[t_a; t_s]`` so the split keeps what the text said. They are aligned by cosine to the frozen visual
features of the same crop (:meth:`bundle.networks.vgmedgen_visual.VisualDisentangler.features`) by
:class:`bundle.losses.vgmedgen_text.TextAlignmentLoss`.

Shapes: ``E`` ``(B, input_dim)``; ``t_a`` ``(B, anatomy_dim)``, ``t_s`` ``(B, style_dim)``, the reconstruction
``(B, input_dim)``.
"""

from __future__ import annotations

import torch
from torch import nn


def _mlp(inputs: int, hidden: int, outputs: int, dropout: float) -> nn.Sequential:
    """Linear - ReLU - Dropout - Linear (the authors' encoder block)."""
    return nn.Sequential(nn.Linear(inputs, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, outputs))


class TextDisentangler(nn.Module):
    """``E -> (t_a, t_s, E_reconstructed)``; the defaults are the authors' (hidden 512, dropout 0.1, 8 + 8)."""

    def __init__(
        self, input_dim: int, anatomy_dim: int = 8, style_dim: int = 8, hidden: int = 512, dropout: float = 0.1
    ) -> None:
        super().__init__()
        self.anatomy = _mlp(input_dim, hidden, anatomy_dim, dropout)
        self.style = _mlp(input_dim, hidden, style_dim, dropout)
        self.decoder = _mlp(anatomy_dim + style_dim, hidden, input_dim, dropout)

    def forward(self, embedding: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        anatomy, style = self.anatomy(embedding), self.style(embedding)
        return anatomy, style, self.decoder(torch.cat([anatomy, style], dim=1))
