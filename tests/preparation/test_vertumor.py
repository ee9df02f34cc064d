"""The VerTumor1200-like layout: entries and skipped cases with reasons, label schemes, the command line."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from bundle.preparation.patient_split import SPLITS
from bundle.preparation.prepared import write_prepared
from bundle.preparation.vertumor import collect_vertumor, parse_mask_labels
from tests.helpers.paths import CT_DICOM, CT_DICOM_SEG, SCT_LEVELS, SCT_T2, T12_LABEL
from tests.helpers.prepare_cli import all_entries, assert_patients_disjoint, run_prepare
from tests.helpers.workflows import run_job


def test_vertumor_entries_and_skipped_reasons(vertumor):
    root, expected = vertumor
    prepared = collect_vertumor(root)
    entries = {e["case_id"]: e for e in prepared.entries}
    assert set(entries) == set(expected["good"])
    for name, truth in expected["good"].items():
        entry = entries[name]
        assert entry["label"] == truth["label"] and entry["patient_id"] == truth["patient"]
        assert entry["mask_labels"] == truth["mask_labels"]
        assert entry["class_index"] == ["normal", "benign", "malignant"].index(truth["label"])
        assert Path(entry["image"]).exists() and Path(entry["vertebra_seg"]).exists()
        assert entry["text"].strip()
    assert (
        entries["case01"]["text"]
        == "Spine MRI: normal L2 vertebral body with homogeneous marrow signal, no focal lesion."
    )
    assert entries["case01"]["text_source"] == "normal_template"
    assert entries["case02"]["text"] == "a benign lesion in the L3 vertebral body"
    assert entries["case00_label22"]["diagnosis"] == "hemangioma" and entries["case00_label22"]["label"] == "benign"
    assert entries["case00_L1"]["source_case_id"] == "case00" and entries["case00_L1"]["level"] == "L1"
    assert entries["dicom01"]["image"] == str(root / "images" / "dicom01")
    kinds = {s["case"]: s["kind"] for s in prepared.skipped}
    assert kinds == expected["broken"]
    reasons = {s["case"]: s for s in prepared.skipped}
    assert "[24] not in the segmentation" in reasons["absent_label"]["reason"]
    assert "(20, 30, 8) does not match the image grid (24, 30, 8)" in reasons["wrong_grid"]["reason"]
    assert reasons["corrupt"]["reason"].startswith(str(root / "images" / "corrupt.nii.gz"))
    assert "'fracture'" in reasons["fracture"]["reason"]


@pytest.mark.parametrize(
    "value, labels",
    [
        ("22", [22]),
        ("22;23", [22, 23]),
        ("[23, 22]", [22, 23]),
        ("21 21", [21]),
        (24.0, [24]),
        ([3, 4], [3, 4]),
        ("3.5", None),
        ("0", None),
        ("L1", None),
        ("", None),
    ],
)
def test_mask_labels_parsing(value, labels):
    if labels is None:
        with pytest.raises(ValueError):
            parse_mask_labels(value)
    else:
        assert parse_mask_labels(value) == labels


def test_vertumor_label_scheme_and_json_labels(vertumor, tmp_path):
    root, _ = vertumor
    rows = [
        {"case_id": "case03", "class": "malignant", "text": "metastasis at L1", "vertebra": "L1", "patient": "X"},
        {"case_id": "case04", "class": 0, "level": "L2", "mask_labels": [21]},
    ]
    (tmp_path / "labels.json").write_text(json.dumps({"cases": rows}))
    prepared = collect_vertumor(root, labels=tmp_path / "labels.json")
    assert [e["mask_labels"] for e in prepared.entries] == [[20], [21]]
    assert [e["label"] for e in prepared.entries] == ["malignant", "normal"] and prepared.entries[0][
        "patient_id"
    ] == "X"
    totalseg = collect_vertumor(root, labels=tmp_path / "labels.json", label_scheme="totalseg")
    assert [e["case_id"] for e in totalseg.entries] == ["case04"]  # L1 = 31 in that numbering: absent
    assert [s["kind"] for s in totalseg.skipped] == ["labels_not_found"]


def test_vertumor_cli_split_and_mask_preview(vertumor, tmp_path):
    root, expected = vertumor
    out = tmp_path / "prepared"
    result = run_prepare("vertumor", "--root", str(root), "--out_dir", str(out), "--relative_paths")
    assert result.returncode == 0, result.stderr[-3000:]
    datalist = json.loads((out / "datalist.json").read_text())
    skipped = json.loads((out / "skipped.json").read_text())
    assert {s["case"] for s in skipped} == set(expected["broken"])
    assert {e["case_id"] for e in all_entries(datalist)} == set(expected["good"])
    assert all(not os.path.isabs(e["image"]) for e in all_entries(datalist))
    assert_patients_disjoint(datalist)
    assert all(datalist[name] for name in SPLITS)
    split_of = {e["case_id"]: name for name in SPLITS for e in datalist[name]}
    assert len({split_of[c] for c in ("case00_L1", "case00_label22", "case01")}) == 1  # patient P0's three rows
    written = []
    for name in SPLITS:
        report = run_job(out / "datalist.json", tmp_path / f"preview_{name}", split=name)
        assert not report["failed"], report["failed"]
        assert len(report["written"]) == len(datalist[name])
        written += [w["case_id"] for w in report["written"]]
    assert sorted(written) == sorted(expected["good"])


def test_vertumor_root_problems_exit_non_zero(prepare_script, tmp_path):
    (tmp_path / "root" / "images").mkdir(parents=True)
    out = str(tmp_path / "out")
    with pytest.raises(SystemExit, match=r"root: no labels file \(labels.csv or labels.json\)"):
        prepare_script.vertumor(root=str(tmp_path / "root"), out_dir=out)
    (tmp_path / "root" / "labels.csv").write_text("name,description\ncase1,lesion\n")
    with pytest.raises(SystemExit, match="labels.csv: no class column"):
        prepare_script.vertumor(root=str(tmp_path / "root"), out_dir=out)
    with pytest.raises(SystemExit, match="label_scheme must be one of"):
        prepare_script.vertumor(root=str(tmp_path / "root"), out_dir=out, label_scheme="mine")
    (tmp_path / "root" / "labels.csv").write_text("case_id,class,description,level\ncase1,benign,lesion,L1\n")
    with pytest.raises(SystemExit, match="no usable case"):
        prepare_script.vertumor(root=str(tmp_path / "root"), out_dir=out, fractions=(1, 0, 0))
    assert json.loads((tmp_path / "out" / "skipped.json").read_text())[0]["kind"] == "missing_image"
    assert json.loads((tmp_path / "out" / "datalist.json").read_text())["training"] == []


def test_real_fixtures_as_a_vertumor_folder(shared_data, tmp_path):
    root = tmp_path / "vertumor"
    (root / "images").mkdir(parents=True)
    (root / "segmentations").mkdir()
    (root / "images" / "sct.nii.gz").symlink_to(SCT_T2)
    (root / "segmentations" / "sct.nii.gz").symlink_to(SCT_LEVELS)
    (root / "images" / "ct").symlink_to(CT_DICOM, target_is_directory=True)
    (root / "segmentations" / "ct.nii.gz").symlink_to(CT_DICOM_SEG)
    rows = [
        {"case_id": "sct", "patient_id": "volunteer", "class": "normal", "level": "C3"},
        {
            "case_id": "sct",
            "patient_id": "volunteer",
            "class": "malignant",
            "level": "C4",
            "description": "T2-hypointense metastasis replacing the C4 vertebral body",
        },
        {
            "case_id": "ct",
            "patient_id": "ct-patient",
            "class": "benign",
            "mask_labels": [T12_LABEL],
            "description": "well-defined haemangioma in T12",
        },
    ]
    (root / "labels.json").write_text(json.dumps(rows))
    prepared = collect_vertumor(root)
    assert not prepared.skipped and [e["case_id"] for e in prepared.entries] == ["sct_C3", "sct_C4", "ct"]
    assert prepared.entries[0]["mask_labels"] == [3] and prepared.entries[1]["mask_labels"] == [4]
    files = write_prepared(prepared, tmp_path / "prepared", fractions=(0, 0, 1))
    report = run_job(files.datalist, tmp_path / "preview")
    assert not report["failed"], report["failed"]
    assert sorted(w["case_id"] for w in report["written"]) == ["ct", "sct_C3", "sct_C4"]
    assert files.summary["classes"]["test"] == {"normal": 1, "benign": 1, "malignant": 1}
