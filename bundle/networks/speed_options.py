"""Speed options shared by training and sampling: mixed precision, channels-last, gradient checkpointing,
``torch.compile``. Each is an option with the plain float32 eager path as its default on a CPU; see
``docs/performance.md`` for what each one measured.

``precision`` names the autocast dtype of the UNet's forward pass:

* ``"fp32"`` (or ``None``): no autocast;
* ``"bf16"`` / ``"fp16"``: ``torch.autocast`` with that dtype (fp16 training also scales the loss);
* ``"auto"``: bf16 on a CUDA device that supports it, otherwise fp32 (a CPU without bf16 units is slower
  under bf16 autocast, and fp16 needs loss scaling, so neither is chosen automatically).

Attention already runs through PyTorch's ``scaled_dot_product_attention`` (diffusers' ``AttnProcessor2_0``
and ``IPAdapterAttnProcessor2_0``), so it picks the flash / memory-efficient kernels on a GPU by itself.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast_dtype(precision: str | None, device: torch.device | str) -> torch.dtype | None:
    """The autocast dtype ``precision`` means on ``device`` (``None``: run in float32)."""
    precision = "fp32" if precision is None else str(precision).lower()
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS} (or null), got {precision!r}")
    device = torch.device(device)
    if precision == "auto":
        supported = device.type == "cuda" and torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if supported else None
    return _DTYPES.get(precision)


@contextlib.contextmanager
def autocast(precision: str | torch.dtype | None, device: torch.device | str) -> Iterator[None]:
    """``torch.autocast`` for ``precision`` (a name, or an autocast dtype already resolved by
    :func:`autocast_dtype`) on ``device``, or nothing for float32."""
    dtype = precision if isinstance(precision, torch.dtype) or precision is None else \
        autocast_dtype(precision, device)
    if dtype is None:
        yield
        return
    with torch.autocast(device_type=torch.device(device).type, dtype=dtype):
        yield


def diffusers_unet(model: torch.nn.Module) -> torch.nn.Module:
    """The diffusers ``UNet2DConditionModel`` inside a MedSoftDiffusion / GuidedUNet (or ``model`` itself)."""
    while isinstance(getattr(model, "unet", None), torch.nn.Module):
        model = model.unet  # MedSoftDiffusion.unet is the GuidedUNet, GuidedUNet.unet the diffusers UNet
    return model


def optimise_unet(model: torch.nn.Module, channels_last: bool = False, gradient_checkpointing: bool = False,
                  compile: bool = False, compile_options: dict | None = None) -> torch.nn.Module:
    """Apply the speed options to the diffusers UNet inside ``model`` (in place); returns ``model``.

    Args:
        model: a :class:`bundle.networks.medsoft_diffusion.MedSoftDiffusion`, a :class:`bundle.networks.guided_unet.GuidedUNet`
            or a diffusers ``UNet2DConditionModel``.
        channels_last: store the UNet's convolution weights channels-last (NHWC); helps convolutions on
            GPUs with tensor cores, measured neutral on CPU.
        gradient_checkpointing: recompute the UNet blocks' activations in the backward pass instead of
            keeping them (less memory, about a third more compute); for SD 1.5 at 512 px.
        compile: ``torch.compile`` the UNet's forward (in place: state-dict names do not change). The first
            call of each input shape compiles (minutes on a CPU; needs a C++ compiler there, Triton on a GPU).
        compile_options: keyword arguments of ``torch.compile`` (e.g. ``{"mode": "max-autotune"}``).
    """
    unet = diffusers_unet(model)
    if channels_last:
        unet.to(memory_format=torch.channels_last)
    if gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    if compile:
        unet.compile(**dict(compile_options or {}))
    return model
