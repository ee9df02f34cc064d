"""Linear probes: how much of an attribute a feature vector carries, as the held-out R^2 of a ridge regression.

VG-MedGen's disentanglement claim is that the anatomy vector carries anatomy (lesion size, height loss,
position) and the style vector carries style (signal, contrast), each not the other's. A probe fits
``y = X w + b`` on training vectors in closed form (features standardised with the training set's mean and
spread, ridge penalty ``alpha`` on ``w``; by default ``alpha`` is chosen among :data:`ALPHAS` by 5-fold
cross-validation on the training vectors, so a vector with nothing to say is shrunk toward the mean instead of
fitting noise) and scores the test vectors by R^2 = 1 - SSE / SST (SST about the test targets' own mean): 1 for a
perfect prediction, 0 for predicting the mean, below 0 for worse than that.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

ALPHAS = (0.01, 0.1, 1.0, 10.0, 100.0, 1000.0, 10000.0)


def cv_alpha(features: torch.Tensor, targets: torch.Tensor, alphas: Sequence[float] = ALPHAS, folds: int = 5) -> float:
    """The ridge penalty of ``alphas`` with the smallest ``folds``-fold cross-validated squared error on
    ``(features, targets)``, in contiguous folds (the items of one case, listed together, stay in one fold)."""
    x, y = features.double(), targets.double().reshape(-1)
    fold = torch.arange(len(y)) * folds // len(y)
    best, best_error = float(alphas[0]), float("inf")
    for alpha in alphas:
        error = 0.0
        for k in range(folds):
            held = fold == k
            if int(held.sum()) == 0 or int((~held).sum()) < 2:
                continue
            mean, scale, weights, bias = ridge_fit(x[~held], y[~held], alpha)
            error += float((((x[held] - mean) / scale) @ weights + bias - y[held]).pow(2).sum())
        if error < best_error:
            best, best_error = float(alpha), error
    return best


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
    alpha: float | None = None,
) -> float:
    """Held-out R^2 of a ridge probe (module docstring; ``alpha`` None: :func:`cv_alpha`); NaN when the test
    targets are constant."""
    if alpha is None:
        alpha = cv_alpha(train_features, train_targets)
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
    alpha: float | None = None,
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
