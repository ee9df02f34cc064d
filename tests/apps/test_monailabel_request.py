"""The MONAI Label app's request mapping (plain Python, tested here without MONAI Label): server settings from
``--conf``, a request's fields to the serving API's arguments (the vertebra source: label, datastore label, box or
clicked point), the file sent back."""

from __future__ import annotations

import re
import zipfile

import pytest
from monai.bundle import ConfigParser

from apps.monailabel.lib.infers.synthesis_request import (
    DATASTORE_LABEL,
    result_file,
    server_settings,
    synthesis_arguments,
)
from bundle.errors import InputError
from tests.helpers.paths import CONFIGS

TEXT = "a hyperintense lesion"
BOX = [[20, 20, 20], [40, 40, 30]]


def arguments(**request) -> dict:
    return synthesis_arguments({"model": "lesion_synthesis", "image": "/studies/t2.nii.gz", "text": TEXT, **request})


def test_server_settings_are_the_inference_config_ids_read_as_json():
    conf = {"models_dir": "/m", "num_inference_steps": "2", "device": "cpu", "server_mode": "true", "bundle_root": "/b"}
    config_ids = ConfigParser.load_config_files(str(CONFIGS / "inference.json")).keys()
    assert server_settings(conf, config_ids) == {"models_dir": "/m", "num_inference_steps": 2, "device": "cpu"}


def test_a_box_request():
    assert arguments(box=BOX, seed=7) == {
        "image": "/studies/t2.nii.gz",
        "text": TEXT,
        "box": BOX,
        "coordinate_space": "voxel",
        "seed": 7,
    }


@pytest.mark.parametrize(
    "box_size_mm, expected",
    [
        (None, {}),
        ("", {}),
        ("15", {"box_size_mm": 15.0}),
        ("10,20, 30", {"box_size_mm": [10.0, 20.0, 30.0]}),
        ([12, 14, 16], {"box_size_mm": [12.0, 14.0, 16.0]}),
    ],
)
def test_the_latest_clicked_point_with_box_size_mm(box_size_mm, expected):
    mapped = arguments(foreground=[[1, 2, 3], [30, 30, 25]], background=[], box=[], box_size_mm=box_size_mm)
    assert {key: mapped[key] for key in mapped if key in ("point", "box_size_mm", "box")} == {
        "point": [30, 30, 25],
        **expected,
    }


@pytest.mark.parametrize("source", ["label", DATASTORE_LABEL])
@pytest.mark.parametrize(
    "mask_labels, expected",
    [(None, [1]), ("", [1]), ("3", [3]), ("3, 4", [3, 4]), ([5], [5]), (6, [6]), ("[7, 8]", [7, 8])],
)
def test_a_label_with_its_mask_labels(source, mask_labels, expected):
    mapped = arguments(**{source: "/tmp/seg.nii.gz"}, mask_labels=mask_labels, foreground=[])
    assert (mapped["mask"], mapped["mask_labels"]) == ("/tmp/seg.nii.gz", expected)
    assert "box" not in mapped and "point" not in mapped


def test_the_text_and_seed_as_clients_send_them():
    assert arguments(box=BOX, seed="12")["seed"] == 12 and arguments(box=BOX, seed="")["seed"] == 0
    assert arguments(box=BOX, text=None)["text"] is None  # the serving API refuses it with the bundle's message
    assert arguments(box=BOX, coordinate_space="world")["coordinate_space"] == "world"


@pytest.mark.parametrize(
    "request_, message",
    [
        ({}, "request: no vertebra given"),
        ({"box": [], "foreground": [], "label": None, "mask_tag": ""}, "request: no vertebra given"),
        ({"box": BOX, "label": "/tmp/seg.nii.gz"}, "give one vertebra source, got 2: label, box"),
        (
            {"label": "/a", DATASTORE_LABEL: "/b", "foreground": [[1, 2, 3]]},
            "got 3: label, datastore_label, fore",
        ),
        ({"box": BOX, "seed": 1.5}, "seed must be whole numbers, got 1.5"),
        ({"label": "/a", "mask_labels": "L3"}, "mask_labels must be whole numbers, got 'L3'"),
        ({"foreground": [[1, 2, 3]], "box_size_mm": "wide"}, "box_size_mm must be numbers"),
    ],
)
def test_a_bad_request_raises_the_input_error(request_, message):
    with pytest.raises(InputError, match=re.escape(message)):
        arguments(**request_)


def test_the_result_file_is_the_volume_moved_to_a_named_temporary_file(tmp_path):
    volume = tmp_path / "t2_synthetic.nii.gz"
    volume.write_bytes(b"volume")
    sent = result_file(volume)
    try:
        assert sent.name.startswith("t2_synthetic_") and sent.name.endswith(".nii.gz") and sent.parent != tmp_path
        assert sent.read_bytes() == b"volume" and not volume.exists()
    finally:
        sent.unlink()


def test_a_dicom_series_is_sent_as_one_zip_file(tmp_path):
    series = tmp_path / "ct_synthetic"
    series.mkdir()
    for index in range(3):
        (series / f"slice_{index}.dcm").write_bytes(bytes([index]))
    sent = result_file(series)
    try:
        assert sent.name.startswith("ct_synthetic_") and sent.suffix == ".zip"
        with zipfile.ZipFile(sent) as archive:
            assert sorted(archive.namelist()) == ["slice_0.dcm", "slice_1.dcm", "slice_2.dcm"]
    finally:
        sent.unlink()
