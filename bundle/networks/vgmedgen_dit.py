"""VG-MedGen's DiT backbone: diffusers' ``PixArtTransformer2DModel`` predicting the noise from condition tokens.

``tiny`` profile: :func:`tiny_pixart`, a small random PixArt on the pixels, trained in full. ``full`` profile:
PixArt-alpha 512 (:func:`load_pixart`, a local diffusers folder), frozen, with LoRA of rank 8 on the attention
projections (``trainable="lora"``, peft). diffusers 0.42.1's ``PixArtTransformer2DModel`` is not a
``PeftAdapterMixin``, so the adapter is injected with peft directly.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from diffusers import PixArtTransformer2DModel
from torch import nn

from bundle.errors import InputError

DIT_TRAINABLE = ("full", "lora")
LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
"""The attention projections of self- and cross-attention (the paper: "the projection parameters of the attention
layers"; the release also adapted the caption projection, adaLN, feed-forward and output layers)."""


def tiny_pixart(
    sample_size: int = 48,
    in_channels: int = 1,
    num_layers: int = 6,
    num_attention_heads: int = 4,
    attention_head_dim: int = 24,
    caption_channels: int = 96,
    patch_size: int = 2,
    seed: int = 0,
) -> PixArtTransformer2DModel:
    """A small random PixArt with a learned-sigma output (``2 * in_channels``, as PixArt-alpha); the global torch
    RNG state is left as it was."""
    width = num_attention_heads * attention_head_dim
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return PixArtTransformer2DModel(
            num_attention_heads=num_attention_heads,
            attention_head_dim=attention_head_dim,
            in_channels=in_channels,
            out_channels=2 * in_channels,
            num_layers=num_layers,
            cross_attention_dim=width,
            caption_channels=caption_channels,
            sample_size=sample_size,
            patch_size=patch_size,
            norm_type="ada_norm_single",
            use_additional_conditions=False,
        )


def load_pixart(folder: str | os.PathLike) -> PixArtTransformer2DModel:
    """PixArt's transformer from a local diffusers folder (the model folder with ``transformer/``, or that
    subfolder); nothing is downloaded."""
    folder = Path(folder)
    if (folder / "transformer").is_dir():
        folder = folder / "transformer"
    if not (folder / "config.json").is_file():
        raise InputError(folder / "config.json", "missing; expected a local PixArt-alpha copy in diffusers format")
    return PixArtTransformer2DModel.from_pretrained(folder, local_files_only=True)


class DiTDenoiser(nn.Module):
    """``(z_t, t, tokens) -> eps``: the PixArt transformer on condition tokens ``(B, T, caption_channels)``.

    Args:
        transformer: a ``PixArtTransformer2DModel``; with ``out_channels == 2 * in_channels`` (learned sigma) the
            noise is the first half of its output.
        trainable: ``"full"`` (every weight; the tiny profile's random base) or ``"lora"`` (the base frozen, LoRA of
            rank ``lora_rank`` on :data:`LORA_TARGETS` trains; peft).
        lora_rank: rank (and alpha) of the LoRA update.
    """

    def __init__(self, transformer: PixArtTransformer2DModel, trainable: str = "full", lora_rank: int = 8) -> None:
        super().__init__()
        if trainable not in DIT_TRAINABLE:
            raise ValueError(f"trainable must be one of {DIT_TRAINABLE}, got {trainable!r}")
        config = transformer.config
        self.channels = int(config.in_channels)
        if config.out_channels not in (self.channels, 2 * self.channels):
            raise ValueError(f"PixArt with {config.in_channels} inputs must have as many or twice as many outputs")
        self.trainable, self.lora_rank = trainable, int(lora_rank)
        if trainable == "lora":
            from peft import LoraConfig, inject_adapter_in_model

            lora = LoraConfig(r=self.lora_rank, lora_alpha=self.lora_rank, target_modules=list(LORA_TARGETS))
            transformer = inject_adapter_in_model(lora, transformer)
        for name, parameter in transformer.named_parameters():
            parameter.requires_grad_(trainable == "full" or "lora_" in name)
        self.transformer = transformer

    @property
    def caption_channels(self) -> int:
        return int(self.transformer.config.caption_channels)

    def forward(self, latents: torch.Tensor, timesteps: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        timesteps = torch.as_tensor(timesteps, device=latents.device).expand(latents.shape[0])
        output = self.transformer(
            latents,
            encoder_hidden_states=tokens,
            timestep=timesteps,
            added_cond_kwargs={"resolution": None, "aspect_ratio": None},
        ).sample
        return output[:, : self.channels]
