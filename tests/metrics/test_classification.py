"""The downstream classifier's case-level metrics against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bundle.metrics.classification import (
    METRIC_NAMES,
    classification_metrics,
    confusion_matrix,
    confusion_scores,
    roc_auc_one_vs_rest,
)

CLASSES = ["normal", "benign", "malignant"]


def test_confusion_matrix_and_macro_scores_match_a_hand_computed_case():
    labels = [0, 0, 0, 1, 1, 2]
    predictions = [0, 0, 1, 1, 2, 2]
    assert confusion_matrix(labels, predictions, 3).tolist() == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    scores = confusion_scores(labels, predictions, 3)
    # precision 2/2, 1/2, 1/2; recall 2/3, 1/2, 1/1; F1 0.8, 0.5, 2/3
    assert scores["accuracy"] == pytest.approx(4 / 6)
    assert scores["precision"] == pytest.approx((1 + 0.5 + 0.5) / 3)
    assert scores["recall"] == pytest.approx((2 / 3 + 0.5 + 1) / 3)
    assert scores["f1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert [c["support"] for c in scores["per_class"]] == [3, 2, 1]


def test_a_class_never_predicted_scores_zero_and_an_absent_class_is_left_out():
    never = confusion_scores([0, 1, 2, 2], [0, 1, 1, 1], 3)
    assert never["per_class"][2] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 2}
    # class 1: precision 1/3, recall 1 -> F1 1/2; class 0 perfect
    assert never["f1"] == pytest.approx((1 + 0.5 + 0) / 3) and never["precision"] == pytest.approx((1 + 1 / 3) / 3)
    absent = confusion_scores([0, 0, 1], [0, 0, 1], 3)  # no class-2 test case
    assert absent["recall"] == 1.0 and absent["f1"] == 1.0 and absent["per_class"][2]["support"] == 0


def scores_before_monai(matrix: np.ndarray) -> dict[str, object]:
    """The scores as the bundle computed them from the K x K matrix before MONAI's confusion-matrix metrics (the
    reference the MONAI-based scores must reproduce)."""
    matrix = np.asarray(matrix, dtype=np.float64)
    true_positive, predicted, actual = np.diag(matrix), matrix.sum(axis=0), matrix.sum(axis=1)
    precision = np.divide(true_positive, predicted, out=np.zeros_like(true_positive), where=predicted > 0)
    recall = np.divide(true_positive, actual, out=np.zeros_like(true_positive), where=actual > 0)
    both = precision + recall
    f1 = np.divide(2 * precision * recall, both, out=np.zeros_like(both), where=both > 0)
    present = actual > 0
    return {
        "accuracy": float(true_positive.sum() / matrix.sum()),
        "precision": float(precision[present].mean()),
        "recall": float(recall[present].mean()),
        "f1": float(f1[present].mean()),
        "per_class": [(p, r, f, n) for p, r, f, n in zip(precision, recall, f1, actual, strict=True)],
    }


@pytest.mark.parametrize("seed", range(20))
def test_the_monai_scores_are_the_numbers_of_before(seed):
    rng = np.random.default_rng(seed)
    num_classes, cases = int(rng.integers(2, 6)), int(rng.integers(1, 40))
    labels = rng.integers(0, num_classes, cases)
    predictions = np.where(rng.random(cases) < 0.5, labels, rng.integers(0, num_classes, cases))
    scores = confusion_scores(labels, predictions, num_classes)
    before = scores_before_monai(confusion_matrix(labels, predictions, num_classes))
    for name in ("accuracy", "precision", "recall"):
        assert scores[name] == before[name], name
    assert scores["f1"] == pytest.approx(before["f1"], rel=1e-12, abs=1e-15)  # 2TP/(2TP+FP+FN): rounding only
    for values, (p, r, f, n) in zip(scores["per_class"], before["per_class"], strict=True):
        assert (values["precision"], values["recall"], values["support"]) == (p, r, n)
        assert values["f1"] == pytest.approx(f, rel=1e-12, abs=1e-15)


def test_macro_one_vs_rest_auc_matches_hand_counted_pairs():
    labels = [0, 0, 1, 1, 2, 2]
    probabilities = np.array(
        [
            # class 0 scores: positives 0.9, 0.2; negatives 0.3, 0.1, 0.15, 0.05 -> 7 of 8 pairs ordered: 0.875
            # class 1 scores: positives 0.6, 0.5; negatives 0.05, 0.5, 0.1, 0.2 -> 7.5 of 8 (one tie): 0.9375
            # class 2 scores: 1 - the others; positives 0.75, 0.75; negatives 0.05, 0.3, 0.6, 0.2 -> 8 of 8: 1.0
            [0.90, 0.05, 0.05],
            [0.20, 0.50, 0.30],
            [0.30, 0.60, 0.10],
            [0.10, 0.50, 0.40],
            [0.15, 0.10, 0.75],
            [0.05, 0.20, 0.75],
        ]
    )
    macro, per_class = roc_auc_one_vs_rest(labels, probabilities)
    assert per_class == pytest.approx([0.875, 0.9375, 1.0])
    assert macro == pytest.approx((0.875 + 0.9375 + 1.0) / 3)
    # a class without test cases has no AUC and is left out of the mean
    macro, per_class = roc_auc_one_vs_rest([0, 0, 1, 1], probabilities[:4])
    assert math.isnan(per_class[2]) and macro == pytest.approx(np.mean(per_class[:2]))


def test_classification_metrics_predict_the_most_probable_class():
    probabilities = np.array([[0.7, 0.2, 0.1], [0.4, 0.5, 0.1], [0.1, 0.3, 0.6], [0.5, 0.1, 0.4]])
    metrics = classification_metrics([0, 1, 2, 2], probabilities, CLASSES)
    assert metrics["confusion_matrix"] == [[1, 0, 0], [0, 1, 0], [1, 0, 1]]
    assert metrics["accuracy"] == 0.75 and set(METRIC_NAMES) <= set(metrics)
    assert metrics["per_class"]["malignant"]["recall"] == 0.5 and metrics["per_class"]["normal"]["precision"] == 0.5
