"""The speed options give the results of the plain path: gradient checkpointing and channels-last keep the UNet's
outputs and gradients, compile works in place, and the trainer / sampler run under each precision. No timings are
asserted here (see benchmarks/)."""

from __future__ import annotations

import copy

import pytest
import torch
from diffusers import AutoencoderKL, DDPMScheduler

from bundle.engines.guided_diffusion_trainer import GuidedDiffusionTrainer
from bundle.inferers.soft_mask_inpainting import SoftMaskInpaintingInferer
from bundle.losses.soft_masked_noise import SoftMaskedNoiseLoss
from bundle.networks.diffusion_space import LatentSpace
from bundle.networks.medical_clip import MedicalClipEncoder
from bundle.networks.medsoft_diffusion import tiny_model
from bundle.networks.speed_options import SpeedOptions, cast_frozen_weights, diffusers_unet, optimise_unet

SIZE = 32


@pytest.fixture(scope="module")
def model():
    clip = MedicalClipEncoder.tiny(embed_dim=32, image_size=32, vision_width=32, text_width=32, heads=2)
    return tiny_model(spatial_size=SIZE, clip_encoder=clip, unet_channels=(16, 32), seed=0)


def loss_and_grads(network, inputs):
    network.unet.train()
    network.unet.zero_grad(set_to_none=True)
    output = network(*inputs)
    loss = output.pow(2).mean()
    loss.backward()
    return output.detach(), {n: p.grad.clone() for n, p in network.unet.named_parameters() if p.grad is not None}


def test_gradient_checkpointing_and_channels_last_keep_outputs_and_gradients(model):
    generator = torch.Generator().manual_seed(2)
    conditions = model.conditions(["a lesion", "another lesion"], torch.rand(2, 1, SIZE, SIZE, generator=generator))
    inputs = (torch.randn(2, 1, SIZE, SIZE, generator=generator), torch.tensor([10, 900]), conditions)
    base = copy.deepcopy(model)
    reference_output, reference_grads = loss_and_grads(base, inputs)
    for options in ({"gradient_checkpointing": True}, {"channels_last": True}):
        variant = optimise_unet(copy.deepcopy(model), **options)
        unet = diffusers_unet(variant)
        assert unet.is_gradient_checkpointing == bool(options.get("gradient_checkpointing"))
        output, grads = loss_and_grads(variant, inputs)
        assert torch.allclose(output, reference_output, atol=1e-5)
        assert grads.keys() == reference_grads.keys()
        for name, grad in grads.items():
            assert torch.allclose(grad, reference_grads[name], atol=1e-5, rtol=1e-4), name


def test_compile_option_compiles_the_unet_in_place(model, monkeypatch):
    calls = []
    variant = copy.deepcopy(model)
    unet = diffusers_unet(variant)
    monkeypatch.setattr(unet, "compile", lambda **options: calls.append(options))
    names = set(variant.state_dict())
    assert optimise_unet(variant, compile=True, compile_options={"mode": "reduce-overhead"}) is variant
    assert calls == [{"mode": "reduce-overhead"}] and set(variant.state_dict()) == names


def test_trainer_and_sampler_run_under_each_precision(model):
    generator = torch.Generator().manual_seed(3)
    image = torch.rand(2, 1, SIZE, SIZE, generator=generator)
    soft_mask = torch.zeros_like(image)
    soft_mask[:, :, 8:24, 8:24] = 1.0
    batch = {
        "image": image,
        "soft_mask": soft_mask,
        "masked_image": image * (1 - soft_mask),
        "text": ["a lesion", "another lesion"],
    }
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", clip_sample=False)
    results = {}
    for precision in ("fp32", "auto", "bf16"):
        network = copy.deepcopy(model)
        optimizer = torch.optim.AdamW(network.unet.parameters(), lr=1e-4)
        trainer = GuidedDiffusionTrainer(
            noise_scheduler=scheduler,
            precision=precision,
            gradient_checkpointing=True,
            device="cpu",
            max_epochs=1,
            train_data_loader=[batch],
            network=network,
            optimizer=optimizer,
            loss_function=SoftMaskedNoiseLoss(),
        )
        trainer.run()
        assert trainer.state.iteration == 1 and torch.isfinite(trainer.state.output["loss"])
        inferer = SoftMaskInpaintingInferer.ddim(scheduler, num_inference_steps=3, precision=precision)
        results[precision] = inferer(image, model.eval(), soft_mask, batch["text"], seeds=[1, 2])
        assert torch.allclose(results[precision][soft_mask == 0], image[soft_mask == 0], atol=1e-6)
    assert torch.equal(results["auto"], results["fp32"])  # "auto" is float32 on a CPU
    assert (results["bf16"] - results["fp32"]).abs().mean() < 0.1  # bf16 autocast: close, not equal


def test_weights_cast_once_keep_the_encoders_in_float32_and_sample_like_autocast(model):
    generator = torch.Generator().manual_seed(5)
    image = torch.rand(2, 1, SIZE, SIZE, generator=generator)
    soft_mask = torch.zeros_like(image)
    soft_mask[:, :, 8:24, 8:24] = 1.0
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", clip_sample=False)
    inferer = SoftMaskInpaintingInferer.ddim(scheduler, num_inference_steps=3, precision="bf16")
    texts = ["a lesion", "another lesion"]
    autocast_only = inferer(image, model.eval(), soft_mask, texts, seeds=[1, 2])
    cast = SpeedOptions(weights_dtype="bf16").apply(copy.deepcopy(model)).eval()
    assert {p.dtype for p in cast.unet.parameters()} == {torch.bfloat16}  # the UNet with its MSC attention
    assert {p.dtype for p in cast.clip_encoder.parameters()} == {torch.float32}  # runs once per image: stays float32
    result = inferer(image, cast, soft_mask, texts, seeds=[1, 2])
    assert result.dtype == torch.float32
    assert torch.allclose(result[soft_mask == 0], image[soft_mask == 0], atol=1e-6)
    assert (result - autocast_only).abs().mean() < 0.05  # the same sampling, rounded weights
    with pytest.raises(ValueError, match="weights dtype"):
        cast_frozen_weights(copy.deepcopy(model), "int8")


def test_a_latent_space_with_a_bf16_vae_takes_and_gives_float32():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        vae = AutoencoderKL(
            block_out_channels=(8, 16),
            down_block_types=("DownEncoderBlock2D",) * 2,
            up_block_types=("UpDecoderBlock2D",) * 2,
            layers_per_block=1,
            norm_num_groups=4,
            latent_channels=4,
        )
    full, half = LatentSpace(vae), LatentSpace(copy.deepcopy(vae).to(torch.bfloat16))
    images = torch.rand(1, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    latents = half.encode(images)
    assert latents.dtype == torch.float32 and half.decode(latents).dtype == torch.float32
    assert (latents - full.encode(images)).abs().max() < 0.1 * full.encode(images).abs().max()
    assert (half.decode(latents) - full.decode(latents)).abs().max() < 0.05
