"""The lesion measure on the phantom's real lesions (a lesion case minus its normal twin) recovers what the phantom
drew: the sign, the slices of its lesion mask and a size close to the text's."""

from __future__ import annotations

import pytest

from bundle.experiments.lesion_coherence import phantom_lesion_change, through_plane_summary
from bundle.metrics.lesion_measure import in_plane_diameter, measure_lesion


@pytest.mark.parametrize("lesion_class", ["benign", "malignant"])
def test_real_phantom_lesions_are_measured_as_drawn(lesion_class):
    before, after, vertebra, truth, spacing, case = phantom_lesion_change(3, 1, lesion_class)
    measure = measure_lesion(before, after, vertebra, spacing)
    assert measure.direction == (1 if lesion_class == "benign" else -1)
    assert measure.slices == sorted(set(truth.any(axis=(1, 2)).nonzero()[0].tolist()))
    if lesion_class == "benign":  # well-defined: the text's size
        assert measure.size_mm == pytest.approx(case.attributes.size_mm, rel=0.2)
    else:  # ill-defined, rough outline: larger than its nominal size, not larger than its own mask
        assert case.attributes.size_mm * 0.9 <= measure.size_mm <= in_plane_diameter(truth, spacing) + 1.0
    assert measure.neighbour_correlation > 0.4


def test_through_plane_summary_spreads():
    rows = [
        {
            "label": "benign",
            "size_mm": 10.0,
            "measure": {"direction": 1, "slices": [1, 2], "extent_mm": 8.0, "neighbour_correlation": 0.5},
        },
        {
            "label": "benign",
            "size_mm": 20.0,
            "measure": {"direction": 1, "slices": [1, 2, 3, 4], "extent_mm": 16.0, "neighbour_correlation": 0.7},
        },
        {
            "label": "benign",
            "size_mm": 20.0,
            "measure": {"direction": 0, "slices": [], "extent_mm": 0.0, "neighbour_correlation": None},
        },
    ]
    summary = through_plane_summary(rows)["benign"]
    assert (summary["count"], summary["found"]) == (3, 2)
    assert summary["slices"] == {"mean": 3.0, "sd": pytest.approx(2**0.5), "min": 2.0, "max": 4.0}
    assert summary["extent_over_text_size"]["mean"] == pytest.approx(0.8)
    assert summary["neighbour_correlation"]["mean"] == pytest.approx(0.6)
