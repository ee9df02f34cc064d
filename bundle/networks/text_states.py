"""The text condition C of the UNet's own cross-attention: token states of a frozen text encoder.

SD 1.5 uses its CLIP text encoder (``<folder>/text_encoder`` + ``<folder>/tokenizer``); the ``tiny`` profile uses
the token states of the small medical CLIP's text tower (:class:`bundle.networks.medical_clip.MedicalClipEncoder`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from bundle.errors import InputError
from bundle.networks.medical_clip import MedicalClipEncoder
from bundle.networks.text_truncation import warn_truncated_text


class ClipTowerTextStates(nn.Module):
    """C from a :class:`MedicalClipEncoder`'s text tower: ``texts -> (B, L, D)``."""

    def __init__(self, encoder: MedicalClipEncoder) -> None:
        super().__init__()
        self.encoder = encoder
        self.width = encoder.text_state_dim

    def forward(self, texts: Sequence[str]) -> torch.Tensor:
        return self.encoder.text_states(texts)


class StableDiffusionTextStates(nn.Module):
    """C from SD 1.5's frozen CLIP text encoder: ``texts -> (B, 77, 768)``."""

    def __init__(self, folder: str | os.PathLike) -> None:
        super().__init__()
        from transformers import CLIPTextModel, CLIPTokenizer

        folder = Path(folder)
        for name in ("text_encoder/config.json", "tokenizer/vocab.json", "tokenizer/merges.txt"):
            if not (folder / name).is_file():
                raise InputError(
                    folder / name,
                    "missing; expected a local stable-diffusion-v1-5 copy in "
                    "diffusers format (text_encoder/ and tokenizer/ folders)",
                )
        self.tokenizer = CLIPTokenizer.from_pretrained(folder / "tokenizer", local_files_only=True)
        self.text_encoder = CLIPTextModel.from_pretrained(folder / "text_encoder", local_files_only=True)
        self.text_encoder.eval().requires_grad_(False)
        self.width = self.text_encoder.config.hidden_size

    def train(self, mode: bool = True) -> StableDiffusionTextStates:
        return super().train(False)

    @torch.no_grad()
    def forward(self, texts: Sequence[str]) -> torch.Tensor:
        device = next(self.text_encoder.parameters()).device
        limit = self.tokenizer.model_max_length
        for text, ids in zip(texts, self.tokenizer(list(texts), truncation=False).input_ids, strict=True):
            if len(ids) > limit:
                warn_truncated_text(text, limit, "SD 1.5 text encoder")
        tokens = self.tokenizer(
            list(texts), padding="max_length", max_length=limit, truncation=True, return_tensors="pt"
        ).input_ids.to(device)
        return self.text_encoder(tokens).last_hidden_state
