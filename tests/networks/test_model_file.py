"""models/model.pt, the file monai.bundle.load reads: a plain tensor state dict named as the bundle's network_def,
the whole tiny model or only the trained parameters of the sd15 profile; scripts/export.py writes it for old runs."""

from __future__ import annotations

import subprocess
import sys

import torch
from monai.networks.utils import copy_model_state

from bundle.networks.guided_unet import ADAPTER_MARKERS
from bundle.networks.medsoft_diffusion import MODEL_FILE, load_trained, save_trained, trained_architecture
from tests.helpers.paths import REPO
from tests.helpers.tiny_bundle import make_tiny_models


def test_the_tiny_profile_writes_the_whole_model_that_monai_copies_into_network_def(tmp_path):
    models = make_tiny_models(tmp_path / "models")
    state = torch.load(models / MODEL_FILE, weights_only=True)
    trained = load_trained(models).state_dict()
    assert set(state) == set(trained) and all(torch.equal(state[name], trained[name]) for name in trained)
    fresh = trained_architecture(models)  # the UNet and adapter as network_def builds them, before their weights
    assert not all(torch.equal(fresh.state_dict()[name], trained[name]) for name in trained)
    _, updated, unchanged = copy_model_state(fresh, state)
    assert not unchanged and len(updated) == len(trained)
    assert all(torch.equal(fresh.state_dict()[name], trained[name]) for name in trained)


def test_a_pretrained_base_keeps_only_the_trained_parameters(tmp_path):
    model = load_trained(make_tiny_models(tmp_path / "tiny"))
    save_trained(model, tmp_path / "sd15", save_base_unet=False)
    state = torch.load(tmp_path / "sd15" / MODEL_FILE, weights_only=True)
    controller = {f"controller.{name}" for name in model.controller.state_dict()}
    adapter = {name for name in state if name.startswith("unet.") and any(m in name for m in ADAPTER_MARKERS)}
    assert controller and adapter and set(state) == controller | adapter
    full = model.state_dict()
    assert all(torch.equal(state[name], full[name]) for name in state) and len(state) < len(full) / 4


def test_the_export_script_writes_model_pt_for_an_earlier_run(tmp_path):
    models = make_tiny_models(tmp_path / "models")
    expected = torch.load(models / MODEL_FILE, weights_only=True)
    (models / MODEL_FILE).unlink()  # what stage 2 left before it wrote model.pt
    subprocess.run(
        [sys.executable, "scripts/export.py", "--models_dir", str(models)],
        cwd=REPO,
        check=True,
        capture_output=True,
        timeout=300,
    )
    state = torch.load(models / MODEL_FILE, weights_only=True)
    assert set(state) == set(expected) and all(torch.equal(state[name], expected[name]) for name in expected)
