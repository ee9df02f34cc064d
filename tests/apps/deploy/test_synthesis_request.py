"""The Deploy app's request: from a JSON file or an environment variable, box and point in DICOM patient (LPS) mm
turned into the bundle's RAS world frame, exactly one mask source, and bad requests refused naming their source."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from apps.deploy.synthesis_request import REQUEST_ENV, REQUEST_FILE_ENV, load_request, lps_to_ras, parse_request
from bundle.errors import InputError

TEXT = "a 10 mm hypointense lesion in the L1 vertebral body"


def test_a_request_file_with_a_box_in_patient_mm(tmp_path):
    path = tmp_path / "request.json"
    content = {"text": f"  {TEXT} ", "box": [[-10, 20.5, -30], [15, -40, 5]], "seed": 3, "settings": {"eta": 0.5}}
    path.write_text(json.dumps(content))
    request = load_request({REQUEST_FILE_ENV: str(path)})
    assert request.text == TEXT and request.seed == 3 and request.settings == {"eta": 0.5} and request.provenance_sr
    assert request.box == [[10.0, -20.5, -30.0], [-15.0, 40.0, 5.0]]  # LPS -> RAS: x and y change sign
    assert request.synthesize_arguments() == {"text": TEXT, "seed": 3, "coordinate_space": "world", "box": request.box}


def test_an_environment_variable_with_a_point_and_its_box_size():
    request = load_request({REQUEST_ENV: json.dumps({"text": TEXT, "point": [1, 2, 3], "box_size_mm": [20, 20, 8]})})
    assert request.source == f"${REQUEST_ENV}"
    assert request.synthesize_arguments() == {
        "text": TEXT,
        "seed": 0,
        "coordinate_space": "world",
        "point": [-1.0, -2.0, 3.0],
        "box_size_mm": [20.0, 20.0, 8.0],
    }


def test_a_segmentation_path_is_read_from_the_request_files_folder(tmp_path):
    path = tmp_path / "requests" / "request.json"
    path.parent.mkdir()
    path.write_text(json.dumps({"text": TEXT, "segmentation": "seg.nii.gz", "mask_labels": [21, 22]}))
    arguments = load_request({REQUEST_FILE_ENV: str(path)}).synthesize_arguments()
    assert arguments["mask"] == tmp_path / "requests" / "seg.nii.gz" and arguments["mask_labels"] == [21, 22]
    assert "box" not in arguments and "point" not in arguments


def test_lps_to_ras_is_its_own_inverse():
    assert lps_to_ras(lps_to_ras([1.5, -2.0, 3.0])) == [1.5, -2.0, 3.0]


@pytest.mark.parametrize(
    "content, message",
    [
        ({"box": [[0, 0, 0], [1, 1, 1]]}, r"no text"),
        ({"text": " ", "point": [0, 0, 0]}, r"no text"),
        ({"text": TEXT}, r"exactly one mask source .* none"),
        ({"text": TEXT, "box": [[0, 0, 0], [1, 1, 1]], "point": [0, 0, 0]}, r"exactly one mask source"),
        ({"text": TEXT, "box": [[0, 0, 0]]}, r"two corners"),
        ({"text": TEXT, "box": [[0, 0, 0], [1, 1, float("nan")]]}, r"3 finite numbers"),
        ({"text": TEXT, "point": [0, 0]}, r"point must be 3 finite numbers"),
        ({"text": TEXT, "point": [0, 0, 0], "box_size_mm": -5}, r"box_size_mm must be a positive"),
        ({"text": TEXT, "segmentation": "seg.nii.gz"}, r"mask_labels"),
        ({"text": TEXT, "segmentation": "seg.nii.gz", "mask_labels": [1.5]}, r"mask_labels"),
        ({"text": TEXT, "point": [0, 0, 0], "seed": -1}, r"seed"),
        ({"text": TEXT, "point": [0, 0, 0], "settings": [1]}, r"settings must be a JSON object"),
        ({"text": TEXT, "point": [0, 0, 0], "provenance_sr": "no"}, r"provenance_sr must be true or false"),
        ({"text": TEXT, "point": [0, 0, 0], "promt": "typo"}, r"unknown request keys \['promt'\]"),
        ([TEXT], r"must be a JSON object"),
    ],
)
def test_bad_requests_are_refused_naming_the_source(content, message):
    with pytest.raises(InputError, match=message) as raised:
        parse_request(content, "request.json", Path("."))
    assert raised.value.source == "request.json"


def test_the_request_must_come_from_exactly_one_place(tmp_path):
    with pytest.raises(InputError, match="set exactly one"):
        load_request({})
    with pytest.raises(InputError, match="not both"):
        load_request({REQUEST_FILE_ENV: "a.json", REQUEST_ENV: "{}"})
    with pytest.raises(InputError, match=r"missing\.json.*cannot read"):
        load_request({REQUEST_FILE_ENV: str(tmp_path / "missing.json")})
    (tmp_path / "broken.json").write_text("{text: ")
    with pytest.raises(InputError, match=r"broken\.json.*not valid JSON"):
        load_request({REQUEST_FILE_ENV: str(tmp_path / "broken.json")})
