"""VG-MedGen's attribute captions: measured on the phantom and checked against its ground truth, from the
datalist's attributes, from a CSV of offline captions (and its errors), and on a real scan."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from bundle.data.datalist import FILE_KEYS, load_datalist
from bundle.errors import InputError
from bundle.preparation.vgmedgen_captions import (
    caption_datalist,
    caption_entries,
    caption_fidelity,
    caption_from_attributes,
    read_caption_csv,
)
from bundle.transforms.case_to_slices import slice_transform
from tests.helpers.paths import REPO


@pytest.fixture(scope="module")
def phantom(demo_data) -> list[dict]:
    path = demo_data / "datalist.json"
    return load_datalist(path, "training") + load_datalist(path, "test")


@pytest.fixture(scope="module")
def measured(phantom) -> list[dict]:
    captioned, failures = caption_entries(phantom, "measured")
    assert failures == []
    return captioned


def test_measured_attributes_agree_with_the_phantom_ground_truth(measured):
    fidelity = caption_fidelity(measured)
    assert fidelity["lesion"]["of"] == len(measured) and fidelity["lesion"]["fraction"] == 1.0
    assert fidelity["signal"]["of"] >= 3 and fidelity["signal"]["fraction"] == 1.0
    assert fidelity["height_loss"]["fraction"] >= 0.9
    assert fidelity["margin"]["fraction"] >= 0.75 and fidelity["position"]["fraction"] >= 0.75
    benign = [
        abs(e["caption_attributes"]["size_mm"] - e["attributes"]["size_mm"])
        for e in measured
        if e["attributes"]["lesion_class"] == "benign"
    ]
    assert benign and max(benign) <= 3.0  # regular outlines: the nominal size is the mask's


def test_captions_name_the_measured_attributes_in_the_template(measured):
    for entry in measured:
        truth = entry["attributes"]
        assert entry["text"].startswith(f"{entry['label'].capitalize()} {truth['level']} vertebra. Anatomy: ")
        assert f"Anatomy: {entry['anatomy_text']}. Style: {entry['style_text']}." in entry["text"]
        assert entry["source_text"] and entry["source_text"] != entry["text"]
        if truth["lesion_class"] == "normal":
            assert "no focal lesion" in entry["anatomy_text"] and "marrow signal" in entry["style_text"]
        else:
            size = round(entry["caption_attributes"]["size_mm"])
            assert entry["anatomy_text"].startswith(f"{size} mm ")
            assert truth["signal"] in entry["style_text"] and truth["signal"] not in entry["anatomy_text"]


def test_the_working_window_crops_carry_the_caption(measured):
    entry = next(e for e in measured if e["attributes"]["lesion_class"] != "normal")
    items = slice_transform(spatial_size=32, slices_per_case=2)(entry)
    assert len(items) == 2
    assert all(item["text"] == entry["text"] and tuple(item["image"].shape) == (1, 32, 32) for item in items)


def test_ground_truth_attributes_give_the_same_template(phantom):
    captioned, failures = caption_entries(phantom, "attributes")
    assert failures == []
    lesion = next(e for e in captioned if e["attributes"]["lesion_class"] != "normal")
    truth = lesion["attributes"]
    assert lesion["text"] == caption_from_attributes(truth, lesion["label"], lesion["level"]).text
    assert f"{truth['size_mm']} mm lesion with {truth['margin']} margins" in lesion["anatomy_text"]
    assert f"({round(100 * truth['contrast'])} %)" in lesion["style_text"]
    no_attributes, failures = caption_entries([{"case_id": "x", "label": "normal"}], "attributes")
    assert no_attributes == [] and "x" in failures[0]["case_id"] and "attributes" in failures[0]["error"]


def test_captions_from_a_csv_and_its_errors(phantom, tmp_path):
    good = tmp_path / "captions.csv"
    lines = ["case_id,caption,model", *[f'{e["case_id"]},"caption of {e["case_id"]}, by a VLM",llava' for e in phantom]]
    good.write_text("\n".join(lines[:-1]) + "\n")  # the last case has no caption
    captioned, failures = caption_entries(phantom, "file", good)
    assert [e["text"] for e in captioned] == [f"caption of {e['case_id']}, by a VLM" for e in phantom[:-1]]
    assert failures == [
        {"case_id": phantom[-1]["case_id"], "error": f"{good}: has no caption for case {phantom[-1]['case_id']!r}"}
    ]
    bad = {
        "no_column.csv": ("case_id,text\na,b\n", "no column \\['caption'\\]"),
        "empty.csv": ("case_id,caption\na,\n", "line 2: empty caption"),
        "twice.csv": ("case_id,caption\na,x\na,y\n", "line 3: case 'a' is listed twice"),
        "binary.csv": (b"\xff\xfe\x00bad", "UTF-8"),
    }
    for name, (content, problem) in bad.items():
        path = tmp_path / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        with pytest.raises(InputError, match=f"{name}: .*{problem}"):
            read_caption_csv(path)
    with pytest.raises(InputError, match="missing.csv: caption file not found"):
        caption_entries(phantom, "file", tmp_path / "missing.csv")
    with pytest.raises(ValueError, match="needs captions_csv"):
        caption_entries(phantom, "file")
    with pytest.raises(ValueError, match="caption source"):
        caption_entries(phantom, "llava")


def test_a_bad_case_does_not_lose_the_others(phantom, tmp_path):
    broken = {**phantom[0], "case_id": "broken", "image": str(tmp_path / "gone.nii.gz")}
    captioned, failures = caption_entries([broken, phantom[1]], "measured")
    assert [e["case_id"] for e in captioned] == [phantom[1]["case_id"]]
    assert failures[0]["case_id"] == "broken" and "gone.nii.gz: file not found" in failures[0]["error"]


def test_a_real_scan_is_captioned_in_its_own_mm(shared_data):
    entry = {
        "case_id": "totalseg_mr",
        "label": "normal",
        "image": str(shared_data / "totalseg/mr/example_mr_sm.nii.gz"),
        "vertebra_seg": str(shared_data / "totalseg/mr/example_seg_mr.nii.gz"),
        "mask_labels": [19],
    }
    captioned, failures = caption_entries([entry], "measured")
    assert failures == [] and captioned[0]["caption_attributes"]["lesion"] is False
    assert captioned[0]["text"].startswith("Normal lumbar vertebra. Anatomy: lumbar vertebral body")
    json.dumps(captioned[0])  # the datalist entry stays JSON
    with pytest.raises(InputError, match="no voxel with the labels \\[99\\]"):
        from bundle.preparation.vgmedgen_captions import load_vertebra

        load_vertebra({**entry, "mask_labels": [99]})


def test_a_captioned_datalist_is_written_beside_its_input(demo_data, tmp_path):
    source = demo_data / "datalist.json"
    with pytest.raises(ValueError, match="must not overwrite its input"):
        caption_datalist(source, source, "attributes")
    output = tmp_path / "captioned.json"
    report = caption_datalist(source, output, "attributes")
    written = json.loads(output.read_text())
    original = json.loads(source.read_text())
    assert {k: v for k, v in written.items() if k not in ("training", "test")} == {
        k: v for k, v in original.items() if k not in ("training", "test")
    }
    assert [e["case_id"] for e in written["test"]] == [e["case_id"] for e in original["test"]]
    assert all(e["caption_source"] == "attributes" and "Anatomy: " in e["text"] for e in written["training"])
    assert report["splits"]["test"]["failures"] == [] and "fidelity" not in report


def test_a_captioned_datalist_named_from_another_folder_reads_back_its_files(demo_data, tmp_path, monkeypatch):
    """Relative datalist paths (as `make vgmedgen-demo` gives them) stay readable from the captioned datalist's
    own folder."""
    monkeypatch.chdir(demo_data.parent)
    output = tmp_path / "elsewhere" / "captioned.json"
    output.parent.mkdir()
    caption_datalist(Path(demo_data.name) / "datalist.json", output, "attributes")
    for split in ("training", "test"):
        entries = load_datalist(output, split)
        assert entries and all(Path(e[key]).is_file() for e in entries for key in FILE_KEYS if e.get(key)), split


def test_class_label_captions_name_the_class_only():
    entries = [{"case_id": "a", "label": "malignant"}, {"case_id": "b", "label": "normal"}, {"case_id": "c"}]
    captioned, failures = caption_entries(entries, source="class")
    assert [e["text"] for e in captioned] == ["Malignant vertebra.", "Normal vertebra."]
    assert all(e["caption_source"] == "class" and e["caption_attributes"] is None for e in captioned)
    assert [f["case_id"] for f in failures] == ["c"] and "no class 'label'" in failures[0]["error"]


def test_each_captioned_case_carries_its_working_windows_extent_at_any_grid_size(phantom):
    cases = [e for e in phantom if e["attributes"]["lesion_class"] != "normal"][:2]
    broken = {**cases[0], "case_id": "broken", "mask_labels": [99]}
    at_32, failures = caption_entries([*cases, broken], "attributes", window=slice_transform(32, slices_per_case=1))
    at_48, _ = caption_entries(cases, "attributes", window=slice_transform(48, slices_per_case=1))
    assert [e["case_id"] for e in at_32] == [e["case_id"] for e in cases]
    assert failures[0]["case_id"] == "broken" and "broken: no working window: " in failures[0]["error"]
    assert "crop_window_mm" not in caption_entries(cases, "attributes")[0][0]
    for small, large in zip(at_32, at_48, strict=True):
        window = slice_transform(32, slices_per_case=1)(small)[0]["image"]
        pixel = [float(window.affine[0, 0]), float(window.affine[1, 1])]
        assert small["crop_window_mm"] == pytest.approx([32 * pixel[0], 32 * pixel[1]])
        assert 30 < min(small["crop_window_mm"]) and max(small["crop_window_mm"]) < 200  # a vertebra and its margin
        # the same window at any grid size (the grid's pixel changes): within one pixel of the coarser grid
        assert large["crop_window_mm"] == pytest.approx(small["crop_window_mm"], abs=max(pixel))
    assert at_32[0]["crop_window_mm"] != at_32[1]["crop_window_mm"]  # each case its own window
    json.dumps(at_32)


def test_the_caption_script_writes_the_training_configs_window(demo_data, tmp_path):
    spec = importlib.util.spec_from_file_location("vgmedgen_captions_script", REPO / "scripts" / "vgmedgen_captions.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)  # in-process: a subprocess costs a torch import
    output = tmp_path / "captioned.json"
    script.main(str(demo_data / "datalist.json"), str(output), source="class")
    written = json.loads(output.read_text())
    assert all(len(e["crop_window_mm"]) == 2 for split in ("training", "test") for e in written[split])
