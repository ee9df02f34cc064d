"""Linear probes: how much of an attribute a feature vector carries, as the held-out R^2 of a ridge regression.

VG-MedGen's disentanglement claim is that the anatomy vector carries anatomy (lesion size, height loss,
position) and the style vector carries style (signal, contrast), each not the other's. A probe fits
``y = X w + b`` on training vectors in closed form (features standardised with the training set's mean and
spread, ridge penalty ``alpha`` on ``w``) and scores the test vectors by R^2 = 1 - SSE / SST (SST about the test
targets' own mean): 1 for a perfect prediction, 0 for predicting the mean, below 0 for worse than that.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch


def ridge_fit(features: torch.Tensor, targets: torch.Tensor, alpha: float = 1.0) -> tuple[torch.Tensor, ...]:
    """``(mean, scale, weights, bias)`` of a ridge regression of ``targets`` ``(N,)`` on ``features`` ``(N, D)``
    (standardised; a constant feature gets scale 1)."""
    x, y = features.double(), targets.double().reshape(-1)
    if x.ndim != 2 or len(x) != len(y) or len(x) < 2:
        raise ValueError(f"need features (N, D) and targets (N,) with N >= 2, got {tuple(x.shape)}, {tuple(y.shape)}")
    mean, scale = x.mean(0), x.std(0)
    scale = torch.where(scale > 1e-12, scale, torch.ones_like(scale))
    z = (x - mean) / scale
    bias = y.mean()
    gram = z.T @ z + alpha * torch.eye(z.shape[1], dtype=z.dtype)
    weights = torch.linalg.solve(gram, z.T @ (y - bias))
    return mean, scale, weights, bias


def probe_r2(
    train_features: torch.Tensor,
    train_targets: torch.Tensor,
    test_features: torch.Tensor,
    test_targets: torch.Tensor,
    alpha: float = 1.0,
) -> float:
    """Held-out R^2 of a ridge probe (module docstring); NaN when the test targets are constant."""
    mean, scale, weights, bias = ridge_fit(train_features, train_targets, alpha)
    prediction = ((test_features.double() - mean) / scale) @ weights + bias
    y = test_targets.double().reshape(-1)
    total = (y - y.mean()).pow(2).sum()
    if float(total) <= 1e-12:
        return float("nan")
    return float(1 - (y - prediction).pow(2).sum() / total)


def probe_table(
    vectors: Mapping[str, tuple[torch.Tensor, torch.Tensor]],
    targets: Mapping[str, tuple[torch.Tensor, torch.Tensor]],
    alpha: float = 1.0,
) -> dict[str, dict[str, float]]:
    """``{vector: {attribute: held-out R^2}}`` for every vector kind ``(train (N, D), test (M, D))`` and every
    attribute ``(train (N,), test (M,))``."""
    return {
        name: {
            attribute: probe_r2(x_train, y_train, x_test, y_test, alpha)
            for attribute, (y_train, y_test) in targets.items()
        }
        for name, (x_train, x_test) in vectors.items()
    }


def mean_r2(table: Mapping[str, float], attributes: Sequence[str]) -> float:
    """The mean R^2 over ``attributes`` (those defined; NaN when none is)."""
    values = [table[a] for a in attributes if a in table and table[a] == table[a]]
    return sum(values) / len(values) if values else float("nan")
