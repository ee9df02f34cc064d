"""The packaged bundle, as another MONAI project uses it in a fresh process outside this repository: download the zip,
load the network with model.pt's weights, verify the metadata offline, run the inference workflow on an image, a text
and a box."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile

import nibabel as nib
import numpy as np
import pytest

from tests.helpers.paths import REPO, SCT_T2
from tests.helpers.tiny_bundle import TINY_SPATIAL_SIZE, make_tiny_models

NAME = json.loads((REPO / "metadata.json").read_text())["name"]
BOX = [[20, 20, 20], [40, 40, 30]]

# run in a fresh interpreter whose working directory is outside the repository; arguments: zip, bundle_dir, image, out
USER = """
import json, sys
from pathlib import Path
import torch
from monai.bundle import create_workflow, download, load, verify_metadata

zip_file, bundle_dir, image, output_dir, box = sys.argv[1:]
download(name="{name}", url=Path(zip_file).as_uri(), bundle_dir=bundle_dir)  # MONAI 1.6.1 needs the name too
root = Path(bundle_dir) / "{name}"
sys.path.insert(0, str(root))  # the bundle's code, as ConfigWorkflow.run adds it
import bundle

assert Path(bundle.__file__).is_relative_to(root), bundle.__file__
models = str(root / "models")
network = load(
    "{name}", bundle_dir=bundle_dir, workflow_type="inference", device="cpu",
    net_override={{"models_dir": models, "stage1_dir": models}},
)
state = torch.load(root / "models" / "model.pt", weights_only=True)
same = all(torch.equal(network.state_dict()[name], tensor) for name, tensor in state.items())
verify_metadata(meta_file=str(root / "configs" / "metadata.json"), filepath=str(root / "docs" / "schemas" /
                "meta_schema_20240725.json"))
workflow = create_workflow(
    config_file=str(root / "configs" / "inference.json"), workflow_type="inference",
    properties_path=str(root / "configs" / "properties.json"), logging_file=False, bundle_root=str(root),
    image=image, text="a 10 mm hyperintense lesion", box=json.loads(box), output_dir=output_dir,
    spatial_size={size}, num_inference_steps=2,
)
missing = workflow.check_properties()
workflow.run()
workflow.finalize()
print(json.dumps({{"tensors": len(state), "same_weights": same, "missing_properties": missing}}))
"""


@pytest.fixture(scope="module")
def packaged(tmp_path_factory):
    root = tmp_path_factory.mktemp("package")
    models = make_tiny_models(root / "models")
    subprocess.run(
        [sys.executable, "scripts/package.py", "--models_dir", str(models), "--output_dir", str(root / "dist")],
        cwd=REPO,
        check=True,
        capture_output=True,
        timeout=300,
    )
    return root / "dist" / f"{NAME}.zip"


def test_the_zip_holds_configs_code_models_docs_and_license(packaged):
    names = set(zipfile.ZipFile(packaged).namelist())
    for part in (
        "configs/inference.json",
        "configs/metadata.json",
        "configs/properties.json",
        "bundle/serving/synthesizer.py",
        "models/model.pt",
        "models/msc_adapter.safetensors",
        "docs/README.md",
        "docs/schemas/meta_schema_20240725.json",
        "LICENSE",
    ):
        assert f"{NAME}/{part}" in names, part
    assert not [name for name in names if "__pycache__" in name or not name.startswith(f"{NAME}/")]


def test_another_project_downloads_loads_and_runs_the_zip(packaged, shared_data, tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    output = tmp_path / "synthetic"
    environment = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            USER.format(name=NAME, size=TINY_SPATIAL_SIZE),
            str(packaged),
            str(tmp_path / "bundles"),
            str(SCT_T2),
            str(output),
            json.dumps(BOX),
        ],
        cwd=outside,
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary == {"tensors": summary["tensors"], "same_weights": True, "missing_properties": []}
    assert summary["tensors"] > 100
    written = nib.load(str(output / "t2_synthetic.nii.gz"))
    original = nib.load(str(SCT_T2))
    assert np.allclose(written.affine, original.affine)
    changed = np.asarray(written.dataobj) != np.asarray(original.dataobj)
    assert changed.any() and changed.mean() < 0.1
    report = json.loads((output / "report.json").read_text())
    assert len(report["written"]) == 1 and not report["failed"]
