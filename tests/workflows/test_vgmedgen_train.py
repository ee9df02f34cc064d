"""configs/vgmedgen_train.json (VG-MedGen stage G): MONAI's property check, and one tiny epoch on the phantom for the
default HFFM and for the naive-concatenation ablation with a LoRA-adapted DiT."""

from __future__ import annotations

import math

import pytest

from bundle.engines.utils import unwrap
from bundle.networks.vgmedgen_generator import GENERATOR_FILE
from tests.helpers.workflows import workflow

TINY_G = {"spatial_size": 16, "slices_per_case": 1, "batch_size": 4, "dit_layers": 1, "max_epochs": 1}


@pytest.mark.parametrize("overrides", [{}, {"fusion_mode": "concat", "trainable": "lora"}])
def test_stage_g_config_passes_the_property_check_and_trains_an_epoch(overrides, demo_data, tmp_path):
    flow = workflow(
        ["vgmedgen_train.json"],
        "train",
        dataset_dir=str(demo_data),
        output_dir=str(tmp_path / "runs"),
        models_dir=str(tmp_path / "models"),
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
        flow.run()
        assert trainer.state.iteration > 0 and math.isfinite(trainer.state.output["loss"].item())
        reloaded = flow.network_def  # the exported weights load back into the same architecture
        reloaded.load_trained(tmp_path / "models" / GENERATOR_FILE)
        assert (tmp_path / "models" / "scheduler_config.json").is_file()
    finally:
        flow.finalize()
