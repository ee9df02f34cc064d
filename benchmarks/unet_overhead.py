"""Item 1: the guided UNet against the same diffusers ``UNet2DConditionModel`` without the MSC attention.

Both networks hold the *same* base weights (the reference shares the guided UNet's tensors), have the same
config and get the same batch; the guided one also projects the MSC tokens and runs
``IPAdapterAttnProcessor2_0`` (a second attention over the MSC tokens) in every cross-attention layer.
"""

from __future__ import annotations

import copy
import gc

import torch
from diffusers import UNet2DConditionModel

from benchmarks.common import Context, Record, compare, interleaved
from bundle.networks.guided_unet import GuidedUNet
from bundle.utils.precision import autocast

SD15_CONFIG = {
    "cross_attention_dim": 768,
    "block_out_channels": (320, 640, 1280, 1280),
    "attention_head_dim": 8,
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
}
SD15_MSC_DIM = 512  # BiomedCLIP's feature width, the MSC token width of the sd15 profile
SD15_TEXT_LENGTH = 77
MSC_TOKENS = 1  # e_MSC is one vector (the paper), one token of the MSC attention
REFERENCE = "the same diffusers UNet2DConditionModel (same config and weights) without the MSC attention"


def shared_weight_copy(unet: UNet2DConditionModel) -> UNet2DConditionModel:
    """A second UNet of the same config whose tensors *are* ``unet``'s (no extra memory for SD 1.5)."""
    with torch.device("meta"):
        twin = UNet2DConditionModel.from_config(unet.config)
    twin.load_state_dict(unet.state_dict(), assign=True, strict=True)
    if any(t.is_meta for t in list(twin.parameters()) + list(twin.buffers())):
        return copy.deepcopy(unet)
    return twin


def unet_pair(config: dict, msc_dim: int, seed: int = 0) -> tuple[UNet2DConditionModel, GuidedUNet]:
    """A random-initialised plain UNet of ``config`` and the guided UNet built on the same weights."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        plain = UNet2DConditionModel(**config)
        guided = GuidedUNet(shared_weight_copy(plain), msc_dim=msc_dim, scale=1.0, trainable="full")
    return plain, guided


def make_inputs(
    batch: int, channels: int, size: int, text_length: int, cross_dim: int, msc_dim: int, device: torch.device
) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {
        "sample": torch.randn(batch, channels, size, size, generator=generator).to(device),
        "timestep": torch.full((batch,), 500, dtype=torch.long, device=device),
        "text": torch.randn(batch, text_length, cross_dim, generator=generator).to(device),
        "tokens": torch.randn(batch, MSC_TOKENS, msc_dim, generator=generator).to(device),
    }


def calls(
    plain: UNet2DConditionModel,
    guided: GuidedUNet,
    inputs: dict[str, torch.Tensor],
    backward: bool,
    precision: str | None,
    device: torch.device,
):
    """``(ours, reference)``: one forward (no grad, eval) or forward + backward (train, all weights)."""
    parameters = list(guided.parameters()) + list(plain.parameters())

    def run(forward) -> None:
        if not backward:
            with torch.no_grad(), autocast(precision, device):
                forward()
            return
        with autocast(precision, device):
            loss = forward().float().pow(2).mean()
        loss.backward()
        for parameter in parameters:
            parameter.grad = None

    for module in (plain, guided):
        module.train(backward).requires_grad_(backward)

    def ours() -> None:
        run(lambda: guided(inputs["sample"], inputs["timestep"], inputs["text"], inputs["tokens"]))

    def reference() -> None:
        run(lambda: plain(inputs["sample"], inputs["timestep"], encoder_hidden_states=inputs["text"]).sample)

    return ours, reference


def measure(
    name: str,
    plain,
    guided,
    inputs,
    backward: bool,
    repeats: int,
    ctx: Context,
    shape: str,
    target: str,
    max_ratio: float | None,
    precision: str | None = None,
    notes: str = "",
) -> Record:
    ours, reference = calls(plain, guided, inputs, backward, precision, ctx.device)
    times = interleaved({"ours": ours, "reference": reference}, repeats=repeats, device=ctx.device)
    return compare(name, 1, times["ours"], times["reference"], REFERENCE, target, max_ratio, shape, notes)


def run(ctx: Context) -> list[Record]:
    records = []
    on_gpu = ctx.device.type == "cuda"
    # the tiny (demo) profile: the demo model's own guided UNet and its base weights in a plain UNet
    model = ctx.model()
    guided = model.unet
    plain = UNet2DConditionModel.from_config(guided.base_config).to(ctx.device)
    plain.load_state_dict(guided.base_state_dict())
    text_length = model.text_states(["x"]).shape[1]
    base = guided.base_config
    batch, size = 8, int(base["sample_size"])
    inputs = make_inputs(
        batch, base["in_channels"], size, text_length, base["cross_attention_dim"], guided.msc_dim, ctx.device
    )
    shape = (
        f"tiny demo UNet {tuple(base['block_out_channels'])}, batch {batch} (the training batch), "
        f"{base['in_channels']}x{size}x{size}, text {text_length} tokens, {MSC_TOKENS} MSC tokens"
    )
    repeats = 3 if ctx.quick else 7
    records.append(
        measure(
            "guided UNet forward, tiny",
            plain,
            guided,
            inputs,
            False,
            repeats,
            ctx,
            shape,
            "report (<= 1.10 is the SD-1.5 target)",
            None,
        )
    )
    records.append(
        measure(
            "guided UNet forward+backward, tiny",
            plain,
            guided,
            inputs,
            True,
            repeats,
            ctx,
            shape + "; all weights trained",
            "report",
            None,
        )
    )
    del model, guided, plain
    gc.collect()

    # the SD 1.5 shape: diffusers' defaults with SD 1.5's widths, random weights (none are downloaded)
    plain, guided = unet_pair(SD15_CONFIG, SD15_MSC_DIM)
    plain, guided = plain.to(ctx.device), guided.to(ctx.device)
    parameters = sum(p.numel() for p in plain.parameters())
    extra_parameters = sum(p.numel() for p in guided.parameters()) - parameters
    config_note = (
        f"SD 1.5 UNet config ({parameters / 1e6:.0f} M parameters; the MSC attention adds "
        f"{extra_parameters / 1e6:.1f} M), random weights"
    )
    if on_gpu:
        plans = [("forward", False, 2, 64, 10), ("forward+backward", True, 4, 64, 10)]
        precision, where = "bf16", "bf16 autocast on the GPU"
    elif ctx.quick:
        plans = [("forward", False, 1, 16, 3)]
        precision, where = None, "float32 on the CPU; --quick uses a 16x16 latent (128 px) for time"
    else:
        plans = [("forward", False, 1, 64, 3), ("forward+backward", True, 1, 32, 3)]
        precision, where = (
            None,
            (
                "float32 on the CPU (one SD-1.5 forward at 64x64 takes seconds here, so "
                "batch 1 and 3 repeats; forward+backward at a 32x32 latent)"
            ),
        )
    for label, backward, batch, size, repeats in plans:
        inputs = make_inputs(batch, 4, size, SD15_TEXT_LENGTH, 768, SD15_MSC_DIM, ctx.device)
        shape = (
            f"{config_note}; batch {batch}, latent 4x{size}x{size} ({size * 8} px), text 77x768, "
            f"{MSC_TOKENS} MSC tokens of {SD15_MSC_DIM}; {where}"
        )
        target, max_ratio = ("<= 1.10", 1.10) if not backward else ("report", None)
        records.append(
            measure(
                f"guided UNet {label}, SD-1.5 shape",
                plain,
                guided,
                inputs,
                backward,
                repeats,
                ctx,
                shape + ("; all weights trained" if backward else ""),
                target,
                max_ratio,
                precision,
            )
        )
    del plain, guided
    gc.collect()
    if on_gpu:
        torch.cuda.empty_cache()
    return records
