"""Shared fixtures: the real scans in ../shared/data and the bundle's configs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from monai.bundle import ConfigParser

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
CONFIGS = REPO / "configs"

SCT_T2 = SHARED_DATA / "sct_t2" / "t2.nii.gz"
SCT_LEVELS = SHARED_DATA / "sct_t2" / "t2_seg-manual_labeled.nii.gz"
TOTALSEG_MR = SHARED_DATA / "totalseg" / "mr" / "example_mr_sm.nii.gz"
TOTALSEG_MR_SEG = SHARED_DATA / "totalseg" / "mr" / "example_seg_mr.nii.gz"
CT_DICOM = SHARED_DATA / "totalseg" / "ct_dicom"
CT_DICOM_SEG = SHARED_DATA / "totalseg" / "ct_dicom_seg.nii.gz"
T12_LABEL = 32  # TotalSegmentator v2 numbering; the 20-slice CT series covers T11-T12
MR_VERTEBRAE_LABEL = 19


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real fixtures not found at {SHARED_DATA} (the shared/ folder beside the checkout)")
    return SHARED_DATA


def write_datalist(path: Path, entries: list[dict], split: str = "test") -> Path:
    path.write_text(json.dumps({split: entries}, indent=2))
    return path


def preview_parser(**overrides) -> ConfigParser:
    """``configs/mask_preview.json`` with ``overrides`` (MONAI ids, e.g. ``{"predictor#key": "image"}``)."""
    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "mask_preview.json"))
    parser.update({"bundle_root": str(REPO), **overrides})
    return parser


def run_job(datalist: Path, output_dir: Path, **overrides) -> dict:
    """Run the mask-preview job of the config on ``datalist``; returns its report."""
    parser = preview_parser(datalist=str(datalist), output_dir=str(output_dir), **overrides)
    return parser.get_parsed_content("job").run()
