"""MedSoft-Diffusion's networks together: frozen medical CLIP, MSC, text condition, guided UNet, diffusion space.

The model is a :class:`bundle.networks.conditions.ConditionedDiffusionModel` with two condition groups, ``"text"``
(C) and ``"msc"`` (e_MSC): it gives a batch's conditions (:meth:`MedSoftDiffusion.conditions`), their null values
for classifier-free guidance and condition dropout (:meth:`MedSoftDiffusion.null_conditions`), and the noise the
guided UNet predicts from them (:meth:`MedSoftDiffusion.forward`).
Trained weights live in one folder (``models/``): see :func:`save_trained` and :func:`load_trained`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from bundle.errors import InputError
from bundle.networks.conditions import Conditions
from bundle.networks.diffusion_space import LatentSpace, PixelSpace
from bundle.networks.guided_unet import GuidedUNet, load_unet, load_unet_weights, unet_architecture
from bundle.networks.medical_clip import MedicalClipEncoder
from bundle.networks.semantic_controller import MedicalSemanticController
from bundle.networks.text_states import ClipTowerTextStates
from bundle.utils.files import read_json_object

CLIP_FOLDER = "clip"
CONTROLLER_FILE = "msc.safetensors"
UNET_FOLDER = "unet"
ADAPTER_FILE = "msc_adapter.safetensors"
MODEL_FILE = "model.pt"
"""The file MONAI's ``monai.bundle.load`` reads: a plain tensor state dict (``torch.load(weights_only=True)``)."""


class MedSoftDiffusion(nn.Module):
    """The guided UNet and everything that conditions it; only the UNet's chosen parameters can train.

    Args:
        clip_encoder: frozen medical CLIP (e_t of the text, e_v of the masked image).
        controller: the pretrained MSC (frozen here: it is trained in stage 1).
        unet: the guided UNet.
        text_states: texts -> the UNet's text condition C ``(B, L, D)``.
        space: :class:`PixelSpace` or :class:`LatentSpace`.
    """

    condition_groups = ("text", "msc")

    def __init__(
        self,
        clip_encoder: MedicalClipEncoder,
        controller: MedicalSemanticController,
        unet: GuidedUNet,
        text_states: nn.Module,
        space: PixelSpace | LatentSpace,
    ) -> None:
        super().__init__()
        self.clip_encoder = clip_encoder
        self.controller = controller.eval().requires_grad_(False)
        self.unet = unet
        self.text_states = text_states
        self.space = space
        self._empty_text: dict[torch.device, torch.Tensor] = {}

    def train(self, mode: bool = True) -> MedSoftDiffusion:
        super().train(mode)
        self.controller.eval()
        return self

    @torch.no_grad()
    def conditions(self, texts: Sequence[str], masked_images: torch.Tensor) -> dict[str, torch.Tensor]:
        """The conditions of a batch: ``"text"``, the text condition C ``(B, L, D)``, and ``"msc"``, e_MSC as the
        UNet's one MSC token ``(B, 1, E)``."""
        missing = [i for i, text in enumerate(texts) if not isinstance(text, str) or not text.strip()]
        if missing:
            raise ValueError(f"every item needs a lesion text; items {missing} have none")
        text_feature = self.clip_encoder.encode_text(texts)
        masked_feature = self.clip_encoder.encode_image(masked_images)
        return {"text": self.text_states(texts), "msc": self.controller(text_feature, masked_feature)[:, None]}

    @torch.no_grad()
    def null_conditions(self, batch_size: int) -> dict[str, torch.Tensor]:
        """The dropped conditions: the empty text's C (computed once per device) and an all-zero MSC token."""
        device = next(self.unet.parameters()).device
        if device not in self._empty_text:
            self._empty_text[device] = self.text_states([""])
        empty = self._empty_text[device].expand(batch_size, -1, -1)
        tokens = torch.zeros(batch_size, 1, self.controller.embed_dim, device=empty.device)
        return {"text": empty, "msc": tokens}

    def forward(self, latents: torch.Tensor, timesteps: torch.Tensor, conditions: Conditions) -> torch.Tensor:
        """Predicted noise epsilon for ``latents`` ``(B, C, h, w)`` given :meth:`conditions` (or null ones)."""
        return self.unet(latents, timesteps, conditions["text"], conditions["msc"])


def tiny_model(
    spatial_size: int = 48,
    clip_encoder: MedicalClipEncoder | None = None,
    controller: MedicalSemanticController | None = None,
    unet_channels: Sequence[int] = (32, 64, 64),
    scale: float = 1.0,
    trainable: str = "full",
    lora_rank: int = 4,
    seed: int = 0,
) -> MedSoftDiffusion:
    """The ``tiny`` profile: pixel space, a small random UNet trained in full, C from the small CLIP's text tower.

    ``scale``, ``trainable`` and ``lora_rank``: see :class:`GuidedUNet`."""
    from bundle.networks.guided_unet import tiny_unet

    clip_encoder = clip_encoder or MedicalClipEncoder.tiny(seed=seed)
    controller = controller or MedicalSemanticController(clip_encoder.embed_dim)
    base = tiny_unet(
        sample_size=spatial_size,
        in_channels=PixelSpace.channels,
        block_out_channels=unet_channels,
        cross_attention_dim=clip_encoder.text_state_dim,
        seed=seed,
    )
    unet = GuidedUNet(base, msc_dim=controller.embed_dim, scale=scale, trainable=trainable, lora_rank=lora_rank)
    return MedSoftDiffusion(clip_encoder, controller, unet, ClipTowerTextStates(clip_encoder), PixelSpace())


def sd15_model(
    sd15_dir: str | os.PathLike,
    clip_encoder: MedicalClipEncoder,
    controller: MedicalSemanticController,
    scale: float = 1.0,
    trainable: str = "adapter",
    lora_rank: int = 4,
    latent: bool = True,
) -> MedSoftDiffusion:
    """The ``sd15`` profile: Stable Diffusion 1.5's UNet guided by the MSC, its CLIP text encoder for C, its VAE.

    Everything comes from ``sd15_dir``, a local copy of stable-diffusion-v1-5 in diffusers format; the folder
    layout and the sizes are checked from the config files before any weights are read.

    Args:
        sd15_dir: the SD 1.5 folder (``unet/``, ``vae/``, ``text_encoder/``, ``tokenizer/``, ``scheduler/``).
        clip_encoder: the frozen medical CLIP (BiomedCLIP).
        controller: the stage-1 MSC; its width is the MSC token width of the adapter.
        scale: gamma, the weight of the MSC attention term.
        trainable, lora_rank: see :class:`GuidedUNet` (``"adapter"``: W'_k, W'_v only, the paper's setting).
        latent: diffuse in the VAE's latent space (SD 1.5). ``False`` diffuses on the pixels (no ``vae/``
            needed), which only fits a custom UNet of 1 input channel saved in SD 1.5's layout; SD 1.5's own
            UNet has 4 and is refused.

    Raises:
        InputError: a file of the layout is missing (the first one is named; ``scripts/check_weights.py``
            names them all) or a config cannot be read.
        ValueError: the UNet's cross-attention width is not the text encoder's hidden size, its input channels
            are not the diffusion space's, or the controller does not fit the medical CLIP.
    """
    from bundle.networks.text_states import StableDiffusionTextStates

    sd15_dir = require_sd15_folder(sd15_dir, latent)
    if controller.embed_dim != clip_encoder.embed_dim:
        raise ValueError(
            f"the controller's width {controller.embed_dim} is not the medical CLIP's feature size "
            f"{clip_encoder.embed_dim}; train stage 1 with this CLIP"
        )
    unet = GuidedUNet(
        load_unet(sd15_dir / "unet"),
        msc_dim=controller.embed_dim,
        scale=scale,
        trainable=trainable,
        lora_rank=lora_rank,
    )
    space = LatentSpace.from_folder(sd15_dir) if latent else PixelSpace()
    return MedSoftDiffusion(clip_encoder, controller, unet, StableDiffusionTextStates(sd15_dir), space)


def require_sd15_folder(
    sd15_dir: str | os.PathLike, latent: bool = True, inpainting: bool = False, how: str | None = None
) -> Path:
    """``sd15_dir`` as a Path, after checking from its config files (no weights read) that it has SD 1.5's diffusers
    layout (:func:`bundle.weights.layouts.sd15_files`), that the UNet's cross-attention width is the text encoder's
    hidden size and that its channels fit the diffusion space: the VAE's latent channels (``latent``; ``inpainting``:
    2 x latent + 1 inputs, noisy latents, mask and masked-image latents) or 1 on the pixels.

    Raises:
        InputError: a file of the layout is missing (the first one is named) or a config cannot be read.
        ValueError: the UNet does not fit the text encoder or the diffusion space.
    """
    from bundle.weights.layouts import SD15_HOW, sd15_files

    how = how or SD15_HOW  # the layout is defined once, in bundle.weights.layouts (scripts/check_weights.py checks it)

    def read_config(path: Path) -> dict:
        return read_json_object(path, "the config", hint=how)

    sd15_dir = require_folder(sd15_dir, sd15_files(latent), how)
    unet_config = read_config(sd15_dir / "unet/config.json")
    text_config = read_config(sd15_dir / "text_encoder/config.json")
    cross_dims = unet_config.get("cross_attention_dim")
    cross_dims = set(cross_dims) if isinstance(cross_dims, (list, tuple)) else {cross_dims}
    text_width = text_config.get("hidden_size")
    if cross_dims != {text_width}:
        raise ValueError(
            f"{sd15_dir}: the UNet's cross_attention_dim {sorted(cross_dims, key=str)} is not the text "
            f"encoder's hidden_size {text_width}; unet/ and text_encoder/ must come from one model"
        )
    channels = read_config(sd15_dir / "vae/config.json").get("latent_channels") if latent else PixelSpace.channels
    inputs = 2 * channels + 1 if inpainting and isinstance(channels, int) else channels
    if unet_config.get("in_channels") != inputs or unet_config.get("out_channels") != channels:
        space = f"the VAE's {channels} latent channels" if latent else f"pixel space ({channels} channel)"
        need = f"{inputs} inputs (noisy latents, mask, masked-image latents) and {channels}" if inpainting else channels
        raise ValueError(
            f"{sd15_dir / 'unet/config.json'}: the UNet has {unet_config.get('in_channels')} input and "
            f"{unet_config.get('out_channels')} output channels; {space} need {need}"
        )
    return sd15_dir


def require_folder(folder: str | os.PathLike, names: Sequence[str], how: str) -> Path:
    """``folder`` as a Path, after checking that each of ``names`` exists in it."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(folder, f"folder not found; {how}")
    for name in names:
        if not (folder / name).exists():
            raise InputError(folder / name, f"missing; {how}")
    return folder


def save_trained(
    model: MedSoftDiffusion, models_dir: str | os.PathLike, save_base_unet: bool = True, unet: GuidedUNet | None = None
) -> None:
    """Write the trained parts: the base UNet (unless it is a pretrained one left frozen) and the adapter, and
    ``model.pt`` for ``monai.bundle.load`` (:func:`model_state_dict`).

    ``unet`` replaces the model's own (e.g. its moving average).
    """
    models_dir = Path(models_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    unet = unet or model.unet
    if save_base_unet:
        unet.save_base(models_dir / UNET_FOLDER)
    unet.save_adapter(models_dir / ADAPTER_FILE)
    torch.save(model_state_dict(model, whole=save_base_unet, unet=unet), models_dir / MODEL_FILE)


def model_state_dict(
    model: MedSoftDiffusion, whole: bool = True, unet: GuidedUNet | None = None
) -> dict[str, torch.Tensor]:
    """``models/model.pt``'s tensors, named as in ``model.state_dict()`` so MONAI's ``copy_model_state`` loads them
    into the bundle's ``network_def``: the whole model (``whole``, the ``tiny`` profile), else only what stage 1 and
    2 trained on top of pretrained parts (``sd15``): the MSC and the guided UNet's adapter (W'_k / W'_v, LoRA).
    ``unet`` replaces the model's own (e.g. its moving average)."""
    unet = unet or model.unet
    if whole:
        state = {name: t for name, t in model.state_dict().items() if not name.startswith("unet.")}
        state.update({f"unet.{name}": t for name, t in unet.state_dict().items()})
    else:
        state = {f"controller.{name}": t for name, t in model.controller.state_dict().items()}
        state.update({f"unet.unet.{name}": t for name, t in unet.adapter_state_dict().items()})
    return {name: t.detach().cpu().contiguous() for name, t in state.items()}


def trained_architecture(
    models_dir: str | os.PathLike,
    stage1_dir: str | os.PathLike | None = None,
    clip_encoder: MedicalClipEncoder | None = None,
    text_states: nn.Module | None = None,
    space: PixelSpace | LatentSpace | None = None,
    base_unet_dir: str | os.PathLike | None = None,
    scale: float | None = None,
) -> MedSoftDiffusion:
    """The architecture of the model stages 1 and 2 left in ``models_dir``, without stage 2's weights.

    The frozen parts come with their weights, as pretrained parts of a network definition do: the medical CLIP,
    the stage-1 MSC and a pretrained base UNet (``base_unet_dir``). What stage 2 trained is built from its saved
    settings only: the guided UNet's adapter (``msc_adapter.safetensors``'s settings: E, gamma, trainable, LoRA
    rank) and, when stage 2 trained the base UNet (``base_unet_dir`` None), the base from ``models_dir/unet``'s
    ``config.json``. :func:`load_trained_weights` loads those weights (:func:`load_trained` does both).

    Args:
        stage1_dir: where stage 1 left the MSC (and the ``tiny`` CLIP); defaults to ``models_dir``.
        clip_encoder: defaults to the one stage 1 saved in ``stage1_dir/clip`` (the ``tiny`` profile).
        text_states: defaults to the clip encoder's text tower.
        space: defaults to pixel space.
        base_unet_dir: a pretrained base UNet folder left frozen in stage 2 (for SD 1.5: ``<sd15>/unet``); ``None``:
            the base UNet stage 2 trained, ``models_dir/unet``.
        scale: overrides the stored gamma (e.g. 0 for the no-MSC ablation).
    """
    how = "train stage 1 (configs/train_msc.json) and stage 2 (configs/train.json) first, or run `make demo`"
    models_dir = require_folder(models_dir, (ADAPTER_FILE,), how)
    stage1_dir = require_folder(stage1_dir or models_dir, (CONTROLLER_FILE,), how)
    clip_encoder = clip_encoder or MedicalClipEncoder.from_local_dir(stage1_dir / CLIP_FOLDER)
    controller = MedicalSemanticController.load(stage1_dir / CONTROLLER_FILE)
    if controller.embed_dim != clip_encoder.embed_dim:  # a file of another architecture: refuse by name
        raise InputError(
            stage1_dir / CONTROLLER_FILE,
            f"a controller for {controller.embed_dim}-wide CLIP features, "
            f"but the medical CLIP gives {clip_encoder.embed_dim}",
        )
    settings = GuidedUNet.adapter_settings(models_dir / ADAPTER_FILE)
    if int(settings["msc_dim"]) != controller.embed_dim:
        raise InputError(
            models_dir / ADAPTER_FILE,
            f"an adapter for {settings['msc_dim']}-wide MSC tokens, but "
            f"{stage1_dir / CONTROLLER_FILE} makes {controller.embed_dim}",
        )
    base_dir = Path(base_unet_dir) if base_unet_dir is not None else models_dir / UNET_FOLDER
    base = load_unet(base_dir) if base_unet_dir is not None else unet_architecture(base_dir)
    text_states = text_states or ClipTowerTextStates(clip_encoder)
    space = space or PixelSpace()
    for name, needed, have in (
        ("cross_attention_dim", getattr(text_states, "width", None), "the text condition"),
        ("in_channels", getattr(space, "channels", None), "the diffusion space"),
    ):
        value = base.config.get(name)
        if needed is not None and (set(value) if isinstance(value, (list, tuple)) else {value}) != {needed}:
            raise InputError(
                base_dir / "config.json",
                f"a UNet of {name} {value}, but {have} needs {needed}: a UNet of another architecture",
            )
    unet = GuidedUNet(
        base,
        msc_dim=int(settings["msc_dim"]),
        scale=float(settings["scale"] if scale is None else scale),
        trainable=str(settings["trainable"]),
        lora_rank=int(settings["lora_rank"]),
    )
    model = MedSoftDiffusion(clip_encoder, controller, unet, text_states, space)
    return model.eval().requires_grad_(False)


def load_trained_weights(
    model: MedSoftDiffusion, models_dir: str | os.PathLike, base_unet_dir: str | os.PathLike | None = None
) -> MedSoftDiffusion:
    """Load what stage 2 trained into ``model`` (a :func:`trained_architecture`): the adapter and, unless the base
    UNet is a pretrained one (``base_unet_dir``), the base UNet's weights; returns ``model``."""
    models_dir = Path(models_dir)
    if base_unet_dir is None:
        load_unet_weights(model.unet, models_dir / UNET_FOLDER)
    model.unet.load_adapter(models_dir / ADAPTER_FILE)
    return model


def load_trained(
    models_dir: str | os.PathLike,
    stage1_dir: str | os.PathLike | None = None,
    clip_encoder: MedicalClipEncoder | None = None,
    text_states: nn.Module | None = None,
    space: PixelSpace | LatentSpace | None = None,
    base_unet_dir: str | os.PathLike | None = None,
    scale: float | None = None,
) -> MedSoftDiffusion:
    """The model stages 1 and 2 left in ``models_dir``, ready to sample: :func:`trained_architecture` with
    :func:`load_trained_weights` (see there for the arguments)."""
    model = trained_architecture(models_dir, stage1_dir, clip_encoder, text_states, space, base_unet_dir, scale)
    return load_trained_weights(model, models_dir, base_unet_dir)
