"""Where the diffusion runs: on the pixels themselves (the ``tiny`` profile) or in a VAE's latent space (SD 1.5,
PixArt-alpha).

Both map a model-grid image ``(B, 1, H, W)`` in [0, 1] to the diffusion variable z and back (``decode``: frozen,
clamped; ``images``: on the autograd graph and unclamped, for a loss on decoded estimates), and bring the
soft mask to z's grid (the paper's m_b, "the downsampled version of M_b").
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL
from torch import nn

from bundle.errors import InputError


class PixelSpace(nn.Module):
    """z = 2 x - 1 on the model grid; the mask is used as it is."""

    channels = 1

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return images * 2.0 - 1.0

    def images(self, latents: torch.Tensor) -> torch.Tensor:
        return (latents + 1.0) / 2.0

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.images(latents).clamp(0.0, 1.0)

    def mask(self, soft_mask: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        return soft_mask


class LatentSpace(nn.Module):
    """A frozen ``AutoencoderKL``: grey images are repeated to RGB in [-1, 1]; z is the scaled posterior mean.

    The mask is area-averaged to the latent grid (8x smaller for SD 1.5's VAE). The VAE may hold bf16/fp16
    weights (:func:`bundle.networks.speed_options.cast_frozen_weights`): its inputs are cast to them, and z and
    the decoded images come back in float32.
    """

    def __init__(self, vae: AutoencoderKL) -> None:
        super().__init__()
        self.vae = vae.eval().requires_grad_(False)
        self.channels = vae.config.latent_channels
        self.scaling_factor = vae.config.scaling_factor

    @classmethod
    def from_folder(cls, folder: str | os.PathLike, model: str = "stable-diffusion-v1-5") -> LatentSpace:
        """The VAE of a local diffusers model folder (``<folder>/vae``: SD 1.5's, or PixArt-alpha's with ``model``
        naming it in the error for a missing file)."""
        vae_folder = Path(folder) / "vae"
        for name in ("config.json", "diffusion_pytorch_model.safetensors"):
            if not (vae_folder / name).is_file():
                raise InputError(
                    vae_folder,
                    f"{name} is missing; expected the 'vae' folder of a local {model} copy in diffusers format",
                )
        return cls(AutoencoderKL.from_pretrained(vae_folder, local_files_only=True, use_safetensors=True))

    def train(self, mode: bool = True) -> LatentSpace:
        return super().train(False)

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        rgb = images.repeat(1, 3, 1, 1) * 2.0 - 1.0
        return self.vae.encode(rgb.to(self.vae.dtype)).latent_dist.mean.float() * self.scaling_factor

    def images(self, latents: torch.Tensor) -> torch.Tensor:
        """The grey images of ``latents`` through the frozen decoder, differentiable in ``latents``."""
        rgb = self.vae.decode((latents / self.scaling_factor).to(self.vae.dtype)).sample.float()
        return (rgb.mean(dim=1, keepdim=True) + 1.0) / 2.0

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.images(latents).clamp(0.0, 1.0)

    def mask(self, soft_mask: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        return F.interpolate(soft_mask, size=latents.shape[-2:], mode="area")
