"""Reading the bundle's safetensors weight files: their tensors and their metadata (the settings a network was
saved with), with one message for a file that is not safetensors."""

from __future__ import annotations

import os

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from bundle.errors import InputError

SAFETENSORS_READ_ERRORS = (SafetensorError, OSError)
"""What reading a file that is missing, truncated, pickled or otherwise not safetensors raises."""


def _not_safetensors(path: str | os.PathLike, error: Exception) -> InputError:
    return InputError(path, f"not a safetensors file ({type(error).__name__}: {error})")


def read_safetensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file, or an :class:`InputError` naming it (a pickle, a truncated or another
    kind of file)."""
    try:
        return load_file(str(path))
    except SAFETENSORS_READ_ERRORS as error:
        raise _not_safetensors(path, error) from error


def safetensors_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The metadata of a safetensors file (its header only is read), or an :class:`InputError` naming it."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            return dict(handle.metadata() or {})
    except SAFETENSORS_READ_ERRORS as error:
        raise _not_safetensors(path, error) from error
