"""Tiny random stand-ins for the two pretrained folders of the ``sd15`` profile, in their real layouts:

* :func:`write_tiny_sd15`: Stable Diffusion 1.5 in diffusers format (``unet/``, ``vae/``, ``text_encoder/``,
  ``tokenizer/``, ``scheduler/``), the same classes at toy sizes;
* :func:`write_tiny_bert` + :func:`write_tiny_biomedclip`: BiomedCLIP as an open_clip ``local-dir:`` folder
  (timm ViT image tower, Hugging Face BERT text tower with open_clip's MLP projection) and the BiomedBERT
  config/tokenizer folder it needs;
* :func:`write_tiny_pixart` + :func:`write_tiny_clinical_bert`: VG-MedGen's full profile, PixArt-alpha in diffusers
  format (``transformer/``, ``vae/``, ``scheduler/``; no T5) and Bio_ClinicalBERT (config.json, model.safetensors,
  vocab.txt).

Nothing is downloaded; each writer takes well under a few seconds on one CPU thread.
"""

from __future__ import annotations

import json
from pathlib import Path

import open_clip
import torch
from diffusers import AutoencoderKL, DPMSolverMultistepScheduler, PNDMScheduler
from safetensors.torch import save_file
from transformers import BertConfig, BertModel, CLIPTextConfig, CLIPTextModel

from bundle.networks.guided_unet import tiny_unet
from bundle.networks.medical_clip import CONFIG_NAME, WEIGHTS_NAME
from bundle.networks.vgmedgen_dit import tiny_pixart

TEXT_WIDTH = 32
MAX_LENGTH = 77
SIZE = 16  # image side; the tiny VAE's latent is 2x smaller (SD 1.5's is 8x)
LETTERS = "abcdefghijklmnopqrstuvwxyz"
SPECIAL = {
    "bos_token": "<|startoftext|>",
    "eos_token": "<|endoftext|>",
    "unk_token": "<|endoftext|>",
    "pad_token": "<|endoftext|>",
}
BIOMED_BERT = "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract"
BERT_WORDS = [
    "[PAD]",
    "[UNK]",
    "[CLS]",
    "[SEP]",
    "[MASK]",
    "a",
    "lesion",
    "in",
    "the",
    "l3",
    "l4",
    "vertebral",
    "body",
    "hyper",
    "##intense",
    "hypo",
    "metastasis",
    ",",
    ".",
    ":",
    "mm",
    "12",
]
TINY_CLIP_EMBED = 16
TINY_CLIP_IMAGE = 160  # timm's test_vit: 16-pixel patches, a 10 x 10 grid + the class token
TINY_CLIP_CONTEXT = 24
TINY_BERT_WIDTH = 32
PIXART_CAPTION = 24  # the tiny PixArt's caption_channels (PixArt-alpha's: 4096, T5's width)
CLINICAL_BERT_LENGTH = 160  # the tiny clinical BERT's positions (more than the 128 tokens the configs use)


def tiny_vae() -> AutoencoderKL:
    """SD's VAE at toy sizes: RGB in, 4 latent channels, 2x smaller latents (SD's: 8x)."""
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=(16, 32),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=SIZE,
    )


def write_tiny_sd15(folder: Path) -> Path:
    """A random-weight folder in SD 1.5's diffusers layout: unet/, vae/, text_encoder/, tokenizer/, scheduler/."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        tiny_unet(
            sample_size=SIZE // 2,
            in_channels=4,
            block_out_channels=(16, 32),
            cross_attention_dim=TEXT_WIDTH,
            norm_num_groups=8,
        ).save_pretrained(folder / "unet")
        tiny_vae().save_pretrained(folder / "vae")
        # CLIP's BPE files as SD 1.5 ships them (vocab.json + merges.txt, no tokenizer.json)
        tokens = ["<|startoftext|>", "<|endoftext|>", *LETTERS, *(c + "</w>" for c in LETTERS), "le", "si", "on</w>"]
        tokenizer = folder / "tokenizer"
        tokenizer.mkdir(parents=True)
        (tokenizer / "vocab.json").write_text(json.dumps({token: i for i, token in enumerate(tokens)}))
        (tokenizer / "merges.txt").write_text("#version: 0.2\nl e\ns i\no n</w>\n")
        (tokenizer / "tokenizer_config.json").write_text(
            json.dumps({"tokenizer_class": "CLIPTokenizer", "model_max_length": MAX_LENGTH, **SPECIAL})
        )
        CLIPTextModel(
            CLIPTextConfig(
                vocab_size=len(tokens),
                hidden_size=TEXT_WIDTH,
                intermediate_size=64,
                num_hidden_layers=2,
                num_attention_heads=4,
                max_position_embeddings=MAX_LENGTH,
                bos_token_id=0,
                eos_token_id=1,
                pad_token_id=1,
            )
        ).save_pretrained(folder / "text_encoder")
    # SD 1.5's own scheduler file: a PNDMScheduler config with the scaled-linear betas
    PNDMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        skip_prk_steps=True,
        set_alpha_to_one=False,
        steps_offset=1,
    ).save_pretrained(folder / "scheduler")
    config_path = folder / "scheduler" / "scheduler_config.json"
    config_path.write_text(json.dumps({**json.loads(config_path.read_text()), "clip_sample": False}))
    return folder


def write_tiny_sd15_inpaint(folder: Path) -> Path:
    """:func:`write_tiny_sd15` with SD inpainting's UNet: 9 inputs (4 noisy latents, the mask, 4 masked-image
    latents), 4 outputs, saved with ``save_pretrained`` in the same layout."""
    write_tiny_sd15(folder)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        unet = tiny_unet(
            sample_size=SIZE // 2,
            in_channels=9,
            out_channels=4,
            block_out_channels=(16, 32),
            cross_attention_dim=TEXT_WIDTH,
            norm_num_groups=8,
        )
    unet.save_pretrained(folder / "unet")  # replaces the 4-input UNet's files
    return folder


def write_tiny_bert(folder: Path, context_length: int = TINY_CLIP_CONTEXT, width: int = TINY_BERT_WIDTH) -> Path:
    """A tiny BERT config + hand-written WordPiece vocabulary, standing in for BiomedBERT (no download)."""
    folder.mkdir(parents=True)
    (folder / "vocab.txt").write_text("\n".join(BERT_WORDS) + "\n")
    (folder / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "BertTokenizer", "do_lower_case": True})
    )
    BertConfig(
        vocab_size=len(BERT_WORDS),
        hidden_size=width,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=context_length,
        pad_token_id=0,
    ).save_pretrained(folder)
    return folder


def tiny_biomedclip_config() -> dict:
    """BiomedCLIP's ``model_cfg`` (open_clip_config.json) at toy sizes: same towers, same keys."""
    return {
        "embed_dim": TINY_CLIP_EMBED,
        "vision_cfg": {
            "timm_model_name": "test_vit",
            "timm_model_pretrained": False,
            "timm_pool": "",
            "timm_proj": "linear",
            "image_size": TINY_CLIP_IMAGE,
        },
        "text_cfg": {
            "hf_model_name": BIOMED_BERT,
            "hf_tokenizer_name": BIOMED_BERT,
            "hf_proj_type": "mlp",
            "hf_pooler_type": "cls_last_hidden_state_pooler",
            "context_length": TINY_CLIP_CONTEXT,
        },
    }


def write_tiny_biomedclip(folder: Path, bert_dir: Path) -> Path:
    """An open_clip ``local-dir:`` folder shaped like BiomedCLIP's (``open_clip_config.json`` naming BiomedBERT
    + ``open_clip_model.safetensors``), its text tower built from the tiny BERT config in ``bert_dir``."""
    model_cfg = tiny_biomedclip_config()
    build_cfg = {
        **model_cfg,
        "text_cfg": {
            **model_cfg["text_cfg"],
            "hf_model_name": str(bert_dir),
            "hf_tokenizer_name": str(bert_dir),
            "hf_model_pretrained": False,
        },
    }
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = open_clip.CustomTextCLIP(**build_cfg).eval()
    folder.mkdir(parents=True)
    (folder / CONFIG_NAME).write_text(
        json.dumps(
            {
                "model_cfg": model_cfg,
                "preprocess_cfg": {
                    "mean": [0.48145466, 0.4578275, 0.40821073],
                    "std": [0.26862954, 0.26130258, 0.27577711],
                },
            }
        )
    )
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()},
        str(folder / WEIGHTS_NAME),
        metadata={"format": "pt"},
    )
    return folder


def write_tiny_pixart(folder: Path) -> Path:
    """A random-weight folder in PixArt-alpha 512's diffusers layout without T5: ``transformer/`` (4 latent channels
    in, 8 out: learned sigma; its config names ``Transformer2DModel`` as the published one does), ``vae/`` and
    ``scheduler/`` (a DPM-Solver config with PixArt's linear betas)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        transformer = tiny_pixart(
            sample_size=SIZE // 2,
            in_channels=4,
            num_layers=1,
            num_attention_heads=2,
            attention_head_dim=8,
            caption_channels=PIXART_CAPTION,
            seed=0,
        )
        transformer.save_pretrained(folder / "transformer")
        tiny_vae().save_pretrained(folder / "vae")
    config = folder / "transformer" / "config.json"
    config.write_text(config.read_text().replace('"PixArtTransformer2DModel"', '"Transformer2DModel"'))
    DPMSolverMultistepScheduler(beta_schedule="linear", beta_start=0.0001, beta_end=0.02).save_pretrained(
        folder / "scheduler"
    )
    return folder


def write_tiny_clinical_bert(folder: Path) -> Path:
    """A random BERT in Bio_ClinicalBERT's layout: config.json, model.safetensors and vocab.txt (it publishes no
    tokenizer_config.json)."""
    write_tiny_bert(folder, context_length=CLINICAL_BERT_LENGTH)
    (folder / "tokenizer_config.json").unlink()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        BertModel(BertConfig.from_pretrained(folder), add_pooling_layer=False).save_pretrained(folder)
    return folder
