"""The patient-grouped, class-stratified split of prepared datasets."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from bundle.preparation.patient_split import SPLITS, patient_split
from tests.helpers.prepare_cli import assert_patients_disjoint


def synthetic_entries(seed: int = 0) -> list[dict]:
    """60 patients with 1-4 entries each; class mix per patient, 'rare' in few patients."""
    rng = np.random.default_rng(seed)
    entries = []
    for patient in range(60):
        for number in range(int(rng.integers(1, 5))):
            label = "rare" if patient % 10 == 3 and number == 0 else ("common" if rng.random() < 0.7 else "middle")
            entries.append({"case_id": f"p{patient:02d}_{number}", "patient_id": f"p{patient:02d}", "label": label})
    return entries


def test_patient_split_keeps_patients_together_and_is_deterministic():
    entries = synthetic_entries()
    splits = patient_split(entries, (0.7, 0.1, 0.2), seed=5)
    assert sum(len(v) for v in splits.values()) == len(entries)
    assert sorted(e["case_id"] for v in splits.values() for e in v) == sorted(e["case_id"] for e in entries)
    assert_patients_disjoint(splits)
    assert splits == patient_split(entries, (0.7, 0.1, 0.2), seed=5)
    shuffled = list(reversed(entries))
    again = patient_split(shuffled, (0.7, 0.1, 0.2), seed=5)
    assert {n: sorted(e["case_id"] for e in v) for n, v in again.items()} == {
        n: sorted(e["case_id"] for e in v) for n, v in splits.items()
    }
    other = patient_split(entries, (0.7, 0.1, 0.2), seed=6)
    assert {e["patient_id"] for e in other["test"]} != {e["patient_id"] for e in splits["test"]}
    assert_patients_disjoint(other)


def test_patient_split_follows_fractions_and_stratifies_classes():
    entries = synthetic_entries()
    splits = patient_split(entries, {"training": 0.6, "validation": 0.2, "test": 0.2}, seed=0)
    totals = Counter(e["label"] for e in entries)
    for name, share in (("training", 0.6), ("validation", 0.2), ("test", 0.2)):
        assert abs(len(splits[name]) - share * len(entries)) <= 4, (name, len(splits[name]))
        counts = Counter(e["label"] for e in splits[name])
        for label, total in totals.items():  # each class within a couple of entries of its share
            assert abs(counts[label] - share * total) <= 3, (name, label, counts[label], share * total)
    assert all(Counter(e["label"] for e in splits[name])["rare"] >= 1 for name in SPLITS)
    only_test = patient_split(entries, (0, 0, 1))
    assert len(only_test["test"]) == len(entries) and not only_test["training"] and not only_test["validation"]
    no_validation = patient_split(entries, (0.8, 0, 0.2))
    assert not no_validation["validation"] and no_validation["test"]


@pytest.mark.parametrize("fractions", [(0.5, 0.5), (-0.1, 0.5, 0.6), (0, 0, 0), ("a", 1, 1)])
def test_patient_split_rejects_bad_fractions(fractions):
    with pytest.raises(ValueError, match="fractions"):
        patient_split(synthetic_entries(), fractions)
