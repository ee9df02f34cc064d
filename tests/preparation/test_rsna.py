"""The RSNA 2024 lumbar spine layout: entries that point at the labelled pixel, skipped rows with reasons, the
command line."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pydicom
import pytest

from bundle.data.datalist import load_datalist
from bundle.preparation.dicom_series_headers import read_dicom_series
from bundle.preparation.patient_split import SPLITS
from bundle.preparation.prepared import write_prepared
from bundle.preparation.rsna import collect_rsna, lesion_text
from bundle.transforms.loading import LoadVolume
from tests.helpers.paths import CT_DICOM
from tests.helpers.prepare_cli import all_entries, assert_patients_disjoint, inference_preprocessing, run_prepare
from tests.helpers.workflows import run_job


def test_rsna_entries_point_at_the_labelled_pixel(rsna):
    root, expected = rsna
    prepared = collect_rsna(root, box_size_mm=16)
    entries = {e["case_id"]: e for e in prepared.entries}
    assert set(entries) == set(expected["good"])
    volumes = {}
    for name, truth in expected["good"].items():
        entry = entries[name]
        assert entry["image"] == str(root / "train_images" / truth["study"] / truth["series"])
        assert entry["label"] == truth["severity"].lower().replace("/", "_")
        assert entry["class_index"] == ["normal_mild", "moderate", "severe"].index(entry["label"])
        assert entry["patient_id"] == truth["study"] and entry["box_size_mm"] == 16
        assert entry["point"][:2] == [truth["x"], truth["y"]] and entry["instance_number"] == truth["instance"]
        volume = volumes.setdefault(entry["image"], LoadVolume()(entry["image"]))
        x, y, k = round(truth["x"]), round(truth["y"]), entry["point"][2]
        assert float(volume[0, x, y, k]) == truth["value"], name
        assert truth["level"] in entry["text"] and entry["label"].split("_")[0] in entry["text"].lower()
    assert entries["1001_11_spinal_canal_stenosis_l3_l4"]["text"] == lesion_text(
        "spinal_canal_stenosis", "L3/L4", "severe"
    )
    assert entries["1001_11_spinal_canal_stenosis_l3_l4"]["text"].startswith(
        "Sagittal T2-weighted lumbar spine MRI: severe spinal canal stenosis at L3/L4"
    )
    assert entries["1001_12_right_neural_foraminal_narrowing_l5_s1"]["text"].startswith(
        "Sagittal T1-weighted lumbar spine MRI: severe right neural foraminal narrowing at L5/S1"
    )
    assert prepared.counts["not_selected"] == {"Left Subarticular Stenosis": 1}


def test_rsna_skipped_rows_have_reasons(rsna):
    root, expected = rsna
    prepared = collect_rsna(root)
    kinds = {s["case"]: s["kind"] for s in prepared.skipped if s["kind"] != "duplicate"}
    assert kinds == expected["broken"]
    assert [s["case"] for s in prepared.skipped if s["kind"] == "duplicate"] == ["1001_11_spinal_canal_stenosis_l3_l4"]
    reasons = {s["kind"]: s for s in prepared.skipped}
    assert "instance number 99" in reasons["instance_not_found"]["reason"]
    assert (
        "'Sagittal T1'" in reasons["wrong_series"]["reason"] and "Sagittal T2/STIR" in reasons["wrong_series"]["reason"]
    )
    assert reasons["unreadable_series"]["file"].endswith("2.dcm")
    assert reasons["missing_series"]["file"] == str(root / "train_images" / "1003" / "33")
    assert all(s["reason"] and s["file"] for s in prepared.skipped)


def test_rsna_conditions_are_configurable(rsna):
    root, _ = rsna
    prepared = collect_rsna(root, conditions="spinal_canal_stenosis")
    assert {e["condition"] for e in prepared.entries} == {"spinal_canal_stenosis"}
    assert prepared.counts["not_selected"]["Left Neural Foraminal Narrowing"] == 3
    with pytest.raises(ValueError, match="conditions must be among"):
        collect_rsna(root, conditions=["left_subarticular_stenosis"])


def test_rsna_cli_writes_datalist_and_skipped(rsna, tmp_path):
    root, expected = rsna
    out = tmp_path / "prepared"
    result = run_prepare(
        "rsna",
        "--root",
        str(root),
        "--out_dir",
        str(out),
        "--box_size_mm",
        "12",
        "--fractions",
        "[0.5,0.2,0.3]",
        "--seed",
        "1",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    datalist = json.loads((out / "datalist.json").read_text())
    skipped = json.loads((out / "skipped.json").read_text())
    summary = json.loads((out / "summary.json").read_text())
    entries = all_entries(datalist)
    assert {e["case_id"] for e in entries} == set(expected["good"])
    assert all(e["box_size_mm"] == 12 for e in entries)
    assert_patients_disjoint(datalist)
    assert {s["case"] for s in skipped} >= set(expected["broken"])
    assert summary == datalist["summary"] and summary["entries"] == len(entries)
    assert summary["classes"]["all"] == dict(Counter(e["label"] for e in entries))
    assert summary["skipped_by_kind"]["missing_severity"] == 2
    assert datalist["split"]["seed"] == 1 and datalist["labels"] == {"normal_mild": 0, "moderate": 1, "severe": 2}
    assert "training:" in result.stdout and f"datalist: {out / 'datalist.json'}" in result.stdout
    for name in SPLITS:
        assert len(load_datalist(out / "datalist.json", name)) == len(datalist[name])


def test_rsna_prepared_datalist_runs_through_the_inference_data_path(rsna, tmp_path):
    root, expected = rsna
    write_prepared(collect_rsna(root), tmp_path / "prepared", fractions=(0, 0, 1))
    datalist = tmp_path / "prepared" / "datalist.json"
    report = run_job(datalist, tmp_path / "preview")
    assert not report["failed"], report["failed"]
    assert sorted(w["case_id"] for w in report["written"]) == sorted(expected["good"])
    entries = {e["case_id"]: e for e in json.loads(datalist.read_text())["test"]}
    for written in report["written"]:
        provenance = json.loads(Path(written["provenance"]).read_text())
        assert provenance["case_id"] == written["case_id"]
        assert provenance["text"] == entries[written["case_id"]]["text"]
        series = read_dicom_series(written["volume"])  # a new DICOM series of the input's size
        assert series.shape == read_dicom_series(entries[written["case_id"]]["image"]).shape


def test_rsna_root_problems_exit_non_zero(prepare_script, tmp_path):
    with pytest.raises(SystemExit, match=r"^prepare.py: error: .*absent: dataset folder not found"):
        prepare_script.rsna(root=str(tmp_path / "absent"), out_dir=str(tmp_path / "out"))
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "train_series_descriptions.csv").write_text("study_id,series_id,series_description\n1,2,x\n")
    with pytest.raises(SystemExit, match="train_label_coordinates.csv: not found"):
        prepare_script.rsna(root=str(tmp_path / "root"), out_dir=str(tmp_path / "out"))
    (tmp_path / "root" / "train_label_coordinates.csv").write_text("study_id,series_id,x,y\n1,2,3,4\n")
    with pytest.raises(
        SystemExit,
        match=r"train_label_coordinates.csv: no rows or missing columns "
        r"\['instance_number', 'condition', 'level'\]",
    ):
        prepare_script.rsna(root=str(tmp_path / "root"), out_dir=str(tmp_path / "out"))
    with pytest.raises(SystemExit, match="box_size_mm must be one or three positive numbers"):
        prepare_script.rsna(root=str(tmp_path / "root"), out_dir=str(tmp_path / "out"), box_size_mm=[10, 0, 10])
    assert not (tmp_path / "out" / "datalist.json").exists()


def test_real_ct_series_as_an_rsna_study(shared_data, tmp_path):
    root = tmp_path / "rsna"
    (root / "train_images" / "77").mkdir(parents=True)
    (root / "train_images" / "77" / "88").symlink_to(CT_DICOM, target_is_directory=True)
    (root / "train_series_descriptions.csv").write_text(
        "study_id,series_id,series_description\n77,88,Sagittal T2/STIR\n"
    )
    (root / "train_label_coordinates.csv").write_text(
        "study_id,series_id,instance_number,condition,level,x,y\n77,88,270,Spinal Canal Stenosis,L4/L5,256.0,300.5\n"
    )
    (root / "train.csv").write_text("study_id,spinal_canal_stenosis_l4_l5\n77,Severe\n")
    prepared = collect_rsna(root)
    assert not prepared.skipped and len(prepared.entries) == 1
    entry = prepared.entries[0]
    k = entry["point"][2]
    assert int(pydicom.dcmread(read_dicom_series(CT_DICOM).files[k]).InstanceNumber) == 270 and k == 16
    files = write_prepared(prepared, tmp_path / "prepared", fractions=(0, 0, 1))
    preprocessing_items = inference_preprocessing(files.datalist)
    assert len(preprocessing_items) == 1 and preprocessing_items[0]
