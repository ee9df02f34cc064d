"""The SD-1.5-shape figures that need a GPU, in one short script (``python -m benchmarks.gpu``, also item 8 of
``python -m benchmarks``): seconds per 50-step 512 x 512 CFG image (bf16 autocast, eager and ``torch.compile``d),
seconds per whole volume (the slices of a vertebra batched into one sampler call), our sampler against
diffusers' inpainting loop at that shape, and peak allocated GPU memory for inference (batch 1) and for one
stage-2 adapter training step (batch 4, with and without gradient checkpointing). Sized to run in a few minutes
on one H100/H200-class GPU (under 8).

``python -m benchmarks.gpu --dry_run`` runs the same code on the CPU as a shape check: SD 1.5's UNet and VAE
configs with random weights, a 64 px image (8 x 8 latent), 2 sampler steps, no compilation; it prints the
shapes it checked and no figures. ``--tiny`` (with ``--dry_run``) shrinks the configs too, for the test suite.

No SD 1.5 weights are downloaded: the UNet (SD 1.5's config), the VAE (SD 1.5's config) and the conditions
are random; the time of a step does not depend on the weights' values. The medical CLIP, the MSC and the text
encoder run once per image, not per step, and are left out (fixed random conditions stand in).
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler
from torch import nn

from benchmarks.common import (
    INTERLEAVED,
    NO_GPU,
    REPO,
    Context,
    Record,
    compare,
    interleaved,
    median,
    not_measured,
    spread,
    synchronise,
)
from benchmarks.sampling import diffusers_inpaint_loop
from benchmarks.unet_overhead import MSC_TOKENS, SD15_CONFIG, SD15_MSC_DIM, SD15_TEXT_LENGTH, unet_pair
from bundle.inferers.soft_mask_inpainting import SoftMaskInpaintingInferer
from bundle.networks.diffusion_space import LatentSpace
from bundle.networks.speed_options import cast_frozen_weights, diffusers_unet, optimise_unet
from bundle.utils.precision import autocast

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


class SD15Measurement:
    """The numbers of :func:`run`, section by section (:meth:`run`); a section that fails or finds the time budget
    spent is recorded in ``result["errors"]`` and the others go on.

    1. ``eager``: our sampler against diffusers' inpainting loop, bf16 autocast over float32 weights;
    2. ``training``: one adapter training step (float32 weights, autocast), without and with gradient
       checkpointing, and its peak memory;
    3. ``cast``: a copy with the UNet and VAE cast once to bf16 against autocast over float32 weights
       (interleaved), the bf16 VAE's decoding against the float32 one's; then the float32 model leaves the GPU;
    4. ``channels_last``: the cast copy channels-last against the cast copy (interleaved); the faster goes on;
    5. ``inference_memory``: peak memory of one image with the faster eager model;
    6. ``volume``: all ``volume_slices`` slices of a vertebra in one sampler call;
    7. ``compiled_<mode>``: ``torch.compile`` of the UNet in each of ``compile_modes`` ("reduce-overhead" adds
       CUDA graphs): its first call and its rounds.
    """

    def __init__(
        self,
        device: torch.device,
        model: FixedConditionsModel,
        image_size: int = 512,
        steps: int = 50,
        repeats: int = 5,
        precision: str = "bf16",
        train_batch: int = 4,
        volume_slices: int = 8,
        compile_modes: tuple[str, ...] = ("default", "reduce-overhead"),
    ) -> None:
        self.device, self.model, self.steps, self.repeats = device, model, steps, repeats
        self.precision, self.train_batch, self.volume_slices = precision, train_batch, volume_slices
        self.compile_modes = compile_modes
        self.scheduler = DDPMScheduler(
            num_train_timesteps=1000,
            beta_schedule="scaled_linear",
            beta_start=0.00085,
            beta_end=0.012,
            clip_sample=False,
        )  # SD 1.5's schedule
        self.generator = torch.Generator().manual_seed(0)
        self.image = torch.rand(1, 1, image_size, image_size, generator=self.generator).to(device)
        self.mask = torch.zeros_like(self.image)
        self.mask[..., image_size // 4 : image_size // 2, image_size // 4 : image_size // 2] = 1.0
        self.inferer = SoftMaskInpaintingInferer(
            DDIMScheduler.from_config(self.scheduler.config), num_inference_steps=steps, precision=precision
        )
        self.eager_model = model  # the fastest eager variant measured so far
        self.result: dict = {
            "checks": {},
            "errors": {},
            "section_s": {},
            "guided_unet_parameters_m": sum(p.numel() for p in model.unet.parameters()) / 1e6,
            "volume_slices": volume_slices,
            "best_eager": "bf16 autocast over float32 weights",
        }
        model.eval()

    def sampler(self, network: FixedConditionsModel) -> Callable[[], torch.Tensor]:
        return lambda: self.inferer(self.image, network, self.mask, ["a lesion"], seeds=[0])

    def timed(self, candidates: dict, repeats: int | None = None) -> dict[str, list[float]]:
        return interleaved(candidates, repeats=repeats or self.repeats, device=self.device)

    def eager(self) -> None:
        reference_scheduler = DDIMScheduler.from_config(self.scheduler.config)

        def reference():
            return diffusers_inpaint_loop(
                self.model,
                reference_scheduler,
                self.image,
                self.mask,
                ["a lesion"],
                0,
                self.steps,
                precision=self.precision,
            )

        times = self.timed({"ours": self.sampler(self.model), "reference": reference})
        self.result["ours_s"], self.result["reference_s"] = times["ours"], times["reference"]
        sample = self.sampler(self.model)()
        processors = sorted({type(p).__name__ for p in diffusers_unet(self.model).attn_processors.values()})
        self.result["checks"].update(
            image=list(self.image.shape),
            sample=list(sample.shape),
            sample_finite=bool(sample.isfinite().all()),
            attention_processors=processors,  # the *2_0 processors call scaled_dot_product_attention
        )

    def training(self) -> None:
        model, batch = self.model, self.train_batch
        optimizer = torch.optim.AdamW([p for p in model.unet.parameters() if p.requires_grad], lr=1e-4)
        images = torch.rand(batch, 1, *self.image.shape[-2:], generator=self.generator).to(self.device)
        masks = self.mask.expand(batch, -1, -1, -1)

        def train_step():
            model.unet.train()
            latents = model.space.encode(images)
            noise = torch.randn_like(latents)
            timesteps = torch.randint(0, 1000, (batch,), device=self.device)
            conditions = model.conditions(["a lesion"] * batch, images)
            with autocast(self.precision, self.device):
                predicted = model(self.scheduler.add_noise(latents, noise, timesteps), timesteps, conditions)
                weight = model.space.mask(masks, latents)
                loss = (weight * (predicted.float() - noise).pow(2)).sum() / weight.sum()
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            self.result["checks"]["latents"] = list(latents.shape)

        figures = self.result["training"] = {}
        try:
            for label, checkpointing in (("plain", False), ("gradient_checkpointing", True)):
                if checkpointing:
                    optimise_unet(model, gradient_checkpointing=True)
                train_step()  # warm-up (and the optimiser's state)
                started = time.perf_counter()
                peak = peak_memory(self.device, train_step)
                figures[label] = {"seconds_per_step": time.perf_counter() - started, "peak_mib": peak}
        finally:
            model.unet.unet.disable_gradient_checkpointing()
            model.eval()

    def cast(self) -> None:
        channels, size = self.model.space.channels, self.image.shape[-1] // 8
        latents = torch.randn(1, channels, size, size, generator=self.generator).to(self.device)
        decoded = self.model.space.decode(latents)
        cast_model = cast_frozen_weights(copy.deepcopy(self.model), "bf16")
        cast_decoded = cast_model.space.decode(latents)
        difference = (cast_decoded - decoded).abs()
        self.result["vae_bf16"] = {
            "max_abs": float(difference.max()),
            "mean_abs": float(difference.mean()),
            "finite": bool(cast_decoded.isfinite().all()),
        }
        times = self.timed({"cast": self.sampler(cast_model), "autocast": self.sampler(self.model)})
        self.result["cast_s"], self.result["autocast_s"] = times["cast"], times["autocast"]
        self.eager_model = cast_model
        self.result["best_eager"] = "bf16 weights cast once"
        self.result["best_eager_s"] = times["cast"]
        self.model.to("cpu")  # the float32 weights leave the GPU: the peaks below are the cast model's

    def channels_last(self) -> None:
        base = self.eager_model
        layout = optimise_unet(copy.deepcopy(base), channels_last=True)
        times = self.timed({"channels_last": self.sampler(layout), "default": self.sampler(base)})
        self.result["channels_last_s"], self.result["default_layout_s"] = times["channels_last"], times["default"]
        if median(times["channels_last"]) < median(times["default"]):
            self.eager_model = layout
            self.result["best_eager"] += ", channels-last"
            self.result["best_eager_s"] = times["channels_last"]

    def inference_memory(self) -> None:
        self.result["inference_peak_mib"] = peak_memory(self.device, self.sampler(self.eager_model))
        self.result["inference_peak_model"] = self.result["best_eager"]

    def volume(self) -> None:
        count = self.volume_slices
        slices = torch.rand(count, 1, *self.image.shape[-2:], generator=self.generator).to(self.device)
        masks = self.mask.expand(count, -1, -1, -1)

        def whole_volume():
            return self.inferer(slices, self.eager_model, masks, ["a lesion"] * count, seeds=list(range(count)))

        self.result["volume_s"] = self.timed({"volume": whole_volume}, max(1, self.repeats // 2))["volume"]
        self.result["checks"]["volume_sample"] = list(whole_volume().shape)

    def compiled(self, mode: str) -> None:
        torch._dynamo.reset()
        optimise_unet(self.eager_model, compile=True, compile_options={"mode": mode})
        started = time.perf_counter()
        self.sampler(self.eager_model)()  # compiles (one input shape)
        synchronise(self.device)
        figures = self.result.setdefault("compiled", {})[mode] = {"first_call_s": time.perf_counter() - started}
        figures["seconds"] = self.timed({mode: self.sampler(self.eager_model)})[mode]

    def run(self, budget_s: float | None = None, on_section: Callable[[str, dict], None] | None = None) -> dict:
        """Every section in order; none starts once ``budget_s`` seconds are spent. ``on_section`` sees the
        result after each one."""
        sections = [self.eager, self.training, self.cast, self.channels_last, self.inference_memory, self.volume]
        named = [(section.__name__, section) for section in sections]
        named += [(f"compiled_{mode}", lambda mode=mode: self.compiled(mode)) for mode in self.compile_modes]
        started = time.perf_counter()
        for name, section in named:
            spent = time.perf_counter() - started
            if budget_s is not None and spent > budget_s:
                self.result["errors"][name] = f"not run: the time budget ({budget_s:.0f} s) was spent ({spent:.0f} s)"
            else:
                try:
                    section()
                except Exception as error:  # a compiler problem or a memory error loses no other figure
                    self.result["errors"][name] = f"{type(error).__name__}: {error}"[:600]
                free(self.device)
            self.result["section_s"][name] = round(time.perf_counter() - started - spent, 1)
            if on_section is not None:
                on_section(name, self.result)
        return self.result


def free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


SHAPE = "SD 1.5 UNet + VAE configs (random weights), 512 x 512 (64 x 64 latent), 50 DDIM steps, CFG, bf16"
TRAIN_SHAPE = "adapter training (W'_k, W'_v), 512 px, bf16 autocast over float32 weights, AdamW, batch 4"
FAST_GPU = ("H100", "H200")  # the targets are for this class of GPU
ROWS = {
    "image": ("SD-1.5 512 px: seconds per 50-step CFG image (eager, bf16)", 8, "<= 1.0 s on an H100/H200"),
    "cast": ("SD-1.5 512 px: bf16 weights cast once vs bf16 autocast over float32 weights", 8, "report"),
    "channels_last": ("SD-1.5 512 px: channels-last vs not (bf16 weights)", 8, "report"),
    "compiled": ("SD-1.5 512 px: seconds per image, torch.compile vs eager", 8, "<= 0.5 s on an H100/H200"),
    "compiled_graphs": (
        "SD-1.5 512 px: seconds per image, torch.compile with CUDA graphs vs eager",
        8,
        "<= 0.5 s on an H100/H200",
    ),
    "volume": ("SD-1.5 512 px: seconds per whole volume (8 slices batched)", 8, "report"),
    "sampler": ("SD-1.5 512 px sampler vs diffusers' loop (GPU)", 2, "<= 1.05"),
    "vae": ("SD-1.5 VAE in bf16: decoded image vs float32 VAE", 8, "report"),
    "inference_memory": ("SD-1.5 inference peak GPU memory, batch 1", 6, "<= 6 GB"),
    "training_memory": ("SD-1.5 training peak GPU memory, batch 4", 6, "report"),
    "training_memory_gc": ("SD-1.5 training peak GPU memory, batch 4, gradient checkpointing", 6, "report"),
}
COMPILE_ROWS = {"default": "compiled", "reduce-overhead": "compiled_graphs"}
STORED = Path(__file__).resolve().parent / "results" / "gpu.json"
"""The rows of the last GPU run (``python -m benchmarks.gpu --store``), shown by a run without a GPU."""


def run(ctx: Context) -> list[Record]:
    if ctx.device.type != "cuda":
        if STORED.is_file():
            return stored_records(STORED)
        return [
            not_measured(name, item, "-", target, NO_GPU, TRAIN_SHAPE if "training" in key else SHAPE)
            for key, (name, item, target) in ROWS.items()
        ]
    model = build(ctx.device)
    result = SD15Measurement(ctx.device, model, repeats=3 if ctx.quick else 10).run()
    del model
    free(ctx.device)
    return records_of(result, torch.cuda.get_device_name(ctx.device))


def stored_records(path: Path) -> list[Record]:
    """The rows of an earlier GPU run, each saying where and when it was measured."""
    stored = json.loads(path.read_text())
    where = f"stored GPU run: {stored['device']}, {stored['date']}, `{stored['command']}` (benchmarks/results/gpu.json)"
    records = [Record(**row) for row in stored["rows"]]
    for record in records:
        record.measured = f"{record.measured}; {where}" if record.measured else where
    return records


def records_of(result: dict, device_name: str) -> list[Record]:
    """The rows of a GPU run (:class:`SD15Measurement`'s result); a section that did not run gives a row that
    says why."""
    fast = any(name in device_name for name in FAST_GPU)
    return (
        eager_records(result, device_name, fast)
        + compiled_records(result, fast)
        + volume_records(result)
        + memory_records(result)
    )


def missing(result: dict, key: str, section: str, shape: str = SHAPE) -> Record:
    name, item, target = ROWS[key]
    return not_measured(name, item, "-", target, result["errors"].get(section, "not run"), shape)


def eager_records(result: dict, device_name: str, fast: bool) -> list[Record]:
    best_name, best = result["best_eager"], result.get("best_eager_s", result.get("ours_s"))
    records = []
    if best:
        eager_s = median(best)
        records.append(
            Record(
                name=ROWS["image"][0],
                item=8,
                ours_s=eager_s,
                reference_s=None,
                ratio=None,
                reference="none (an absolute figure); VG-MedGen publishes 1.457 s per image (833 M parameters) on "
                "other hardware, not run here",
                target=ROWS["image"][2],
                met=bool(eager_s <= 1.0) if fast else None,
                shape=SHAPE,
                value=eager_s,
                unit="s per image",
                notes=f"{best_name}; guided UNet {result['guided_unet_parameters_m']:.0f} M parameters; "
                f"on {device_name}",
                ours_spread_s=spread(best),
                repeats=len(best),
                measured=INTERLEAVED,
            )
        )
    else:
        records.append(missing(result, "image", "eager"))
    pairs = (
        ("sampler", "eager", "ours_s", "reference_s", "diffusers' inpainting loop, same UNet and scheduler", 1.05, ""),
        (
            "cast",
            "cast",
            "cast_s",
            "autocast_s",
            "the same sampler with float32 weights under bf16 autocast",
            None,
            "UNet (with the MSC attention) and VAE cast once (speed_options.weights_dtype); autocast stays on",
        ),
        (
            "channels_last",
            "channels_last",
            "channels_last_s",
            "default_layout_s",
            "the same bf16-weight sampler, default memory layout",
            None,
            f"kept: {best_name}",
        ),
    )
    for key, section, ours, reference, label, max_ratio, notes in pairs:
        if ours in result:
            name, item, target = ROWS[key]
            records.append(compare(name, item, result[ours], result[reference], label, target, max_ratio, SHAPE, notes))
        else:
            records.append(missing(result, key, section))
    return records


def compiled_records(result: dict, fast: bool) -> list[Record]:
    best_name, best = result["best_eager"], result.get("best_eager_s", result.get("ours_s"))
    records = []
    for mode, key in COMPILE_ROWS.items():
        figures = result.get("compiled", {}).get(mode, {})
        if "seconds" not in figures or not best:
            records.append(missing(result, key, f"compiled_{mode}"))
            continue
        row = compare(
            ROWS[key][0],
            8,
            figures["seconds"],
            best,
            f"the same sampler eager ({best_name}; its rounds before compiling)",
            ROWS[key][2],
            None,
            SHAPE,
            f"mode {mode!r}; first call incl. compilation {figures['first_call_s']:.0f} s",
            measured="compiled rounds after the eager ones, in one process (compiling is one-way)",
        )
        row.met = bool(row.ours_s <= 0.5) if fast else None
        records.append(row)
    return records


def volume_records(result: dict) -> list[Record]:
    records = []
    if "volume_s" in result:
        volume, slices = result["volume_s"], result["volume_slices"]
        records.append(
            Record(
                name=ROWS["volume"][0].replace("8 slices", f"{slices} slices"),
                item=8,
                ours_s=median(volume),
                reference_s=None,
                ratio=None,
                reference="none (an absolute figure)",
                target=ROWS["volume"][2],
                met=None,
                shape=SHAPE + f"; {slices} slices in one sampler call (UNet batch 2 x slices); {result['best_eager']}",
                value=slices / median(volume),
                unit="slices/s",
                ours_spread_s=spread(volume),
                repeats=len(volume),
                measured="rounds in one process",
            )
        )
    else:
        records.append(missing(result, "volume", "volume"))
    if "vae_bf16" in result:
        vae = result["vae_bf16"]
        records.append(
            Record(
                name=ROWS["vae"][0],
                item=8,
                ours_s=None,
                reference_s=None,
                ratio=None,
                reference="the float32 VAE decoding the same latents",
                target=ROWS["vae"][2],
                met=None,
                shape="SD 1.5 VAE config (random weights), one 64 x 64 x 4 latent",
                value=vae["max_abs"],
                unit="max |difference| of the decoded image (in [0, 1])",
                notes=f"mean |difference| {vae['mean_abs']:.2g}; finite: {vae['finite']}",
            )
        )
    else:
        records.append(missing(result, "vae", "cast"))
    return records


def memory_records(result: dict) -> list[Record]:
    records = []
    peak = result.get("inference_peak_mib")
    if peak is not None:
        records.append(
            Record(
                name=ROWS["inference_memory"][0],
                item=6,
                ours_s=None,
                reference_s=None,
                ratio=None,
                reference="none",
                target=ROWS["inference_memory"][2],
                met=bool(peak <= 6 * 1024),
                shape=SHAPE + f"; {result['inference_peak_model']}",
                value=peak,
                unit="MiB max_memory_allocated",
            )
        )
    else:
        records.append(missing(result, "inference_memory", "inference_memory"))
    for key, label in (("training_memory", "plain"), ("training_memory_gc", "gradient_checkpointing")):
        figures = result.get("training", {}).get(label)
        if figures is None:
            records.append(missing(result, key, "training", TRAIN_SHAPE))
            continue
        records.append(
            Record(
                name=ROWS[key][0],
                item=6,
                ours_s=figures["seconds_per_step"],
                reference_s=None,
                ratio=None,
                reference="none; ours_s is seconds per training step",
                target=ROWS[key][2],
                met=None,
                shape=TRAIN_SHAPE,
                value=figures["peak_mib"],
                unit="MiB max_memory_allocated",
                ours_spread_s=spread([figures["seconds_per_step"]]),
                repeats=1,
                measured="one step after a warm-up step, in one process",
            )
        )
    return records


TINY_UNET = {
    "cross_attention_dim": 32,
    "block_out_channels": (16, 32),
    "attention_head_dim": 4,
    "sample_size": 8,
    "in_channels": 4,
    "out_channels": 4,
    "norm_num_groups": 8,
    "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D"),
}
TINY_VAE = {
    **SD15_VAE_CONFIG,
    "block_out_channels": [8, 16],
    "down_block_types": ["DownEncoderBlock2D"] * 2,
    "up_block_types": ["UpDecoderBlock2D"] * 2,
    "layers_per_block": 1,
    "norm_num_groups": 4,
    "sample_size": 16,
}


def dry_run(tiny: bool = False) -> dict[str, object]:
    """The GPU script's code path on the CPU with small inputs: SD 1.5's configs (``tiny``: small ones), random
    weights, bf16 autocast, 2 steps, no compilation. Returns the shapes it checked; raises if a section failed or a
    shape is wrong."""
    device = torch.device("cpu")
    if tiny:
        model = build(device, TINY_UNET, TINY_VAE, msc_dim=24, text_length=7)
        image_size = 16
    else:
        model = build(device)
        image_size = 64
    measurement = SD15Measurement(
        device, model, image_size, steps=2, repeats=1, train_batch=2, volume_slices=2, compile_modes=()
    )
    result = measurement.run()
    if result["errors"]:
        raise AssertionError(f"dry run: sections failed: {result['errors']}")
    checks = result["checks"]
    latent = image_size // 2 ** (len(model.space.vae.config.block_out_channels) - 1)
    expected = {
        "sample": [1, 1, image_size, image_size],
        "volume_sample": [2, 1, image_size, image_size],
        "latents": [2, 4, latent, latent],
    }
    wrong = {key: (checks[key], shape) for key, shape in expected.items() if checks[key] != shape}
    if wrong or not checks["sample_finite"] or not result["vae_bf16"]["finite"]:
        raise AssertionError(f"dry run: wrong shapes (got, expected) {wrong} or a non-finite sample")
    records_of(result, "cpu (dry run)")  # the rows build from a result of this shape
    return {
        "configs": "tiny" if tiny else "SD 1.5 UNet and VAE (random weights)",
        "guided_unet_parameters_m": round(result["guided_unet_parameters_m"], 1),
        "image_size": image_size,
        "sections_s": result["section_s"],
        **checks,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry_run", action="store_true", help="shape check on the CPU (no figures)")
    parser.add_argument("--tiny", action="store_true", help="with --dry_run: small configs (seconds)")
    parser.add_argument("--quick", action="store_true", help="3 rounds instead of 10")
    parser.add_argument("--budget_s", type=float, default=420.0, help="start no section after this many seconds")
    parser.add_argument("--out", default="runs/benchmarks_gpu", help="where results.json goes (GPU run)")
    parser.add_argument("--store", action="store_true", help=f"also write the rows to {STORED.relative_to(REPO)}")
    args = parser.parse_args(argv)
    if args.dry_run:
        print(json.dumps({"dry_run": "ok", **dry_run(args.tiny)}, indent=2))
        return 0
    if not torch.cuda.is_available():
        parser.error("no GPU here: the figures need one (use --dry_run for the CPU shape check)")
    from benchmarks.common import machine
    from benchmarks.report import table, write_json

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device("cuda")
    started = time.perf_counter()

    def progress(section: str, result: dict) -> None:
        status = result["errors"].get(section, "done")
        print(f"[{time.perf_counter() - started:6.0f} s] {section}: {status}", flush=True)
        (out / "partial.json").write_text(json.dumps(result, indent=2, default=str))

    model = build(device)
    print(f"[{time.perf_counter() - started:6.0f} s] built the SD-1.5-shape model", flush=True)
    measurement = SD15Measurement(device, model, repeats=3 if args.quick else 10)
    result = measurement.run(args.budget_s, on_section=progress)
    device_name = torch.cuda.get_device_name(device)
    records = records_of(result, device_name)
    command = "python -m benchmarks.gpu " + " ".join(sys.argv[1:] if argv is None else argv)
    settings = {"mode": "gpu script", "command": command, "duration (s)": round(time.perf_counter() - started, 1)}
    write_json(out / "results.json", records, machine(1), settings)
    if args.store:
        STORED.parent.mkdir(parents=True, exist_ok=True)
        stored = {"device": device_name, "date": time.strftime("%Y-%m-%d"), "command": command}
        STORED.write_text(json.dumps({**stored, "rows": [r.as_dict() for r in records]}, indent=2, default=str))
    print("\n".join(table(records)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
