"""How many entries each class has, and the sampling weights that draw every class equally often."""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Iterable, Mapping, Sequence

import torch


def inverse_frequency_weights(labels: Sequence[Hashable]) -> torch.Tensor:
    """``1 / (count of its label)`` for each label, as float64: the weights with which ``WeightedRandomSampler``
    draws every label equally often (class-balanced oversampling)."""
    counts = Counter(labels)
    return torch.tensor([1.0 / counts[label] for label in labels], dtype=torch.double)


def class_counts(entries: Iterable[Mapping], classes: Sequence[str] = (), label_key: str = "label") -> dict[str, int]:
    """Entries per label (``entry[label_key]`` as a string): the known ``classes`` first, in their order and with
    zeros included, then every other label in sorted order."""
    counts = Counter(str(entry.get(label_key, "")) for entry in entries)
    ordered = {name: counts.pop(name, 0) for name in classes}
    ordered.update(sorted(counts.items()))
    return ordered
