"""The Stable-Diffusion UNet with a decoupled cross-attention for the Medical Semantic Controller's feature.

Every cross-attention layer computes ``softmax(Q K^T / sqrt(d)) V + gamma * softmax(Q K'^T / sqrt(d)) V'`` with
``K' = e_MSC W'_k`` and ``V' = e_MSC W'_v`` (the paper's Eq. 5). That is exactly diffusers' IP-Adapter
attention, so this module only installs diffusers' pieces: ``IPAdapterAttnProcessor2_0`` in each cross-attention
layer, whose ``to_k_ip`` / ``to_v_ip`` are W'_k / W'_v and take e_MSC (width E) as it is. diffusers routes the
MSC token through ``encoder_hid_proj``; here that is the identity (``MultiIPAdapterImageProjection([Identity])``),
not IP-Adapter's image projection, so no untrained layer sits between e_MSC and W'_k / W'_v. e_MSC is one vector
(one token), so the softmax over its single key is 1: the term adds ``gamma * e_MSC W'_v`` at every position, and
W'_k, though trained as the paper says, receives no gradient. diffusers' ``save_pretrained`` does not describe
these additions, so they are saved and loaded explicitly (:meth:`GuidedUNet.save_adapter`).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import torch
from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import Attention, IPAdapterAttnProcessor2_0
from diffusers.models.embeddings import MultiIPAdapterImageProjection
from safetensors.torch import save_file

from bundle.errors import InputError, check_state_dict
from bundle.networks.weight_files import read_safetensors, safetensors_metadata

Trainable = Literal["adapter", "lora", "text_lora", "full"]
TRAINABLE_CHOICES = ("adapter", "lora", "text_lora", "full")
ADAPTER_MARKERS = (".processor.", "lora_")
PROJECTION_PREFIX = "encoder_hid_proj."  # adapter files of earlier versions held a projection before W'_k / W'_v
BASE_WEIGHTS = "diffusion_pytorch_model.safetensors"


def tiny_unet(
    sample_size: int = 48,
    in_channels: int = 1,
    block_out_channels: Sequence[int] = (32, 64, 64),
    cross_attention_dim: int = 64,
    attention_head_dim: int = 8,
    layers_per_block: int = 1,
    norm_num_groups: int = 8,
    seed: int = 0,
    out_channels: int | None = None,
) -> UNet2DConditionModel:
    """A small random-initialised ``UNet2DConditionModel`` of SD 1.5's block layout (the ``tiny`` profile).

    ``out_channels`` defaults to ``in_channels`` (an inpainting UNet has more inputs than outputs).

    The full-resolution level has no attention (as SD 1.5's would be too slow on a CPU at 64 px); every lower
    level and the middle block have cross-attention. Initialisation is deterministic given ``seed``.
    """
    levels = len(block_out_channels)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return UNet2DConditionModel(
            sample_size=sample_size,
            in_channels=in_channels,
            out_channels=in_channels if out_channels is None else out_channels,
            block_out_channels=tuple(block_out_channels),
            layers_per_block=layers_per_block,
            down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (levels - 1),
            up_block_types=("CrossAttnUpBlock2D",) * (levels - 1) + ("UpBlock2D",),
            cross_attention_dim=cross_attention_dim,
            attention_head_dim=attention_head_dim,
            norm_num_groups=norm_num_groups,
        )


def trainable_without_msc(trainable: Trainable) -> Trainable:
    """The parameter group of the "without MSC" ablation (gamma = 0, text conditioning alone) that corresponds to
    ``trainable`` in the full method: the adapter W'_k / W'_v becomes a LoRA on the text cross-attention's W_k /
    W_v in the same layers (``"text_lora"``), so the ablation also adapts how the UNet reads its condition; the
    other groups stay (their MSC part is frozen by gamma = 0)."""
    if trainable not in TRAINABLE_CHOICES:
        raise ValueError(f"trainable must be one of {TRAINABLE_CHOICES}, got {trainable!r}")
    return "text_lora" if trainable == "adapter" else trainable


def load_unet(folder: str | os.PathLike) -> UNet2DConditionModel:
    """A diffusers UNet from a local folder (``config.json`` + weights), e.g. ``<SD 1.5>/unet`` or ``models/unet``."""
    folder = Path(folder)
    _require_unet_files(folder)
    try:
        return UNet2DConditionModel.from_pretrained(folder, local_files_only=True, use_safetensors=True)
    except (OSError, ValueError, RuntimeError, KeyError, TypeError) as error:  # weights of another config
        first = re.split(r"\.\s", str(error).strip(), maxsplit=1)[0] or type(error).__name__  # its first sentence
        raise InputError(
            folder / BASE_WEIGHTS,
            f"does not fit {folder / 'config.json'}: weights of another architecture or a damaged file ({first[:300]})",
        ) from error


def unet_architecture(folder: str | os.PathLike) -> UNet2DConditionModel:
    """A diffusers UNet built from a folder's ``config.json`` alone (random weights; :func:`load_unet_weights`
    reads its weights); the folder must hold both files, as for :func:`load_unet`."""
    folder = Path(folder)
    _require_unet_files(folder)
    try:
        return UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder))
    except (OSError, ValueError, TypeError, KeyError) as error:  # not a UNet config
        raise InputError(
            folder / "config.json", f"not a diffusers UNet config ({type(error).__name__}: {error})"
        ) from error


def load_unet_weights(unet: GuidedUNet, folder: str | os.PathLike) -> None:
    """Load the base UNet weights of ``folder`` (written by :meth:`GuidedUNet.save_base`) into ``unet``'s base.

    Raises:
        InputError: naming the weight file when it is not safetensors or its tensors do not fit the architecture
            of ``folder``'s ``config.json``.
    """
    folder = Path(folder)
    weights, config = folder / BASE_WEIGHTS, folder / "config.json"
    problem = None
    try:
        tensors = read_safetensors(weights)
        check_state_dict(weights, tensors, unet.base_state_dict(), "UNet")
    except InputError as error:
        problem = error.problem
    if problem is not None:
        first = re.split(r"\.\s", problem.strip(), maxsplit=1)[0]  # its first sentence
        raise InputError(
            weights, f"does not fit {config}: weights of another architecture or a damaged file ({first[:300]})"
        )
    unet.unet.load_state_dict(tensors, strict=False)


def _require_unet_files(folder: Path) -> None:
    for name in ("config.json", BASE_WEIGHTS):
        if not (folder / name).is_file():
            raise InputError(
                folder,
                f"{name} is missing; expected a diffusers UNet folder (for SD 1.5: the 'unet' "
                "folder of a local copy of stable-diffusion-v1-5 in diffusers format)",
            )


def cross_attention_layers(unet: UNet2DConditionModel) -> list[tuple[str, Attention]]:
    """The UNet's cross-attention layers by module name (16 in SD 1.5)."""
    return [
        (name, module)
        for name, module in unet.named_modules()
        if isinstance(module, Attention) and module.is_cross_attention
    ]


class GuidedUNet(torch.nn.Module):
    """A ``UNet2DConditionModel`` whose cross-attention layers also attend to the MSC tokens with weight ``scale``.

    Args:
        unet: the base UNet (SD 1.5's, or :func:`tiny_unet`); modified in place.
        msc_dim: width E of the MSC tokens.
        scale: gamma, the weight of the MSC attention term (0 gives the base UNet exactly: diffusers then skips
            the term, so W'_k / W'_v take no part and are frozen whatever ``trainable`` says).
        trainable: which parameters train: ``"adapter"`` (W'_k, W'_v only: the paper), ``"lora"`` (the adapter
            plus LoRA of rank ``lora_rank`` on the base attention; needs peft), ``"text_lora"`` (LoRA of rank
            ``lora_rank`` on the *text* cross-attention's keys and values, W_k / W_v of the same layers: the
            "without MSC" ablation's counterpart of the adapter, see :func:`trainable_without_msc`), ``"full"``
            (everything; the ``tiny`` profile, whose base UNet starts from random weights).
        lora_rank: rank of the LoRA update for ``trainable="lora"`` and ``"text_lora"``.
    """

    def __init__(
        self,
        unet: UNet2DConditionModel,
        msc_dim: int,
        scale: float = 1.0,
        trainable: Trainable = "adapter",
        lora_rank: int = 4,
    ) -> None:
        super().__init__()
        if trainable not in TRAINABLE_CHOICES:
            raise ValueError(f"trainable must be one of {TRAINABLE_CHOICES}, got {trainable!r}")
        self.base_config = dict(unet.config)
        self.msc_dim = int(msc_dim)
        self.trainable = trainable
        self.lora_rank = int(lora_rank)
        unet.encoder_hid_proj = MultiIPAdapterImageProjection([torch.nn.Identity()])  # e_MSC goes in as it is
        unet.register_to_config(encoder_hid_dim_type="ip_image_proj", encoder_hid_dim=self.msc_dim)
        for _, attention in cross_attention_layers(unet):
            processor = IPAdapterAttnProcessor2_0(
                hidden_size=attention.to_k.out_features, cross_attention_dim=self.msc_dim, num_tokens=(1,), scale=scale
            )
            with torch.no_grad():
                for extra, base in ((processor.to_k_ip[0], attention.to_k), (processor.to_v_ip[0], attention.to_v)):
                    if extra.weight.shape == base.weight.shape:
                        extra.weight.copy_(base.weight)
            attention.set_processor(processor)
        self.unet = unet
        if trainable in ("lora", "text_lora"):
            from peft import LoraConfig

            targets = (
                ["to_q", "to_k", "to_v", "to_out.0"]
                if trainable == "lora"
                else [
                    f"{name}.{projection}"
                    for name, _ in cross_attention_layers(unet)
                    for projection in ("to_k", "to_v")
                ]
            )
            unet.add_adapter(
                LoraConfig(
                    r=self.lora_rank, lora_alpha=self.lora_rank, init_lora_weights="gaussian", target_modules=targets
                )
            )
        self.scale = scale
        self.set_trainable(trainable)

    @property
    def adapter_processors(self) -> list[IPAdapterAttnProcessor2_0]:
        return [attention.processor for _, attention in cross_attention_layers(self.unet)]

    @property
    def scale(self) -> float:
        return float(self.adapter_processors[0].scale[0])

    @scale.setter
    def scale(self, value: float) -> None:
        for processor in self.adapter_processors:
            processor.scale = [float(value)]

    def set_trainable(self, trainable: Trainable) -> None:
        """Freeze everything, then unfreeze the parameter group that ``trainable`` names (W'_k / W'_v only while
        gamma is not 0: with gamma 0 the MSC attention is skipped, and a parameter that requires a gradient but
        never gets one stops DistributedDataParallel)."""
        msc_used = self.scale != 0
        for name, parameter in self.unet.named_parameters():
            if ".processor.to_k_ip." in name or ".processor.to_v_ip." in name:
                trains = msc_used and trainable != "text_lora"
            else:
                trains = trainable == "full" or (trainable in ("lora", "text_lora") and "lora_" in name)
            parameter.requires_grad_(trains)

    def forward(
        self, sample: torch.Tensor, timestep: torch.Tensor | int, text_states: torch.Tensor, msc_tokens: torch.Tensor
    ) -> torch.Tensor:
        """Predicted noise ``(B, C, H, W)`` for ``sample`` ``(B, C, H, W)`` at ``timestep``.

        Args:
            text_states: the text condition C, ``(B, L, cross_attention_dim)``.
            msc_tokens: the MSC feature e_MSC as one token ``(B, 1, msc_dim)`` (zeros: no MSC condition).
        """
        return self.unet(
            sample, timestep, encoder_hidden_states=text_states, added_cond_kwargs={"image_embeds": [msc_tokens]}
        ).sample

    def adapter_state_dict(self) -> dict[str, torch.Tensor]:
        """The tensors this module adds to the base UNet: W'_k, W'_v and any LoRA weights."""
        return {
            name: tensor.detach().cpu().contiguous()
            for name, tensor in self.unet.state_dict().items()
            if any(marker in name for marker in ADAPTER_MARKERS)
        }

    def base_state_dict(self) -> dict[str, torch.Tensor]:
        """The base UNet's own tensors, under diffusers' names (loadable by ``UNet2DConditionModel``)."""
        if self.trainable in ("lora", "text_lora"):
            raise ValueError("with LoRA the base UNet is the pretrained one; save the adapter only")
        return {
            name: tensor.detach().cpu().contiguous()
            for name, tensor in self.unet.state_dict().items()
            if not any(marker in name for marker in ADAPTER_MARKERS)
        }

    def save_adapter(self, path: str | os.PathLike) -> None:
        """Write the adapter tensors and their settings (E, gamma, trainable, LoRA rank) to a safetensors file."""
        settings = {
            "msc_dim": self.msc_dim,
            "scale": self.scale,
            "trainable": self.trainable,
            "lora_rank": self.lora_rank,
        }
        save_file(self.adapter_state_dict(), str(path), metadata={"guided_unet": json.dumps(settings)})

    def load_adapter(self, path: str | os.PathLike) -> None:
        """Load tensors written by :meth:`save_adapter`; a file for another layout is refused by name."""
        tensors = read_safetensors(path)
        if any(name.startswith(PROJECTION_PREFIX) for name in tensors):
            raise InputError(
                path,
                "an adapter of an earlier version, whose MSC tokens passed through a projection "
                "before W'_k / W'_v; this version maps e_MSC straight into W'_k / W'_v (the paper's "
                "K' = e_MSC W'_k) and has one e_MSC vector: train stage 1 and stage 2 again",
            )
        check_state_dict(path, tensors, self.adapter_state_dict(), "guided UNet's adapter")
        self.unet.load_state_dict(tensors, strict=False)

    def save_base(self, folder: str | os.PathLike) -> None:
        """Write the base UNet as a diffusers folder (``config.json`` + safetensors), without the adapter."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_file(self.base_state_dict(), str(folder / BASE_WEIGHTS))
        config = {key: value for key, value in self.base_config.items() if not key.startswith("_")}
        config["_class_name"] = UNet2DConditionModel.__name__
        (folder / "config.json").write_text(json.dumps(config, indent=2, default=list))

    @staticmethod
    def adapter_settings(path: str | os.PathLike) -> dict[str, object]:
        """The settings stored in an adapter file by :meth:`save_adapter`."""
        metadata = safetensors_metadata(path)
        if "guided_unet" not in metadata:
            raise InputError(path, "not a guided-UNet adapter file (no 'guided_unet' settings in its metadata)")
        settings = json.loads(metadata["guided_unet"])
        if settings.get("trainable") not in TRAINABLE_CHOICES:  # e.g. 'adapter+projection' of earlier versions
            raise InputError(
                path,
                f"an adapter trained with trainable {settings.get('trainable')!r}, which this "
                f"version does not have ({', '.join(TRAINABLE_CHOICES)}; earlier versions put a "
                "projection before W'_k / W'_v): train stage 2 again",
            )
        return settings
