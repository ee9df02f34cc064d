"""The settings every workflow shares are written once (``configs/common.json``) and every config finds them from
any working directory: MONAI resolves a ``%configs/x.json#id`` macro against the working directory, so the
configs read the shared file through ``bundle_root`` instead (:func:`bundle.utils.bundle_files.common_settings`).
Each config still runs alone, keeps its own values where it differs (``classify.json``'s window, the preview's
grid) and a command-line setting (``--spatial_size 64``) still replaces the shared one."""

from __future__ import annotations

import json

import pytest
from monai.bundle import ConfigParser
from monai.transforms import Compose

from bundle.errors import InputError
from bundle.utils.bundle_files import common_settings
from tests.helpers.paths import CONFIGS, REPO

STANDALONE = [
    "train_msc.json",
    "train.json",
    "inference.json",
    "mask_preview.json",
    "classify.json",
    "segment.json",
    "vgmedgen_train.json",
    "meddiffft_pairs.json",
]
OVERRIDES = [
    ["train_msc.json", "sd15_train_msc.json"],
    ["train.json", "sd15_train.json"],
    ["inference.json", "sd15_inference.json"],
    ["train.json", "ablation_no_msc.json"],
    ["train.json", "ablation_no_smis.json"],
    ["train.json", "evaluate.json"],
    ["train.json", "multi_gpu_train.json"],
    ["meddiffft_pretrain.json", "meddiffft_finetune.json", "sd15_inpaint_meddiffft_finetune.json"],
    ["meddiffft_pairs.json", "sd15_inpaint_meddiffft_pairs.json"],
]
PREPROCESSING = {
    "train_msc.json": "train#preprocessing",
    "train.json": "train#preprocessing",
    "inference.json": "preprocessing",
    "mask_preview.json": "preprocessing",
    "classify.json": "train#preprocessing",
    "segment.json": "preprocessing",
    "vgmedgen_train.json": "train#preprocessing",
    "meddiffft_pairs.json": "host_preprocessing",
}


def config(name: str) -> dict:
    return json.loads((CONFIGS / name).read_text())


def parser(names: list[str], **overrides) -> ConfigParser:
    loaded = ConfigParser()
    loaded.read_config([str(CONFIGS / name) for name in names])
    loaded.update({"bundle_root": str(REPO), **overrides})
    return loaded


def test_no_shared_value_is_written_in_a_config():
    shared = common_settings(REPO)
    for name in STANDALONE:
        for key, value in config(name).items():
            assert key not in shared or value != shared[key], f"{name} repeats {key} = {value!r}: common.json has it"
    train, stage1, inference = (parser([name]) for name in ("train.json", "train_msc.json", "inference.json"))
    for key in shared:
        assert train.get_parsed_content(key) == stage1.get_parsed_content(key) == shared[key], key
        assert inference.get_parsed_content(key) == shared[key], key


@pytest.mark.parametrize("elsewhere", [False, True], ids=["from_the_bundle", "from_another_folder"])
@pytest.mark.parametrize("name", STANDALONE)
def test_every_config_parses_and_builds_its_preprocessing_from_any_folder(name, elsewhere, tmp_path, monkeypatch):
    if elsewhere:
        monkeypatch.chdir(tmp_path)
    loaded = parser([name])
    assert loaded.get_parsed_content("canonical_axcodes") == "RIP"
    assert isinstance(loaded.get_parsed_content(PREPROCESSING[name]), Compose)


@pytest.mark.parametrize("names", OVERRIDES, ids=lambda names: "+".join(names))
def test_the_override_files_only_override(names, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    overrides = config(names[-1])
    loaded = parser(names)
    if "spatial_size" in overrides:
        assert loaded.get_parsed_content("spatial_size") == overrides["spatial_size"]
    else:
        assert loaded.get_parsed_content("spatial_size") == common_settings(REPO)["spatial_size"]
    assert loaded.get_parsed_content("soft_mask_sigma_mm") == overrides.get("soft_mask_sigma_mm", 3.0)
    assert isinstance(loaded.get_parsed_content(PREPROCESSING.get(names[0], "train#preprocessing")), Compose)


def test_a_command_line_setting_replaces_the_shared_one():
    loaded = parser(["inference.json"], spatial_size=64, window_margin_mm=8.0)
    grid = loaded.get_parsed_content("model_grid")
    assert loaded.get_parsed_content("slices_per_case") == 3
    assert grid.transforms[-1].padder.spatial_size == (64, 64)
    assert grid.transforms[1].cropper.margin == 8


def test_a_wrong_bundle_root_names_the_missing_file(tmp_path):
    loaded = parser(["train.json"], bundle_root=str(tmp_path))
    with pytest.raises(RuntimeError) as error:
        loaded.get_parsed_content("spatial_size")
    assert isinstance(error.value.__cause__, InputError)
    assert str(tmp_path / "configs" / "common.json") in str(error.value.__cause__)
    assert "bundle_root" in str(error.value.__cause__)


def test_the_sd15_overrides_agree_on_folders_and_grid():
    overrides = [config(f"sd15_{name}.json") for name in ("train_msc", "train", "inference")]
    for key in ("biomedclip_dir", "biomedbert_dir", "spatial_size", "pixdim_mm", "model_grid#window_key"):
        assert len({json.dumps(o[key]) for o in overrides}) == 1, key
    assert overrides[1]["sd15_dir"] == overrides[2]["sd15_dir"]


def test_the_meddiffft_full_overrides_agree_on_the_folder_and_grid():
    finetune, pairs = (config(f"sd15_inpaint_meddiffft_{name}.json") for name in ("finetune", "pairs"))
    for key in ("+imports", "sd_inpaint_dir", "sd_inpaint_profile", "sd_inpaint_folder", "spatial_size"):
        assert finetune[key] == pairs[key], key
    assert pairs["biomedclip_dir"] == config("sd15_inference.json")["biomedclip_dir"]


@pytest.mark.parametrize("sampler", ["ddim", "dpmsolver++", "unipc"])
def test_inference_picks_the_sampler_its_spacing_and_the_blend_noise_by_name(sampler):
    """``inference.json``'s ``sampler``, ``timestep_spacing`` and ``blend_noise`` reach the inferer; the sampler keeps
    the training scheduler's noise schedule."""
    from diffusers import DDPMScheduler

    training = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", timestep_spacing="trailing")
    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "inference.json"))
    parser.update(
        {
            "bundle_root": str(REPO),
            "sampler": sampler,
            "timestep_spacing": "leading",
            "blend_noise": "fixed",
            "blend_x0": True,
        }
    )
    parser["noise_scheduler"] = training
    inferer = parser.get_parsed_content("inferer")
    assert type(inferer.scheduler).__name__.lower().startswith(sampler.rstrip("+"))
    assert inferer.scheduler.config.timestep_spacing == "leading" and inferer.blend_noise == "fixed"
    assert inferer.blend_x0 is True
    assert inferer.scheduler.config.beta_schedule == "squaredcos_cap_v2"


def test_inference_defaults_to_ddim_50_with_the_papers_blend():
    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "inference.json"))
    parser.update({"bundle_root": str(REPO)})
    assert (parser["sampler"], parser["num_inference_steps"], parser["blend_noise"]) == ("ddim", 50, "fresh")
    assert parser["timestep_spacing"] is None
