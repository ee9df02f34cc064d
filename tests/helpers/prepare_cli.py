"""Running scripts/prepare.py in tests, checking the datalists it writes, and their inference preprocessing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from monai.bundle import ConfigParser

from bundle.preparation.patient_split import SPLITS
from tests.helpers.paths import CONFIGS, REPO

PREPARE = [sys.executable, str(REPO / "scripts" / "prepare.py")]


def run_prepare(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*PREPARE, *arguments],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def all_entries(datalist: dict) -> list[dict]:
    return [entry for name in SPLITS for entry in datalist[name]]


def assert_patients_disjoint(datalist: dict) -> None:
    patients = {name: {str(e["patient_id"]) for e in datalist[name]} for name in SPLITS}
    for first, second in (("training", "validation"), ("training", "test"), ("validation", "test")):
        assert not patients[first] & patients[second], (first, second)


def inference_preprocessing(datalist: Path, split: str = "test") -> list[list]:
    """configs/inference.json's own ``cases`` and ``preprocessing`` (no trained model needed) on ``datalist``."""
    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "inference.json"))
    parser.update({"bundle_root": str(REPO), "datalist": str(datalist), "split": split})
    cases = parser.get_parsed_content("cases")
    preprocessing = parser.get_parsed_content("preprocessing")
    return [preprocessing(dict(case)) for case in cases]
