"""MedDiff-FT's inpainting model: the UNet input is SD inpainting's [z_t, mask, masked image], the masked image
carries nothing of the mask's inside, only the text is dropped, a wrong UNet is refused, and the saved model
predicts what the trained one does."""

from __future__ import annotations

import pytest
import torch

from bundle.networks.conditions import concat_conditions, guidance_null_conditions
from bundle.networks.guided_unet import tiny_unet
from bundle.networks.meddiffft_inpainting import InpaintingDiffusion, tiny_inpainting_model


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
