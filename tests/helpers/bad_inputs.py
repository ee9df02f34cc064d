"""Bad-input cases the tests share: a good CT case, copies of its DICOM series with changed tags, and the check that
a job refused exactly the expected cases as bad inputs."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pydicom

from tests.helpers.paths import CT_DICOM, CT_DICOM_SEG, T12_LABEL

GOOD_CT = {
    "image": str(CT_DICOM),
    "vertebra_seg": str(CT_DICOM_SEG),
    "mask_labels": [T12_LABEL],
    "text": "lytic lesion in T12",
}


def failures_of(report: dict) -> dict[str, str]:
    return {failure["case_id"]: failure["error"] for failure in report["failed"]}


def assert_refused(report: dict, expected: dict[str, str]) -> None:
    """Every case in ``expected`` failed as a bad input with a message matching its pattern."""
    failures = failures_of(report)
    assert set(failures) == set(expected), failures
    assert all(failure["bad_input"] for failure in report["failed"]), report["failed"]
    for case, pattern in expected.items():
        assert re.search(pattern, failures[case]), (case, failures[case])


def copy_series(tmp_path: Path, name: str) -> tuple[Path, list[Path]]:
    folder = tmp_path / name
    shutil.copytree(CT_DICOM, folder)
    return folder, sorted(folder.iterdir())


def set_tags(path: Path, target: Path | None = None, **tags) -> None:
    dataset = pydicom.dcmread(path)
    for keyword, value in tags.items():
        setattr(dataset, keyword, value)
    dataset.save_as(target or path)
