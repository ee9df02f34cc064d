"""Case-level classification scores of the downstream experiment.

Accuracy, macro precision / recall / F1 (the unweighted mean of the per-class values from MONAI's
confusion-matrix metrics; a class never predicted has precision 0), and the macro one-vs-rest ROC AUC of the class
probabilities (the mean over classes with both positive and negative test cases).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from monai.metrics import compute_confusion_matrix_metric, compute_roc_auc, get_confusion_matrix

METRIC_NAMES = ("auc", "accuracy", "precision", "recall", "f1")
"""The headline metrics of ``metrics.json`` (precision, recall and F1 are macro averages)."""


def confusion_matrix(labels: Sequence[int], predictions: Sequence[int], num_classes: int) -> np.ndarray:
    """``matrix[t, p]``: how many cases of true class ``t`` were predicted as ``p``."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    for true, predicted in zip(labels, predictions, strict=True):
        matrix[int(true), int(predicted)] += 1
    return matrix


def confusion_scores(labels: Sequence[int], predictions: Sequence[int], num_classes: int) -> dict[str, object]:
    """Accuracy and macro precision / recall / F1 of class predictions, with the per-class values.

    Per class (from the one-vs-rest counts of MONAI's ``get_confusion_matrix`` over all cases and its
    ``compute_confusion_matrix_metric``, as :class:`~monai.metrics.ConfusionMatrixMetric` does):
    precision = TP / (TP + FP), recall = TP / (TP + FN), F1 = 2 TP / (2 TP + FP + FN) (= 2 P R / (P + R)); a 0 / 0
    counts as 0 (a class never predicted has precision 0). Macro values are the unweighted means over the classes
    that have test cases (a class absent from the test set has no recall and is left out).
    """
    counts = torch.zeros(num_classes, 4, dtype=torch.float64)  # per class: TP, FP, TN, FN
    if len(labels):
        counts += get_confusion_matrix(_one_hot(predictions, num_classes), _one_hot(labels, num_classes)).sum(dim=0)
    precision, recall, f1 = (
        torch.nan_to_num(compute_confusion_matrix_metric(name, counts), nan=0.0).numpy()
        for name in ("precision", "recall", "f1 score")
    )
    true_positive, actual = counts[:, 0].numpy(), (counts[:, 0] + counts[:, 3]).long().numpy()
    present = actual > 0
    total = actual.sum()
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


def _one_hot(classes: Sequence[int], num_classes: int) -> torch.Tensor:
    """``(N, num_classes)`` one-hot rows, MONAI's confusion-matrix input."""
    return torch.nn.functional.one_hot(torch.as_tensor(np.asarray(classes, dtype=np.int64)), num_classes).float()


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
    scores = confusion_scores(labels, predictions, len(classes))
    auc, auc_per_class = roc_auc_one_vs_rest(labels, probabilities)
    per_class = {
        name: {**values, "auc": auc_per_class[k]}
        for k, (name, values) in enumerate(zip(classes, scores.pop("per_class"), strict=True))
    }
    return {
        "auc": auc,
        **scores,
        "per_class": per_class,
        "confusion_matrix": confusion_matrix(labels, predictions, len(classes)).tolist(),
        "confusion_matrix_axes": "rows: true class, columns: predicted class, in the order of 'classes'",
    }
