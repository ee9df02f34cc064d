"""Warnings on a prepared dataset: empty or tiny splits, rare classes, single-study patients, missing vertebrae."""

from __future__ import annotations

import json
import logging

from bundle.preparation.preparation_checks import PreparationChecks
from bundle.preparation.prepared import Prepared, write_prepared

SHARES = {"training": 0.7, "validation": 0.1, "test": 0.2}


def entries(count: int, label: str = "normal", **extra) -> list[dict]:
    return [{"case_id": f"{label}{i}", "patient_id": f"p{label}{i}", "label": label, **extra} for i in range(count)]


def codes(found: list[dict]) -> list[str]:
    return [item["code"] for item in found]


def test_a_large_enough_dataset_gives_no_warning():
    splits = {"training": entries(12) + entries(12, "tumor"), "validation": entries(6), "test": entries(6)}
    assert PreparationChecks()(splits, SHARES, ("normal", "tumor"), []) == []


def test_an_empty_and_a_tiny_split_warn_with_figure_and_threshold(caplog):
    splits = {"training": entries(20), "validation": entries(2), "test": []}
    with caplog.at_level(logging.WARNING):
        found = PreparationChecks(min_class_cases=1)(splits, SHARES, ("normal",), [])
    assert codes(found) == ["tiny_split", "empty_split"]
    assert [(item["measured"], item["threshold"]) for item in found] == [(2, 5), (0, 5)]
    assert "test split holds 0 entries" in caplog.text
    # a split asked to stay empty does not warn
    assert (
        PreparationChecks(min_class_cases=1)(splits, {**SHARES, "test": 0.0, "validation": 0.0}, ("normal",), []) == []
    )


def test_a_class_with_too_few_training_cases_warns_even_when_absent_from_training():
    splits = {"training": entries(12) + entries(3, "tumor"), "validation": entries(5), "test": entries(5, "cyst")}
    found = PreparationChecks()(splits, SHARES, ("normal", "tumor", "cyst"), [])
    assert codes(found) == ["few_class_cases", "few_class_cases"]
    assert [item["measured"] for item in found] == [{"class": "tumor", "count": 3}, {"class": "cyst", "count": 0}]


def test_single_study_patients_warn_only_where_studies_are_known_apart_from_patients():
    followed = [{"case_id": f"f{i}", "patient_id": "p1", "study_id": f"s{i}", "label": "normal"} for i in range(2)]
    single = [{"case_id": f"o{i}", "patient_id": f"q{i}", "study_id": f"t{i}", "label": "normal"} for i in range(3)]
    checks = PreparationChecks(min_split_entries=0, min_class_cases=0)
    found = checks({"training": followed + single, "validation": [], "test": []}, SHARES, ("normal",), [])
    assert codes(found) == ["single_study_patients"] and found[0]["measured"] == 0.75
    same = [{**entry, "study_id": entry["patient_id"]} for entry in single]
    assert checks({"training": same, "validation": [], "test": []}, SHARES, ("normal",), []) == []


def test_rows_without_the_target_vertebra_warn():
    checks = PreparationChecks(min_split_entries=0, min_class_cases=0)
    splits = {"training": entries(3), "validation": [], "test": []}
    skipped = [{"kind": "labels_not_found"}, {"kind": "missing_image"}]
    found = checks(splits, SHARES, ("normal",), skipped)
    assert codes(found) == ["missing_vertebra"] and found[0]["measured"] == 0.25
    assert checks(splits, SHARES, ("normal",), skipped[1:]) == []


def test_preparing_a_small_dataset_warns_in_summary_json(tmp_path, caplog):
    prepared = Prepared(entries=entries(2), classes=("normal", "tumor"))
    with caplog.at_level(logging.WARNING):
        files = write_prepared(prepared, tmp_path, (0.7, 0.1, 0.2))
    summary = json.loads(files.summary_file.read_text())
    assert summary["entries_per_split"]["test"] == 0
    assert "empty_split" in codes(summary["warnings"]) and "few_class_cases" in codes(summary["warnings"])
    assert summary["warnings"] == json.loads(files.datalist.read_text())["summary"]["warnings"]
    assert "test split holds 0 entries" in caplog.text
