"""VG-MedGen's text disentanglement (stage T): a frozen text encoder's pooled embedding ``E`` split into an
anatomy vector ``t_a`` and a style vector ``t_s`` (two MLPs), with an auxiliary decoder that reconstructs ``E``
from ``[t_a; t_s]`` so the split keeps what the text said. They are aligned by cosine to the frozen visual
features of the same crop (:meth:`bundle.networks.vgmedgen_visual.VisualDisentangler.features`) by
:class:`bundle.losses.vgmedgen_text.TextAlignmentLoss`.

Shapes: ``E`` ``(B, input_dim)``; ``t_a`` ``(B, anatomy_dim)``, ``t_s`` ``(B, style_dim)``, the reconstruction
``(B, input_dim)``.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from bundle.errors import InputError
from bundle.networks.weight_files import load_with_settings, save_with_settings

TEXT_FILE = "vgmedgen_text.safetensors"
SETTINGS_KEY = "vgmedgen_text_disentangler"


def _mlp(inputs: int, hidden: int, outputs: int, dropout: float) -> nn.Sequential:
    """Linear - ReLU - Dropout - Linear (the authors' encoder block)."""
    return nn.Sequential(nn.Linear(inputs, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, outputs))


class TextDisentangler(nn.Module):
    """``E -> (t_a, t_s, E_reconstructed)``; the defaults are the authors' (hidden 512, dropout 0.1, 8 + 8)."""

    def __init__(
        self, input_dim: int, anatomy_dim: int = 8, style_dim: int = 8, hidden: int = 512, dropout: float = 0.1
    ) -> None:
        super().__init__()
        self.settings = {
            "input_dim": input_dim,
            "anatomy_dim": anatomy_dim,
            "style_dim": style_dim,
            "hidden": hidden,
            "dropout": dropout,
        }
        self.anatomy = _mlp(input_dim, hidden, anatomy_dim, dropout)
        self.style = _mlp(input_dim, hidden, style_dim, dropout)
        self.decoder = _mlp(anatomy_dim + style_dim, hidden, input_dim, dropout)

    def forward(self, embedding: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        anatomy, style = self.anatomy(embedding), self.style(embedding)
        return anatomy, style, self.decoder(torch.cat([anatomy, style], dim=1))

    def save(self, path: str | os.PathLike) -> None:
        """Weights and settings in one safetensors file."""
        save_with_settings(self, path, SETTINGS_KEY, self.settings)

    @classmethod
    def load(cls, path: str | os.PathLike) -> TextDisentangler:
        """Rebuild a disentangler saved by :meth:`save` (names and shapes checked; a missing file is named)."""
        return load_with_settings(cls, path, SETTINGS_KEY, "run stage T (configs/vgmedgen_train_text.json) to write it")


class WholeEmbedding(nn.Module):
    """The "without disentanglement" ablation's stand-in for stage T: no parameters, the whole embedding ``E``
    ``(B, input_dim)`` passed on, split into its two halves only to fill the fusion's two inputs (with ``"concat"``
    fusion they are joined again, so the DiT's condition token is one MLP of the whole ``E``), and ``E`` itself."""

    def __init__(self, input_dim: int) -> None:
        super().__init__()
        self.anatomy_dim = input_dim // 2
        self.style_dim = input_dim - self.anatomy_dim

    def forward(self, embedding: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return embedding[:, : self.anatomy_dim], embedding[:, self.anatomy_dim :], embedding


def load_text_disentangler(models_dir: str | os.PathLike, input_dim: int | None = None) -> TextDisentangler:
    """Stage T's disentangler from ``models_dir`` (:data:`TEXT_FILE`), for stage G and generation; ``input_dim``
    (the text encoder's embedding width) is checked when given."""
    path = Path(models_dir) / TEXT_FILE
    model = TextDisentangler.load(path)
    if input_dim is not None and model.settings["input_dim"] != input_dim:
        raise InputError(
            path,
            f"a text disentangler for {model.settings['input_dim']}-wide text embeddings; this text encoder makes "
            f"{input_dim}: train stage T with the same text encoder",
        )
    return model
