"""The bundle's workflows end to end with tiny settings: MONAI's property checks, stage 1, stage 2 (with
resume), evaluation, inference from the command line (segmentation, box and point sources, a datalist),
and the multi-GPU override under torchrun on CPU (gloo)."""

from __future__ import annotations

import json

import ignite.distributed.utils as ignite_distributed
import nibabel as nib
import numpy as np
import pytest
import torch
from ignite.distributed.comp_models.base import _SerialModel
from monai.transforms import Compose

from bundle.networks.medsoft_diffusion import load_trained
from bundle.transforms.loading import LoadVolumed
from bundle.transforms.soft_mask import SoftMaskFromSourced
from tests.helpers.paths import CONFIGS
from tests.helpers.workflows import TINY, bundle_run, run_workflow, workflow


@pytest.mark.parametrize(
    "config_files, workflow_type",
    [
        (["train_msc.json"], "train"),
        (["train.json"], "train"),
        (["train.json", "multi_gpu_train.json"], "train"),
        (["train.json", "evaluate.json"], "train"),
        (["train.json", "ablation_no_msc.json"], "train"),
        (["train.json", "ablation_no_smis.json"], "train"),
        (["inference.json"], "infer"),
    ],
)
def test_every_config_passes_monai_property_check(config_files, workflow_type, trained, demo_data, monkeypatch):
    # the multi-GPU file initialises torch.distributed: a one-process gloo group here
    for name, value in {
        "RANK": "0",
        "LOCAL_RANK": "0",
        "WORLD_SIZE": "1",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": "29517",
    }.items():
        monkeypatch.setenv(name, value)
    flow = workflow(
        config_files,
        workflow_type,
        dataset_dir=str(demo_data),
        models_dir=str(trained),
        stage1_dir=str(trained),
        **TINY,
    )
    flow.initialize()
    try:
        assert flow.check_properties() in (None, [])
    finally:
        flow.finalize()
        ignite_distributed._set_model(_SerialModel())  # ignite caches the (now destroyed) process group


def test_stage_two_writes_the_model_and_resumes_from_its_checkpoint(trained, demo_data):
    for name in (
        "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors",
        "msc_adapter.safetensors",
        "scheduler_config.json",
        "model.pt",
    ):
        assert (trained / name).is_file(), name
    exported = torch.load(trained / "model.pt", weights_only=True)  # the whole tiny model, as the export wrote it
    loaded = load_trained(trained).state_dict()
    assert set(exported) == set(loaded) and all(torch.equal(exported[n], loaded[n]) for n in loaded)
    runs = trained.parent / "runs" / "train"
    assert list((runs / "checkpoints").glob("*epoch=2.pt"))
    assert list(runs.glob("samples_epoch_0002.png"))
    validation = json.loads((runs / "validation_metrics.json").read_text())  # stage-2 validation's own report
    assert validation["epoch"] == 2 and "val_in_mask_psnr" in validation["metrics"]
    # the one validation case is normal: its text asks for no signal, so the shares are undefined, not an error
    # (defined shares on lesion texts: tests/workflows/test_evaluate.py)
    assert validation["metrics"]["val_text_direction_hyperintense"] == "nan"
    assert validation["metrics"]["val_text_size_within_30pct"] == "nan"
    flow = run_workflow(
        ["train.json"],
        "train",
        dataset_dir=str(demo_data),
        models_dir=str(trained),
        output_dir=str(runs),
        max_epochs=3,
        val_interval=10,
        **TINY,
    )
    trainer = flow.parser.get_parsed_content("train#trainer")
    assert trainer.state.epoch == 3 and trainer.state.iteration == 3 * len(trainer.data_loader)
    assert list((runs / "checkpoints").glob("*epoch=3.pt"))


def test_evaluate_overrides_train_and_measures_the_held_out_cases(trained, demo_data, tmp_path):
    flow = run_workflow(
        ["train.json", "evaluate.json"],
        "train",
        dataset_dir=str(demo_data),
        models_dir=str(trained),
        output_dir=str(tmp_path),
        spatial_size=32,
        **{"validate#inferer#num_inference_steps": 2},
    )
    metrics = flow.parser.get_parsed_content("validate#evaluator").state.metrics
    # measured: background 82 dB (the input, up to the soft mask's < 5 % tail), in the mask 13.7 dB / SSIM 0.61
    # after 2 sampling steps; noise in the mask would give SSIM near 0, noise everywhere a background near 5 dB
    assert metrics["val_background_psnr"] > 40 and metrics["val_background_psnr"] > metrics["val_in_mask_psnr"] + 20
    assert 0.3 < metrics["val_in_mask_ssim"] < 1 and metrics["val_psnr"] > metrics["val_in_mask_psnr"]
    assert (tmp_path / "metrics.csv").is_file() and list(tmp_path.glob("samples_epoch_*.png"))


@pytest.mark.parametrize("source", ["segmentation", "box", "point"])
def test_inference_from_the_command_line(trained, demo_data, tmp_path, source):
    case = json.loads((demo_data / "datalist.json").read_text())["test"][0]
    image = demo_data / case["image"]
    arguments = ["--image", str(image), "--text", "a 10 mm hyperintense lesion in the L3 vertebral body"]
    entry = {"image": str(image)}  # the same source as a datalist entry, to rebuild the soft mask below
    if source == "segmentation":
        arguments += ["--mask", str(demo_data / case["vertebra_seg"]), "--mask_labels", json.dumps(case["mask_labels"])]
        entry.update(vertebra_seg=str(demo_data / case["vertebra_seg"]), mask_labels=case["mask_labels"])
    elif source == "box":
        arguments += ["--box", "[[60, 70, 3], [90, 95, 8]]"]
        entry.update(box=[[60, 70, 3], [90, 95, 8]])
    else:
        arguments += ["--point", "[75, 80, 6]", "--box_size_mm", "25"]
        entry.update(point=[75, 80, 6], box_size_mm=25)
    output = tmp_path / "out"
    bundle_run(
        "--config_file",
        str(CONFIGS / "inference.json"),
        "--models_dir",
        str(trained),
        "--spatial_size",
        "32",
        "--num_inference_steps",
        "3",
        "--output_dir",
        str(output),
        *arguments,
    )
    name = image.name.split(".")[0]
    volume = output / f"{name}_synthetic.nii.gz"
    assert volume.is_file() and (output / f"{name}_synthetic.json").is_file()
    assert (output / f"{name}_synthetic.png").is_file()
    original, written = nib.load(str(image)), nib.load(str(volume))
    assert np.allclose(written.affine, original.affine) and written.get_data_dtype() == original.get_data_dtype()
    changed = np.asarray(written.dataobj) != np.asarray(original.dataobj)
    soft_mask = Compose([LoadVolumed(["image", "vertebra_seg"], allow_missing_keys=True), SoftMaskFromSourced()])(
        entry
    )["soft_mask"][0].numpy()
    assert changed.any() and not changed[soft_mask == 0].any()  # only the soft-masked region changes
    provenance = json.loads((output / f"{name}_synthetic.json").read_text())
    assert provenance["mask_source"]["type"] == source
    assert provenance["text"].startswith("a 10 mm") and isinstance(provenance["seed"], int)


def test_inference_over_a_datalist_keeps_going_past_a_bad_case(trained, demo_data, tmp_path):
    requests = json.loads((demo_data / "requests.json").read_text())["test"]
    bad = {**requests[0], "case_id": "bad", "image": "images/missing.nii.gz"}
    datalist = tmp_path / "requests.json"
    entries = [{**r, **{k: str(demo_data / r[k]) for k in ("image", "vertebra_seg")}} for r in [bad, *requests[:2]]]
    datalist.write_text(json.dumps({"test": entries}))
    output = tmp_path / "out"
    bundle_run(
        "--config_file",
        str(CONFIGS / "inference.json"),
        "--models_dir",
        str(trained),
        "--spatial_size",
        "32",
        "--num_inference_steps",
        "2",
        "--datalist",
        str(datalist),
        "--output_dir",
        str(output),
    )
    report = json.loads((output / "report.json").read_text())
    assert [f["case_id"] for f in report["failed"]] == ["bad"] and "missing.nii.gz" in report["failed"][0]["error"]
    assert len(report["written"]) == 2


def test_multi_gpu_override_trains_with_two_processes_on_cpu(trained, demo_data, tmp_path):
    bundle_run(
        "--config_file",
        f"['{CONFIGS / 'train.json'}','{CONFIGS / 'multi_gpu_train.json'}']",
        "--dataset_dir",
        str(demo_data),
        "--stage1_dir",
        str(trained),
        "--models_dir",
        str(tmp_path / "models"),
        "--output_dir",
        str(tmp_path / "runs"),
        "--max_epochs",
        "1",
        "--val_interval",
        "5",
        *[f"--{k}={v}" for k, v in TINY.items()],
        processes=2,
        master_port=29531,
    )
    assert (tmp_path / "models" / "msc_adapter.safetensors").is_file()
    assert len(list((tmp_path / "runs" / "checkpoints").glob("*.pt"))) == 1  # saved by rank 0 only


def test_the_without_msc_arm_of_the_tiny_profile_trains_everything_but_the_msc_attention(trained, demo_data, tmp_path):
    flow = run_workflow(
        ["train.json", "ablation_no_msc.json"],
        "train",
        dataset_dir=str(demo_data),
        stage1_dir=str(trained),
        models_dir=str(tmp_path / "models"),
        output_dir=str(tmp_path / "runs"),
        max_epochs=1,
        val_interval=5,
        **TINY,
    )
    unet = flow.parser.get_parsed_content("network_def").unet
    assert unet.scale == 0.0 and unet.trainable == "full"
    frozen = {name for name, p in unet.named_parameters() if not p.requires_grad}
    assert frozen and all("_ip." in name for name in frozen)  # W'_k / W'_v: unused with gamma 0
    trainer = flow.parser.get_parsed_content("train#trainer")
    assert trainer.state.iteration > 0 and trainer._gradients_checked  # every trainable parameter got a gradient
