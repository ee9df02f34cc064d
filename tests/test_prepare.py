"""Dataset preparation (scripts/prepare.py): patient-grouped splits, the VerTumor1200-like and RSNA 2024
layouts, skipped cases with reasons, the command line, and the prepared datalists through the inference data
path (configs/mask_preview.json and the preprocessing of configs/inference.json)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pydicom
import pytest
from monai.bundle import ConfigParser

from bundle.data.datalist import load_datalist
from bundle.data.splits import training_split
from bundle.preparation.patient_split import SPLITS, patient_split
from bundle.preparation.dicom_series_headers import read_dicom_series
from bundle.preparation.prepared import write_prepared
from bundle.errors import InputError
from bundle.transforms.loading import LoadVolume
from bundle.preparation.rsna import collect_rsna, lesion_text
from bundle.preparation.vertumor import collect_vertumor, parse_mask_labels
from tests.conftest import CONFIGS, CT_DICOM, CT_DICOM_SEG, REPO, SCT_LEVELS, SCT_T2, T12_LABEL, run_job
from tests.layouts import write_dicom_series, write_rsna_layout, write_vertumor_layout

PREPARE = [sys.executable, str(REPO / "scripts" / "prepare.py")]


@pytest.fixture(scope="module")
def prepare_script():
    """scripts/prepare.py imported, to call its commands in-process (a subprocess costs a torch import)."""
    spec = importlib.util.spec_from_file_location("prepare_script", REPO / "scripts" / "prepare.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_prepare(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run([*PREPARE, *arguments], cwd=REPO, capture_output=True, text=True, timeout=300,
                          check=False, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def all_entries(datalist: dict) -> list[dict]:
    return [entry for name in SPLITS for entry in datalist[name]]


def assert_patients_disjoint(datalist: dict) -> None:
    patients = {name: {str(e["patient_id"]) for e in datalist[name]} for name in SPLITS}
    for first, second in (("training", "validation"), ("training", "test"), ("validation", "test")):
        assert not patients[first] & patients[second], (first, second)


@pytest.fixture(scope="module")
def rsna(tmp_path_factory):
    root = tmp_path_factory.mktemp("rsna") / "rsna-2024"
    root.mkdir()
    return root, write_rsna_layout(root)


@pytest.fixture(scope="module")
def vertumor(tmp_path_factory):
    root = tmp_path_factory.mktemp("vertumor") / "vertumor"
    return root, write_vertumor_layout(root)


# --- the patient split -------------------------------------------------------------------------------------

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
    assert {n: sorted(e["case_id"] for e in v) for n, v in again.items()} == \
        {n: sorted(e["case_id"] for e in v) for n, v in splits.items()}
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


# --- DICOM slice order ---------------------------------------------------------------------------------------

def test_series_slice_order_matches_itk_on_a_shuffled_series(tmp_path):
    order = [4, 1, 6, 2, 5, 3]
    pixels = {instance: [(instance, 2 * instance, 3000 + instance)] for instance in order}
    write_dicom_series(tmp_path / "series", order, rows=20, columns=16, pixels=pixels)
    series = read_dicom_series(tmp_path / "series")
    assert series.instance_numbers == tuple(order) and series.shape == (16, 20, 6)
    volume = LoadVolume()(tmp_path / "series")
    assert tuple(volume.shape[1:]) == series.shape
    for instance in order:
        k = series.slice_index(instance)
        assert volume[0, 2 * instance, instance, k] == 3000 + instance
        assert float(volume[0, :, :, k].max()) == 3000 + instance
    assert series.slice_index(99) is None


def test_series_slice_order_on_the_real_ct_series(shared_data):
    series = read_dicom_series(CT_DICOM)
    volume = LoadVolume()(CT_DICOM)
    assert series.instance_numbers[0] == 286 and series.instance_numbers[-1] == 267  # reverse of the file names
    for instance in (267, 270, 286):
        k = series.slice_index(instance)
        dataset = pydicom.dcmread(series.files[k])
        assert int(dataset.InstanceNumber) == instance
        expected = dataset.pixel_array.T * float(dataset.RescaleSlope) + float(dataset.RescaleIntercept)
        np.testing.assert_allclose(volume[0, :, :, k].numpy(), expected)


@pytest.mark.parametrize("problem, message", [
    ("two_series", "2 series in one folder"), ("same_position", "two slices at the same position"),
    ("two_stacks", "different orientations"), ("empty", "no DICOM files")])
def test_series_problems_are_input_errors(tmp_path, problem, message):
    folder = tmp_path / "series"
    if problem == "empty":
        folder.mkdir()
        (folder / "notes.txt").write_text("not DICOM")
    else:
        write_dicom_series(folder, [1, 2, 3])
        if problem == "two_series":
            write_dicom_series(tmp_path / "other", [7])
            (tmp_path / "other" / "7.dcm").rename(folder / "7.dcm")
        elif problem in ("same_position", "two_stacks"):
            dataset = pydicom.dcmread(folder / "3.dcm")
            if problem == "same_position":
                dataset.ImagePositionPatient = pydicom.dcmread(folder / "1.dcm").ImagePositionPatient
            else:
                dataset.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
            dataset.save_as(folder / "3.dcm")
    with pytest.raises(InputError, match=message) as raised:
        read_dicom_series(folder)
    assert str(raised.value).startswith(str(folder))


# --- RSNA ----------------------------------------------------------------------------------------------------

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
        "spinal_canal_stenosis", "L3/L4", "severe")
    assert entries["1001_11_spinal_canal_stenosis_l3_l4"]["text"].startswith(
        "Sagittal T2-weighted lumbar spine MRI: severe spinal canal stenosis at L3/L4")
    assert entries["1001_12_right_neural_foraminal_narrowing_l5_s1"]["text"].startswith(
        "Sagittal T1-weighted lumbar spine MRI: severe right neural foraminal narrowing at L5/S1")
    assert prepared.counts["not_selected"] == {"Left Subarticular Stenosis": 1}


def test_rsna_skipped_rows_have_reasons(rsna):
    root, expected = rsna
    prepared = collect_rsna(root)
    kinds = {s["case"]: s["kind"] for s in prepared.skipped if s["kind"] != "duplicate"}
    assert kinds == expected["broken"]
    assert [s["case"] for s in prepared.skipped if s["kind"] == "duplicate"] == ["1001_11_spinal_canal_stenosis_l3_l4"]
    reasons = {s["kind"]: s for s in prepared.skipped}
    assert "instance number 99" in reasons["instance_not_found"]["reason"]
    assert "'Sagittal T1'" in reasons["wrong_series"]["reason"] and "Sagittal T2/STIR" in reasons["wrong_series"]["reason"]
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
    result = run_prepare("rsna", "--root", str(root), "--out_dir", str(out), "--box_size_mm", "12",
                         "--fractions", "[0.5,0.2,0.3]", "--seed", "1")
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
    with pytest.raises(SystemExit, match=r"train_label_coordinates.csv: no rows or missing columns "
                                         r"\['instance_number', 'condition', 'level'\]"):
        prepare_script.rsna(root=str(tmp_path / "root"), out_dir=str(tmp_path / "out"))
    with pytest.raises(SystemExit, match="box_size_mm must be one or three positive numbers"):
        prepare_script.rsna(root=str(tmp_path / "root"), out_dir=str(tmp_path / "out"), box_size_mm=[10, 0, 10])
    assert not (tmp_path / "out" / "datalist.json").exists()


# --- VerTumor --------------------------------------------------------------------------------------------------

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
    assert entries["case01"]["text"] == "Spine MRI: normal L2 vertebral body with homogeneous marrow signal, no focal lesion."
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


@pytest.mark.parametrize("value, labels", [
    ("22", [22]), ("22;23", [22, 23]), ("[23, 22]", [22, 23]), ("21 21", [21]), (24.0, [24]), ([3, 4], [3, 4]),
    ("3.5", None), ("0", None), ("L1", None), ("", None)])
def test_mask_labels_parsing(value, labels):
    if labels is None:
        with pytest.raises(ValueError):
            parse_mask_labels(value)
    else:
        assert parse_mask_labels(value) == labels


def test_vertumor_label_scheme_and_json_labels(vertumor, tmp_path):
    root, _ = vertumor
    rows = [{"case_id": "case03", "class": "malignant", "text": "metastasis at L1", "vertebra": "L1",
             "patient": "X"}, {"case_id": "case04", "class": 0, "level": "L2", "mask_labels": [21]}]
    (tmp_path / "labels.json").write_text(json.dumps({"cases": rows}))
    prepared = collect_vertumor(root, labels=tmp_path / "labels.json")
    assert [e["mask_labels"] for e in prepared.entries] == [[20], [21]]
    assert [e["label"] for e in prepared.entries] == ["malignant", "normal"] and prepared.entries[0]["patient_id"] == "X"
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


# --- the real fixtures -----------------------------------------------------------------------------------------

def test_real_fixtures_as_a_vertumor_folder(shared_data, tmp_path):
    root = tmp_path / "vertumor"
    (root / "images").mkdir(parents=True)
    (root / "segmentations").mkdir()
    (root / "images" / "sct.nii.gz").symlink_to(SCT_T2)
    (root / "segmentations" / "sct.nii.gz").symlink_to(SCT_LEVELS)
    (root / "images" / "ct").symlink_to(CT_DICOM, target_is_directory=True)
    (root / "segmentations" / "ct.nii.gz").symlink_to(CT_DICOM_SEG)
    rows = [{"case_id": "sct", "patient_id": "volunteer", "class": "normal", "level": "C3"},
            {"case_id": "sct", "patient_id": "volunteer", "class": "malignant", "level": "C4",
             "description": "T2-hypointense metastasis replacing the C4 vertebral body"},
            {"case_id": "ct", "patient_id": "ct-patient", "class": "benign", "mask_labels": [T12_LABEL],
             "description": "well-defined haemangioma in T12"}]
    (root / "labels.json").write_text(json.dumps(rows))
    prepared = collect_vertumor(root)
    assert not prepared.skipped and [e["case_id"] for e in prepared.entries] == ["sct_C3", "sct_C4", "ct"]
    assert prepared.entries[0]["mask_labels"] == [3] and prepared.entries[1]["mask_labels"] == [4]
    files = write_prepared(prepared, tmp_path / "prepared", fractions=(0, 0, 1))
    report = run_job(files.datalist, tmp_path / "preview")
    assert not report["failed"], report["failed"]
    assert sorted(w["case_id"] for w in report["written"]) == ["ct", "sct_C3", "sct_C4"]
    assert files.summary["classes"]["test"] == {"normal": 1, "benign": 1, "malignant": 1}


def test_real_ct_series_as_an_rsna_study(shared_data, tmp_path):
    root = tmp_path / "rsna"
    (root / "train_images" / "77").mkdir(parents=True)
    (root / "train_images" / "77" / "88").symlink_to(CT_DICOM, target_is_directory=True)
    (root / "train_series_descriptions.csv").write_text(
        "study_id,series_id,series_description\n77,88,Sagittal T2/STIR\n")
    (root / "train_label_coordinates.csv").write_text(
        "study_id,series_id,instance_number,condition,level,x,y\n77,88,270,Spinal Canal Stenosis,L4/L5,256.0,300.5\n")
    (root / "train.csv").write_text("study_id,spinal_canal_stenosis_l4_l5\n77,Severe\n")
    prepared = collect_rsna(root)
    assert not prepared.skipped and len(prepared.entries) == 1
    entry = prepared.entries[0]
    k = entry["point"][2]
    assert int(pydicom.dcmread(read_dicom_series(CT_DICOM).files[k]).InstanceNumber) == 270 and k == 16
    files = write_prepared(prepared, tmp_path / "prepared", fractions=(0, 0, 1))
    preprocessing_items = inference_preprocessing(files.datalist)
    assert len(preprocessing_items) == 1 and preprocessing_items[0]


def inference_preprocessing(datalist: Path, split: str = "test") -> list[list]:
    """configs/inference.json's own ``cases`` and ``preprocessing`` (no trained model needed) on ``datalist``."""
    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "inference.json"))
    parser.update({"bundle_root": str(REPO), "datalist": str(datalist), "split": split})
    cases = parser.get_parsed_content("cases")
    preprocessing = parser.get_parsed_content("preprocessing")
    return [preprocessing(dict(case)) for case in cases]


def test_inference_config_preprocessing_runs_on_prepared_datalists(rsna, vertumor, tmp_path):
    for name, prepared in (("rsna", collect_rsna(rsna[0])), ("vertumor", collect_vertumor(vertumor[0]))):
        files = write_prepared(prepared, tmp_path / name)
        for split in SPLITS:
            results = inference_preprocessing(files.datalist, split)
            assert len(results) == len(json.loads(files.datalist.read_text())[split])
            for items in results:
                items = items if isinstance(items, list) else [items]
                assert items and all(tuple(item["soft_mask"].shape[-2:]) == (48, 48) for item in items)


def test_training_validates_on_the_prepared_validation_list(tmp_path):
    """A prepared datalist's patient-disjoint ``validation`` list is what training validates on; without one,
    validation is held out of ``training``."""
    entries = [{"case_id": f"c{i}", "image": f"c{i}.nii.gz", "label": "normal" if i % 2 else "benign"}
               for i in range(8)]
    prepared = tmp_path / "prepared.json"
    prepared.write_text(json.dumps({"training": entries[:6], "validation": entries[6:], "test": []}))
    ids = [e["case_id"] for e in training_split(prepared, "validation")]
    assert ids == ["c6", "c7"]
    assert [e["case_id"] for e in training_split(prepared, "training")] == [f"c{i}" for i in range(6)]
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps({"training": entries}))
    held_out = {e["case_id"] for e in training_split(plain, "validation", fraction=0.25)}
    kept = {e["case_id"] for e in training_split(plain, "training", fraction=0.25)}
    assert len(held_out) == 2 and held_out.isdisjoint(kept) and held_out | kept == {f"c{i}" for i in range(8)}
