"""MedDiff-FT's full profile on a tiny random stand-in for SD inpainting (SD 1.5's folder layout, a 9-input UNet):
the two ``configs/sd15_inpaint_meddiffft_*.json`` overrides only override the tiny configs, check the folder before
the model loads, fine-tune its UNet (in full or LoRA) with the VAE and text encoder frozen, and the pair job paints
pairs with the saved model from the same folder."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser

from bundle.errors import InputError
from bundle.metrics.distribution import ClipImageFeatures
from bundle.networks.diffusion_space import LatentSpace
from bundle.networks.meddiffft_inpainting import InpaintingDiffusion, sd_inpaint_model
from bundle.networks.medical_clip import MedicalClipEncoder
from tests.helpers.paths import CONFIGS, REPO
from tests.helpers.tiny_weights import write_tiny_sd15_inpaint
from tests.helpers.workflows import run_workflow
from tests.workflows.test_meddiffft_pairs import pair_parser, run_pairs

FINETUNE = ["meddiffft_pretrain.json", "meddiffft_finetune.json", "sd15_inpaint_meddiffft_finetune.json"]
PAIRS = "sd15_inpaint_meddiffft_pairs.json"  # over meddiffft_pairs.json
FOLDER_IDS = {"+imports", "sd_inpaint_dir", "sd_inpaint_profile", "sd_inpaint_folder"}
NEW_IDS = {FINETUNE[-1]: FOLDER_IDS, PAIRS: FOLDER_IDS | {"biomedclip_dir", "biomedbert_dir", "quality_clip"}}
SHORT = {"spatial_size": 48, "batch_size": 4, "slices_per_case": 1, "max_epochs": 1, "real_lesion_cases": 2}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def sd_inpaint_dir(tmp_path_factory) -> Path:
    return write_tiny_sd15_inpaint(tmp_path_factory.mktemp("pretrained") / "stable-diffusion-inpainting")


def folders(sd_inpaint_dir: Path) -> dict:
    return {"sd_inpaint_dir": str(sd_inpaint_dir), "sd_inpaint_profile": "structure_inpaint"}


def finetune_parser(**updates) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config([str(CONFIGS / name) for name in FINETUNE])
    parser.update({"bundle_root": str(REPO), "device": "$torch.device('cpu')", **updates})
    return parser


@pytest.mark.parametrize("override, bases", [(FINETUNE[-1], FINETUNE[:-1]), (PAIRS, ["meddiffft_pairs.json"])])
def test_the_overrides_replace_ids_of_the_tiny_configs(override, bases):
    base = ConfigParser()
    base.read_config([str(CONFIGS / name) for name in bases])
    content = json.loads((CONFIGS / override).read_text())
    for key in set(content) - NEW_IDS[override]:  # an existing id, or a new key of an existing dict
        parent = key.rsplit("#", 1)[0]
        assert key in base or ("#" in key and isinstance(base.get(parent), dict)), f"{key}: no such id in {bases}"
    merged = ConfigParser()
    merged.read_config([str(CONFIGS / name) for name in [*bases, override]])
    assert merged["spatial_size"] == 512 and merged["sd_inpaint_profile"] == "sd15_inpaint"
    assert "$import bundle.weights.checker" in merged["imports"]


@pytest.mark.parametrize("finetune", ["full", "lora"])
def test_the_finetune_config_builds_the_folders_model_and_trains_only_what_the_switch_names(sd_inpaint_dir, finetune):
    parser = finetune_parser(finetune=finetune, **folders(sd_inpaint_dir))
    network = parser.get_parsed_content("network")
    assert isinstance(network, InpaintingDiffusion) and isinstance(network.space, LatentSpace)
    assert network.base_dir == sd_inpaint_dir and network.unet.config.in_channels == 9
    trained = {id(p) for group in parser.get_parsed_content("optimizer").param_groups for p in group["params"]}
    names = {name for name, p in network.named_parameters() if id(p) in trained}
    assert names and all(name.startswith("unet.") for name in names)  # never the VAE or the text encoder
    assert all("lora_" in name for name in names) == (finetune == "lora")
    assert parser.get_parsed_content("optimizer").defaults["lr"] == pytest.approx(3e-6)
    assert parser.get_parsed_content("noise_scheduler").config.beta_schedule == "scaled_linear"  # the folder's


def test_the_configs_refuse_a_folder_of_other_sizes_by_file_before_loading(sd_inpaint_dir):
    parser = finetune_parser(sd_inpaint_dir=str(sd_inpaint_dir))  # the published SD 1.5 inpainting profile
    with pytest.raises(RuntimeError) as error:
        parser.get_parsed_content("network")
    cause = error.value.__cause__
    assert isinstance(cause, InputError) and cause.source == str(sd_inpaint_dir / "unet/config.json")
    assert "expects 768" in cause.problem


def test_fine_tuning_on_the_folder_then_one_pair_from_the_saved_model(demo_data, sd_inpaint_dir, tmp_path):
    models = tmp_path / "models"
    paths = {"dataset_dir": str(demo_data), "models_dir": str(models), "output_dir": str(tmp_path / "runs")}
    flow = run_workflow(FINETUNE, "train", **paths, **folders(sd_inpaint_dir), **SHORT)
    assert flow.parser.get_parsed_content("train#trainer").state.iteration > 0
    tuned = InpaintingDiffusion.load(models / "meddiffft")
    assert tuned.base_dir == sd_inpaint_dir and (models / "meddiffft" / "base_model.json").is_file()
    base = sd_inpaint_model(sd_inpaint_dir)
    before, after = base.unet.state_dict(), tuned.unet.state_dict()
    assert max(float((after[name] - before[name]).abs().max()) for name in before) > 0  # the UNet trained
    trained = flow.parser.get_parsed_content("network_def")  # the instance the workflow trained
    for frozen, kept in ((trained.space, base.space), (trained.text_states, base.text_states)):
        pairs = zip(frozen.state_dict().values(), kept.state_dict().values(), strict=True)
        assert all(torch.equal(a, b) for a, b in pairs)  # the VAE and the text encoder did not train

    out = tmp_path / "pairs"
    parser = pair_parser(
        [PAIRS, "meddiffft_ablation_no_filter.json"],
        demo_data,
        models,
        pairs_dir=str(out),
        num_pairs=1,
        **folders(sd_inpaint_dir),
    )
    content, report = run_pairs(parser)
    loaded = parser.get_parsed_content("inpainting_model").unet.state_dict()
    assert all(torch.equal(loaded[name], value) for name, value in after.items())
    assert len(report["written"]) == 1 and not report["failed"]
    (pair,) = [entry for entry in content["training"] if entry.get("synthetic")]
    record = json.loads((out / pair["provenance"]).read_text())
    assert record["synthetic"] is True and record["base_model"] == os.path.abspath(sd_inpaint_dir)
    host = next(e for e in content["training"] if e.get("case_id") == pair["host_case"])
    shape = nib.load(str(demo_data / host["image"])).shape
    synthetic, label = nib.load(str(out / pair["image"])), nib.load(str(out / pair["lesion_seg"]))
    assert synthetic.shape == label.shape == shape and label.get_fdata().any()
    change = np.abs(synthetic.get_fdata() - nib.load(str(demo_data / host["image"])).get_fdata()) > 1e-3
    assert change.any()


def test_the_pair_jobs_quality_features_come_from_biomedclip(sd_inpaint_dir, tmp_path, demo_data):
    clip = MedicalClipEncoder.tiny(embed_dim=32, image_size=32, vision_width=32, text_width=32, heads=2)
    clip.save_local_dir(tmp_path / "biomedclip")
    parser = pair_parser(
        [PAIRS],
        demo_data,
        tmp_path,
        biomedclip_dir=str(tmp_path / "biomedclip"),
        biomedbert_dir=str(tmp_path / "biomedbert"),
        **folders(sd_inpaint_dir),
    )
    features = parser.get_parsed_content("quality_features")
    assert isinstance(features, ClipImageFeatures) and features(torch.rand(2, 1, 48, 48)).shape == (2, 32)
