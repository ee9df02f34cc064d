"""scripts/check_weights.py and bundle.weights.checker on tiny stand-ins in the real layouts: complete folders
pass, every deleted file is named, wrong sizes in configs or tensors are reported, pickles are refused (and
converted on request), hashes are compared with the known list; the sd15 profile's published sizes are checked
against the architectures diffusers / transformers / open_clip build from the published configs."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import open_clip
import pytest
import torch
from diffusers import AutoencoderKL, PixArtTransformer2DModel, UNet2DConditionModel
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers import BertConfig, BertModel, CLIPTextConfig, CLIPTextModel

from bundle.errors import InputError
from bundle.networks.clinical_text import ClinicalTextEncoder
from bundle.networks.medical_clip import MedicalClipEncoder
from bundle.networks.medsoft_diffusion import require_folder
from bundle.networks.vgmedgen_generator import pixart_generator
from bundle.utils.hashing import sha256_file
from bundle.weights.checker import (
    KNOWN_HASHES_FILE,
    MISSING,
    NOT_ACCEPTED,
    NOTE,
    OK,
    PIXART_ALPHA,
    SD15,
    STRUCTURE_INPAINT,
    UNKNOWN_HASH,
    UNREADABLE,
    WRONG_SHAPE,
    WeightProfile,
    check_weights,
    load_known_hashes,
    usable_sd15_folder,
)
from bundle.weights.conversion import convert_to_safetensors, pickles_to_convert
from bundle.weights.layouts import CLINICAL_BERT_PART, OPEN_CLIP_WEIGHT_NAMES, SD15_PARTS, pixart_files, sd15_files
from tests.helpers.paths import REPO
from tests.helpers.tiny_weights import (
    CLINICAL_BERT_LENGTH,
    MAX_LENGTH,
    PIXART_CAPTION,
    TEXT_WIDTH,
    TINY_BERT_WIDTH,
    TINY_CLIP_CONTEXT,
    TINY_CLIP_EMBED,
    TINY_CLIP_IMAGE,
    write_tiny_bert,
    write_tiny_biomedclip,
    write_tiny_sd15,
    write_tiny_sd15_inpaint,
)

SCRIPT = REPO / "scripts" / "check_weights.py"
UNET_WEIGHTS = "unet/diffusion_pytorch_model.safetensors"
TINY = WeightProfile(
    "tiny",
    values={
        "unet": {"in_channels": 4, "cross_attention_dim": TEXT_WIDTH, "block_out_channels": [16, 32]},
        "vae": {"latent_channels": 4, "block_out_channels": [16, 32]},
        "text_encoder": {"hidden_size": TEXT_WIDTH, "max_position_embeddings": MAX_LENGTH},
        "biomedclip": {
            "embed_dim": TINY_CLIP_EMBED,
            "vision_cfg.timm_model_name": "test_vit",
            "vision_cfg.image_size": TINY_CLIP_IMAGE,
            "text_cfg.context_length": TINY_CLIP_CONTEXT,
        },
        "biomedbert": {"model_type": "bert", "hidden_size": TINY_BERT_WIDTH},
    },
    shapes={
        "unet": {"conv_in.weight": (16, 4, 3, 3)},
        "text_encoder": {"text_model.embeddings.position_embedding.weight": (MAX_LENGTH, TEXT_WIDTH)},
        "biomedclip": {"text.proj.2.weight": (TINY_CLIP_EMBED, (TINY_BERT_WIDTH + TINY_CLIP_EMBED) // 2)},
    },
)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> Path:
    """``pretrained/`` as the sd15 configs expect it: stable-diffusion-v1-5/, biomedclip/, biomedbert/."""
    root = tmp_path_factory.mktemp("pretrained")
    write_tiny_sd15(root / "stable-diffusion-v1-5")
    write_tiny_biomedclip(root / "biomedclip", write_tiny_bert(root / "biomedbert"))
    return root


@pytest.fixture
def copy(pretrained, tmp_path) -> Path:
    """A private copy of the tiny folders, to break."""
    return shutil.copytree(pretrained, tmp_path / "pretrained")


def check(root: Path, **kwargs):
    kwargs = {"profile": "structure", "hashes": False, **kwargs}
    return check_weights(root / "stable-diffusion-v1-5", root / "biomedclip", root / "biomedbert", **kwargs)


def tensors_of(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file, copied out of its memory map (so the file can be rewritten)."""
    return {name: tensor.clone() for name, tensor in load_file(str(path)).items()}


def messages(report, status: str) -> str:
    return "\n".join(f"{f.path}: {f.message}" for f in report.with_status(status))


# ------------------------------------------------------------------ complete folders


def test_complete_tiny_folders_pass_and_the_loaders_read_them(pretrained):
    report = check(pretrained, hashes=True)
    assert report.usable, report.summary()
    assert report.with_status(MISSING) == report.with_status(WRONG_SHAPE) == []
    ok = messages(report, OK)
    assert "conv_in.weight (16, 4, 3, 3)" in ok and "cross-attention key/value weights take [32]-wide" in ok
    assert "visual.trunk.pos_embed (1, 101, 64) fits image_size 160" in ok
    assert "text.proj.2.weight (16, 24)" in ok
    # the tiny weights are nobody's published files: hashed, reported, not failed
    assert len(report.with_status(UNKNOWN_HASH)) == 4
    assert report.summary().startswith("usable")
    # what the checker passes, the loader reads
    encoder = MedicalClipEncoder.from_local_dir(pretrained / "biomedclip", pretrained / "biomedbert")
    assert encoder.encode_text(["a lesion"]).shape == (1, TINY_CLIP_EMBED)
    assert (
        require_folder(pretrained / "stable-diffusion-v1-5", sd15_files(), "how")
        == pretrained / "stable-diffusion-v1-5"
    )


def test_a_profile_from_the_tiny_sizes_passes_and_the_published_one_does_not(pretrained):
    report = check(pretrained, profile=TINY)
    assert report.usable, report.summary()
    assert "cross_attention_dim = 32 (tiny profile)" in messages(report, OK)
    assert "conv_in.weight (16, 4, 3, 3) (tiny profile)" in messages(report, OK)

    published = check(pretrained, profile="sd15")
    assert not published.usable
    wrong = messages(published, WRONG_SHAPE)
    assert "cross_attention_dim is 32, the sd15 profile expects 768" in wrong
    assert "conv_in.weight is (16, 4, 3, 3), expected (320, 4, 3, 3) (sd15 profile)" in wrong
    assert "embed_dim is 16, the sd15 profile expects 512" in wrong
    assert "text.proj.0.weight is (24, 32), expected (640, 768)" in wrong
    assert published.with_status(MISSING) == []


# ------------------------------------------------------------------ missing files


@pytest.mark.parametrize("name", sd15_files())
def test_each_missing_sd15_file_is_named_by_the_checker_and_the_loader(copy, name):
    sd15 = copy / "stable-diffusion-v1-5"
    (sd15 / name).unlink()
    report = check(copy)
    assert not report.usable
    assert [f.path for f in report.with_status(MISSING)] == [sd15 / name]
    with pytest.raises(InputError) as error:  # sd15_model's own check, from the same list
        require_folder(sd15, sd15_files(), "how")
    assert error.value.source == str(sd15 / name)


def test_every_missing_file_is_named_not_just_the_first(copy):
    deleted = [
        copy / "stable-diffusion-v1-5" / "unet/config.json",
        copy / "stable-diffusion-v1-5" / "tokenizer/merges.txt",
        copy / "biomedclip" / "open_clip_model.safetensors",
        copy / "biomedbert" / "vocab.txt",
    ]
    for path in deleted:
        path.unlink()
    report = check(copy)
    assert sorted(f.path for f in report.with_status(MISSING)) == sorted(deleted)
    summary = report.summary()
    assert summary.startswith("NOT USABLE") and all(str(path) in summary for path in deleted)


def test_missing_folders_are_named(tmp_path):
    report = check_weights(tmp_path / "sd15", tmp_path / "clip", profile="structure", hashes=False)
    assert [f.path for f in report.with_status(MISSING)] == [tmp_path / "sd15", tmp_path / "clip"]
    assert "unet/config.json" in report.with_status(MISSING)[0].message


def test_the_biomedbert_folder_defaults_to_the_configs_layout(pretrained, tmp_path):
    report = check_weights(biomedclip=pretrained / "biomedclip", profile="structure", hashes=False)
    assert report.usable, report.summary()
    assert any(f.path == pretrained / "biomedbert" for f in report.with_status(NOTE))
    clip = shutil.copytree(pretrained / "biomedclip", tmp_path / "alone" / "biomedclip")
    report = check_weights(biomedclip=clip, profile="structure", hashes=False)
    assert [f.path for f in report.with_status(MISSING)] == [tmp_path / "alone" / "biomedbert"]


# ------------------------------------------------------------------ wrong sizes


def _edit(path: Path, **changes) -> None:
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def test_a_wrong_cross_attention_dim_in_the_unet_config_is_reported(copy):
    _edit(copy / "stable-diffusion-v1-5" / "unet/config.json", cross_attention_dim=48)
    report = check(copy)
    assert not report.usable
    wrong = messages(report, WRONG_SHAPE)
    assert "do not take [48]-wide text states" in wrong  # the weights contradict the config
    assert "cross_attention_dim [48] is not the text encoder's hidden_size 32" in wrong  # sd15_model's check


def test_a_tensor_of_the_wrong_shape_is_reported(copy):
    path = copy / "stable-diffusion-v1-5" / UNET_WEIGHTS
    tensors = tensors_of(path)
    tensors["conv_in.weight"] = torch.zeros(16, 3, 3, 3)
    save_file(tensors, str(path), metadata={"format": "pt"})
    clip = copy / "biomedclip" / "open_clip_model.safetensors"
    tensors = tensors_of(clip)
    tensors["text.proj.2.weight"] = torch.zeros(TINY_CLIP_EMBED + 1, 24)
    save_file(tensors, str(clip), metadata={"format": "pt"})
    wrong = messages(check(copy), WRONG_SHAPE)
    assert "conv_in.weight is (16, 3, 3, 3), expected (16, 4, 3, 3)" in wrong
    assert "text.proj.2.weight is (17, 24), expected (16, 24)" in wrong


def test_an_sd_inpainting_folder_passes_the_inpainting_profile_and_a_wrong_one_is_refused_by_file_and_shape(
    pretrained, tmp_path
):
    inpaint = write_tiny_sd15_inpaint(tmp_path / "sd-inpainting")
    report = check_weights(inpaint, profile=STRUCTURE_INPAINT, hashes=False)
    assert report.usable, report.summary()
    assert "in channels = 2 x 4 + 1 (inpainting), out channels = VAE latent_channels = 4" in messages(report, OK)
    assert UNet2DConditionModel.from_pretrained(inpaint / "unet").config.in_channels == 9

    plain = check_weights(pretrained / "stable-diffusion-v1-5", profile=STRUCTURE_INPAINT, hashes=False)
    assert not plain.usable  # SD 1.5's own 4-input UNet is not an inpainting UNet
    assert (
        f"{pretrained / 'stable-diffusion-v1-5' / 'unet/config.json'}: the UNet has 4 input and 4 output channels; "
        "the VAE's latents have 4, so an inpainting UNet needs 9 inputs" in messages(plain, WRONG_SHAPE)
    )
    assert check_weights(inpaint, profile="structure", hashes=False).usable is False  # and the other way round

    weights = inpaint / UNET_WEIGHTS
    tensors = tensors_of(weights)
    tensors["conv_in.weight"] = tensors["conv_in.weight"][:, :4].clone()  # config says 9, the file holds 4
    save_file(tensors, str(weights), metadata={"format": "pt"})
    assert f"{weights}: conv_in.weight is (16, 4, 3, 3), expected (16, 9, 3, 3)" in messages(
        check_weights(inpaint, profile=STRUCTURE_INPAINT, hashes=False), WRONG_SHAPE
    )
    published = messages(check_weights(inpaint, profile="sd15_inpaint", hashes=False), WRONG_SHAPE)
    assert "in_channels is 9" not in published  # the published inpainting profile expects 9 inputs
    assert "conv_in.weight is (16, 4, 3, 3), expected (320, 9, 3, 3)" in published


def test_a_config_checks_its_folder_first_and_the_first_problem_is_named_by_file_and_shape(tmp_path):
    inpaint = write_tiny_sd15_inpaint(tmp_path / "sd-inpainting")
    assert usable_sd15_folder(str(inpaint), "structure_inpaint") == inpaint
    with pytest.raises(InputError, match=r"WRONG SHAPE: cross_attention_dim is 32, .* expects 768; \d+ more") as sizes:
        usable_sd15_folder(inpaint)  # the published SD 1.5 inpainting sizes
    assert sizes.value.source == str(inpaint / "unet/config.json") and "--profile sd15_inpaint" in str(sizes.value)
    weights = inpaint / UNET_WEIGHTS
    tensors = tensors_of(weights)
    tensors["conv_in.weight"] = tensors["conv_in.weight"][:, :4].clone()
    save_file(tensors, str(weights), metadata={"format": "pt"})
    with pytest.raises(
        InputError, match=r"conv_in.weight is \(16, 4, 3, 3\), expected \(16, 9, 3, 3\) \(block_out"
    ) as shape:
        usable_sd15_folder(inpaint, "structure_inpaint")
    assert shape.value.source == str(weights)
    with pytest.raises(InputError, match="folder not found") as missing:
        usable_sd15_folder(tmp_path / "nowhere", "structure_inpaint")
    assert missing.value.source == str(tmp_path / "nowhere")


def test_latent_channels_must_match_the_unet(copy):
    _edit(copy / "stable-diffusion-v1-5" / "vae/config.json", latent_channels=8)
    wrong = messages(check(copy), WRONG_SHAPE)
    assert "the VAE's latents have 8" in wrong
    assert "decoder.conv_in.weight is (32, 4, 3, 3), expected (32, 8, 3, 3)" in wrong


def test_pixel_space_needs_a_one_channel_unet_and_no_vae(copy):
    shutil.rmtree(copy / "stable-diffusion-v1-5" / "vae")
    report = check(copy, latent=False)
    assert report.with_status(MISSING) == []  # vae/ is not needed in pixel space
    assert "pixel space (--nolatent) needs 1" in messages(report, WRONG_SHAPE)  # sd15_model refuses it too


def test_damaged_files_are_unreadable(copy):
    weights = copy / "stable-diffusion-v1-5" / "vae/diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])  # an interrupted download
    (copy / "stable-diffusion-v1-5" / "text_encoder/config.json").write_text("{not json")
    report = check(copy)
    unreadable = messages(report, UNREADABLE)
    assert str(weights) in unreadable and "download it again" in unreadable
    assert "text_encoder/config.json" in unreadable
    assert not report.usable


# ------------------------------------------------------------------ pickles


def test_a_pickle_in_place_of_safetensors_is_not_accepted(copy):
    sd15, clip = copy / "stable-diffusion-v1-5", copy / "biomedclip"
    torch.save(tensors_of(sd15 / UNET_WEIGHTS), sd15 / "unet/diffusion_pytorch_model.bin")
    (sd15 / UNET_WEIGHTS).unlink()
    torch.save(tensors_of(clip / "open_clip_model.safetensors"), clip / "open_clip_pytorch_model.bin")
    (clip / "open_clip_model.safetensors").unlink()
    report = check(copy)
    refused = report.with_status(NOT_ACCEPTED)
    assert [f.path for f in refused] == [
        sd15 / "unet/diffusion_pytorch_model.bin",
        clip / "open_clip_pytorch_model.bin",
    ]
    assert all("torch.load(weights_only=True)" in f.message and "--convert" in f.message for f in refused)
    assert [f.path for f in report.with_status(MISSING)] == [sd15 / UNET_WEIGHTS]
    assert "NOT USABLE" in report.summary() and "not accepted" in report.summary()
    # the loader itself still reads open_clip's pickle (weights_only), the checker asks for safetensors
    assert MedicalClipEncoder.from_local_dir(clip, copy / "biomedbert").embed_dim == TINY_CLIP_EMBED


def test_a_pickle_named_safetensors_is_not_accepted(copy):
    path = copy / "stable-diffusion-v1-5" / UNET_WEIGHTS
    torch.save(tensors_of(path), path)
    refused = check(copy).with_status(NOT_ACCEPTED)
    assert [f.path for f in refused] == [path] and "rename it to .bin" in refused[0].message


def test_convert_rewrites_pickles_as_safetensors_that_pass(copy):
    sd15, clip = copy / "stable-diffusion-v1-5", copy / "biomedclip"
    original = tensors_of(clip / "open_clip_model.safetensors")
    torch.save(original, clip / "open_clip_pytorch_model.bin")
    (clip / "open_clip_model.safetensors").unlink()
    torch.save(tensors_of(sd15 / UNET_WEIGHTS), sd15 / "unet/diffusion_pytorch_model.bin")
    (sd15 / UNET_WEIGHTS).unlink()
    pairs = pickles_to_convert(sd15, clip)
    assert pairs == [
        (sd15 / "unet/diffusion_pytorch_model.bin", sd15 / UNET_WEIGHTS),
        (clip / "open_clip_pytorch_model.bin", clip / "open_clip_model.safetensors"),
    ]
    source_sha = sha256_file(clip / "open_clip_pytorch_model.bin")
    for source, target in pairs:
        convert_to_safetensors(source, target, source_sha256=sha256_file(source))
    converted = tensors_of(clip / "open_clip_model.safetensors")
    assert converted.keys() == original.keys() and all(torch.equal(converted[k], original[k]) for k in original)
    with safe_open(str(clip / "open_clip_model.safetensors"), framework="numpy") as handle:
        assert handle.metadata() == {
            "format": "pt",
            "converted_from": "open_clip_pytorch_model.bin",
            "source_sha256": source_sha,
        }
    known = {source_sha: {"model": "test/biomedclip", "file": "open_clip_pytorch_model.bin", "sources": ["here"]}}
    report = check(copy, hashes=True, known=known)
    assert report.usable, report.summary()
    assert pickles_to_convert(sd15, clip) == []
    ignored = [f.path for f in report.with_status(NOTE) if f.message.startswith("ignored")]
    assert ignored == [sd15 / "unet/diffusion_pytorch_model.bin", clip / "open_clip_pytorch_model.bin"]
    provenance = [f.message for f in report.with_status(UNKNOWN_HASH) if f.path.name == "open_clip_model.safetensors"]
    assert "converted from open_clip_pytorch_model.bin" in provenance[0]
    assert "= the published test/biomedclip/open_clip_pytorch_model.bin" in provenance[0]
    # and the loader now takes the safetensors file
    assert MedicalClipEncoder.from_local_dir(clip, copy / "biomedbert").embed_dim == TINY_CLIP_EMBED


def test_tied_tensors_are_stored_once_each(tmp_path):
    shared = torch.arange(6.0).reshape(2, 3)
    torch.save({"a": shared, "b": shared}, tmp_path / "tied.bin")
    convert_to_safetensors(tmp_path / "tied.bin", tmp_path / "tied.safetensors")
    loaded = tensors_of(tmp_path / "tied.safetensors")
    assert torch.equal(loaded["a"], shared) and torch.equal(loaded["b"], shared)


# ------------------------------------------------------------------ hashes


def test_hashes_are_compared_with_the_known_list(pretrained, tmp_path):
    unet = pretrained / "stable-diffusion-v1-5" / UNET_WEIGHTS
    sha = sha256_file(unet)
    assert sha == sha256_file(unet, chunk_size=4096)  # streamed: the chunk size does not matter
    known = {sha: {"model": "test/sd", "file": UNET_WEIGHTS, "status": "published", "sources": ["https://x"]}}
    seen = []
    report = check(pretrained, hashes=True, known=known, progress=lambda path, done, total: seen.append(path))
    assert f"sha256 {sha} = published test/sd/{UNET_WEIGHTS}; source: https://x" in messages(report, OK)
    assert len(report.with_status(UNKNOWN_HASH)) == 3 and unet in seen
    assert not any(f.message.startswith("sha256") for f in check(pretrained, hashes=False).findings)

    broken = tmp_path / "hashes.json"
    broken.write_text(json.dumps({"files": [{"file": "x", "sha256": "ABC", "sources": ["s"]}]}))
    with pytest.raises(InputError, match="64 lower-case hex"):
        load_known_hashes(broken)


def test_the_shipped_hash_list_is_well_formed_and_about_files_the_checker_hashes():
    known = load_known_hashes(KNOWN_HASHES_FILE)
    hashed = {part.weights for part in SD15_PARTS if part.weights} | set(OPEN_CLIP_WEIGHT_NAMES)
    assert known and all(entry["file"] in hashed for entry in known.values())
    assert all(source.startswith("https://") for entry in known.values() for source in entry["sources"])
    assert {entry["status"] for entry in known.values()} <= {"published", "superseded"}


# ------------------------------------------------------------------ the published sizes


def _header_only_safetensors(path: Path, shapes: dict[str, tuple[int, ...]]) -> None:
    """A valid safetensors file of float32 zeros with these shapes, written sparse (header + a hole), so a
    published-size folder costs no disk space; only the header is ever read (hashes=False)."""
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, shape in shapes.items():
        size = 4 * int(torch.Size(shape).numel())
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as stream:
        stream.write(struct.pack("<Q", len(encoded)) + encoded)
        stream.truncate(8 + len(encoded) + offset)


def bert_base(vocab_size: int) -> BertConfig:
    """BERT-base's published sizes (BiomedBERT: 30522 words; Bio_ClinicalBERT, cased: 28996)."""
    return BertConfig(
        vocab_size=vocab_size,
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        max_position_embeddings=512,
    )


def sd_vae() -> AutoencoderKL:
    """SD 1.5's VAE (also PixArt-alpha's, sd-vae-ft-ema), built on the current device."""
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=2,
    )


def test_the_published_profile_passes_folders_of_the_published_architectures(tmp_path):
    """The sd15 profile's figures against the models the libraries build from SD 1.5's and BiomedCLIP's
    configs (on the meta device: shapes without memory), run through the whole checker."""
    sd15, clip, bert = tmp_path / "stable-diffusion-v1-5", tmp_path / "biomedclip", tmp_path / "biomedbert"
    bert_base(30522).save_pretrained(bert)
    (bert / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n")
    text_cfg = {
        "hf_model_name": "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract",
        "hf_proj_type": "mlp",
        "hf_pooler_type": "cls_last_hidden_state_pooler",
        "context_length": 256,
    }
    model_cfg = {
        "embed_dim": 512,
        "vision_cfg": {
            "timm_model_name": "vit_base_patch16_224",
            "timm_pool": "",
            "timm_proj": "linear",
            "image_size": 224,
        },
        "text_cfg": text_cfg,
    }
    with torch.device("meta"):
        unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768, attention_head_dim=8)
        vae = sd_vae()
        text = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=49408,
                hidden_size=768,
                intermediate_size=3072,
                num_hidden_layers=12,
                num_attention_heads=12,
                max_position_embeddings=77,
            )
        )
        biomedclip = open_clip.CustomTextCLIP(
            **{
                **model_cfg,
                "text_cfg": {
                    **text_cfg,
                    "hf_model_name": str(bert),
                    "hf_tokenizer_name": str(bert),
                    "hf_model_pretrained": False,
                },
            }
        )
    unet.save_config(sd15 / "unet")
    vae.save_config(sd15 / "vae")
    (sd15 / "text_encoder").mkdir()
    text.config.to_json_file(sd15 / "text_encoder/config.json")
    (sd15 / "tokenizer").mkdir()
    (sd15 / "tokenizer/vocab.json").write_text(json.dumps({"<|startoftext|>": 49406, "<|endoftext|>": 49407}))
    (sd15 / "tokenizer/merges.txt").write_text("#version: 0.2\ni n\n")
    (sd15 / "tokenizer/tokenizer_config.json").write_text(json.dumps({"model_max_length": 77}))
    (sd15 / "scheduler").mkdir()
    (sd15 / "scheduler/scheduler_config.json").write_text(json.dumps({"_class_name": "PNDMScheduler"}))
    clip.mkdir()
    (clip / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_cfg}))
    shapes = {name: tuple(tensor.shape) for name, tensor in unet.state_dict().items()}
    assert sum(torch.Size(shape).numel() for shape in shapes.values()) == 859_520_964  # SD 1.5's UNet
    _header_only_safetensors(sd15 / UNET_WEIGHTS, shapes)
    _header_only_safetensors(
        sd15 / "vae/diffusion_pytorch_model.safetensors", {name: tuple(t.shape) for name, t in vae.state_dict().items()}
    )
    # SD 1.5's file was saved by transformers 4 with the text_model. prefix
    _header_only_safetensors(
        sd15 / "text_encoder/model.safetensors",
        {
            name if name.startswith("text_model.") else f"text_model.{name}": tuple(t.shape)
            for name, t in text.state_dict().items()
        },
    )
    _header_only_safetensors(
        clip / "open_clip_model.safetensors", {name: tuple(t.shape) for name, t in biomedclip.state_dict().items()}
    )

    report = check_weights(sd15, clip, bert, profile="sd15", hashes=False)
    assert report.usable, report.summary()
    pinned = [f for f in report.with_status(OK) if "sd15 profile" in f.message]
    expected = sum(len(v) for v in SD15.values.values()) + sum(len(v) for v in SD15.shapes.values())
    assert len(pinned) == expected  # every published figure was checked, and matched


# ------------------------------------------------------------------ the script


def run_script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], cwd=REPO, capture_output=True, text=True, timeout=300, check=False
    )


def test_the_script_exits_0_for_usable_folders_and_1_naming_each_missing_file(pretrained, copy):
    done = run_script(
        "--sd15",
        str(pretrained / "stable-diffusion-v1-5"),
        "--biomedclip",
        str(pretrained / "biomedclip"),
        "--profile",
        "structure",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "usable" in done.stdout and "UNKNOWN HASH" in done.stdout and "sha256" in done.stderr

    deleted = [copy / "stable-diffusion-v1-5" / "vae/config.json", copy / "biomedbert" / "config.json"]
    for path in deleted:
        path.unlink()
    done = run_script(
        "--sd15", str(copy / "stable-diffusion-v1-5"), "--biomedclip", str(copy / "biomedclip"), "--nohashes"
    )
    assert done.returncode == 1
    assert all(str(path) in done.stderr for path in deleted) and "NOT USABLE" in done.stderr
    assert all(f"MISSING       {path}" in done.stdout for path in deleted)
    assert "WRONG SHAPE" in done.stdout  # the default profile: SD 1.5's sizes, not the tiny ones

    done = run_script()
    assert done.returncode != 0 and "--sd15" in done.stderr


# ------------------------------------------------------------------ VG-MedGen's full profile

PIXART, CLINICAL_BERT = "PixArt-XL-2-512x512", "Bio_ClinicalBERT"


@pytest.fixture
def vg_copy(vgmedgen_pretrained, tmp_path) -> Path:
    """A private copy of the tiny PixArt and clinical-BERT folders, to break."""
    return shutil.copytree(vgmedgen_pretrained, tmp_path / "pretrained")


def check_vg(root: Path, **kwargs):
    kwargs = {"profile": "structure", "hashes": False, **kwargs}
    return check_weights(pixart=root / PIXART, clinical_bert=root / CLINICAL_BERT, **kwargs)


def _edit(path: Path, **changes) -> None:
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def test_complete_pixart_and_clinical_bert_folders_pass_without_t5_and_the_loaders_read_them(vgmedgen_pretrained):
    assert not (vgmedgen_pretrained / PIXART / "text_encoder").exists()  # T5 is not needed
    report = check_vg(vgmedgen_pretrained, hashes=True)
    assert report.usable, report.summary()
    ok = messages(report, OK)
    assert (
        "pos_embed.proj.weight (16, 4, 2, 2)" in ok
        and f"caption_projection.linear_1.weight (16, {PIXART_CAPTION})" in ok
    )
    assert "in_channels = VAE latent_channels = 4" in ok
    assert f"embeddings.position_embeddings.weight ({CLINICAL_BERT_LENGTH}, {TINY_BERT_WIDTH})" in ok
    assert len(report.with_status(UNKNOWN_HASH)) == 3  # transformer, VAE, BERT
    encoder = ClinicalTextEncoder.from_folder(vgmedgen_pretrained / CLINICAL_BERT)
    assert pixart_generator(vgmedgen_pretrained / PIXART, encoder).fusion.text.out_features == PIXART_CAPTION


@pytest.mark.parametrize(
    "name",
    [*(f"{PIXART}/{name}" for name in pixart_files()), *(f"{CLINICAL_BERT}/{n}" for n in CLINICAL_BERT_PART.files)],
)
def test_each_missing_pixart_or_clinical_bert_file_is_named(vg_copy, name):
    (vg_copy / name).unlink()
    report = check_vg(vg_copy)
    assert not report.usable
    assert [f.path for f in report.with_status(MISSING)] == [vg_copy / name]


def test_a_missing_vocabulary_and_missing_folders_are_named(vg_copy, tmp_path):
    (vg_copy / CLINICAL_BERT / "vocab.txt").unlink()
    report = check_vg(vg_copy)
    assert [f.path for f in report.with_status(MISSING)] == [vg_copy / CLINICAL_BERT / "vocab.txt"]
    report = check_weights(pixart=tmp_path / "none", clinical_bert=tmp_path / "nobert", hashes=False)
    missing = messages(report, MISSING)
    assert (
        "none: folder not found; it should hold transformer/config.json" in missing and "PixArt-XL-2-512x512" in missing
    )
    assert "nobert: folder not found; expected a local copy of emilyalsentzer/Bio_ClinicalBERT" in missing


def test_a_transformer_that_does_not_fit_its_vae_or_its_weights_is_reported(vg_copy):
    _edit(vg_copy / PIXART / "transformer/config.json", in_channels=8, out_channels=12)
    wrong = messages(check_vg(vg_copy), WRONG_SHAPE)
    assert "the transformer takes 8 input channels, the VAE's latents have 4" in wrong
    assert "out_channels 12 is neither in_channels 8 nor twice it" in wrong
    assert (
        "diffusion_pytorch_model.safetensors: pos_embed.proj.weight is (16, 4, 2, 2), expected (16, 8, 2, 2)" in wrong
    )


def test_tensors_of_the_wrong_shape_are_reported_by_file_and_name(vg_copy):
    weights = vg_copy / PIXART / "transformer/diffusion_pytorch_model.safetensors"
    tensors = tensors_of(weights)
    tensors["caption_projection.linear_1.weight"] = torch.zeros(16, 30)
    save_file(tensors, str(weights), metadata={"format": "pt"})
    _edit(vg_copy / CLINICAL_BERT / "config.json", vocab_size=30)
    wrong = messages(check_vg(vg_copy), WRONG_SHAPE)
    assert f"{weights}: caption_projection.linear_1.weight is (16, 30), expected (16, {PIXART_CAPTION})" in wrong
    bert = vg_copy / CLINICAL_BERT / "model.safetensors"
    assert (
        f"{bert}: embeddings.word_embeddings.weight is (22, {TINY_BERT_WIDTH}), expected (30, {TINY_BERT_WIDTH})"
        in wrong
    )


def test_a_pickled_clinical_bert_is_refused_then_converted_with_its_bert_prefix_and_read(vg_copy, vgmedgen_pretrained):
    """Bio_ClinicalBERT publishes pytorch_model.bin of a BertForPreTraining (names with ``bert.``)."""
    folder = vg_copy / CLINICAL_BERT
    torch.save(
        {f"bert.{n}": t for n, t in load_file(str(folder / "model.safetensors")).items()}, folder / "pytorch_model.bin"
    )
    (folder / "model.safetensors").unlink()
    report = check_vg(vg_copy)
    assert [f.path for f in report.with_status(NOT_ACCEPTED)] == [folder / "pytorch_model.bin"]
    assert pickles_to_convert(clinical_bert=folder) == [(folder / "pytorch_model.bin", folder / "model.safetensors")]
    convert_to_safetensors(folder / "pytorch_model.bin", folder / "model.safetensors")
    report = check_vg(vg_copy)
    assert report.usable, report.summary()
    texts = ["a hypointense lesion in the l3 vertebral body."]
    converted = ClinicalTextEncoder.from_folder(folder).encode_text(texts)
    torch.testing.assert_close(
        converted, ClinicalTextEncoder.from_folder(vgmedgen_pretrained / CLINICAL_BERT).encode_text(texts)
    )


def test_the_published_pixart_alpha_profile_passes_folders_of_the_published_architectures(
    tmp_path, vgmedgen_pretrained
):
    """The pixart_alpha profile's figures against the models diffusers / transformers build from PixArt-XL-2-512x512's
    and Bio_ClinicalBERT's configs (meta device), run through the whole checker; the tiny folders fail it."""
    pixart, bert = tmp_path / PIXART, tmp_path / CLINICAL_BERT
    config = bert_base(28996)
    with torch.device("meta"):
        transformer = PixArtTransformer2DModel(
            num_attention_heads=16,
            attention_head_dim=72,
            in_channels=4,
            out_channels=8,
            num_layers=28,
            cross_attention_dim=1152,
            caption_channels=4096,
            sample_size=64,
            patch_size=2,
            norm_type="ada_norm_single",
            attention_bias=True,
            activation_fn="gelu-approximate",
        )
        vae = sd_vae()
        model = BertModel(config)
    shapes = {n: tuple(t.shape) for n, t in transformer.state_dict().items()}
    assert 600e6 < sum(torch.Size(s).numel() for s in shapes.values()) < 620e6  # PixArt-alpha XL/2: ~611 M
    transformer.save_config(pixart / "transformer")
    _header_only_safetensors(pixart / "transformer/diffusion_pytorch_model.safetensors", shapes)
    vae.save_config(pixart / "vae")
    _header_only_safetensors(
        pixart / "vae/diffusion_pytorch_model.safetensors", {n: tuple(t.shape) for n, t in vae.state_dict().items()}
    )
    shutil.copytree(vgmedgen_pretrained / PIXART / "scheduler", pixart / "scheduler")
    config.save_pretrained(bert)
    (bert / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n")
    _header_only_safetensors(
        bert / "model.safetensors", {f"bert.{n}": tuple(t.shape) for n, t in model.state_dict().items()}
    )

    report = check_weights(pixart=pixart, clinical_bert=bert, hashes=False)  # each folder's own published figures
    assert report.usable, report.summary()
    pinned = [f for f in report.with_status(OK) if "pixart_alpha profile" in f.message]
    assert len(pinned) == sum(len(v) for v in PIXART_ALPHA.values.values()) + sum(
        len(v) for v in PIXART_ALPHA.shapes.values()
    )
    tiny = messages(check_vg(vgmedgen_pretrained, profile=None), WRONG_SHAPE)
    assert f"caption_channels is {PIXART_CAPTION}, the pixart_alpha profile expects 4096" in tiny
    assert f"hidden_size is {TINY_BERT_WIDTH}, the pixart_alpha profile expects 768" in tiny


def test_the_script_checks_the_vgmedgen_folders_and_names_a_missing_file(vgmedgen_pretrained, vg_copy):
    done = run_script(
        "--pixart",
        str(vgmedgen_pretrained / PIXART),
        "--clinical_bert",
        str(vgmedgen_pretrained / CLINICAL_BERT),
        "--profile",
        "structure",
        "--nohashes",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "usable" in done.stdout
    deleted = vg_copy / PIXART / "vae/diffusion_pytorch_model.safetensors"
    deleted.unlink()
    done = run_script("--pixart", str(vg_copy / PIXART), "--profile", "structure", "--nohashes")
    assert done.returncode == 1 and f"MISSING       {deleted}" in done.stdout
    assert "PixArt-alpha: expected a local copy of PixArt-alpha 512" in done.stderr
