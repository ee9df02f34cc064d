"""Frozen medical CLIP features for lesion synthesis: BiomedCLIP in real use, a tiny random CLIP in tests.

:class:`MedicalClipEncoder` wraps an open_clip ``CustomTextCLIP`` and gives

* ``encode_text(texts)`` -> ``e_t``, (B, E), L2-normalised pooled text feature of the lesion descriptions;
* ``encode_image(images)`` -> ``e_v`` / ``e_r``, (B, E), L2-normalised feature of grayscale slices
  (the same encoder is applied to the masked image and the original image);
* ``text_states(texts)`` -> (B, L, D), token-level output of the text tower, the UNet's text conditioning.

Everything is frozen (no parameter requires grad, always in eval mode) and runs under ``torch.no_grad``.
Weights come from an open_clip ``local-dir:`` folder (:meth:`MedicalClipEncoder.from_local_dir`); nothing is
downloaded at run time.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import pickle
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import huggingface_hub.constants
import open_clip
import torch
import torch.nn.functional as F
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from open_clip.hf_configs import arch_dict
from open_clip.hf_model import HFTextEncoder
from open_clip.tokenizer import HFTokenizer, SimpleTokenizer
from safetensors.torch import save_file
from torch import Tensor

from bundle.errors import InputError
from bundle.networks.text_truncation import warn_truncated_text
from bundle.utils.files import read_json_object
from bundle.weights.layouts import (
    BIOMEDCLIP_REPO,
    OPEN_CLIP_CONFIG,
    OPEN_CLIP_WEIGHT_NAMES,
    OPEN_CLIP_WEIGHTS,
    TEXT_MODEL_CONFIG,
    TEXT_MODEL_VOCABS,
    open_clip_weights,
)

# The folder layout is defined once, in bundle.weights.layouts (scripts/check_weights.py checks the same names).
CONFIG_NAME = OPEN_CLIP_CONFIG
WEIGHTS_NAME = OPEN_CLIP_WEIGHTS
# The weight files open_clip looks for in a local-dir folder, in its order of preference.
WEIGHT_NAMES = OPEN_CLIP_WEIGHT_NAMES
BIOMEDCLIP_HUB_ID = f"hf-hub:{BIOMEDCLIP_REPO}"
_GET_BIOMEDCLIP = f"download BiomedCLIP ({BIOMEDCLIP_HUB_ID}) into this folder"
_SIMPLE_TOKENIZER_VOCAB = 49408  # open_clip's bundled BPE vocabulary (SimpleTokenizer)


class MedicalClipEncoder(torch.nn.Module):
    """Frozen CLIP text/image encoder (open_clip ``CustomTextCLIP``) with its tokenizer and image preprocessing.

    Args:
        model: an open_clip ``CustomTextCLIP`` (``.visual`` and ``.text`` towers); its text tower is switched to
            also return its token states.
        tokenizer: open_clip tokenizer (``SimpleTokenizer`` or ``HFTokenizer``): list of str -> (B, L) ids.
        image_size: side of the square image the visual tower takes.
        image_mean, image_std: per-channel (RGB) normalisation of the visual tower.
        model_cfg: open_clip ``model_cfg`` the model was built from; needed only by :meth:`save_local_dir`.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Any,
        image_size: int,
        image_mean: Sequence[float],
        image_std: Sequence[float],
        model_cfg: Mapping[str, Any] | None = None,
    ):
        super().__init__()
        if not isinstance(model, open_clip.CustomTextCLIP):
            raise TypeError(
                f"expected an open_clip CustomTextCLIP (text tower in model.text), got {type(model).__name__}; "
                "build it with custom_text=True"
            )
        if len(image_mean) != 3 or len(image_std) != 3:
            raise ValueError(f"image_mean / image_std need 3 (RGB) values, got {image_mean} / {image_std}")
        self.model = model
        self.model.text.output_tokens = True  # text tower returns (pooled, token states)
        self.tokenizer = tokenizer
        self.image_size = int(image_size)
        self.image_mean = tuple(float(v) for v in image_mean)
        self.image_std = tuple(float(v) for v in image_std)
        self.model_cfg = copy.deepcopy(dict(model_cfg)) if model_cfg is not None else None
        self.requires_grad_(False)
        super().train(False)

    # ------------------------------------------------------------------ construction
    @classmethod
    def tiny(
        cls,
        embed_dim: int = 64,
        image_size: int = 64,
        patch_size: int = 8,
        vision_width: int = 64,
        vision_layers: int = 2,
        text_width: int = 64,
        text_layers: int = 2,
        heads: int = 4,
        context_length: int = 77,
        seed: int = 0,
    ) -> MedicalClipEncoder:
        """Small random-initialised CLIP (ViT + causal text transformer) with open_clip's bundled BPE tokenizer.

        Deterministic given ``seed``; the global torch RNG state is left as it was.
        """
        model_cfg = {
            "embed_dim": embed_dim,
            "custom_text": True,
            "vision_cfg": {
                "image_size": image_size,
                "patch_size": patch_size,
                "width": vision_width,
                "layers": vision_layers,
                "head_width": vision_width // heads,
            },
            "text_cfg": {
                "context_length": context_length,
                "vocab_size": _SIMPLE_TOKENIZER_VOCAB,
                "width": text_width,
                "heads": heads,
                "layers": text_layers,
            },
        }
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = _build_model(model_cfg)
        tokenizer = SimpleTokenizer(context_length=context_length)
        return cls(model, tokenizer, image_size, OPENAI_DATASET_MEAN, OPENAI_DATASET_STD, model_cfg=model_cfg)

    @classmethod
    def from_local_dir(
        cls, folder: str | os.PathLike, text_model_dir: str | os.PathLike | None = None
    ) -> MedicalClipEncoder:
        """Load an open_clip ``local-dir:`` folder (``open_clip_config.json`` + a weight file), offline.

        Args:
            folder: e.g. BiomedCLIP (``hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224``) saved
                locally, or a folder written by :meth:`save_local_dir`.
            text_model_dir: needed when the config's text tower is a Hugging Face model (BiomedCLIP:
                ``microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract``): a local folder with that model's
                ``config.json`` and tokenizer files (``vocab.txt``, ``tokenizer_config.json``). Its weights are
                not needed: they are part of the CLIP weight file.

        Raises:
            InputError: a missing folder or file (checked before anything is built), or a config that is not
                an open_clip config.
        """
        folder = Path(folder)
        config, weights = _check_local_dir(folder)
        model_cfg = copy.deepcopy(config["model_cfg"])
        text_cfg = model_cfg.setdefault("text_cfg", {})
        hf_name = text_cfg.get("hf_model_name")
        if hf_name:
            text_model_dir = _check_text_model_dir(folder / CONFIG_NAME, hf_name, text_model_dir)
        if "multimodal_cfg" in model_cfg:
            raise InputError(folder / CONFIG_NAME, "CoCa models (multimodal_cfg) are not supported; use a CLIP")

        build_cfg = copy.deepcopy(model_cfg)
        build_text_cfg = build_cfg["text_cfg"]
        if hf_name:
            build_text_cfg["hf_model_name"] = str(text_model_dir)
            build_text_cfg["hf_tokenizer_name"] = str(text_model_dir)
            build_text_cfg["hf_model_pretrained"] = False  # the text weights are in the CLIP weight file
        vision_cfg = build_cfg.setdefault("vision_cfg", {})
        if vision_cfg.get("timm_model_name"):
            vision_cfg["timm_model_pretrained"] = False

        with _hub_offline():
            model = _build_model(build_cfg)
            # open_clip reads .safetensors with safetensors and everything else with
            # torch.load(weights_only=True); its TypeError fallback calls torch.load without the argument,
            # which defaults to weights_only=True since torch 2.6, so no pickled code is ever run.
            try:
                open_clip.load_checkpoint(model, str(weights), strict=True, weights_only=True, device="cpu")
            except pickle.UnpicklingError as error:  # the weights-only unpickler met code: refuse by name
                found = re.findall(r"GLOBAL ([\w.]+)", str(error))
                raise InputError(
                    weights,
                    f"refused: these pickled weights would call {', '.join(found) or 'code'}"
                    " when unpickled, not just read tensors; use the .safetensors weights",
                ) from error
            context_length = int(text_cfg.get("context_length", 77))
            tokenizer_kwargs = dict(text_cfg.get("tokenizer_kwargs") or {})
            if hf_name:
                tokenizer = HFTokenizer(
                    str(text_model_dir),
                    context_length=context_length,
                    tokenizer_mode=text_cfg.get("tokenizer_mode"),
                    **tokenizer_kwargs,
                )
            else:
                tokenizer = SimpleTokenizer(context_length=context_length, **tokenizer_kwargs)

        preprocess = config.get("preprocess_cfg") or {}
        size = getattr(model.visual, "image_size", None) or preprocess.get("size", 224)
        if isinstance(size, (tuple, list)):
            if len(set(size)) != 1:
                raise InputError(folder / CONFIG_NAME, f"non-square image size {tuple(size)} is not supported")
            size = size[0]
        mean = preprocess.get("mean") or getattr(model.visual, "image_mean", None) or OPENAI_DATASET_MEAN
        std = preprocess.get("std") or getattr(model.visual, "image_std", None) or OPENAI_DATASET_STD
        return cls(model, tokenizer, int(size), mean, std, model_cfg=model_cfg)

    def save_local_dir(self, folder: str | os.PathLike) -> None:
        """Write ``open_clip_config.json`` + ``open_clip_model.safetensors``, readable by :meth:`from_local_dir`
        (and by ``open_clip.create_model("local-dir:<folder>")``)."""
        if self.model_cfg is None:
            raise ValueError("model_cfg is unknown (pass model_cfg= to the constructor); cannot write the config")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        config = {
            "model_cfg": self.model_cfg,
            "preprocess_cfg": {
                "size": self.image_size,
                "mean": list(self.image_mean),
                "std": list(self.image_std),
            },
        }
        (folder / CONFIG_NAME).write_text(json.dumps(config, indent=2))
        state = {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
        save_file(state, str(folder / WEIGHTS_NAME))

    # ------------------------------------------------------------------ sizes
    @property
    def embed_dim(self) -> int:
        """E, the size of ``encode_text`` / ``encode_image`` features."""
        return int(self.model.text.output_dim)

    @property
    def text_state_dim(self) -> int:
        """D, the size of each ``text_states`` token."""
        text = self.model.text
        if isinstance(text, HFTextEncoder):
            return int(getattr(text.config, arch_dict[text.config.model_type]["config_names"]["width"]))
        return int(text.width)

    @property
    def context_length(self) -> int:
        """L, the number of tokens every text is padded / truncated to."""
        return int(self.tokenizer.context_length)

    # ------------------------------------------------------------------ frozen
    def train(self, mode: bool = True) -> MedicalClipEncoder:
        """Stays in eval mode whatever ``mode`` is: the encoder is frozen (dropout off, fixed features)."""
        return super().train(False)

    # ------------------------------------------------------------------ features
    @torch.no_grad()
    def encode_text(self, texts: Sequence[str]) -> Tensor:
        """``e_t``: (B, E) float32, unit L2 norm. An empty string gives the unconditional text feature."""
        pooled, _ = self._text_forward(texts)
        return F.normalize(pooled.float(), dim=-1)

    @torch.no_grad()
    def text_states(self, texts: Sequence[str]) -> Tensor:
        """(B, L, D) float32 token states of the text tower (after its final LayerNorm; for a Hugging Face
        tower its last hidden state), padding tokens included; L = ``context_length`` (one less for a Hugging
        Face tower with open_clip's ``cls_pooler``, whose CLS token open_clip drops; BiomedCLIP keeps it)."""
        _, tokens = self._text_forward(texts)
        return tokens.float()

    @torch.no_grad()
    def encode_image(self, images: Tensor) -> Tensor:
        """``e_v`` / ``e_r``: images (B, 1, H, W) in [0, 1], any H, W -> (B, E) float32, unit L2 norm, on the
        device of ``images``."""
        if not isinstance(images, Tensor) or images.ndim != 4 or images.shape[1] != 1:
            shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
            raise ValueError(f"expected grayscale images of shape (B, 1, H, W), got {shape}")
        device = self._device()
        x = images.to(device=device, dtype=torch.float32).expand(-1, 3, -1, -1)
        x = F.interpolate(x, size=(self.image_size,) * 2, mode="bilinear", antialias=True, align_corners=False)
        mean = torch.tensor(self.image_mean, device=device).view(1, 3, 1, 1)
        std = torch.tensor(self.image_std, device=device).view(1, 3, 1, 1)
        features = self.model.visual((x - mean) / std)
        return F.normalize(features.float(), dim=-1).to(images.device)

    def _text_forward(self, texts: Sequence[str]) -> tuple[Tensor, Tensor]:
        """Tokenise and run the text tower once: (pooled+projected (B, E), token states (B, L, D))."""
        if isinstance(texts, str) or not isinstance(texts, Sequence):
            raise TypeError(f"texts must be a sequence of str, got {type(texts).__name__}")
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"texts[{i}] is {type(text).__name__}, expected str")
        if not texts:
            raise ValueError("texts is empty")
        ids = self.tokenizer(list(texts)).to(self._device())
        for text, full in zip(texts, (ids[:, -1] != 0).tolist(), strict=True):  # no padding left: the text may be cut
            if full:
                warn_truncated_text(text, int(ids.shape[1]), "medical CLIP text encoder")
        return self.model.text(ids)

    def _device(self) -> torch.device:
        return next(self.model.parameters()).device


def _build_model(model_cfg: Mapping[str, Any]) -> open_clip.CustomTextCLIP:
    cfg = copy.deepcopy(dict(model_cfg))
    cfg.pop("custom_text", None)  # a factory flag, not a constructor argument; we always build CustomTextCLIP
    return open_clip.CustomTextCLIP(**cfg)


def _check_local_dir(folder: Path) -> tuple[dict[str, Any], Path]:
    """The parsed ``open_clip_config.json`` and the weight file of ``folder``, or an InputError."""
    if not folder.is_dir():
        raise InputError(folder, f"folder not found; {_GET_BIOMEDCLIP} (open_clip_config.json + weights)")
    config_path = folder / CONFIG_NAME
    if not config_path.is_file():
        raise InputError(config_path, f"{CONFIG_NAME} is missing; {_GET_BIOMEDCLIP}")
    config = read_json_object(config_path, "the config", hint=f"{_GET_BIOMEDCLIP} again")
    if not isinstance(config.get("model_cfg"), dict):
        raise InputError(config_path, "no 'model_cfg' section: not an open_clip config")
    weights = open_clip_weights(folder)
    if weights is None:
        raise InputError(
            folder, f"no weight file ({' / '.join(WEIGHT_NAMES[:3])} / ...) in the folder; {_GET_BIOMEDCLIP}"
        )
    return config, weights


def _check_text_model_dir(config_path: Path, hf_name: str, text_model_dir: str | os.PathLike | None) -> Path:
    """The local folder standing in for the Hugging Face text model ``hf_name``, or an InputError."""
    how = (
        f"a local folder with the config.json and tokenizer files (vocab.txt, tokenizer_config.json) of "
        f"{hf_name}, e.g. `huggingface-cli download {hf_name} config.json vocab.txt tokenizer_config.json "
        f"--local-dir <folder>`"
    )
    if text_model_dir is None:
        raise InputError(config_path, f"the text tower is the Hugging Face model {hf_name}; pass text_model_dir={how}")
    text_model_dir = Path(text_model_dir)
    if not text_model_dir.is_dir():
        raise InputError(text_model_dir, f"text_model_dir not found; it should be {how}")
    if not (text_model_dir / TEXT_MODEL_CONFIG).is_file():
        raise InputError(text_model_dir / TEXT_MODEL_CONFIG, f"config.json is missing; text_model_dir should be {how}")
    if not any((text_model_dir / name).is_file() for name in TEXT_MODEL_VOCABS):
        raise InputError(
            text_model_dir, f"no tokenizer vocabulary (vocab.txt or tokenizer.json); text_model_dir should be {how}"
        )
    return text_model_dir


@contextlib.contextmanager
def _hub_offline() -> Iterator[None]:
    """Hugging Face hub offline mode for the duration of a load.

    huggingface_hub reads ``HF_HUB_OFFLINE`` once at import (open_clip has imported it by now), so the module
    constant is switched too; both are restored afterwards.
    """
    old_env = os.environ.get("HF_HUB_OFFLINE")
    old_constant = huggingface_hub.constants.HF_HUB_OFFLINE
    os.environ["HF_HUB_OFFLINE"] = "1"
    huggingface_hub.constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        huggingface_hub.constants.HF_HUB_OFFLINE = old_constant
        if old_env is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = old_env
