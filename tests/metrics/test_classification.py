"""The downstream classifier's case-level metrics against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bundle.metrics.classification import (
    METRIC_NAMES,
    classification_metrics,
    confusion_matrix,
    roc_auc_one_vs_rest,
    scores_from_confusion,
)

CLASSES = ["normal", "benign", "malignant"]


def test_confusion_matrix_and_macro_scores_match_a_hand_computed_case():
    labels = [0, 0, 0, 1, 1, 2]
    predictions = [0, 0, 1, 1, 2, 2]
    matrix = confusion_matrix(labels, predictions, 3)
    assert matrix.tolist() == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    scores = scores_from_confusion(matrix)
    # precision 2/2, 1/2, 1/2; recall 2/3, 1/2, 1/1; F1 0.8, 0.5, 2/3
    assert scores["accuracy"] == pytest.approx(4 / 6)
    assert scores["precision"] == pytest.approx((1 + 0.5 + 0.5) / 3)
    assert scores["recall"] == pytest.approx((2 / 3 + 0.5 + 1) / 3)
    assert scores["f1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert [c["support"] for c in scores["per_class"]] == [3, 2, 1]


def test_a_class_never_predicted_scores_zero_and_an_absent_class_is_left_out():
    never = scores_from_confusion(confusion_matrix([0, 1, 2, 2], [0, 1, 1, 1], 3))
    assert never["per_class"][2] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 2}
    # class 1: precision 1/3, recall 1 -> F1 1/2; class 0 perfect
    assert never["f1"] == pytest.approx((1 + 0.5 + 0) / 3) and never["precision"] == pytest.approx((1 + 1 / 3) / 3)
    absent = scores_from_confusion(confusion_matrix([0, 0, 1], [0, 0, 1], 3))  # no class-2 test case
    assert absent["recall"] == 1.0 and absent["f1"] == 1.0 and absent["per_class"][2]["support"] == 0


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
