"""Mixed precision of the UNet's forward pass, shared by training and sampling.

``precision`` names the autocast dtype:

* ``"fp32"`` (or ``None``): no autocast;
* ``"bf16"`` / ``"fp16"``: ``torch.autocast`` with that dtype (fp16 training also scales the loss);
* ``"auto"``: bf16 on a CUDA device that supports it, otherwise fp32 (a CPU without bf16 units is slower
  under bf16 autocast, and fp16 needs loss scaling, so neither is chosen automatically).

See ``docs/performance.md`` for what each one measured.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
HALF_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast_dtype(precision: str | None, device: torch.device | str) -> torch.dtype | None:
    """The autocast dtype ``precision`` means on ``device`` (``None``: run in float32)."""
    precision = "fp32" if precision is None else str(precision).lower()
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS} (or null), got {precision!r}")
    device = torch.device(device)
    if precision == "auto":
        supported = device.type == "cuda" and torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if supported else None
    return HALF_DTYPES.get(precision)


@contextlib.contextmanager
def autocast(precision: str | torch.dtype | None, device: torch.device | str) -> Iterator[None]:
    """``torch.autocast`` for ``precision`` (a name, or an autocast dtype already resolved by
    :func:`autocast_dtype`) on ``device``, or nothing for float32."""
    dtype = precision if isinstance(precision, torch.dtype) or precision is None else autocast_dtype(precision, device)
    if dtype is None:
        yield
        return
    with torch.autocast(device_type=torch.device(device).type, dtype=dtype):
        yield
