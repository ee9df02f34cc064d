"""What a usable Stable Diffusion 1.5 folder and BiomedCLIP folder contain: the one place that says which files the
``sd15`` profile reads from its pretrained folders.

The loaders (:func:`bundle.networks.medsoft_diffusion.sd15_model`,
:meth:`bundle.networks.medical_clip.MedicalClipEncoder.from_local_dir`) and the checker
(:mod:`bundle.weights.checker`, ``scripts/check_weights.py``) take their file lists from here, so they cannot
disagree on what is required."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

SD15_REPO = "stable-diffusion-v1-5/stable-diffusion-v1-5"


SD15_HOW = (
    "expected a local copy of stable-diffusion-v1-5 in diffusers format, e.g. `huggingface-cli download "
    f"{SD15_REPO} --local-dir <folder> --include '*.json' '*.txt' "
    "'unet/diffusion_pytorch_model.safetensors' 'vae/diffusion_pytorch_model.safetensors' "
    "'text_encoder/model.safetensors'`"
)


SD15_INPAINT_REPO = "stable-diffusion-v1-5/stable-diffusion-inpainting"


SD15_INPAINT_HOW = SD15_HOW.replace(SD15_REPO, SD15_INPAINT_REPO).replace(
    "stable-diffusion-v1-5 in", "stable-diffusion-inpainting (SD 1.5 layout, a UNet of 9 inputs) in"
)


@dataclass(frozen=True)
class Sd15Part:
    """One sub-folder of the SD 1.5 folder: its required files, its safetensors weight file (if any) and the
    pickled files that would stand in for it in other copies (refused)."""

    name: str
    files: tuple[str, ...]
    weights: str | None = None
    pickles: tuple[str, ...] = ()
    latent_only: bool = False


SD15_PARTS = (
    Sd15Part(
        "unet",
        ("unet/config.json", "unet/diffusion_pytorch_model.safetensors"),
        "unet/diffusion_pytorch_model.safetensors",
        ("unet/diffusion_pytorch_model.bin",),
    ),
    Sd15Part(
        "vae",
        ("vae/config.json", "vae/diffusion_pytorch_model.safetensors"),
        "vae/diffusion_pytorch_model.safetensors",
        ("vae/diffusion_pytorch_model.bin",),
        latent_only=True,
    ),
    Sd15Part(
        "text_encoder",
        ("text_encoder/config.json", "text_encoder/model.safetensors"),
        "text_encoder/model.safetensors",
        ("text_encoder/pytorch_model.bin",),
    ),
    Sd15Part("tokenizer", ("tokenizer/vocab.json", "tokenizer/merges.txt", "tokenizer/tokenizer_config.json")),
    Sd15Part("scheduler", ("scheduler/scheduler_config.json",)),
)


def sd15_files(latent: bool = True) -> tuple[str, ...]:
    """The files :func:`bundle.networks.medsoft_diffusion.sd15_model` needs, relative to the SD 1.5 folder
    (``vae/`` only for latent diffusion)."""
    return tuple(name for part in SD15_PARTS if latent or not part.latent_only for name in part.files)


BIOMEDCLIP_REPO = "microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224"


BIOMEDBERT_REPO = "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract"


OPEN_CLIP_CONFIG = "open_clip_config.json"


OPEN_CLIP_WEIGHTS = "open_clip_model.safetensors"


# The weight files open_clip looks for in a local-dir folder, in its order of preference: the loader takes the
# first one present, so the checker judges that one.
OPEN_CLIP_WEIGHT_NAMES = (
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.safetensors",
    "open_clip_pytorch_model.bin",
    "open_clip_pytorch_model.pth",
    "model.safetensors",
    "pytorch_model.bin",
    "pytorch_model.pth",
    "model.pth",
)


TEXT_MODEL_CONFIG = "config.json"


TEXT_MODEL_VOCABS = ("vocab.txt", "tokenizer.json")  # one of them


TEXT_MODEL_OPTIONAL = ("tokenizer_config.json",)


DEFAULT_BIOMEDBERT = "biomedbert"  # beside the BiomedCLIP folder, as in configs/sd15_*.json


def open_clip_weights(folder: str | os.PathLike) -> Path | None:
    """The weight file open_clip (and the loader) would read from ``folder``, or None."""
    folder = Path(folder)
    return next((folder / name for name in OPEN_CLIP_WEIGHT_NAMES if (folder / name).is_file()), None)


def is_pickle_name(path: str | os.PathLike) -> bool:
    """A weight file that is not safetensors: torch's pickle formats (``.bin``, ``.pt``, ``.pth``, ``.ckpt``)."""
    return Path(path).suffix != ".safetensors"
