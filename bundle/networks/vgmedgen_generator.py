"""VG-MedGen's generator (stage G): prompt -> frozen text encoder -> frozen text disentangler (t_a, t_s) -> hybrid
feature fusion with the prompt's token states -> DiT.

The model is a :class:`bundle.networks.conditions.ConditionedDiffusionModel` whose condition groups are the
prompt's features, ``"anatomy"`` ``(B, a)``, ``"style"`` ``(B, s)`` and (when fused) its token states
``"text_states"`` ``(B, L, D)``; the trainer drops them together (classifier-free guidance needs the whole prompt
absent). The conditions are frozen
features; the fusion, which trains, runs in :meth:`VGMedGen.forward`, so condition dropout and guidance replace its
inputs, and the null prompt (zero vectors, the empty text's token states) is one the fusion learns to read.
As the paper says, the DiT is conditioned on the *text*-disentangled features in training and generation; the
visual features only supervise the text disentangler (stage T).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path

import torch
from diffusers import PixArtTransformer2DModel
from safetensors.torch import save_file
from torch import nn

from bundle.errors import InputError, check_state_dict
from bundle.networks.clinical_text import ClinicalTextEncoder
from bundle.networks.conditions import Conditions
from bundle.networks.diffusion_space import LatentSpace, PixelSpace
from bundle.networks.medical_clip import MedicalClipEncoder
from bundle.networks.vgmedgen_dit import DiTDenoiser, load_pixart, tiny_pixart
from bundle.networks.vgmedgen_fusion import HybridFeatureFusion
from bundle.networks.vgmedgen_text import TextDisentangler, WholeEmbedding, load_text_disentangler
from bundle.networks.weight_files import read_safetensors, safetensors_metadata
from bundle.weights.layouts import PIXART_HOW, pixart_files

TextEncoder = MedicalClipEncoder | ClinicalTextEncoder
"""``encode_text`` ``(B, E)`` and ``text_states`` ``(B, L, D)``: the small CLIP's text tower (tiny) or
Bio_ClinicalBERT (full)."""
CONDITION_KEYS = ("anatomy", "style", "text_states")
GENERATOR_FILE = "vgmedgen_generator.safetensors"


class VGMedGen(nn.Module):
    """The text encoder and disentangler (frozen), the fusion and the DiT (trainable as ``denoiser.trainable``).

    Args:
        text_encoder: frozen text encoder with ``encode_text`` (pooled ``(B, E)``) and ``text_states``
            (``(B, L, D)``): :class:`MedicalClipEncoder` (tiny) or :class:`ClinicalTextEncoder` (full).
        disentangler: the stage-T :class:`TextDisentangler` on ``encode_text``'s features (frozen here).
        fusion: :class:`HybridFeatureFusion` of width ``denoiser.caption_channels``.
        denoiser: :class:`DiTDenoiser`.
        space: :class:`PixelSpace` (tiny) or :class:`LatentSpace`.
    """

    def __init__(
        self,
        text_encoder: TextEncoder,
        disentangler: TextDisentangler,
        fusion: HybridFeatureFusion,
        denoiser: DiTDenoiser,
        space: PixelSpace | LatentSpace,
    ) -> None:
        super().__init__()
        self.text_encoder = text_encoder
        self.disentangler = disentangler.eval().requires_grad_(False)
        self.fusion = fusion
        self.denoiser = denoiser
        self.space = space
        self.uses_text_states = fusion.text is not None
        self.condition_groups = CONDITION_KEYS if self.uses_text_states else CONDITION_KEYS[:2]
        self._null: dict[torch.device, tuple[torch.Tensor, ...]] = {}

    def train(self, mode: bool = True) -> VGMedGen:
        super().train(mode)
        self.disentangler.eval()
        return self

    @torch.no_grad()
    def conditions(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """The prompt's frozen features: ``"anatomy"`` t_a, ``"style"`` t_s and (when fused) ``"text_states"``."""
        missing = [i for i, text in enumerate(texts) if not isinstance(text, str) or not text.strip()]
        if missing:
            raise ValueError(f"every item needs a text; items {missing} have none")
        anatomy, style, _ = self.disentangler(self.text_encoder.encode_text(list(texts)))
        conditions = {"anatomy": anatomy, "style": style}
        if self.uses_text_states:
            conditions["text_states"] = self.text_encoder.text_states(list(texts))
        return conditions

    @torch.no_grad()
    def null_conditions(self, batch_size: int) -> dict[str, torch.Tensor]:
        """The absent prompt: zero anatomy and style vectors and the empty text's token states."""
        device = next(self.denoiser.parameters()).device
        if device not in self._null:
            null = {"anatomy": torch.zeros(1, self.fusion.anatomy_dim), "style": torch.zeros(1, self.fusion.style_dim)}
            if self.uses_text_states:
                null["text_states"] = self.text_encoder.text_states([""])
            self._null[device] = {key: value.to(device) for key, value in null.items()}
        return {key: value.expand(batch_size, *value.shape[1:]) for key, value in self._null[device].items()}

    def forward(self, latents: torch.Tensor, timesteps: torch.Tensor, conditions: Conditions) -> torch.Tensor:
        """Predicted noise ``(B, C, h, w)`` of ``latents`` given :meth:`conditions` (or null ones)."""
        tokens = self.fusion(conditions["anatomy"], conditions["style"], conditions.get("text_states"))
        return self.denoiser(latents, timesteps, tokens)

    def enable_gradient_checkpointing(self) -> None:
        """Recompute the DiT's activations in the backward pass (the trainer's ``gradient_checkpointing``)."""
        self.denoiser.transformer.enable_gradient_checkpointing()

    def trained_state_dict(self, weights: Mapping[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """What stage G trains: the fusion, and the whole DiT (``trainable="full"``) or its LoRA tensors; of
        ``weights`` (e.g. a moving average's, named as in this model) instead of the model's own when given."""
        full = self.denoiser.trainable == "full"
        return {
            name: tensor.detach().cpu().contiguous()
            for name, tensor in (self.state_dict() if weights is None else weights).items()
            if name.startswith("fusion.") or (name.startswith("denoiser.") and (full or "lora_" in name))
        }

    def save_trained(self, path: str | os.PathLike, weights: Mapping[str, torch.Tensor] | None = None) -> None:
        """Write :meth:`trained_state_dict` (of ``weights`` when given) with its settings (fusion mode, text tokens,
        trainable, LoRA rank)."""
        settings = {
            "fusion_mode": self.fusion.mode,
            "fuse_text_states": self.uses_text_states,
            "trainable": self.denoiser.trainable,
            "lora_rank": self.denoiser.lora_rank,
            "disentangle": not isinstance(self.disentangler, WholeEmbedding),
        }
        save_file(self.trained_state_dict(weights), str(path), metadata={"vgmedgen": json.dumps(settings)})

    def load_trained(self, path: str | os.PathLike) -> None:
        """Load a file of :meth:`save_trained`; one of another layout (fusion mode, LoRA or not, sizes) is refused
        by name."""
        tensors = read_safetensors(path)
        check_state_dict(path, tensors, self.trained_state_dict(), "VG-MedGen generator")
        self.load_state_dict(tensors, strict=False)


def _assemble(
    text_encoder: TextEncoder,
    disentangler: TextDisentangler | None,
    transformer: Callable[[], PixArtTransformer2DModel],
    space: PixelSpace | LatentSpace,
    fusion_mode: str = "hffm",
    fuse_text_states: bool = True,
    anatomy_dim: int = 8,
    style_dim: int = 8,
    trainable: str = "full",
    lora_rank: int = 8,
    seed: int = 0,
    disentangle: bool = True,
) -> VGMedGen:
    """Both profiles' model: the disentangler (or the whole embedding), the fusion to the transformer's caption width
    and the denoiser, built in this order under ``seed`` (the global RNG state is left as it was)."""
    if not disentangle:
        if disentangler is not None or fusion_mode != "concat":
            raise ValueError(
                "without disentanglement the whole text embedding is one condition: give no disentangler and "
                f"fusion_mode 'concat' (got {type(disentangler).__name__}, {fusion_mode!r})"
            )
        disentangler = WholeEmbedding(text_encoder.embed_dim)
        anatomy_dim, style_dim = disentangler.anatomy_dim, disentangler.style_dim
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        disentangler = disentangler or TextDisentangler(text_encoder.embed_dim, anatomy_dim, style_dim)
        dit = transformer()
        if dit.config.in_channels != space.channels:
            raise ValueError(
                f"the transformer takes {dit.config.in_channels} input channels, the diffusion space has "
                f"{space.channels}: the transformer and the VAE must come from one model"
            )
        fusion = HybridFeatureFusion(
            anatomy_dim,
            style_dim,
            dit.config.caption_channels,
            mode=fusion_mode,
            text_dim=text_encoder.text_state_dim if fuse_text_states else None,
        )
        denoiser = DiTDenoiser(dit, trainable, lora_rank)  # LoRA's random init last: same fusion either way
    return VGMedGen(text_encoder, disentangler, fusion, denoiser, space)


def tiny_generator(
    spatial_size: int = 48,
    text_encoder: TextEncoder | None = None,
    disentangler: TextDisentangler | None = None,
    fusion_mode: str = "hffm",
    fuse_text_states: bool = True,
    anatomy_dim: int = 8,
    style_dim: int = 8,
    num_layers: int = 6,
    trainable: str = "full",
    lora_rank: int = 8,
    seed: int = 0,
    disentangle: bool = True,
) -> VGMedGen:
    """The ``tiny`` profile: pixel space, a small random PixArt (width 96), the small CLIP's text tower.

    ``disentangler``: stage T's (:func:`bundle.networks.vgmedgen_text.load_text_disentangler`, as
    ``configs/vgmedgen_train.json`` passes it); None builds a seeded, untrained one (tests of stage G alone).
    ``fusion_mode``: see :class:`HybridFeatureFusion`; ``trainable``, ``lora_rank``: see :class:`DiTDenoiser`.
    ``disentangle`` False: the "without disentanglement" ablation, the whole text embedding in place of t_a and t_s
    (:class:`WholeEmbedding`; ``disentangler`` must then be None), with ``"concat"`` fusion only.
    """
    text_encoder = text_encoder or MedicalClipEncoder.tiny(seed=seed)
    return _assemble(
        text_encoder,
        disentangler,
        lambda: tiny_pixart(spatial_size, PixelSpace.channels, num_layers=num_layers, seed=seed),
        PixelSpace(),
        fusion_mode,
        fuse_text_states,
        anatomy_dim,
        style_dim,
        trainable,
        lora_rank,
        seed,
        disentangle,
    )


def pixart_generator(
    pixart_dir: str | os.PathLike,
    text_encoder: TextEncoder,
    disentangler: TextDisentangler | None = None,
    trainable: str = "lora",
    **options,
) -> VGMedGen:
    """The ``full`` profile: PixArt-alpha's transformer (frozen; with ``trainable="lora"``, LoRA of rank
    ``lora_rank`` on the attention projections trains) and its VAE as the :class:`LatentSpace`, from a local diffusers
    folder (:data:`bundle.weights.layouts.PIXART_PARTS`: ``transformer/``, ``vae/``, ``scheduler/``; T5 is not read),
    with ``text_encoder`` (Bio_ClinicalBERT, :class:`bundle.networks.clinical_text.ClinicalTextEncoder`) feeding stage
    T's ``disentangler``. The fusion projects the conditions to the transformer's ``caption_channels`` (4096, T5's
    width, for PixArt-alpha); its own caption projection, frozen, follows. ``options``: ``fusion_mode``,
    ``fuse_text_states``, ``anatomy_dim``, ``style_dim``, ``lora_rank``, ``seed``, ``disentangle``, as
    :func:`tiny_generator`. A missing file is an :class:`InputError` naming it and how to get the folder."""
    folder = Path(pixart_dir)
    missing = [name for name in pixart_files() if not (folder / name).is_file()]
    if missing:
        raise InputError(folder / missing[0], f"missing; {PIXART_HOW}")
    space = LatentSpace.from_folder(folder, "PixArt-alpha")
    return _assemble(text_encoder, disentangler, lambda: load_pixart(folder), space, trainable=trainable, **options)


def _load_trained(
    models_dir: str | os.PathLike,
    text_encoder: TextEncoder,
    stage_t_dir: str | os.PathLike | None,
    build: Callable[..., VGMedGen],
) -> VGMedGen:
    """Stage T's disentangler (none for the "without disentanglement" ablation), ``build(text_encoder, disentangler,
    **settings)`` with the settings of :data:`GENERATOR_FILE`'s metadata, then its weights."""
    path = Path(models_dir) / GENERATOR_FILE
    if not path.is_file():
        raise InputError(path, "file not found; run stage G (configs/vgmedgen_train.json) to write it")
    metadata = safetensors_metadata(path)
    if "vgmedgen" not in metadata:
        raise InputError(path, "not a VG-MedGen generator file (no 'vgmedgen' settings in its metadata)")
    settings = json.loads(metadata["vgmedgen"])
    disentangler = (
        load_text_disentangler(stage_t_dir or models_dir, text_encoder.embed_dim)
        if settings.get("disentangle", True)
        else None
    )
    model = build(text_encoder=text_encoder, disentangler=disentangler, **settings)
    model.load_trained(path)
    return model.eval()


def load_tiny_generator(
    models_dir: str | os.PathLike,
    spatial_size: int = 48,
    num_layers: int = 6,
    text_encoder: MedicalClipEncoder | None = None,
    stage_t_dir: str | os.PathLike | None = None,
    seed: int = 0,
) -> VGMedGen:
    """The trained ``tiny`` generator in one call: stage T's disentangler (``stage_t_dir``, default ``models_dir``;
    none for the "without disentanglement" ablation), the fusion and DiT settings from :data:`GENERATOR_FILE`'s
    metadata, then its weights. A missing file is an :class:`InputError` naming it and the stage that writes it;
    ``spatial_size`` and ``num_layers`` must be the training's (a mismatch is refused by tensor name and shape)."""
    text_encoder = text_encoder or MedicalClipEncoder.tiny(seed=seed)
    build = partial(tiny_generator, spatial_size, num_layers=num_layers, seed=seed)
    return _load_trained(models_dir, text_encoder, stage_t_dir, build)


def load_pixart_generator(
    models_dir: str | os.PathLike,
    pixart_dir: str | os.PathLike,
    text_encoder: TextEncoder,
    stage_t_dir: str | os.PathLike | None = None,
    seed: int = 0,
) -> VGMedGen:
    """The trained ``full`` generator: PixArt-alpha from ``pixart_dir`` with the fusion and the LoRA tensors of
    :data:`GENERATOR_FILE` (``configs/pixart_vgmedgen_train.json`` writes it), as :func:`load_tiny_generator`."""
    return _load_trained(models_dir, text_encoder, stage_t_dir, partial(pixart_generator, pixart_dir, seed=seed))
