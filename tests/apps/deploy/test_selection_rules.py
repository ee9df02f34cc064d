"""The Deploy app's series rules: a sagittal MR series wins over a CT series, whichever study the loader lists
first."""

from __future__ import annotations

import json
from types import SimpleNamespace

from apps.deploy.selection_rules import SELECTION_RULES, by_priority


def test_the_rules_are_sagittal_mr_then_ct():
    rules = json.loads(SELECTION_RULES)["selections"]
    assert [rule["name"] for rule in rules] == ["sagittal MR", "CT"]
    assert rules[0]["conditions"]["ImageOrientationPatient"] == "Sagittal"


def test_a_sagittal_mr_series_wins_over_ct_across_studies_and_ties_keep_their_order():
    ct_a, mr, ct_b = (
        SimpleNamespace(selection_name=name, uid=uid) for name, uid in [("CT", 1), ("sagittal MR", 2), ("CT", 3)]
    )
    assert [series.uid for series in by_priority([ct_a, mr, ct_b])] == [2, 1, 3]
    assert by_priority([]) == []
