"""MedDiff-FT's training configs run as MONAI workflows: the stand-in foundation on normal slices, then the
fine-tuning override on K lesion cases from it (and the ablation from a random UNet), each leaving a model folder
that loads; fine-tuning starts from the stand-in's weights, its ablation from a random UNet."""

from __future__ import annotations

import torch
from monai.bundle import ConfigParser

from bundle.networks.meddiffft_inpainting import InpaintingDiffusion, tiny_inpainting_model
from tests.helpers.paths import CONFIGS, REPO
from tests.helpers.workflows import run_workflow

SMALL = {"spatial_size": 32, "batch_size": 4, "slices_per_case": 1, "unet_channels": [16, 32], "max_epochs": 1}


def test_pretrain_then_fine_tune_from_the_configs(demo_data, tmp_path, one_torch_thread):
    models = tmp_path / "models"
    common = {"dataset_dir": str(demo_data), "models_dir": str(models), **SMALL}
    pretrain = run_workflow(["meddiffft_pretrain.json"], "train", output_dir=str(tmp_path / "pre"), **common)
    cases = pretrain.parser.get_parsed_content("training_cases")
    assert cases and all(entry["label"] == "normal" for entry in cases)
    stand_in = InpaintingDiffusion.load(models / "meddiffft_foundation")
    finetune = run_workflow(
        ["meddiffft_pretrain.json", "meddiffft_finetune.json"],
        "train",
        output_dir=str(tmp_path / "ft"),
        real_lesion_cases=2,
        **common,
    )
    cases = finetune.parser.get_parsed_content("training_cases")
    assert len(cases) == 2 and all(entry["label"] != "normal" for entry in cases)
    assert finetune.parser.get_parsed_content("train#trainer").state.iteration > 0
    tuned = InpaintingDiffusion.load(models / "meddiffft")
    before, after = stand_in.unet.state_dict(), tuned.unet.state_dict()
    assert max(float((after[name] - before[name]).abs().max()) for name in before) > 0  # it trained
    assert torch.equal(tuned.text_states(["x"]), stand_in.text_states(["x"]))
    ablation = run_workflow(
        ["meddiffft_pretrain.json", "meddiffft_finetune.json", "meddiffft_ablation_no_foundation.json"],
        "train",
        output_dir=str(tmp_path / "nf"),
        real_lesion_cases=2,
        **common,
    )
    assert (models / "meddiffft_no_foundation" / "unet" / "config.json").is_file()
    assert ablation.parser.get_parsed_content("training_cases") == cases


def starting_weights(config_files: list[str], models: str) -> dict[str, torch.Tensor]:
    """The UNet weights a fine-tuning config starts from (its ``network_def`` before training)."""
    parser = ConfigParser()
    parser.read_config([str(CONFIGS / name) for name in config_files])
    parser.update({"bundle_root": str(REPO), "models_dir": models, **SMALL})
    return parser.get_parsed_content("network_def").unet.state_dict()


def test_fine_tuning_starts_from_the_stand_in_and_its_ablation_from_a_random_unet(tmp_path):
    stand_in = tiny_inpainting_model(32, unet_channels=(16, 32), seed=3)
    stand_in.save(tmp_path / "meddiffft_foundation")
    loaded = starting_weights(["meddiffft_pretrain.json", "meddiffft_finetune.json"], str(tmp_path))
    assert all(torch.equal(loaded[name], value) for name, value in stand_in.unet.state_dict().items())
    scratch = starting_weights(
        ["meddiffft_pretrain.json", "meddiffft_finetune.json", "meddiffft_ablation_no_foundation.json"], str(tmp_path)
    )
    fresh = tiny_inpainting_model(32, unet_channels=(16, 32), seed=0).unet.state_dict()
    assert all(torch.equal(scratch[name], value) for name, value in fresh.items())
    assert not all(torch.equal(scratch[name], value) for name, value in stand_in.unet.state_dict().items())


def test_the_finetune_switch_chooses_lora_or_the_full_unet(tmp_path):
    tiny_inpainting_model(32, unet_channels=(16, 32), seed=3).save(tmp_path / "meddiffft_foundation")
    for finetune in ("full", "lora"):
        parser = ConfigParser()
        parser.read_config([str(CONFIGS / name) for name in ("meddiffft_pretrain.json", "meddiffft_finetune.json")])
        parser.update({"bundle_root": str(REPO), "models_dir": str(tmp_path), "finetune": finetune, **SMALL})
        trained = [name for name, p in parser.get_parsed_content("network").named_parameters() if p.requires_grad]
        optimised = parser.get_parsed_content("optimizer").param_groups[0]["params"]
        assert len(optimised) == len(trained) > 0
        assert all("lora_" in name for name in trained) == (finetune == "lora")


def test_the_training_options_reach_the_trainer_and_the_dataset(demo_data, tmp_path):
    tiny_inpainting_model(32, unet_channels=(16, 32), seed=3).save(tmp_path / "meddiffft_foundation")
    names = [str(CONFIGS / name) for name in ("meddiffft_pretrain.json", "meddiffft_finetune.json")]
    common = {"bundle_root": str(REPO), "models_dir": str(tmp_path), "dataset_dir": str(demo_data), **SMALL}
    parser = ConfigParser()
    parser.read_config(names)
    parser.update(common)
    assert parser.get_parsed_content("train#augmentation") is None  # today's default: no flips, clipping, ...
    assert parser.get_parsed_content("max_grad_norm") is None
    assert parser.get_parsed_content("gradient_accumulation_steps") == 1
    assert parser.get_parsed_content("prompt").mode == "entry"
    parser = ConfigParser()
    parser.read_config(names)
    options = {"flip_prob": 1.0, "max_grad_norm": 0.5, "gradient_accumulation_steps": 2, "prompt_mode": "fixed"}
    parser.update({**common, "real_lesion_cases": 1, "output_dir": str(tmp_path / "run"), **options})
    trainer = parser.get_parsed_content("train#trainer")
    assert (trainer.max_grad_norm, trainer.gradient_accumulation_steps) == (0.5, 2)
    assert trainer.prompt(["a case's own text"]) == ["a photo of hta"]
    dataset = parser.get_parsed_content("train#dataset")
    item, stored = dataset[0], dataset.stored_item(0)
    for key in ("image", "soft_mask", "lesion_mask"):  # flipped left-right together (prob 1)
        assert not torch.equal(stored[key], stored[key].flip(-1)), key
        assert torch.equal(item[key], stored[key].flip(-1)), key


def trained_unet(config_files: list[str], output_dir, max_epochs: int, **overrides) -> dict[str, torch.Tensor]:
    """Run a training config to ``max_epochs`` (resuming from ``output_dir``'s checkpoints); the UNet's weights."""
    flow = run_workflow(config_files, "train", output_dir=str(output_dir), max_epochs=max_epochs, **overrides)
    return {
        name: tensor.clone() for name, tensor in flow.parser.get_parsed_content("network").unet.state_dict().items()
    }


def test_pretraining_and_fine_tuning_resume_where_they_stopped(demo_data, tmp_path, one_torch_thread):
    """An interrupted run rerun to the full count ends with the weights of an uninterrupted one (random masks, noise,
    data order and validation included); a run that restarted instead would not."""
    common = {"dataset_dir": str(demo_data), "models_dir": str(tmp_path / "models"), **SMALL}
    common.update(val_interval=1, val_max_items=2, val_inference_steps=2)
    del common["max_epochs"]
    for name, configs, extra in [
        ("pre", ["meddiffft_pretrain.json"], {}),
        ("ft", ["meddiffft_pretrain.json", "meddiffft_finetune.json"], {"real_lesion_cases": 2}),
    ]:
        whole = trained_unet(configs, tmp_path / f"{name}_whole", 2, **common, **extra)
        first = trained_unet(configs, tmp_path / f"{name}_split", 1, **common, **extra)
        first_grid = (tmp_path / f"{name}_split" / "samples_epoch_0001.png").stat().st_mtime_ns
        resumed = trained_unet(configs, tmp_path / f"{name}_split", 2, **common, **extra)
        assert all(torch.equal(resumed[key], whole[key]) for key in whole), name
        assert not all(torch.equal(first[key], whole[key]) for key in whole), name  # the second epoch trained
        # epoch 1 was not run again (a restart would also end equal to the uninterrupted run)
        assert (tmp_path / f"{name}_split" / "samples_epoch_0001.png").stat().st_mtime_ns == first_grid, name
        assert sorted(p.name for p in (tmp_path / f"{name}_split" / "checkpoints").iterdir()) == [
            "checkpoint_epoch=2.pt"
        ]
        grids = sorted(p.name for p in (tmp_path / f"{name}_split").glob("samples_epoch_*.png"))
        assert grids == ["samples_epoch_0001.png", "samples_epoch_0002.png"], grids
