"""Speed options of the diffusers UNet shared by training and sampling: channels-last, gradient checkpointing,
``torch.compile``. Each is an option with the plain float32 eager path as its default on a CPU; see
``docs/performance.md`` for what each one measured. Mixed precision is :mod:`bundle.utils.precision`.

Attention already runs through PyTorch's ``scaled_dot_product_attention`` (diffusers' ``AttnProcessor2_0``
and ``IPAdapterAttnProcessor2_0``), so it picks the flash / memory-efficient kernels on a GPU by itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bundle.utils.precision import HALF_DTYPES


def diffusers_unet(model: torch.nn.Module) -> torch.nn.Module:
    """The diffusers ``UNet2DConditionModel`` inside a MedSoftDiffusion / GuidedUNet (or ``model`` itself)."""
    while isinstance(getattr(model, "unet", None), torch.nn.Module):
        model = model.unet  # MedSoftDiffusion.unet is the GuidedUNet, GuidedUNet.unet the diffusers UNet
    return model


def cast_frozen_weights(model: torch.nn.Module, dtype: str) -> torch.nn.Module:
    """Cast the weights used at every sampling step once to ``dtype`` (``"bf16"`` or ``"fp16"``), in place: the
    denoiser (``model.unet``, with its MSC attention, or ``model`` itself) and a latent space's VAE
    (``model.space.vae``). Under autocast of the same dtype the UNet's matrix products then read these weights as
    they are instead of casting float32 weights at each call. The encoders that run once per image (text, medical
    CLIP, MSC) stay float32. For sampling only: weights that train must stay float32."""
    if dtype not in HALF_DTYPES:
        raise ValueError(f"weights dtype must be one of {sorted(HALF_DTYPES)}, got {dtype!r}")
    getattr(model, "unet", model).to(HALF_DTYPES[dtype])
    vae = getattr(getattr(model, "space", None), "vae", None)
    if isinstance(vae, torch.nn.Module):
        vae.to(HALF_DTYPES[dtype])
    return model


def optimise_unet(
    model: torch.nn.Module,
    channels_last: bool = False,
    gradient_checkpointing: bool = False,
    compile: bool = False,
    compile_options: dict | None = None,
    weights_dtype: str | None = None,
) -> torch.nn.Module:
    """Apply the speed options to the diffusers UNet inside ``model`` (in place); returns ``model``.

    Args:
        model: a :class:`bundle.networks.medsoft_diffusion.MedSoftDiffusion`, a
            :class:`bundle.networks.guided_unet.GuidedUNet` or a diffusers ``UNet2DConditionModel``.
        channels_last: store the UNet's convolution weights channels-last (NHWC); helps convolutions on
            GPUs with tensor cores, measured neutral on CPU.
        gradient_checkpointing: recompute the UNet blocks' activations in the backward pass instead of
            keeping them (less memory, about a third more compute); for SD 1.5 at 512 px.
        compile: ``torch.compile`` the UNet's forward (in place: state-dict names do not change). The first
            call of each input shape compiles (minutes on a CPU; needs a C++ compiler there, Triton on a GPU).
        compile_options: keyword arguments of ``torch.compile`` (e.g. ``{"mode": "max-autotune"}``;
            ``{"mode": "reduce-overhead"}`` adds CUDA graphs on a GPU, for the sampler's fixed shapes).
        weights_dtype: ``"bf16"`` / ``"fp16"``: :func:`cast_frozen_weights` (sampling on a GPU, with the
            inferer's ``precision`` set to the same dtype); ``None`` keeps float32.
    """
    if weights_dtype is not None:
        cast_frozen_weights(model, weights_dtype)
    unet = diffusers_unet(model)
    if channels_last:
        unet.to(memory_format=torch.channels_last)
    if gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    if compile:
        unet.compile(**dict(compile_options or {}))
    return model


@dataclass(frozen=True)
class SpeedOptions:
    """A workflow's speed options as one config node (``speed_options``), applied to the network definition before
    it moves to its device (the configs' ``initialize``: ``$@speed_options.apply(@network_def)``), so ``network``
    stays ``$@network_def.to(@device)`` and an override that wraps it (DistributedDataParallel) needs nothing more.
    The options are those of :func:`optimise_unet`."""

    channels_last: bool = False
    gradient_checkpointing: bool = False
    compile: bool = False
    compile_options: dict | None = None
    weights_dtype: str | None = None

    def apply(self, model: torch.nn.Module) -> torch.nn.Module:
        """:func:`optimise_unet` with these options (in place); returns ``model``."""
        return optimise_unet(
            model,
            channels_last=self.channels_last,
            gradient_checkpointing=self.gradient_checkpointing,
            compile=self.compile,
            compile_options=self.compile_options,
            weights_dtype=self.weights_dtype,
        )
