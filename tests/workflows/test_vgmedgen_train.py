"""VG-MedGen's training configs in order on the phantom, one tiny epoch each: stage V
(configs/vgmedgen_train_visual.json), stage T (configs/vgmedgen_train_text.json, on stage V's exported
disentangler) and stage G (configs/vgmedgen_train.json, on stage T's), each passing MONAI's property check; stage G
for the default HFFM and for the naive-concatenation ablation with a LoRA-adapted DiT."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from bundle.engines.utils import unwrap
from bundle.networks.vgmedgen_generator import GENERATOR_FILE
from bundle.networks.vgmedgen_text import TEXT_FILE, TextDisentangler
from bundle.networks.vgmedgen_visual import VISUAL_FILE, VisualDisentangler
from bundle.networks.weight_files import read_safetensors
from tests.helpers.workflows import workflow

TINY = {"spatial_size": 32, "slices_per_case": 1, "batch_size": 4, "max_epochs": 1}
TINY_G = {**TINY, "dit_layers": 1}


def run_checked(config: str, **overrides):
    """Initialise the config's train workflow, check MONAI's properties, run it; returns its trainer."""
    flow = workflow([config], "train", **overrides)
    flow.initialize()
    try:
        assert flow.check_properties() in (None, [])
        flow.run()
        trainer = flow.trainer
        assert trainer.state.iteration > 0 and math.isfinite(trainer.state.output["loss"].item())
        return trainer
    finally:
        flow.finalize()


@pytest.fixture(scope="module")
def stage_t_models(demo_data, tmp_path_factory) -> Path:
    """Stages V then T for one tiny epoch each; returns their models folder."""
    root = tmp_path_factory.mktemp("vgmedgen")
    common = {"dataset_dir": str(demo_data), "models_dir": str(root / "models"), **TINY}
    visual = run_checked("vgmedgen_train_visual.json", output_dir=str(root / "runs_v"), **common)
    assert {"rec", "kl", "dice", "reg"} <= set(visual.state.output)  # every term reaches the handlers
    text = run_checked("vgmedgen_train_text.json", output_dir=str(root / "runs_t"), **common)
    assert {"anatomy", "style", "rec"} <= set(text.state.output)
    return root / "models"


def test_stage_v_and_t_export_what_they_trained(stage_t_models):
    visual = VisualDisentangler.load(stage_t_models / VISUAL_FILE)
    assert visual.settings["image_size"] == TINY["spatial_size"]
    text = TextDisentangler.load(stage_t_models / TEXT_FILE)
    assert text.settings["input_dim"] == 64  # the tiny CLIP's pooled width


@pytest.mark.parametrize("overrides", [{}, {"fusion_mode": "concat", "trainable": "lora"}])
def test_stage_g_reads_stage_t_and_trains_an_epoch(overrides, demo_data, stage_t_models, tmp_path):
    flow = workflow(
        ["vgmedgen_train.json"],
        "train",
        dataset_dir=str(demo_data),
        output_dir=str(tmp_path / "runs"),
        models_dir=str(tmp_path / "models"),
        stage_t_dir=str(stage_t_models),
        **TINY_G,
        **overrides,
    )
    flow.initialize()
    try:
        assert flow.check_properties() in (None, [])
        trainer = flow.trainer
        model = unwrap(trainer.network)
        assert model.fusion.mode == overrides.get("fusion_mode", "hffm")
        assert model.denoiser.trainable == overrides.get("trainable", "full")
        saved = read_safetensors(stage_t_models / TEXT_FILE)
        assert all(torch.equal(model.disentangler.state_dict()[name], saved[name]) for name in saved)
        flow.run()
        assert trainer.state.iteration > 0 and math.isfinite(trainer.state.output["loss"].item())
        assert all(torch.equal(model.disentangler.state_dict()[name], saved[name]) for name in saved)  # frozen
        reloaded = flow.network_def  # the exported weights load back into the same architecture
        reloaded.load_trained(tmp_path / "models" / GENERATOR_FILE)
        assert (tmp_path / "models" / "scheduler_config.json").is_file()
    finally:
        flow.finalize()


def test_stage_g_without_stage_t_names_the_missing_file(demo_data, tmp_path):
    flow = workflow(
        ["vgmedgen_train.json"], "train", dataset_dir=str(demo_data), models_dir=str(tmp_path / "models"), **TINY_G
    )
    flow.initialize()
    with pytest.raises(RuntimeError) as raised:  # MONAI's config parser wraps the error
        flow.parser.get_parsed_content("network_def")
    cause = str(raised.value.__cause__)
    assert cause.startswith(str(tmp_path / "models" / TEXT_FILE)), cause
    assert "file not found; run stage T (configs/vgmedgen_train_text.json)" in cause
