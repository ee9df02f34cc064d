"""The main job on generated demo data: `python -m monai.bundle run` end to end, and exact round trips on
the phantom's oblique, anisotropic grids."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from bundle.demo.dataset import generate_dataset
from tests.helpers.paths import CONFIGS, REPO
from tests.helpers.workflows import run_job, write_datalist


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("demo") / "data"
    generate_dataset(out_dir, num_cases=8, seed=3)
    return out_dir


@pytest.mark.parametrize("elsewhere", [False, True], ids=["from_the_bundle", "from_another_folder"])
def test_bundle_run_writes_every_test_case(demo_data, tmp_path, elsewhere):
    """Also from another working directory with ``--bundle_root`` (as MONAI Label, Deploy or another project
    run the bundle): the shared settings are found through ``bundle_root``."""
    output_dir = tmp_path / "preview"
    elsewhere_arguments = ["--bundle_root", str(REPO)] if elsewhere else []
    command = [
        sys.executable,
        "-m",
        "monai.bundle",
        "run",
        "--config_file",
        str(CONFIGS / "mask_preview.json"),
        "--datalist",
        str(demo_data / "datalist.json"),
        "--output_dir",
        str(output_dir),
        *elsewhere_arguments,
    ]
    result = subprocess.run(
        command,
        cwd=tmp_path if elsewhere else REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    test_cases = json.loads((demo_data / "datalist.json").read_text())["test"]
    report = json.loads((output_dir / "report.json").read_text())
    assert not report["failed"] and len(report["written"]) == len(test_cases)
    assert f"{len(test_cases)} of {len(test_cases)} cases written" in result.stdout
    for case in test_cases:
        name = case["case_id"]
        original = nib.load(str(demo_data / case["image"]))
        written = nib.load(str(output_dir / f"{name}_synthetic.nii.gz"))
        np.testing.assert_array_equal(written.affine, original.affine)
        assert written.get_data_dtype() == original.get_data_dtype()
        changed = np.asanyarray(written.dataobj) != np.asanyarray(original.dataobj)
        vertebra = np.isin(np.asanyarray(nib.load(str(demo_data / case["vertebra_seg"])).dataobj), case["mask_labels"])
        distance = ndimage.distance_transform_edt(~vertebra, sampling=original.header.get_zooms())
        assert changed.any() and distance[changed].max() <= 4 * 3.0 + max(original.header.get_zooms())
        provenance = json.loads((output_dir / f"{name}_synthetic.json").read_text())
        assert provenance["text"] == case["text"] and provenance["case_id"] == name
        assert (output_dir / f"{name}_synthetic.png").stat().st_size > 10_000


def test_identity_round_trip_on_demo_data_is_exact(demo_data, tmp_path):
    cases = json.loads((demo_data / "datalist.json").read_text())["training"][:3]
    entries = [
        {**case, "image": str(demo_data / case["image"]), "vertebra_seg": str(demo_data / case["vertebra_seg"])}
        for case in cases
    ]
    report = run_job(write_datalist(tmp_path / "list.json", entries), tmp_path / "out", **{"predictor#key": "image"})
    assert not report["failed"]
    for entry, written in zip(entries, report["written"], strict=False):
        original, output = nib.load(entry["image"]), nib.load(written["volume"])
        np.testing.assert_array_equal(np.asanyarray(output.dataobj), np.asanyarray(original.dataobj))
        np.testing.assert_array_equal(output.affine, original.affine)
