"""Converting pickled weights (``.bin`` / ``.pt``) to safetensors, read with ``torch.load(weights_only=True)``."""

from __future__ import annotations

import os
from pathlib import Path

from bundle.errors import InputError
from bundle.weights.layouts import (
    CLINICAL_BERT_PART,
    OPEN_CLIP_WEIGHTS,
    PIXART_PARTS,
    SD15_PARTS,
    is_pickle_name,
    open_clip_weights,
)


def pickles_to_convert(
    sd15: str | os.PathLike | None = None,
    biomedclip: str | os.PathLike | None = None,
    pixart: str | os.PathLike | None = None,
    clinical_bert: str | os.PathLike | None = None,
) -> list[tuple[Path, Path]]:
    """(pickle, safetensors target) pairs the checker would report as NOT ACCEPTED."""
    pairs = []
    for folder, parts in ((sd15, SD15_PARTS), (pixart, PIXART_PARTS), (clinical_bert, (CLINICAL_BERT_PART,))):
        if folder is None:
            continue
        for part in parts:
            target = Path(folder) / part.weights if part.weights else None
            if target is None or target.is_file():
                continue
            source = next((Path(folder) / name for name in part.pickles if (Path(folder) / name).is_file()), None)
            if source is not None:
                pairs.append((source, target))
    if biomedclip is not None:
        weights = open_clip_weights(biomedclip)
        if weights is not None and is_pickle_name(weights):
            pairs.append((weights, Path(biomedclip) / OPEN_CLIP_WEIGHTS))
    return pairs


def convert_to_safetensors(
    source: str | os.PathLike, target: str | os.PathLike, source_sha256: str | None = None
) -> Path:
    """Write the tensors of a pickled state dict (read with ``torch.load(weights_only=True)``, which refuses
    anything but tensors and containers) to a safetensors file, recording where they came from in its metadata.

    The pickle is left in place; for an open_clip folder the loader prefers ``open_clip_model.safetensors``,
    for a diffusers folder ``use_safetensors=True`` ignores the ``.bin``.
    """
    import torch
    from safetensors.torch import save_file

    source, target = Path(source), Path(target)
    try:
        state = torch.load(source, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:  # an old (non-zip) torch file cannot be memory-mapped
        state = torch.load(source, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if (
        not isinstance(state, dict)
        or not state
        or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items())
    ):
        raise InputError(source, "not a state dict of named tensors; cannot convert it")
    tensors, storages = {}, set()
    for name, tensor in state.items():
        storage = tensor.untyped_storage().data_ptr()
        shared = storage in storages  # tied weights: safetensors stores each tensor once
        storages.add(storage)
        tensors[name] = tensor.clone().contiguous() if shared else tensor.contiguous()
    metadata = {"format": "pt", "converted_from": source.name}
    if source_sha256:
        metadata["source_sha256"] = source_sha256
    partial = target.with_name(target.name + ".partial")
    save_file(tensors, str(partial), metadata=metadata)
    os.replace(partial, target)
    return target
