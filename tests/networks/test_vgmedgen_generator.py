"""VG-MedGen's full-profile builder on tiny random folders in PixArt-alpha's and Bio_ClinicalBERT's layouts:
the frozen transformer with LoRA on the attention projections, its VAE as the latent space, the clinical BERT
feeding the disentangler, the fusion at the transformer's caption width; only LoRA and the fusion train; the trained
file round-trips; a folder that does not fit is refused by name."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from diffusers import AutoencoderKL

from bundle.errors import InputError
from bundle.networks.clinical_text import ClinicalTextEncoder
from bundle.networks.diffusion_space import LatentSpace
from bundle.networks.vgmedgen_generator import (
    GENERATOR_FILE,
    load_pixart_generator,
    pixart_generator,
    tiny_generator,
)
from bundle.networks.vgmedgen_text import TEXT_FILE, TextDisentangler
from bundle.networks.weight_files import safetensors_metadata
from bundle.weights.layouts import pixart_files
from tests.helpers.tiny_weights import PIXART_CAPTION, SIZE, TINY_BERT_WIDTH

TEXTS = ["Malignant l3 vertebra. a hypointense lesion.", "Normal l4 vertebra."]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def pixart_dir(vgmedgen_pretrained):
    return vgmedgen_pretrained / "PixArt-XL-2-512x512"


@pytest.fixture(scope="module")
def text_encoder(vgmedgen_pretrained):
    return ClinicalTextEncoder.from_folder(vgmedgen_pretrained / "Bio_ClinicalBERT", 16)


def test_the_full_profile_builds_from_the_folders_and_trains_only_lora_and_the_fusion(pixart_dir, text_encoder):
    model = pixart_generator(pixart_dir, text_encoder, seed=1)
    assert isinstance(model.space, LatentSpace) and model.space.channels == 4
    assert model.text_encoder is text_encoder and model.disentangler.settings["input_dim"] == TINY_BERT_WIDTH
    assert model.fusion.text.in_features == TINY_BERT_WIDTH and model.fusion.text.out_features == PIXART_CAPTION
    assert model.fusion.anatomy[-1].out_features == PIXART_CAPTION  # the conditions at the caption width
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert all(name.startswith("fusion.") or "lora_" in name for name in trainable)
    lora = {name for name in trainable if "lora_" in name}
    assert all(any(f".{target}.lora_" in name for name in lora) for target in ("to_q", "to_k", "to_v", "to_out.0"))
    assert {name.split(".lora_")[0].rsplit(".", 1)[-1] for name in lora} <= {"to_q", "to_k", "to_v", "0"}
    assert len({p.shape[0] for n, p in model.named_parameters() if "lora_A" in n}) == 1  # rank 8 everywhere
    assert next(p for n, p in model.named_parameters() if "lora_A" in n).shape[0] == 8

    images = torch.rand(2, 1, SIZE, SIZE)
    latents = model.space.encode(images)
    assert latents.shape == (2, 4, SIZE // 2, SIZE // 2)
    conditions = model.conditions(TEXTS)
    timesteps = torch.tensor([20, 400])
    before = {name: value.clone() for name, value in model.state_dict().items()}
    optimiser = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    for _ in range(3):
        loss = (model(latents, timesteps, conditions) - latents).square().mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    after = model.state_dict()
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert changed == trainable  # the transformer, the VAE, BERT and the disentangler bitwise unchanged


def test_the_trained_lora_and_fusion_round_trip_through_the_models_folder(pixart_dir, text_encoder, tmp_path):
    disentangler = TextDisentangler(TINY_BERT_WIDTH)
    disentangler.save(tmp_path / TEXT_FILE)
    model = pixart_generator(pixart_dir, text_encoder, TextDisentangler.load(tmp_path / TEXT_FILE), seed=2)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.add_(0.05 * torch.randn_like(parameter))
    model.save_trained(tmp_path / GENERATOR_FILE)
    saved = model.trained_state_dict()
    assert saved and all(name.startswith("fusion.") or "lora_" in name for name in saved)  # no base weight
    loaded = load_pixart_generator(tmp_path, pixart_dir, text_encoder)
    latents, t = torch.randn(2, 4, SIZE // 2, SIZE // 2), torch.tensor([5, 50])
    with torch.no_grad():
        expected = model.eval()(latents, t, model.conditions(TEXTS))
        assert torch.equal(loaded(latents, t, loaded.conditions(TEXTS)), expected)
        untrained = pixart_generator(pixart_dir, text_encoder, disentangler, seed=2).eval()
        assert not torch.allclose(untrained(latents, t, untrained.conditions(TEXTS)), expected)
    settings = json.loads(safetensors_metadata(tmp_path / GENERATOR_FILE)["vgmedgen"])
    assert settings["trainable"] == "lora" and settings["lora_rank"] == 8
    # a generator trained on another base (the tiny PixArt, caption width 96) is refused by file name
    other = tiny_generator(SIZE, text_encoder, disentangler, trainable="lora", num_layers=1)
    other.save_trained(tmp_path / GENERATOR_FILE)
    with pytest.raises(InputError, match=GENERATOR_FILE):
        load_pixart_generator(tmp_path, pixart_dir, text_encoder)


@pytest.mark.parametrize("name", pixart_files())
def test_a_missing_file_of_the_pixart_folder_is_named(pixart_dir, text_encoder, tmp_path, name):
    folder = shutil.copytree(pixart_dir, tmp_path / "pixart")
    (folder / name).unlink()
    with pytest.raises(InputError, match="PixArt-alpha") as error:
        pixart_generator(folder, text_encoder)
    assert error.value.source == str(folder / name)


def test_a_transformer_that_does_not_take_the_vaes_latents_is_refused(pixart_dir, text_encoder, tmp_path):
    folder = shutil.copytree(pixart_dir, tmp_path / "pixart")
    vae = AutoencoderKL.from_pretrained(folder / "vae")
    AutoencoderKL.from_config({**vae.config, "latent_channels": 8}).save_pretrained(folder / "vae")
    with pytest.raises(ValueError, match="takes 4 input channels, the diffusion space has 8"):
        pixart_generator(folder, text_encoder)
