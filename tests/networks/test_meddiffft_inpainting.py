"""MedDiff-FT's inpainting model: the UNet input is SD inpainting's [z_t, mask, masked image], the masked image
carries nothing of the mask's inside, only the text is dropped, a wrong UNet is refused, and the saved model
predicts what the trained one does; the full profile builds from a (tiny) SD inpainting folder, refuses a wrong one,
and its fine-tuned UNet saves and loads back onto the folder's frozen VAE and text encoder."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from bundle.errors import InputError
from bundle.networks.conditions import concat_conditions, guidance_null_conditions
from bundle.networks.diffusion_space import LatentSpace
from bundle.networks.guided_unet import tiny_unet
from bundle.networks.meddiffft_inpainting import InpaintingDiffusion, sd_inpaint_model, tiny_inpainting_model
from bundle.networks.text_states import StableDiffusionTextStates
from tests.helpers.tiny_weights import MAX_LENGTH, SIZE, TEXT_WIDTH, write_tiny_sd15, write_tiny_sd15_inpaint


@pytest.fixture(scope="module")
def model() -> InpaintingDiffusion:
    return tiny_inpainting_model(32, unet_channels=(16, 32))


def images_and_mask() -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    mask = torch.zeros(2, 1, 32, 32)
    mask[:, :, 10:20, 12:22] = 0.8
    return images, mask


def test_the_unet_sees_noisy_image_mask_and_masked_image_in_that_order(model):
    images, mask = images_and_mask()
    conditions = model.conditions(["a lesion", "a lesion"], images, mask)
    assert set(conditions) == {"text", "inpaint"} and conditions["inpaint"].shape == (2, 2, 32, 32)
    binary = (mask > 0.5).float()
    assert torch.equal(conditions["inpaint"][:, :1], binary)
    assert torch.equal(conditions["inpaint"][:, 1:], model.space.encode(images * (1 - binary)))
    latents, timesteps = torch.randn(2, 1, 32, 32), torch.tensor([10, 500])
    expected = model.unet(
        torch.cat([latents, binary, model.space.encode(images * (1 - binary))], dim=1),
        timesteps,
        encoder_hidden_states=conditions["text"],
    ).sample
    assert torch.allclose(model(latents, timesteps, conditions), expected)


def test_the_inside_of_the_mask_does_not_reach_the_conditions(model):
    images, mask = images_and_mask()
    changed = images.clone()
    changed[mask > 0.5] = 1.0 - changed[mask > 0.5]
    first, second = (model.conditions(["x", "x"], batch, mask)["inpaint"] for batch in (images, changed))
    assert torch.equal(first, second)
    changed[:, :, 0, 0] += 0.5  # outside the mask it does
    assert not torch.equal(first, model.conditions(["x", "x"], changed, mask)["inpaint"])


def test_guidance_drops_only_the_text(model):
    images, mask = images_and_mask()
    conditions = model.conditions(["a lesion", "another"], images, mask)
    assert set(model.null_conditions(2)) == {"text"}
    null = guidance_null_conditions(model.null_conditions(2), conditions)
    assert torch.equal(null["inpaint"], conditions["inpaint"])
    assert torch.equal(null["text"], model.text_states([""]).expand(2, -1, -1))
    assert concat_conditions(null, conditions)["inpaint"].shape == (4, 2, 32, 32)


def test_a_unet_of_the_wrong_channels_is_refused(model):
    with pytest.raises(ValueError, match="needs 3 inputs and 1 outputs, got 1 and 1"):
        InpaintingDiffusion(tiny_unet(32, block_out_channels=(16, 32)), model.text_states, model.space)


def test_the_saved_model_predicts_as_the_trained_one(model, tmp_path):
    with torch.no_grad():
        for parameter in model.unet.parameters():
            parameter.add_(0.01 * torch.randn_like(parameter))
    model.save(tmp_path / "m")
    loaded = InpaintingDiffusion.load(tmp_path / "m")
    images, mask = images_and_mask()
    conditions = model.conditions(["a lesion"] * 2, images, mask)
    latents, timesteps = torch.randn(2, 1, 32, 32), torch.tensor([3, 700])
    assert torch.allclose(loaded(latents, timesteps, conditions), model(latents, timesteps, conditions), atol=1e-6)
    assert torch.equal(loaded.text_states(["a lesion"]), model.text_states(["a lesion"]))


def test_lora_fine_tuning_trains_only_the_adapter_and_saves_merged(tmp_path):
    model = tiny_inpainting_model(32, unet_channels=(16, 32), seed=4).with_finetune("lora", lora_rank=4)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in name for name in trainable)
    assert any(".attn2.to_k.lora_A" in name for name in trainable) and any(".attn1.to_q." in n for n in trainable)
    base = {name: p.detach().clone() for name, p in model.unet.named_parameters() if not p.requires_grad}
    images, mask = images_and_mask()
    conditions = model.conditions(["a lesion"] * 2, images, mask)
    latents, timesteps = torch.randn(2, 1, 32, 32), torch.tensor([3, 700])
    before = model(latents, timesteps, conditions).detach()
    optimiser = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0)
    for _ in range(3):
        optimiser.zero_grad()
        model(latents, timesteps, conditions).square().mean().backward()
        optimiser.step()
    after = model(latents, timesteps, conditions).detach()
    assert not torch.allclose(after, before, atol=1e-4)  # the adapter trained
    assert all(torch.equal(p, base[name]) for name, p in model.unet.named_parameters() if name in base)
    model.save(tmp_path / "lora")
    loaded = InpaintingDiffusion.load(tmp_path / "lora")
    assert not any("lora" in name for name, _ in loaded.unet.named_parameters())  # a plain UNet
    assert torch.allclose(loaded(latents, timesteps, conditions), after, atol=1e-5)  # with the adapter merged
    assert any("lora_" in name for name, _ in model.unet.named_parameters())  # saving left the model as it was
    with pytest.raises(ValueError, match="finetune must be one of"):
        tiny_inpainting_model(32, unet_channels=(16, 32)).with_finetune("adapter")


# ------------------------------------------------------------------ the full profile: an SD inpainting folder


@pytest.fixture(scope="module")
def sd_inpaint_dir(tmp_path_factory) -> Path:
    return write_tiny_sd15_inpaint(tmp_path_factory.mktemp("sd") / "sd-inpainting")


def test_sd_inpaint_model_builds_from_the_folder_in_latent_space_with_frozen_vae_and_text(sd_inpaint_dir):
    model = sd_inpaint_model(sd_inpaint_dir)
    assert isinstance(model.space, LatentSpace) and isinstance(model.text_states, StableDiffusionTextStates)
    assert model.unet.config.in_channels == 9 and model.base_dir == sd_inpaint_dir.absolute()
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {f"unet.{name}" for name, _ in model.unet.named_parameters()}  # VAE and text encoder frozen
    images = torch.rand(2, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    mask = torch.zeros(2, 1, SIZE, SIZE)
    mask[:, :, 4:10, 6:12] = 1
    conditions = model.conditions(["a lesion", "le"], images, mask)
    assert conditions["text"].shape == (2, MAX_LENGTH, TEXT_WIDTH)
    assert conditions["inpaint"].shape == (2, 5, SIZE // 2, SIZE // 2)
    # SD inpainting's masked image: the [-1, 1] image with the mask's inside 0 (mid grey), the VAE's posterior mean
    scaled = (images.repeat(1, 3, 1, 1) * 2 - 1) * (mask < 0.5)
    expected = model.space.vae.encode(scaled).latent_dist.mean * model.space.scaling_factor
    torch.testing.assert_close(conditions["inpaint"][:, 1:], expected)
    assert torch.equal(conditions["inpaint"][:, :1], mask[:, :, ::2, ::2])
    noise = model(torch.randn(2, 4, SIZE // 2, SIZE // 2), torch.tensor([10, 900]), conditions)
    assert noise.shape == (2, 4, SIZE // 2, SIZE // 2)
    lora = sd_inpaint_model(sd_inpaint_dir).with_finetune("lora", lora_rank=2)
    assert all("lora_" in name for name, p in lora.named_parameters() if p.requires_grad)


def test_a_plain_sd15_folder_or_a_missing_file_is_refused_by_name(sd_inpaint_dir, tmp_path):
    plain = write_tiny_sd15(tmp_path / "sd15")
    with pytest.raises(ValueError, match="4 input and 4 output channels.* need 9 inputs") as error:
        sd_inpaint_model(plain)
    assert str(plain / "unet/config.json") in str(error.value)
    broken = shutil.copytree(sd_inpaint_dir, tmp_path / "broken")
    (broken / "vae/diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(InputError, match="stable-diffusion-inpainting") as missing:
        sd_inpaint_model(broken)
    assert missing.value.source == str(broken / "vae/diffusion_pytorch_model.safetensors")


@pytest.mark.parametrize("finetune", ["full", "lora"])
def test_a_fine_tuned_latent_model_saves_its_unet_and_loads_on_its_base_folder(sd_inpaint_dir, tmp_path, finetune):
    model = sd_inpaint_model(sd_inpaint_dir).with_finetune(finetune, lora_rank=2)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.add_(0.05 * torch.randn_like(parameter))
    model.save(tmp_path / "tuned")
    saved = sorted(str(p.relative_to(tmp_path / "tuned")) for p in (tmp_path / "tuned").rglob("*") if p.is_file())
    assert saved == ["base_model.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors"]
    images, mask = torch.rand(1, 1, SIZE, SIZE), torch.zeros(1, 1, SIZE, SIZE)
    mask[:, :, 2:8, 2:8] = 1
    conditions = model.conditions(["a lesion"], images, mask)
    latents, timesteps = torch.randn(1, 4, SIZE // 2, SIZE // 2), torch.tensor([500])
    expected = model(latents, timesteps, conditions)
    loaded = InpaintingDiffusion.load(tmp_path / "tuned")  # the base folder from base_model.json
    assert loaded.base_dir == sd_inpaint_dir.absolute() and isinstance(loaded.space, LatentSpace)
    assert not any("lora" in name for name, _ in loaded.unet.named_parameters())
    torch.testing.assert_close(loaded(latents, timesteps, loaded.conditions(["a lesion"], images, mask)), expected)
    base = sd_inpaint_model(sd_inpaint_dir)
    assert not torch.allclose(base(latents, timesteps, conditions), expected, atol=1e-3)  # the tuned UNet was read
    moved = shutil.copytree(sd_inpaint_dir, tmp_path / "moved")
    assert InpaintingDiffusion.load(tmp_path / "tuned", sd_inpaint_dir=moved).base_dir == moved.absolute()


def test_a_model_folder_without_its_frozen_parts_is_refused(sd_inpaint_dir, tmp_path):
    sd_inpaint_model(sd_inpaint_dir).save(tmp_path / "tuned")
    (tmp_path / "tuned" / "base_model.json").unlink()
    with pytest.raises(InputError, match="neither base_model.json nor clip/") as error:
        InpaintingDiffusion.load(tmp_path / "tuned")
    assert error.value.source == str(tmp_path / "tuned" / "clip")
    tiny_inpainting_model(32, unet_channels=(16, 32)).save(tmp_path / "tiny")
    with pytest.raises(InputError, match="a tiny-profile model") as tiny:
        InpaintingDiffusion.load(tmp_path / "tiny", sd_inpaint_dir=sd_inpaint_dir)
    assert tiny.value.source == str(tmp_path / "tiny")
    built = sd_inpaint_model(sd_inpaint_dir)
    model = InpaintingDiffusion(built.unet, built.text_states, built.space)  # its base folder not known
    with pytest.raises(ValueError, match="only a tiny model or one from sd_inpaint_model"):
        model.save(tmp_path / "other")
