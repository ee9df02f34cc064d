"""What a usable pretrained folder contains: the one place that says which files the ``sd15`` profile reads
(Stable Diffusion 1.5, BiomedCLIP) and which VG-MedGen's full profile reads (PixArt-alpha, Bio_ClinicalBERT).

The loaders (:func:`bundle.networks.medsoft_diffusion.sd15_model`,
:meth:`bundle.networks.medical_clip.MedicalClipEncoder.from_local_dir`,
:func:`bundle.networks.vgmedgen_generator.pixart_generator`,
:meth:`bundle.networks.clinical_text.ClinicalTextEncoder.from_folder`) and the checker
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
class FolderPart:
    """One sub-folder of a model folder (SD 1.5, PixArt-alpha) or a whole folder (Bio_ClinicalBERT): its required
    files, its safetensors weight file (if any) and the pickled files that would stand in for it in other copies
    (refused)."""

    name: str
    files: tuple[str, ...]
    weights: str | None = None
    pickles: tuple[str, ...] = ()
    latent_only: bool = False


SD15_PARTS = (
    FolderPart(
        "unet",
        ("unet/config.json", "unet/diffusion_pytorch_model.safetensors"),
        "unet/diffusion_pytorch_model.safetensors",
        ("unet/diffusion_pytorch_model.bin",),
    ),
    FolderPart(
        "vae",
        ("vae/config.json", "vae/diffusion_pytorch_model.safetensors"),
        "vae/diffusion_pytorch_model.safetensors",
        ("vae/diffusion_pytorch_model.bin",),
        latent_only=True,
    ),
    FolderPart(
        "text_encoder",
        ("text_encoder/config.json", "text_encoder/model.safetensors"),
        "text_encoder/model.safetensors",
        ("text_encoder/pytorch_model.bin",),
    ),
    FolderPart("tokenizer", ("tokenizer/vocab.json", "tokenizer/merges.txt", "tokenizer/tokenizer_config.json")),
    FolderPart("scheduler", ("scheduler/scheduler_config.json",)),
)


def sd15_files(latent: bool = True) -> tuple[str, ...]:
    """The files :func:`bundle.networks.medsoft_diffusion.sd15_model` needs, relative to the SD 1.5 folder
    (``vae/`` only for latent diffusion)."""
    return tuple(name for part in SD15_PARTS if latent or not part.latent_only for name in part.files)


PIXART_REPO = "PixArt-alpha/PixArt-XL-2-512x512"


PIXART_HOW = (
    "expected a local copy of PixArt-alpha 512 in diffusers format, e.g. `huggingface-cli download "
    f"{PIXART_REPO} --local-dir <folder> --include 'transformer/*' 'vae/*' 'scheduler/*'` (its text_encoder/ and "
    "tokenizer/, T5, are not read: the prompt reaches the DiT through VG-MedGen's own text encoder and fusion)"
)


PIXART_PARTS = (
    FolderPart(
        "transformer",
        ("transformer/config.json", "transformer/diffusion_pytorch_model.safetensors"),
        "transformer/diffusion_pytorch_model.safetensors",
        ("transformer/diffusion_pytorch_model.bin",),
    ),
    SD15_PARTS[1],  # vae/: the same layout (PixArt-alpha ships SD's VAE, sd-vae-ft-ema)
    FolderPart("scheduler", ("scheduler/scheduler_config.json",)),
)
"""VG-MedGen's full profile reads the transformer, the VAE and the training schedule; T5 is not needed."""


def pixart_files() -> tuple[str, ...]:
    """The files :func:`bundle.networks.vgmedgen_generator.pixart_generator` needs, relative to the PixArt folder."""
    return tuple(name for part in PIXART_PARTS for name in part.files)


CLINICAL_BERT_REPO = "emilyalsentzer/Bio_ClinicalBERT"


CLINICAL_BERT_PART = FolderPart(
    "clinical text encoder", ("config.json", "model.safetensors"), "model.safetensors", ("pytorch_model.bin",)
)
"""A BERT folder (``transformers.BertModel``): config.json, safetensors weights, and a tokenizer vocabulary
(:data:`TEXT_MODEL_VOCABS`, one of them)."""


CLINICAL_BERT_HOW = (
    f"expected a local copy of {CLINICAL_BERT_REPO}, e.g. `huggingface-cli download {CLINICAL_BERT_REPO} "
    "config.json vocab.txt pytorch_model.bin --local-dir <folder>`, then `python scripts/check_weights.py "
    "--clinical_bert <folder> --convert` to write model.safetensors"
)


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
