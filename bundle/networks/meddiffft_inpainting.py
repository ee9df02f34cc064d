"""MedDiff-FT's inpainting diffusion model: a UNet that sees the noisy image, the inpainting mask and the masked image.

Stable Diffusion inpainting's layout: the UNet's input is ``cat([z_t, m, z_masked])`` along the channels, ``m`` the
binary mask on z's grid (nearest neighbour, as diffusers' inpainting pipeline resizes it) and ``z_masked`` the
diffusion variable of the image with the mask's inside set to 0 on the [-1, 1] scale (``image * (mask < 0.5)`` on the
scaled image, as the release and diffusers do; the ``tiny`` profile's inside is black instead). In latent space that
is 4 + 1 + 4 = 9 channels (SD inpainting's UNet: :func:`sd_inpaint_model`, the full profile); the ``tiny`` profile
diffuses on the pixels, 1 + 1 + 1 = 3. The text condition C goes to the UNet's cross-attention.

The model is a :class:`bundle.networks.conditions.ConditionedDiffusionModel` with the condition groups ``"text"``
(droppable: its null value is the empty text's C) and ``"inpaint"`` (mask and masked image, never dropped: both
branches of classifier-free guidance see them, as in diffusers).
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import UNet2DConditionModel
from torch import nn

from bundle.errors import InputError
from bundle.networks.conditions import Conditions
from bundle.networks.diffusion_space import LatentSpace, PixelSpace
from bundle.networks.guided_unet import load_unet, tiny_unet
from bundle.networks.medical_clip import MedicalClipEncoder
from bundle.networks.medsoft_diffusion import CLIP_FOLDER, UNET_FOLDER, require_folder, require_sd15_folder
from bundle.networks.text_states import ClipTowerTextStates, StableDiffusionTextStates
from bundle.utils.files import read_json_object
from bundle.weights.layouts import SD15_INPAINT_HOW

FINETUNE_CHOICES = ("full", "lora")
LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")  # every attention's projections, self- and cross-attention
BASE_FILE = "base_model.json"
"""A saved latent model's record of its base folder (the frozen VAE and text encoder are read from there)."""
PROMPT_MODES = ("entry", "fixed")
RELEASE_PROMPT = "a photo of hta"
"""The authors' release's one prompt for every image (DreamBooth style: a rare token, "hta")."""


class LesionPrompt:
    """The text the inpainting model is conditioned on, per case, in fine-tuning and in the pair job alike.

    Args:
        mode: ``"entry"``: the case's own text (the lesion's description in the datalist); ``"fixed"``: ``text`` for
            every case, as the release does.
        text: the fixed prompt (``"fixed"`` only).
    """

    def __init__(self, mode: str = "entry", text: str = RELEASE_PROMPT) -> None:
        if mode not in PROMPT_MODES:
            raise ValueError(f"prompt mode must be one of {PROMPT_MODES}, got {mode!r}")
        if mode == "fixed" and not str(text).strip():
            raise ValueError("the fixed prompt is empty")
        self.mode, self.text = mode, str(text)

    def __call__(self, texts: Sequence[str]) -> list[str]:
        """The prompts of cases whose own texts are ``texts``."""
        return [str(text) for text in texts] if self.mode == "entry" else [self.text] * len(texts)


class InpaintingDiffusion(nn.Module):
    """An inpainting UNet (``in_channels`` = 2 x the space's channels + 1) with its text condition and space.

    Args:
        unet: the inpainting ``UNet2DConditionModel``; it trains in full.
        text_states: texts -> the UNet's text condition C ``(B, L, D)`` (frozen).
        space: :class:`PixelSpace` or :class:`LatentSpace`.
        base_dir: the SD inpainting folder the frozen VAE and text encoder come from (:func:`sd_inpaint_model`);
            ``None`` for the ``tiny`` profile.
        masked_value: what the mask's inside becomes in the masked image, in the images' [0, 1]: 0.5 (mid grey,
            0 after the [-1, 1] scaling: what SD inpainting was trained with, diffusers' ``image * (mask < 0.5)`` on
            the scaled image) or 0 (black: the ``tiny`` profile's, which its stand-ins were trained with).
    """

    condition_groups = ("text",)

    def __init__(
        self,
        unet: UNet2DConditionModel,
        text_states: nn.Module,
        space: PixelSpace | LatentSpace,
        base_dir: str | os.PathLike | None = None,
        masked_value: float = 0.5,
    ) -> None:
        super().__init__()
        channels = space.channels
        if unet.config.in_channels != 2 * channels + 1 or unet.config.out_channels != channels:
            raise ValueError(
                f"an inpainting UNet in a space of {channels} channel(s) needs {2 * channels + 1} inputs and "
                f"{channels} outputs, got {unet.config.in_channels} and {unet.config.out_channels}"
            )
        self.unet = unet
        self.text_states = text_states.requires_grad_(False)
        self.space = space
        self.base_dir = None if base_dir is None else Path(base_dir).absolute()
        self.masked_value = masked_value

    def with_finetune(self, finetune: str = "full", lora_rank: int = 8) -> InpaintingDiffusion:
        """Choose what fine-tuning trains, in place: ``"full"`` (the whole UNet: the authors' release) or ``"lora"``
        (peft LoRA of rank ``lora_rank`` on :data:`LORA_TARGETS` of the UNet; the base UNet frozen). Returns self."""
        if finetune not in FINETUNE_CHOICES:
            raise ValueError(f"finetune must be one of {FINETUNE_CHOICES}, got {finetune!r}")
        if finetune == "lora":
            from peft import LoraConfig

            self.unet.add_adapter(
                LoraConfig(
                    r=lora_rank, lora_alpha=lora_rank, init_lora_weights="gaussian", target_modules=list(LORA_TARGETS)
                )
            )
        for name, parameter in self.unet.named_parameters():
            parameter.requires_grad_(finetune == "full" or "lora_" in name)
        return self

    @torch.no_grad()
    def conditions(self, texts: Sequence[str], images: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """``"text"``: C ``(B, L, D)``; ``"inpaint"``: ``cat([m, z_masked])`` ``(B, 1 + C, h, w)`` of the images
        ``(B, 1, H, W)`` in [0, 1] and their masks ``(B, 1, H, W)`` (above 0.5: the region to paint, which is
        ``masked_value`` in the masked image)."""
        if len(texts) != images.shape[0]:
            raise ValueError(f"{len(texts)} texts for {images.shape[0]} images")
        inside = (mask > 0.5).to(images.dtype)
        masked = self.space.encode(images * (1.0 - inside) + self.masked_value * inside)
        small = F.interpolate(inside, size=masked.shape[-2:], mode="nearest")
        return {"text": self.text_states(list(texts)), "inpaint": torch.cat([small, masked], dim=1)}

    @torch.no_grad()
    def null_conditions(self, batch_size: int) -> dict[str, torch.Tensor]:
        """The dropped text: the empty text's C."""
        return {"text": self.text_states([""]).expand(batch_size, -1, -1)}

    def forward(self, latents: torch.Tensor, timesteps: torch.Tensor, conditions: Conditions) -> torch.Tensor:
        """Predicted noise ``(B, C, h, w)`` for ``latents`` ``(B, C, h, w)`` given :meth:`conditions`."""
        sample = torch.cat([latents, conditions["inpaint"].to(latents.dtype)], dim=1)
        return self.unet(sample, timesteps, encoder_hidden_states=conditions["text"]).sample

    def save(self, folder: str | os.PathLike) -> None:
        """The fine-tuned model as a folder: ``unet/`` (diffusers, safetensors; a LoRA merged into its weights) and
        what rebuilds the frozen rest: ``clip/`` (the ``tiny`` profile's medical CLIP) or ``base_model.json`` (the
        SD inpainting folder whose VAE and text encoder it uses; they are not copied)."""
        if self.base_dir is None and not isinstance(self.text_states, ClipTowerTextStates):
            raise ValueError("only a tiny model or one from sd_inpaint_model (its base folder known) can be saved")
        folder = Path(folder)
        unet = self.unet
        if getattr(unet, "_hf_peft_config_loaded", False):  # LoRA: saved merged into a plain UNet
            unet = copy.deepcopy(unet)
            unet.fuse_lora()
            unet.unload_lora()
        unet.save_pretrained(folder / UNET_FOLDER, safe_serialization=True)
        if self.base_dir is not None:
            (folder / BASE_FILE).write_text(json.dumps({"sd_inpaint_dir": str(self.base_dir)}, indent=2) + "\n")
        else:
            self.text_states.encoder.save_local_dir(folder / CLIP_FOLDER)

    @classmethod
    def load(cls, folder: str | os.PathLike, sd_inpaint_dir: str | os.PathLike | None = None) -> InpaintingDiffusion:
        """A model :meth:`save` wrote (the stand-in foundation to fine-tune, the fine-tuned model to sample).

        ``sd_inpaint_dir``: for a latent model, the SD inpainting folder its VAE and text encoder come from
        (default: the one ``base_model.json`` records, the folder it was fine-tuned from)."""
        how = "fine-tune a model first (configs/meddiffft_finetune.json; the tiny profile's stand-in foundation: "
        how += "configs/meddiffft_pretrain.json)"
        folder = require_folder(folder, (f"{UNET_FOLDER}/config.json",), how)
        if (folder / CLIP_FOLDER).exists() and sd_inpaint_dir is not None:
            raise InputError(folder, "a tiny-profile model (it holds clip/), not one fine-tuned from SD inpainting")
        if (folder / BASE_FILE).is_file() or sd_inpaint_dir is not None:
            if sd_inpaint_dir is None:
                record = read_json_object(folder / BASE_FILE, "the base model record", hint=how)
                if not isinstance(record.get("sd_inpaint_dir"), str):
                    raise InputError(folder / BASE_FILE, "no 'sd_inpaint_dir': not a record save() wrote")
                sd_inpaint_dir = record["sd_inpaint_dir"]
            return sd_inpaint_model(sd_inpaint_dir, unet_dir=folder / UNET_FOLDER)
        folder = require_folder(folder, (CLIP_FOLDER,), f"neither {BASE_FILE} nor {CLIP_FOLDER}/ found; {how}")
        clip_encoder = MedicalClipEncoder.from_local_dir(folder / CLIP_FOLDER)
        return cls(load_unet(folder / UNET_FOLDER), ClipTowerTextStates(clip_encoder), PixelSpace(), masked_value=0.0)


def sd_inpaint_model(
    sd_inpaint_dir: str | os.PathLike, unet_dir: str | os.PathLike | None = None
) -> InpaintingDiffusion:
    """The full profile: Stable Diffusion inpainting from a local folder in diffusers format (SD 1.5's layout:
    ``unet/`` of 2 x 4 + 1 = 9 inputs, ``vae/``, ``text_encoder/``, ``tokenizer/``, ``scheduler/``).

    The diffusion runs in the folder's VAE's latent space (:class:`LatentSpace`, frozen), C is its CLIP text
    encoder's token states (:class:`StableDiffusionTextStates`, frozen), the UNet is the folder's (or ``unet_dir``'s,
    a fine-tuned one :meth:`InpaintingDiffusion.save` wrote) and trains as
    :meth:`InpaintingDiffusion.with_finetune` chooses. The layout and the configs' agreement (text width, 9 inputs)
    are checked from the config files before any weights are read; ``scripts/check_weights.py --profile
    sd15_inpaint`` (which the full-profile configs run first) also checks SD 1.5's sizes and the tensors' shapes.

    Raises:
        InputError: a file of the layout is missing (named) or a config cannot be read.
        ValueError: the UNet is not an inpainting UNet of the VAE's latents or does not fit the text encoder.
    """
    folder = require_sd15_folder(sd_inpaint_dir, latent=True, inpainting=True, how=SD15_INPAINT_HOW)
    unet = load_unet(folder / UNET_FOLDER if unet_dir is None else unet_dir)
    return InpaintingDiffusion(unet, StableDiffusionTextStates(folder), LatentSpace.from_folder(folder), folder)


def tiny_inpainting_model(
    spatial_size: int = 48,
    clip_encoder: MedicalClipEncoder | None = None,
    unet_channels: Sequence[int] = (32, 64, 64),
    seed: int = 0,
) -> InpaintingDiffusion:
    """The ``tiny`` profile: pixel space, a random 3-channel-input UNet, C from the small medical CLIP's text tower."""
    clip_encoder = clip_encoder or MedicalClipEncoder.tiny(seed=seed)
    unet = tiny_unet(
        sample_size=spatial_size,
        in_channels=2 * PixelSpace.channels + 1,
        out_channels=PixelSpace.channels,
        block_out_channels=unet_channels,
        cross_attention_dim=clip_encoder.text_state_dim,
        seed=seed,
    )
    return InpaintingDiffusion(unet, ClipTowerTextStates(clip_encoder), PixelSpace(), masked_value=0.0)
