"""Reading the bundle's safetensors weight files: their tensors and their metadata (the settings a network was
saved with), with one message for a file that is not safetensors; writing and rebuilding a small network saved with
its settings."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from bundle.errors import InputError, check_state_dict

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


def save_with_settings(module: torch.nn.Module, path: str | os.PathLike, key: str, settings: dict) -> None:
    """Write ``module``'s whole state dict to a safetensors file with its constructor ``settings`` (JSON) under the
    metadata ``key``, so :func:`load_with_settings` can rebuild it without the code that made it."""
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in module.state_dict().items()}
    save_file(state, str(path), metadata={key: json.dumps(settings)})


def load_with_settings(build: Callable[..., torch.nn.Module], path: str | os.PathLike, key: str, missing: str):
    """Rebuild a module saved by :func:`save_with_settings`: ``build(**settings)`` then its tensors, names and shapes
    checked. A missing file is an :class:`InputError` naming it with the hint ``missing`` (e.g. which stage writes
    it); a file without ``key`` settings or with unusable ones, one naming the file and the problem."""
    if not Path(path).is_file():
        raise InputError(path, f"file not found; {missing}")
    metadata = safetensors_metadata(path)
    if key not in metadata:
        raise InputError(path, f"not a {key} file (no {key!r} settings in its metadata)")
    try:
        module = build(**json.loads(metadata[key]))
    except (TypeError, ValueError) as error:
        raise InputError(path, f"unusable {key!r} settings ({error})") from error
    tensors = read_safetensors(path)
    check_state_dict(path, tensors, module.state_dict(), key)
    module.load_state_dict(tensors)
    return module
