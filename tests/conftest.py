"""Shared fixtures: the real scans in ../shared/data, the bundle's configs, and a tiny trained model on a small
generated dataset (session-wide, since training it is the slow part)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser, ConfigWorkflow

from bundle.demo.dataset import generate_dataset
from bundle.balancing.synthesis_requests import write_demo_requests

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


TINY = {"spatial_size": 32, "batch_size": 4, "val_max_items": 2, "val_inference_steps": 2, "slices_per_case": 2}
LOGGING = str(CONFIGS / "logging.conf")
META = str(CONFIGS / "metadata.json")


def workflow(config_files, workflow_type: str, **overrides) -> ConfigWorkflow:
    files = [str(CONFIGS / name) for name in config_files]
    return ConfigWorkflow(config_file=files if len(files) > 1 else files[0], meta_file=META, logging_file=LOGGING,
                          workflow_type=workflow_type, bundle_root=str(REPO), **overrides)


def run_workflow(config_files, workflow_type: str, **overrides) -> ConfigWorkflow:
    flow = workflow(config_files, workflow_type, **overrides)
    flow.initialize()
    flow.run()
    flow.finalize()
    return flow


def bundle_run(*arguments: str, timeout: int = 600) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "monai.bundle", "run", *arguments]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory) -> Path:
    out_dir = tmp_path_factory.mktemp("workflows") / "data"
    generate_dataset(out_dir, num_cases=10, seed=5)
    write_demo_requests(out_dir / "datalist.json", out_dir / "requests.json")
    return out_dir


@pytest.fixture(scope="session")
def trained(demo_data, tmp_path_factory) -> Path:
    """Stage 1 then stage 2 for two epochs each; returns the models folder."""
    root = tmp_path_factory.mktemp("trained")
    models, runs = root / "models", root / "runs"
    run_workflow(["train_msc.json"], "train", dataset_dir=str(demo_data), models_dir=str(models),
                 output_dir=str(runs / "msc"), max_epochs=2, val_interval=1, **TINY)
    assert (models / "msc.safetensors").is_file() and (models / "clip" / "open_clip_config.json").is_file()
    flow = run_workflow(["train.json"], "train", dataset_dir=str(demo_data), models_dir=str(models),
                        output_dir=str(runs / "train"), max_epochs=2, val_interval=2, **TINY)
    trainer = flow.parser.get_parsed_content("train#trainer")
    assert trainer.state.epoch == 2  # that it learned: tests/test_learning.py
    return models


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models on a shared machine: one intra-op thread is far faster than several contending for the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
