"""The settings that must agree between the standalone configs do: training (both stages) and inference cut the
same slices onto the same model grid, and the sd15 overrides name the same pretrained folders and grid.

Each base config runs alone with today's command lines, so it carries its own values (MONAI resolves a
``%configs/x.json#id`` macro against the working directory, which breaks running a config from another folder,
with ``bundle_root`` or from a packaged bundle); the shared structure (the preprocessing chain, the model grid) is
one factory each (``bundle.transforms.case_to_slices``, ``bundle.transforms.model_grid``), and this test keeps the
values that are written in more than one file equal."""

from __future__ import annotations

import json

from tests.helpers.paths import CONFIGS

SLICING = (
    "canonical_axcodes",
    "soft_mask_sigma_mm",
    "box_size_mm",
    "slices_per_case",
    "spatial_size",
    "pixdim_mm",
    "window_margin_mm",
    "model_grid",
)


def config(name: str) -> dict:
    return json.loads((CONFIGS / name).read_text())


def test_both_training_stages_and_inference_cut_the_same_slices_onto_the_same_grid():
    stage1, stage2, inference = config("train_msc.json"), config("train.json"), config("inference.json")
    for key in SLICING:
        assert stage1[key] == stage2[key] == inference[key], key
    for key in ("canonical_axcodes", "sigma_mm", "box_size_mm", "max_slices", "lesion_guided"):
        assert stage1["train"]["preprocessing"][key] == stage2["train"]["preprocessing"][key], key
    for key in ("grid", "canonical_axcodes", "sigma_mm", "box_size_mm", "max_slices"):
        assert stage2["train"]["preprocessing"][key] == inference["preprocessing"][key], key
    assert stage1["seed"] == stage2["seed"] == inference["seed"]


def test_the_sd15_overrides_agree_on_folders_and_grid():
    overrides = [config(f"sd15_{name}.json") for name in ("train_msc", "train", "inference")]
    for key in ("biomedclip_dir", "biomedbert_dir", "spatial_size", "pixdim_mm", "model_grid#window_key"):
        assert len({json.dumps(o[key]) for o in overrides}) == 1, key
    assert overrides[1]["sd15_dir"] == overrides[2]["sd15_dir"]
