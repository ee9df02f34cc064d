"""The SD-1.5-shape figures that need a GPU: seconds per 50-step 512 x 512 image (bf16 autocast) beside the
published figure of VG-MedGen (1.457 s per image, 833 M parameters), our sampler against diffusers' loop at
that shape, and peak allocated GPU memory for inference (batch 1) and stage-2 training (batch 4, adapter
weights, with and without gradient checkpointing).

No SD 1.5 weights are downloaded: the UNet (SD 1.5's config), the VAE (SD 1.5's config) and the conditions
are random; the time of a step does not depend on the weights' values. The medical CLIP, the MSC and the text
encoder run once per image, not per step, and are left out (fixed random conditions stand in).
"""

from __future__ import annotations

import gc
import time

import torch
from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler
from torch import nn

from benchmarks.common import NO_GPU, Context, Record, compare, interleaved, not_measured
from benchmarks.sampling import diffusers_inpaint_loop
from benchmarks.unet_overhead import MSC_TOKENS, SD15_CONFIG, SD15_MSC_DIM, SD15_TEXT_LENGTH, unet_pair
from bundle.inferers.soft_mask_inpainting import SoftMaskInpaintingInferer
from bundle.networks.diffusion_space import LatentSpace
from bundle.networks.speed_options import optimise_unet
from bundle.utils.precision import autocast

VG_MEDGEN = {
    "seconds_per_image": 1.457,
    "parameters_m": 833.0,
    "source": "VG-MedGen (published: 1.457 s per image, 833 M parameters)",
}
SD15_VAE_CONFIG = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "block_out_channels": [128, 256, 512, 512],
    "layers_per_block": 2,
    "latent_channels": 4,
    "sample_size": 512,
    "scaling_factor": 0.18215,
}


class FixedConditionsModel(nn.Module):
    """A :class:`bundle.networks.medsoft_diffusion.MedSoftDiffusion` stand-in: the guided UNet and the latent space,
    with
    fixed random conditions in place of the text encoder, medical CLIP and MSC."""

    def __init__(self, unet: nn.Module, space: nn.Module, text_length: int, cross_dim: int, msc_dim: int) -> None:
        super().__init__()
        self.unet, self.space = unet, space
        generator = torch.Generator().manual_seed(0)
        self.register_buffer("text", torch.randn(1, text_length, cross_dim, generator=generator))
        self.register_buffer("empty_text", torch.randn(1, text_length, cross_dim, generator=generator))
        self.register_buffer("tokens", torch.randn(1, MSC_TOKENS, msc_dim, generator=generator))

    condition_groups = ("text", "msc")

    def conditions(self, texts, masked_images) -> dict[str, torch.Tensor]:
        return {"text": self.text.expand(len(texts), -1, -1), "msc": self.tokens.expand(len(texts), -1, -1)}

    def null_conditions(self, batch_size: int) -> dict[str, torch.Tensor]:
        return {
            "text": self.empty_text.expand(batch_size, -1, -1),
            "msc": torch.zeros_like(self.tokens).expand(batch_size, -1, -1),
        }

    def forward(self, latents, timesteps, conditions) -> torch.Tensor:
        return self.unet(latents, timesteps, conditions["text"], conditions["msc"])


def build(
    device: torch.device,
    unet_config: dict = SD15_CONFIG,
    vae_config: dict = SD15_VAE_CONFIG,
    msc_dim: int = SD15_MSC_DIM,
    text_length: int = SD15_TEXT_LENGTH,
) -> FixedConditionsModel:
    _, guided = unet_pair(unet_config, msc_dim)
    guided.set_trainable("adapter")
    guided.trainable = "adapter"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        vae = AutoencoderKL(**vae_config)
    return FixedConditionsModel(guided, LatentSpace(vae), text_length, unet_config["cross_attention_dim"], msc_dim).to(
        device
    )


def peak_memory(device: torch.device, call) -> float | None:
    """Peak allocated GPU memory (MiB) of ``call`` (``None`` off the GPU)."""
    if device.type != "cuda":
        call()
        return None
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    call()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() / 2**20


def measure_sd15(
    device: torch.device,
    model: FixedConditionsModel,
    image_size: int = 512,
    steps: int = 50,
    repeats: int = 5,
    precision: str | None = "bf16",
    train_batch: int = 4,
) -> dict[str, object]:
    """Timings and peak memory of sampling one image and of a training step (the numbers of :func:`run`)."""
    scheduler = DDPMScheduler(
        num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False
    )  # SD 1.5's schedule
    generator = torch.Generator().manual_seed(0)
    image = torch.rand(1, 1, image_size, image_size, generator=generator).to(device)
    mask = torch.zeros_like(image)
    mask[..., image_size // 4 : image_size // 2, image_size // 4 : image_size // 2] = 1.0
    inferer = SoftMaskInpaintingInferer(
        DDIMScheduler.from_config(scheduler.config), num_inference_steps=steps, precision=precision
    )
    reference_scheduler = DDIMScheduler.from_config(scheduler.config)
    model.eval()

    def ours():
        return inferer(image, model, mask, ["a lesion"], seeds=[0])

    def reference():
        return diffusers_inpaint_loop(
            model, reference_scheduler, image, mask, ["a lesion"], 0, steps, precision=precision
        )

    times = interleaved({"ours": ours, "reference": reference}, repeats=repeats, device=device)
    inference_peak = peak_memory(device, ours)

    parameters = [p for p in model.unet.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=1e-4)
    images = torch.rand(train_batch, 1, image_size, image_size, generator=generator).to(device)
    masks = mask.expand(train_batch, -1, -1, -1)

    def train_step():
        model.unet.train()
        latents = model.space.encode(images)
        noise = torch.randn_like(latents)
        timesteps = torch.randint(0, 1000, (train_batch,), device=device)
        conditions = model.conditions(["a lesion"] * train_batch, images)
        with autocast(precision, device):
            predicted = model(scheduler.add_noise(latents, noise, timesteps), timesteps, conditions)
            weight = model.space.mask(masks, latents)
            loss = (weight * (predicted.float() - noise).pow(2)).sum() / weight.sum()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    training = {}
    for label, checkpointing in (("plain", False), ("gradient_checkpointing", True)):
        if checkpointing:
            optimise_unet(model, gradient_checkpointing=True)
        train_step()  # warm-up (and the optimiser's state)
        started = time.perf_counter()
        peak = peak_memory(device, train_step)
        training[label] = {"seconds_per_step": time.perf_counter() - started, "peak_mib": peak}
    model.unet.unet.disable_gradient_checkpointing()
    return {
        "ours_s": times["ours"],
        "reference_s": times["reference"],
        "inference_peak_mib": inference_peak,
        "training": training,
        "guided_unet_parameters_m": sum(p.numel() for p in model.unet.parameters()) / 1e6,
    }


def run(ctx: Context) -> list[Record]:
    shape = "SD 1.5 UNet + VAE configs (random weights), 512 x 512 (64 x 64 latent), 50 DDIM steps, CFG, bf16"
    if ctx.device.type != "cuda":
        return [
            not_measured(
                "SD-1.5 512 px: seconds per 50-step image (bf16) vs VG-MedGen",
                8,
                VG_MEDGEN["source"],
                "report beside the published 1.457 s",
                NO_GPU,
                shape,
            ),
            not_measured(
                "SD-1.5 512 px sampler vs diffusers' loop (GPU)",
                2,
                "diffusers' inpainting loop",
                "<= 1.05",
                NO_GPU,
                shape,
            ),
            not_measured("SD-1.5 inference peak GPU memory, batch 1", 6, "none", "report", NO_GPU, shape),
            not_measured(
                "SD-1.5 training peak GPU memory, batch 4",
                6,
                "none",
                "report",
                NO_GPU,
                "adapter training, 512 px, bf16",
            ),
            not_measured(
                "SD-1.5 training peak GPU memory, batch 4, gradient checkpointing",
                6,
                "none",
                "report",
                NO_GPU,
                "adapter training, 512 px, bf16",
            ),
        ]
    model = build(ctx.device)
    result = measure_sd15(ctx.device, model, repeats=3 if ctx.quick else 10)
    del model
    gc.collect()
    torch.cuda.empty_cache()
    parameters = result["guided_unet_parameters_m"]
    sampler = compare(
        "SD-1.5 512 px sampler vs diffusers' loop (GPU)",
        2,
        result["ours_s"],
        result["reference_s"],
        "diffusers' inpainting loop, same UNet and scheduler",
        "<= 1.05",
        1.05,
        shape,
    )
    ours_s = sampler.ours_s
    records = [
        Record(
            name="SD-1.5 512 px: seconds per 50-step image (bf16) vs VG-MedGen",
            item=8,
            ours_s=ours_s,
            reference_s=VG_MEDGEN["seconds_per_image"],
            ratio=ours_s / VG_MEDGEN["seconds_per_image"],
            reference=VG_MEDGEN["source"] + " - a published figure on other hardware, not run here",
            target="report beside the published 1.457 s",
            met=None,
            shape=shape,
            value=ours_s,
            unit="s per image",
            notes=f"guided UNet {parameters:.0f} M parameters vs VG-MedGen's 833 M",
            extra={"guided_unet_parameters_m": parameters},
        ),
        sampler,
        Record(
            name="SD-1.5 inference peak GPU memory, batch 1",
            item=6,
            ours_s=None,
            reference_s=None,
            ratio=None,
            reference="none",
            target="report",
            met=None,
            shape=shape,
            value=result["inference_peak_mib"],
            unit="MiB max_memory_allocated",
        ),
    ]
    for label, key in (("", "plain"), (", gradient checkpointing", "gradient_checkpointing")):
        figures = result["training"][key]
        records.append(
            Record(
                name=f"SD-1.5 training peak GPU memory, batch 4{label}",
                item=6,
                ours_s=figures["seconds_per_step"],
                reference_s=None,
                ratio=None,
                reference="none; ours_s is seconds per training step",
                target="report",
                met=None,
                shape="adapter training (W'_k, W'_v), 512 px, bf16 autocast, AdamW",
                value=figures["peak_mib"],
                unit="MiB max_memory_allocated",
            )
        )
    return records
