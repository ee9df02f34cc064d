"""Case-level classification scores of the downstream experiment.

Accuracy, macro precision / recall / F1 (the unweighted mean of the per-class values from the confusion matrix; a
class never predicted has precision 0), and the macro one-vs-rest ROC AUC of the class probabilities (the mean
over classes with both positive and negative test cases).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from monai.metrics import compute_roc_auc

METRIC_NAMES = ("auc", "accuracy", "precision", "recall", "f1")
"""The headline metrics of ``metrics.json`` (precision, recall and F1 are macro averages)."""


def confusion_matrix(labels: Sequence[int], predictions: Sequence[int], num_classes: int) -> np.ndarray:
    """``matrix[t, p]``: how many cases of true class ``t`` were predicted as ``p``."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    for true, predicted in zip(labels, predictions, strict=True):
        matrix[int(true), int(predicted)] += 1
    return matrix


def scores_from_confusion(matrix: np.ndarray) -> dict[str, object]:
    """Accuracy and macro precision / recall / F1 of a confusion matrix, with the per-class values.

    Per class: precision = TP / (TP + FP), recall = TP / (TP + FN), F1 = 2 P R / (P + R); a 0 / 0 counts as 0
    (a class never predicted has precision 0). Macro values are the unweighted means over the classes that
    have test cases (a class absent from the test set has no recall and is left out).
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    true_positive = np.diag(matrix)
    predicted, actual = matrix.sum(axis=0), matrix.sum(axis=1)
    precision = np.divide(true_positive, predicted, out=np.zeros_like(true_positive), where=predicted > 0)
    recall = np.divide(true_positive, actual, out=np.zeros_like(true_positive), where=actual > 0)
    both = precision + recall
    f1 = np.divide(2 * precision * recall, both, out=np.zeros_like(both), where=both > 0)
    present = actual > 0
    total = matrix.sum()
    return {
        "accuracy": float(true_positive.sum() / total) if total else math.nan,
        "precision": float(precision[present].mean()) if present.any() else math.nan,
        "recall": float(recall[present].mean()) if present.any() else math.nan,
        "f1": float(f1[present].mean()) if present.any() else math.nan,
        "per_class": [
            {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(n)}
            for p, r, f, n in zip(precision, recall, f1, actual, strict=True)
        ],
    }


def roc_auc_one_vs_rest(labels: Sequence[int], probabilities: np.ndarray) -> tuple[float, list[float]]:
    """Macro one-vs-rest ROC AUC (MONAI ``compute_roc_auc`` per class) and the per-class values; a class
    without both positive and negative cases has no AUC (NaN) and is left out of the mean."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    per_class = []
    for k in range(probabilities.shape[1]):
        positive = labels == k
        if positive.all() or not positive.any():
            per_class.append(math.nan)
            continue
        per_class.append(
            float(compute_roc_auc(torch.as_tensor(probabilities[:, k]), torch.as_tensor(positive.astype(np.float64))))
        )
    defined = [a for a in per_class if not math.isnan(a)]
    return (float(np.mean(defined)) if defined else math.nan), per_class


def classification_metrics(
    labels: Sequence[int], probabilities: np.ndarray, classes: Sequence[str]
) -> dict[str, object]:
    """Every metric of ``metrics.json`` from case labels and case class probabilities ``(N, K)``; the
    prediction is the most probable class."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    predictions = probabilities.argmax(axis=1)
    matrix = confusion_matrix(labels, predictions, len(classes))
    scores = scores_from_confusion(matrix)
    auc, auc_per_class = roc_auc_one_vs_rest(labels, probabilities)
    per_class = {
        name: {**values, "auc": auc_per_class[k]}
        for k, (name, values) in enumerate(zip(classes, scores.pop("per_class"), strict=True))
    }
    return {
        "auc": auc,
        **scores,
        "per_class": per_class,
        "confusion_matrix": matrix.tolist(),
        "confusion_matrix_axes": "rows: true class, columns: predicted class, in the order of 'classes'",
    }
