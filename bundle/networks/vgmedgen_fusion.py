"""VG-MedGen's hybrid feature fusion (HFFM): the disentangled anatomy and style vectors, and the text's token states,
as one cross-attention sequence for the DiT.

``"hffm"`` (the paper): each vector goes through its own LayerNorm - Linear - GELU - Linear branch to one token, and
a learnable *type embedding* per kind (anatomy, style, text) is added to its tokens, so the attention can tell the
channels apart. ``"concat"`` (the paper's "naive feature concatenation" ablation): one such branch on
``[t_a; t_s]`` gives one token and no type embedding is added.

Shapes: ``anatomy`` ``(B, anatomy_dim)``, ``style`` ``(B, style_dim)``, ``text_states`` ``(B, L, text_dim)``;
output ``(B, T, width)``, T = 2 (``"hffm"``) or 1 (``"concat"``), plus L when the text tokens are fused.
"""

from __future__ import annotations

import torch
from torch import nn

FUSION_MODES = ("hffm", "concat")
ANATOMY, STYLE, TEXT = 0, 1, 2
"""Rows of the type-embedding table."""


def _branch(inputs: int, hidden: int, width: int) -> nn.Sequential:
    """LayerNorm - Linear - GELU - Linear (the authors' projector branch)."""
    return nn.Sequential(nn.LayerNorm(inputs), nn.Linear(inputs, hidden), nn.GELU(), nn.Linear(hidden, width))


class HybridFeatureFusion(nn.Module):
    """``(t_a, t_s[, text states]) -> (B, T, width)`` condition tokens.

    Args:
        anatomy_dim, style_dim: sizes of the disentangled vectors (8 and 8 in the paper).
        width: the DiT's caption width (``caption_channels`` of ``PixArtTransformer2DModel``).
        hidden: width of each branch's hidden layer (256 in the authors' code).
        mode: ``"hffm"`` or ``"concat"`` (see the module docstring).
        text_dim: width of the text token states fused after the anatomy and style tokens through a learned
            Linear; None fuses no text tokens (the authors' release: the prompt reaches the DiT only through t_a, t_s).
    """

    def __init__(
        self,
        anatomy_dim: int,
        style_dim: int,
        width: int,
        hidden: int = 256,
        mode: str = "hffm",
        text_dim: int | None = None,
    ) -> None:
        super().__init__()
        if mode not in FUSION_MODES:
            raise ValueError(f"mode must be one of {FUSION_MODES}, got {mode!r}")
        self.mode = mode
        self.anatomy_dim, self.style_dim = int(anatomy_dim), int(style_dim)
        if mode == "hffm":
            self.anatomy = _branch(anatomy_dim, hidden, width)
            self.style = _branch(style_dim, hidden, width)
            self.type_embeddings = nn.Parameter(torch.randn(3 if text_dim else 2, width) * 0.02)
        else:
            self.joint = _branch(anatomy_dim + style_dim, hidden, width)
        self.text = nn.Linear(text_dim, width) if text_dim else None

    def forward(
        self, anatomy: torch.Tensor, style: torch.Tensor, text_states: torch.Tensor | None = None
    ) -> torch.Tensor:
        if anatomy.shape[1:] != (self.anatomy_dim,) or style.shape[1:] != (self.style_dim,):
            raise ValueError(
                f"expected anatomy (B, {self.anatomy_dim}) and style (B, {self.style_dim}), got "
                f"{tuple(anatomy.shape)} and {tuple(style.shape)}"
            )
        if (text_states is None) != (self.text is None):
            raise ValueError("text_states must be given exactly when the fusion was built with text_dim")
        if self.mode == "hffm":
            tokens = torch.stack([self.anatomy(anatomy), self.style(style)], dim=1)
            tokens = tokens + self.type_embeddings[[ANATOMY, STYLE]]
        else:
            tokens = self.joint(torch.cat([anatomy, style], dim=1))[:, None]
        if self.text is None:
            return tokens
        text = self.text(text_states)
        if self.mode == "hffm":
            text = text + self.type_embeddings[TEXT]
        return torch.cat([tokens, text], dim=1)
