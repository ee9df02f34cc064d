"""VG-MedGen's training configs in order on the phantom, one tiny epoch each: stage V
(configs/vgmedgen_train_visual.json), stage T (configs/vgmedgen_train_text.json, on stage V's exported
disentangler) and stage G (configs/vgmedgen_train.json, on stage T's), each passing MONAI's property check; stage G
as it is, with a LoRA-adapted DiT, and with each ablation override (naive concatenation, no intensity loss), each
changing what it names."""

from __future__ import annotations

import json
import math

import pytest
import torch
from monai.bundle import ConfigParser

from bundle.engines.utils import unwrap
from bundle.errors import InputError
from bundle.networks.vgmedgen_generator import GENERATOR_FILE, load_tiny_generator
from bundle.networks.vgmedgen_text import TEXT_FILE, TextDisentangler, WholeEmbedding
from bundle.networks.vgmedgen_visual import VISUAL_FILE, VisualDisentangler
from bundle.networks.weight_files import read_safetensors
from bundle.preparation.vgmedgen_captions import caption_datalist
from tests.helpers.paths import CONFIGS, REPO
from tests.helpers.workflows import TINY_VGMEDGEN, train_counting, workflow

TINY_G = {**TINY_VGMEDGEN, "dit_layers": 1}


def test_stage_v_and_t_export_what_they_trained(vgmedgen_models):
    visual = VisualDisentangler.load(vgmedgen_models / VISUAL_FILE)
    assert visual.settings["image_size"] == TINY_VGMEDGEN["spatial_size"]
    text = TextDisentangler.load(vgmedgen_models / TEXT_FILE)
    assert text.settings["input_dim"] == 64  # the tiny CLIP's pooled width


@pytest.mark.parametrize(
    ("ablation", "overrides"),
    [
        (None, {}),
        (None, {"trainable": "lora"}),
        ("vgmedgen_ablation_naive_concat.json", {}),
        ("vgmedgen_ablation_no_intensity.json", {}),
    ],
)
def test_stage_g_reads_stage_t_and_trains_an_epoch(ablation, overrides, demo_data, vgmedgen_models, tmp_path):
    flow = workflow(
        ["vgmedgen_train.json", *([ablation] if ablation else [])],
        "train",
        dataset_dir=str(demo_data),
        output_dir=str(tmp_path / "runs"),
        models_dir=str(tmp_path / "models"),
        stage_t_dir=str(vgmedgen_models),
        **TINY_G,
        **overrides,
    )
    flow.initialize()
    try:
        assert flow.check_properties() in (None, [])
        trainer = flow.trainer
        model = unwrap(trainer.network)
        assert model.fusion.mode == ("concat" if ablation == "vgmedgen_ablation_naive_concat.json" else "hffm")
        assert model.denoiser.trainable == overrides.get("trainable", "full")
        no_intensity = ablation == "vgmedgen_ablation_no_intensity.json"
        assert trainer.intensity_weight == (0.0 if no_intensity else 0.05)
        saved = read_safetensors(vgmedgen_models / TEXT_FILE)
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


def test_the_class_label_ablation_trains_stages_t_and_g_on_class_captions(demo_data, vgmedgen_models, tmp_path):
    caption_datalist(demo_data / "datalist.json", tmp_path / "datalist_vgmedgen_class.json", source="class")
    # stage V is the main one; stages T and G are the ablation's own
    paths = {"dataset_dir": str(tmp_path), "models_dir": str(tmp_path / "models"), "stage_v_dir": str(vgmedgen_models)}
    for config in ("vgmedgen_train_text.json", "vgmedgen_train.json"):
        output_dir = str(tmp_path / "runs" / config)
        flow = workflow(
            [config, "vgmedgen_ablation_class_label.json"], "train", **paths, output_dir=output_dir, **TINY_G
        )
        flow.initialize()
        try:
            texts = {entry["text"] for entry in flow.parser.get_parsed_content("train#dataset#data")}
            assert texts == {"Normal vertebra.", "Benign vertebra.", "Malignant vertebra."}
            flow.run()
        finally:
            flow.finalize()
    assert (tmp_path / "models" / TEXT_FILE).is_file() and (tmp_path / "models" / GENERATOR_FILE).is_file()


def test_the_no_disentanglement_ablation_conditions_on_the_whole_text_embedding(demo_data, tmp_path):
    flow = workflow(
        ["vgmedgen_train.json", "vgmedgen_ablation_no_disentanglement.json"],
        "train",
        dataset_dir=str(demo_data),
        output_dir=str(tmp_path / "runs"),
        models_dir=str(tmp_path / "models"),
        stage_t_dir=str(tmp_path / "no_stage_t"),  # not read
        **TINY_G,
    )
    flow.initialize()
    try:
        model = unwrap(flow.trainer.network)
        assert isinstance(model.disentangler, WholeEmbedding) and model.fusion.mode == "concat"
        texts = ["Benign L2 vertebra.", "Normal L4 vertebra."]
        conditions = model.conditions(texts)
        embedding = model.text_encoder.encode_text(texts)
        assert torch.equal(torch.cat([conditions["anatomy"], conditions["style"]], dim=1), embedding)
        flow.run()
    finally:
        flow.finalize()
    size, layers = TINY_G["spatial_size"], TINY_G["dit_layers"]
    loaded = load_tiny_generator(tmp_path / "models", size, layers, stage_t_dir=tmp_path / "no_stage_t")
    assert isinstance(loaded.disentangler, WholeEmbedding)
    trained = model.trained_state_dict()
    assert all(torch.equal(tensor, trained[name]) for name, tensor in loaded.trained_state_dict().items())


def test_loading_the_generator_names_a_missing_file(vgmedgen_models, tmp_path):
    with pytest.raises(InputError, match=rf"{GENERATOR_FILE}: file not found; run stage G"):
        load_tiny_generator(tmp_path)
    (tmp_path / GENERATOR_FILE).write_bytes((vgmedgen_models / GENERATOR_FILE).read_bytes())
    with pytest.raises(InputError, match=rf"{TEXT_FILE}: file not found; run stage T"):
        load_tiny_generator(tmp_path, 32, 1)
    assert load_tiny_generator(tmp_path, 32, 1, stage_t_dir=vgmedgen_models).fusion.mode == "hffm"


@pytest.mark.parametrize("config", ["vgmedgen_train_visual.json", "vgmedgen_train_text.json", "vgmedgen_train.json"])
def test_each_stage_resumes_where_it_stopped(config, demo_data, vgmedgen_models, tmp_path):
    """Stopped after one epoch and rerun to two, a stage runs only the second and exports what an uninterrupted run
    does (stage G with its moving average on, which the checkpoint carries; stage V validated every epoch)."""
    common = {**TINY_G, "dataset_dir": str(demo_data), "stage_v_dir": str(vgmedgen_models)}
    common.update(stage_t_dir=str(vgmedgen_models), ema_decay=0.9, val_interval=1)

    def run(name: str, max_epochs: int) -> int:
        paths = {"output_dir": str(tmp_path / name / "runs"), "models_dir": str(tmp_path / name / "models")}
        return train_counting([config], **{**common, **paths, "max_epochs": max_epochs})[1]

    whole = run("whole", 2)
    first = run("split", 1)
    assert run("split", 2) == first and whole == 2 * first  # the rerun did the second epoch only
    (exported,) = (tmp_path / "whole" / "models").glob("*.safetensors")
    expected = read_safetensors(exported)
    resumed = read_safetensors(tmp_path / "split" / "models" / exported.name)
    assert expected.keys() == resumed.keys() and all(torch.equal(resumed[k], v) for k, v in expected.items())
    if config == "vgmedgen_train_visual.json":  # the segmentation head's Dice on the validation split
        report = json.loads((tmp_path / "split" / "runs" / "validation_metrics.json").read_text())
        assert report["metrics"].keys() == {"val_vertebra_dice", "val_lesion_dice"}, report


@pytest.mark.parametrize(
    ("config_files", "run"),
    [
        (["vgmedgen_train_text.json", "vgmedgen_ablation_class_label.json"], "vgmedgen_class_label_text"),
        (["vgmedgen_train.json", "vgmedgen_ablation_class_label.json"], "vgmedgen_class_label_generator"),
        (["vgmedgen_train.json", "vgmedgen_ablation_naive_concat.json"], "vgmedgen_naive_concat"),
        (["vgmedgen_train.json", "vgmedgen_ablation_no_intensity.json"], "vgmedgen_no_intensity"),
        (["vgmedgen_train.json", "vgmedgen_ablation_no_disentanglement.json"], "vgmedgen_no_disentanglement"),
    ],
)
def test_each_ablation_keeps_its_checkpoints_apart(config_files, run):
    """A rerun resumes from its output folder's checkpoint: an ablation sharing the main stage's would continue the
    main model (or be refused as another architecture)."""
    parser = ConfigParser()
    parser.read_config([str(CONFIGS / name) for name in config_files])
    parser.update({"bundle_root": str(REPO)})
    assert parser.get_parsed_content("checkpoint_dir") == str(REPO / "runs" / run / "checkpoints")
