"""VG-MedGen's full profile (configs/pixart_vgmedgen_*.json) on tiny random folders in PixArt-alpha's and
Bio_ClinicalBERT's layouts: each override only replaces ids of its tiny config; stage T on the clinical BERT, stage G
(frozen PixArt with LoRA, its VAE, the intensity term through the decoder) for one iteration, and a short generation
with the exported LoRA, in seconds."""

from __future__ import annotations

import json
import math

import pytest
import torch
from monai.bundle import ConfigParser

from bundle.engines.utils import unwrap
from bundle.networks.clinical_text import ClinicalTextEncoder
from bundle.networks.diffusion_space import LatentSpace
from bundle.networks.vgmedgen_generator import GENERATOR_FILE
from bundle.networks.vgmedgen_text import TEXT_FILE, TextDisentangler
from bundle.networks.weight_files import read_safetensors
from tests.helpers.paths import CONFIGS, REPO
from tests.helpers.tiny_weights import SIZE, TINY_BERT_WIDTH
from tests.helpers.workflows import TINY_VGMEDGEN, workflow

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FOLDER_IDS = {"pixart_dir", "clinical_bert_dir"}
STAGES = {"train": "vgmedgen_train", "train_text": "vgmedgen_train_text", "inference": "vgmedgen_inference"}


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_each_override_only_replaces_ids_of_its_tiny_config(stage):
    base = ConfigParser()
    base.read_config(str(CONFIGS / f"{STAGES[stage]}.json"))
    override = json.loads((CONFIGS / f"pixart_vgmedgen_{stage}.json").read_text())
    for key in set(override) - FOLDER_IDS:  # an existing id, or a new key of an existing dict
        parent = key.rsplit("#", 1)[0]
        assert key in base or ("#" in key and isinstance(base.get(parent), dict)), f"{key}: not in {STAGES[stage]}"
    merged = ConfigParser()
    merged.read_config([str(CONFIGS / f"{STAGES[stage]}.json"), str(CONFIGS / f"pixart_vgmedgen_{stage}.json")])
    merged.update({"bundle_root": "/bundle"})
    assert merged.get_parsed_content("clinical_bert_dir") == "/bundle/pretrained/Bio_ClinicalBERT"
    if stage != "train_text":  # stage T reads the crops stage V was trained on; G and generation: PixArt's 512 px
        assert merged.get_parsed_content("pixart_dir") == "/bundle/pretrained/PixArt-XL-2-512x512"
        assert merged["spatial_size"] == 512


@pytest.fixture(scope="module")
def folders(vgmedgen_pretrained) -> dict[str, str]:
    return {
        "pixart_dir": str(vgmedgen_pretrained / "PixArt-XL-2-512x512"),
        "clinical_bert_dir": str(vgmedgen_pretrained / "Bio_ClinicalBERT"),
    }


@pytest.fixture(scope="module")
def full_models(demo_data, vgmedgen_models, folders, tmp_path_factory):
    """Stage T on the clinical BERT (reading the tiny stage V), then stage G on PixArt, one tiny epoch each."""
    root = tmp_path_factory.mktemp("vgmedgen_full")
    common = {"dataset_dir": str(demo_data), "models_dir": str(root / "models"), **TINY_VGMEDGEN, **folders}
    text = workflow(
        ["vgmedgen_train_text.json", "pixart_vgmedgen_train_text.json"],
        "train",
        output_dir=str(root / "runs_t"),
        stage_v_dir=str(vgmedgen_models),
        **common,
    )
    text.initialize()
    try:
        assert isinstance(text.parser.get_parsed_content("text_encoder"), ClinicalTextEncoder)
        text.run()
    finally:
        text.finalize()
    assert TextDisentangler.load(root / "models" / TEXT_FILE).settings["input_dim"] == TINY_BERT_WIDTH

    flow = workflow(
        ["vgmedgen_train.json", "pixart_vgmedgen_train.json"],
        "train",
        output_dir=str(root / "runs_g"),
        **{**common, "spatial_size": SIZE},
    )
    flow.initialize()
    try:
        assert flow.check_properties() in (None, [])
        trainer = flow.trainer
        model = unwrap(trainer.network)
        assert isinstance(model.space, LatentSpace) and isinstance(model.text_encoder, ClinicalTextEncoder)
        assert model.denoiser.trainable == "lora" and model.denoiser.lora_rank == 8
        assert trainer.intensity_weight == 0.05 and trainer.space is model.space  # the term runs through the VAE
        assert model.denoiser.transformer.gradient_checkpointing
        optimised = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
        trainable = {n for n, p in model.named_parameters() if id(p) in optimised}
        assert trainable and all(n.startswith("fusion.") or "lora_" in n for n in trainable)
        assert trainer.optimizer.defaults["lr"] == pytest.approx(1e-4)
        base = {n: p.clone() for n, p in model.denoiser.transformer.named_parameters() if "lora_" not in n}
        flow.run()
        assert trainer.state.iteration > 0 and math.isfinite(trainer.state.output["loss"].item())
        after = dict(model.denoiser.transformer.named_parameters())
        assert all(torch.equal(after[n], p) for n, p in base.items())  # PixArt itself stays frozen
        lora_b = [p for n, p in after.items() if "lora_B" in n]  # peft starts B at 0: trained through checkpointing
        assert lora_b and all(p.abs().max() > 0 for p in lora_b)
        saved = read_safetensors(root / "models" / GENERATOR_FILE)
        assert saved.keys() == model.trained_state_dict().keys()
        assert any("lora_" in n for n in saved) and all(n.startswith("fusion.") or "lora_" in n for n in saved)
    finally:
        flow.finalize()
    return root / "models"


def test_stage_g_trains_lora_and_the_inference_config_generates_with_it(
    full_models, vgmedgen_models, demo_data, folders, tmp_path
):
    parser = ConfigParser()
    parser.read_config([str(CONFIGS / "vgmedgen_inference.json"), str(CONFIGS / "pixart_vgmedgen_inference.json")])
    parser.update(
        {
            "bundle_root": str(REPO),
            "dataset_dir": str(demo_data),
            "models_dir": str(full_models),
            "stage_v_dir": str(vgmedgen_models),  # the tiny stage V (32 px) segments the 16 px crops
            "output_dir": str(tmp_path / "generated"),
            "spatial_size": SIZE,
            "num_inference_steps": 2,
            "requests_split": "test",
            **folders,
        }
    )
    assert parser.get_parsed_content("crop_pixel_mm") == [2.0 * 48 / SIZE] * 2
    network = parser.get_parsed_content("network")
    saved = read_safetensors(full_models / GENERATOR_FILE)
    trained = network.trained_state_dict()
    assert trained.keys() == saved.keys() and all(torch.equal(trained[n], saved[n]) for n in saved)
    report = parser.get_parsed_content("job").run()
    requests = parser.get_parsed_content("requests")
    assert len(report["written"]) + len(report["failed"]) == len(requests) > 0
    assert (tmp_path / "generated" / "index.html").is_file() and (tmp_path / "generated" / "report.json").is_file()
