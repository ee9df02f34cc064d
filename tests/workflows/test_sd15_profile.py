"""The ``sd15`` profile on a tiny random stand-in for Stable Diffusion 1.5 (same folder layout, same classes):
the model builds from the folder and runs in latent space, only W'_k / W'_v train, a missing file is named,
and the three ``configs/sd15_*.json`` overrides merge with their base configs and resolve."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler
from monai.bundle import ConfigParser
from safetensors.torch import load_file

from bundle.errors import InputError
from bundle.handlers.export import ExportGuidedUNet, ExportSemanticController
from bundle.inferers.soft_mask_inpainting import SoftMaskInpaintingInferer
from bundle.networks.diffusion_space import LatentSpace
from bundle.networks.guided_unet import GuidedUNet
from bundle.networks.medical_clip import MedicalClipEncoder
from bundle.networks.medsoft_diffusion import CONTROLLER_FILE, MODEL_FILE, MedSoftDiffusion, load_trained, sd15_model
from bundle.networks.semantic_controller import MedicalSemanticController
from bundle.networks.text_states import StableDiffusionTextStates
from bundle.transforms.model_grid import grid_geometry
from tests.helpers.paths import CONFIGS, CT_DICOM, CT_DICOM_SEG, SHARED_DATA, T12_LABEL
from tests.helpers.tiny_weights import MAX_LENGTH, SIZE, TEXT_WIDTH, write_tiny_sd15
from tests.helpers.workflows import bundle_run, run_workflow

TEXTS = ["a hyperintense lesion", "lesion on t2"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def sd15_dir(tmp_path_factory) -> Path:
    return write_tiny_sd15(tmp_path_factory.mktemp("sd15") / "stable-diffusion-v1-5")


@pytest.fixture(scope="module")
def clip_encoder() -> MedicalClipEncoder:
    return MedicalClipEncoder.tiny(embed_dim=32, image_size=32, vision_width=32, text_width=32, heads=2)


@pytest.fixture(scope="module")
def biomedclip_dir(tmp_path_factory, clip_encoder) -> Path:
    folder = tmp_path_factory.mktemp("pretrained") / "biomedclip"
    clip_encoder.save_local_dir(folder)
    return folder


@pytest.fixture(scope="module")
def controller(clip_encoder) -> MedicalSemanticController:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        return MedicalSemanticController(clip_encoder.embed_dim, width=32, layers=1, heads=2)


@pytest.fixture(scope="module")
def stage1_dir(tmp_path_factory, controller) -> Path:
    folder = tmp_path_factory.mktemp("stage1")
    controller.save(folder / CONTROLLER_FILE)
    return folder


@pytest.fixture(scope="module")
def model(sd15_dir, clip_encoder, controller) -> MedSoftDiffusion:
    return sd15_model(sd15_dir, clip_encoder, controller)


def batch(size: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Images ``(B, 1, SIZE, SIZE)`` in [0, 1] and a soft mask of the same shape, zero outside a centre box."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(size, 1, SIZE, SIZE, generator=generator)
    mask = torch.zeros(size, 1, SIZE, SIZE)
    mask[..., 4:12, 5:11] = torch.rand(size, 1, 8, 6, generator=generator)
    return images, mask


# ------------------------------------------------------------------ the model


def test_sd15_model_builds_from_the_folder_and_predicts_latent_noise(model, controller):
    assert isinstance(model.text_states, StableDiffusionTextStates)
    assert isinstance(model.space, LatentSpace) and model.space.channels == 4
    assert model.unet.trainable == "adapter" and model.unet.scale == 1.0
    images, mask = batch()
    conditions = model.conditions(TEXTS, images * (1 - mask))
    assert conditions["text"].shape == (2, MAX_LENGTH, TEXT_WIDTH)
    assert conditions["msc"].shape == (2, 1, controller.embed_dim)  # e_MSC, one token
    null = model.null_conditions(2)
    assert null["text"].shape == conditions["text"].shape and null["msc"].shape == conditions["msc"].shape
    latents = model.space.encode(images)
    with torch.no_grad():
        noise = model(latents, torch.tensor([10, 900]), conditions)
    assert noise.shape == latents.shape == (2, 4, SIZE // 2, SIZE // 2)
    assert torch.isfinite(noise).all()


def test_latent_space_encodes_downsamples_the_mask_and_decodes_to_grey_images(model):
    images, mask = batch()
    latents = model.space.encode(images)
    assert latents.shape == (2, 4, SIZE // 2, SIZE // 2)
    latent_mask = model.space.mask(mask, latents)
    assert latent_mask.shape == (2, 1, SIZE // 2, SIZE // 2)
    assert latent_mask.min() >= 0 and latent_mask.max() <= 1 and latent_mask.max() > 0
    torch.testing.assert_close(latent_mask, F.avg_pool2d(mask, 2))  # area average over each latent cell
    decoded = model.space.decode(latents)
    assert decoded.shape == (2, 1, SIZE, SIZE)
    assert decoded.min() >= 0 and decoded.max() <= 1


def test_the_inferer_samples_in_latent_space(model, sd15_dir):
    training = DDPMScheduler.from_pretrained(sd15_dir, subfolder="scheduler", local_files_only=True)
    assert training.config.beta_schedule == "scaled_linear" and not training.config.clip_sample
    inferer = SoftMaskInpaintingInferer.ddim(training, num_inference_steps=3)
    assert inferer.scheduler.config.set_alpha_to_one is False  # SD 1.5's own setting carries over
    images, mask = batch()
    inputs = images * (1 - mask)
    result = inferer(inputs, model, mask, TEXTS, seeds=[3, 4])
    assert result.shape == (2, 1, SIZE, SIZE)
    assert result.min() >= 0 and result.max() <= 1
    # the VAE's reconstruction error is not part of the result: where M_b is 0 it is the input itself
    assert (model.space.decode(model.space.encode(inputs)) - inputs)[mask == 0].abs().max() > 0.05
    assert torch.equal(result[mask == 0], inputs[mask == 0])
    assert (result - inputs)[mask > 0].abs().mean() > 0.05
    again = inferer(images[1:] * (1 - mask[1:]), model, mask[1:], TEXTS[1:], seeds=[4])
    torch.testing.assert_close(again, result[1:], atol=1e-5, rtol=0)  # per-image seeds: batch-independent


def test_the_outward_through_plane_start_works_in_latent_space(model, sd15_dir):
    """The coherent through-plane path (a start image at a strength, the unblended content) with the VAE: the
    result is still the input where M_b is 0, and a low strength keeps close to the start inside the mask (as the VAE
    decodes it)."""
    training = DDPMScheduler.from_pretrained(sd15_dir, subfolder="scheduler", local_files_only=True)
    inferer = SoftMaskInpaintingInferer.ddim(training, num_inference_steps=4)
    images, mask = batch()
    result, content = inferer.inpaint(images, model, mask, TEXTS, [3, 4])
    assert content.shape == result.shape == images.shape
    start = (images + (content - images)).clamp(0, 1)
    near = inferer.inpaint(images, model, mask, TEXTS, [3, 4], start=start, strength=0.25)[0]
    assert torch.equal(near[mask == 0], images[mask == 0])
    far = inferer.inpaint(images, model, mask, TEXTS, [5, 6], start=start, strength=1.0)[0]
    # inside the mask the result is decoded latents: a low strength stays near the start's own decoded latents
    reference, inside = model.space.decode(model.space.encode(start)).clamp(0, 1), mask > 0.5
    assert (near - reference)[inside].abs().mean() < 0.7 * (far - reference)[inside].abs().mean()


def test_adapter_training_moves_only_the_msc_keys_and_values(sd15_dir, clip_encoder, controller):
    model = sd15_model(sd15_dir, clip_encoder, controller, trainable="adapter").train()
    images, mask = batch()
    conditions = model.conditions(TEXTS, images * (1 - mask))
    latents = model.space.encode(images)
    model(latents, torch.tensor([10, 900]), conditions).pow(2).mean().backward()
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    with_gradient = {name for name, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert with_gradient and with_gradient <= trainable
    assert all(".processor.to_k_ip." in name or ".processor.to_v_ip." in name for name in trainable)
    assert not model.text_states.training and not model.space.training and not model.controller.training


# ------------------------------------------------------------------ bad folders


@pytest.mark.parametrize(
    "name",
    [
        "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors",
        "vae/config.json",
        "vae/diffusion_pytorch_model.safetensors",
        "text_encoder/config.json",
        "text_encoder/model.safetensors",
        "tokenizer/vocab.json",
        "tokenizer/merges.txt",
        "tokenizer/tokenizer_config.json",
        "scheduler/scheduler_config.json",
    ],
)
def test_a_missing_file_is_named(tmp_path, sd15_dir, clip_encoder, controller, name):
    folder = shutil.copytree(sd15_dir, tmp_path / "sd15")
    (folder / name).unlink()
    with pytest.raises(InputError, match="stable-diffusion-v1-5") as error:
        sd15_model(folder, clip_encoder, controller)
    assert error.value.source == str(folder / name)


def test_a_missing_folder_is_named(tmp_path, clip_encoder, controller):
    with pytest.raises(InputError, match="huggingface-cli download") as error:
        sd15_model(tmp_path / "nowhere", clip_encoder, controller)
    assert error.value.source == str(tmp_path / "nowhere")


def _edit_config(path: Path, **changes) -> None:
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def test_unet_and_text_encoder_widths_must_agree(tmp_path, sd15_dir, clip_encoder, controller):
    folder = shutil.copytree(sd15_dir, tmp_path / "sd15")
    _edit_config(folder / "text_encoder" / "config.json", hidden_size=48)
    with pytest.raises(ValueError, match="cross_attention_dim .*32.* hidden_size 48"):
        sd15_model(folder, clip_encoder, controller)


def test_pixel_space_needs_a_one_channel_unet(sd15_dir, clip_encoder, controller):
    with pytest.raises(ValueError, match="4 input and 4 output channels"):
        sd15_model(sd15_dir, clip_encoder, controller, latent=False)


# ------------------------------------------------------------------ the override configs


def parser_for(name: str, **updates) -> ConfigParser:
    """``configs/<name>.json`` overridden by ``configs/sd15_<name>.json``, then ``updates`` (MONAI ids)."""
    parser = ConfigParser()
    parser.read_config([str(CONFIGS / f"{name}.json"), str(CONFIGS / f"sd15_{name}.json")])
    parser.update({"device": "$torch.device('cpu')", **updates})
    return parser


FOLDER_IDS = {"biomedclip_dir", "biomedbert_dir", "sd15_dir"}
NEW_IDS = {
    "train_msc": FOLDER_IDS,
    "train": FOLDER_IDS,
    "inference": FOLDER_IDS | {"+imports", "clip_encoder", "text_states", "diffusion_space"},
}


@pytest.mark.parametrize("name", ["train_msc", "train", "inference"])
def test_the_overrides_replace_ids_of_the_base_config(name):
    base = ConfigParser()
    base.read_config(str(CONFIGS / f"{name}.json"))
    override = json.loads((CONFIGS / f"sd15_{name}.json").read_text())
    for key in set(override) - NEW_IDS[name]:  # an existing id, or a new key of an existing dict
        parent = key.rsplit("#", 1)[0]
        assert key in base or ("#" in key and isinstance(base.get(parent), dict)), f"{key}: no such id in {name}.json"
    assert parser_for(name)["spatial_size"] == 512


def handler_of_type(parser: ConfigParser, kind: type):
    """The one training handler of ``kind`` in a config, instantiated alone (the others need the dataset)."""
    indices = [
        i for i, h in enumerate(parser["train"]["handlers"]) if str(h.get("_target_", "")).endswith(kind.__name__)
    ]
    assert len(indices) == 1, indices
    handler = parser.get_parsed_content(f"train#handlers#{indices[0]}")
    assert isinstance(handler, kind)
    return handler


def test_sd15_train_msc_loads_biomedclip_and_does_not_copy_it(tmp_path, biomedclip_dir):
    parser = parser_for(
        "train_msc",
        biomedclip_dir=str(biomedclip_dir),
        biomedbert_dir=str(tmp_path / "bert"),
        models_dir=str(tmp_path / "models"),
    )
    assert isinstance(parser.get_parsed_content("clip_encoder"), MedicalClipEncoder)
    handler = handler_of_type(parser, ExportSemanticController)
    assert handler.save_clip is False
    (tmp_path / "export").mkdir()
    handler.export(tmp_path / "export")
    assert sorted(p.name for p in (tmp_path / "export").iterdir()) == [CONTROLLER_FILE]


def test_sd15_train_and_inference_configs_resolve_and_round_trip(tmp_path, sd15_dir, biomedclip_dir, stage1_dir):
    folders = {
        "sd15_dir": str(sd15_dir),
        "biomedclip_dir": str(biomedclip_dir),
        "biomedbert_dir": str(tmp_path / "bert"),
    }
    models_dir = tmp_path / "models"
    train = parser_for("train", stage1_dir=str(stage1_dir), models_dir=str(models_dir), **folders)
    network = train.get_parsed_content("network_def")
    assert isinstance(network, MedSoftDiffusion) and isinstance(network.space, LatentSpace)
    assert network.unet.trainable == "adapter"
    scheduler = train.get_parsed_content("noise_scheduler")
    assert isinstance(scheduler, DDPMScheduler) and scheduler.config.beta_schedule == "scaled_linear"
    optimizer = train.get_parsed_content("optimizer")
    assert optimizer.defaults["lr"] == pytest.approx(1e-4) and train["batch_size"] == 4
    trained = [p for group in optimizer.param_groups for p in group["params"]]
    assert len(trained) == len([n for n, p in network.named_parameters() if p.requires_grad]) > 0
    exporter = handler_of_type(train, ExportGuidedUNet)
    assert exporter.save_base_unet is False

    # stage 2's export, with stage 1's controller beside it, is what the inference config loads
    with torch.no_grad():
        for parameter in trained:
            parameter.add_(0.01)
    exporter.export(models_dir)
    shutil.copy(stage1_dir / CONTROLLER_FILE, models_dir / CONTROLLER_FILE)
    assert not (models_dir / "unet").exists()
    inference = parser_for("inference", models_dir=str(models_dir), num_inference_steps=2, **folders)
    loaded = inference.get_parsed_content("network_def")
    assert isinstance(loaded.text_states, StableDiffusionTextStates) and isinstance(loaded.space, LatentSpace)
    assert isinstance(loaded.clip_encoder, MedicalClipEncoder)
    expected = network.unet.adapter_state_dict()
    for name, tensor in loaded.unet.adapter_state_dict().items():
        torch.testing.assert_close(tensor, expected[name], rtol=0, atol=0)
    model_file = torch.load(models_dir / MODEL_FILE, weights_only=True)  # monai.bundle.load's: the trained parts only
    assert {n for n in model_file if not n.startswith("controller.")} == {f"unet.unet.{n}" for n in expected}
    for name, tensor in expected.items():
        torch.testing.assert_close(model_file[f"unet.unet.{name}"], tensor, rtol=0, atol=0)
    sampler = inference.get_parsed_content("scheduler")
    assert isinstance(sampler, DDIMScheduler) and sampler.config.beta_schedule == "scaled_linear"
    images, mask = batch(1)
    result = inference.get_parsed_content("inferer")(images * (1 - mask), loaded, mask, TEXTS[:1])
    assert result.shape == (1, 1, SIZE, SIZE)
    details = inference.get_parsed_content("job#details")
    assert details["base_model"] == os.path.abspath(sd15_dir)


# ------------------------------------------------------------------ the "without MSC" ablation

ABLATION = ["train.json", "sd15_train.json", "ablation_no_msc.json"]
SHORT_RUN = {"max_epochs": 1, "val_interval": 5, "spatial_size": SIZE, "batch_size": 4, "slices_per_case": 1}


def test_the_without_msc_arm_trains_a_text_lora_and_leaves_the_msc_attention_alone(
    tmp_path, demo_data, sd15_dir, biomedclip_dir, stage1_dir, clip_encoder, controller
):
    """gamma 0 with the profile's 'adapter' left nothing trainable in the loss; the arm trains a LoRA on the text
    cross-attention's keys and values instead (rank 128: as many parameters as W'_v of SD 1.5), and infers with it."""
    folders = {
        "sd15_dir": str(sd15_dir),
        "biomedclip_dir": str(biomedclip_dir),
        "biomedbert_dir": str(tmp_path / "bert"),
        "stage1_dir": str(stage1_dir),
    }
    models_dir = tmp_path / "models_no_msc"
    flow = run_workflow(
        ABLATION,
        "train",
        dataset_dir=str(demo_data),
        models_dir=str(models_dir),
        output_dir=str(tmp_path / "runs"),
        **folders,
        **SHORT_RUN,
    )
    assert flow.parser.get_parsed_content("train#trainer").state.iteration > 0
    settings = GuidedUNet.adapter_settings(models_dir / "msc_adapter.safetensors")
    assert settings["trainable"] == "text_lora" and settings["scale"] == 0.0 and settings["lora_rank"] == 128
    untrained = sd15_model(sd15_dir, clip_encoder, controller, scale=0.0, trainable="text_lora", lora_rank=128)
    before = untrained.unet.adapter_state_dict()
    after = load_file(str(models_dir / "msc_adapter.safetensors"))
    assert after.keys() == before.keys()
    for name in before:
        if "_ip." in name:  # W'_k / W'_v: frozen by gamma 0
            assert torch.equal(after[name], before[name]), name
    lora_b = [name for name in before if "lora_B" in name]  # peft starts B at zero
    assert lora_b and all(after[name].abs().max() > 0 for name in lora_b)
    loaded = load_trained(
        models_dir,
        stage1_dir=stage1_dir,
        clip_encoder=clip_encoder,
        text_states=StableDiffusionTextStates(sd15_dir),
        space=LatentSpace.from_folder(sd15_dir),
        base_unet_dir=sd15_dir / "unet",
    )
    assert loaded.unet.scale == 0.0
    for name, tensor in loaded.unet.adapter_state_dict().items():
        torch.testing.assert_close(tensor, after[name], rtol=0, atol=0)


def test_the_without_msc_arm_trains_under_torchrun(tmp_path, demo_data, sd15_dir, biomedclip_dir, stage1_dir):
    """Two processes, gloo, DistributedDataParallel: nothing trainable may be left outside the loss."""
    configs = [*ABLATION, "multi_gpu_train.json"]
    bundle_run(
        "--config_file",
        str([str(CONFIGS / name) for name in configs]),
        "--dataset_dir",
        str(demo_data),
        "--sd15_dir",
        str(sd15_dir),
        "--biomedclip_dir",
        str(biomedclip_dir),
        "--biomedbert_dir",
        str(tmp_path / "bert"),
        "--stage1_dir",
        str(stage1_dir),
        "--models_dir",
        str(tmp_path / "models"),
        "--output_dir",
        str(tmp_path / "runs"),
        *[f"--{k}={v}" for k, v in SHORT_RUN.items()],
        processes=2,
        master_port=29533,
    )
    assert GuidedUNet.adapter_settings(tmp_path / "models" / "msc_adapter.safetensors")["trainable"] == "text_lora"


# ------------------------------------------------------------------ the sd15 model grid


@pytest.mark.parametrize("name", ["train_msc", "train", "inference"])
def test_sd15_sees_whole_slices_at_their_native_pixel_size(shared_data, name):
    """SD 1.5 gets each slice whole at its native spacing (resized to 512 px only by the slice's own size), not a
    1-mm crop around the mask upsampled 4-7x; every stage shares the grid."""
    preprocessing = parser_for(name).get_parsed_content(
        "validate#preprocessing" if name.startswith("train") else "preprocessing"
    )
    ct = {
        "case_id": "ct",
        "image": str(CT_DICOM),
        "vertebra_seg": str(CT_DICOM_SEG),
        "mask_labels": [T12_LABEL],
        "text": "lesion",
    }  # sagittal slices of the axial series: 20 x 512 px of 2 x 0.977 mm
    geometry = grid_geometry(preprocessing(dict(ct))[0])
    assert geometry["model_pixel_mm"] == pytest.approx(0.977, abs=0.001)  # before: 0.267 (a 137-mm crop, 3.6x)
    assert geometry["upsampling"] == pytest.approx(1.0, abs=0.01)
    assert geometry["window_mm"] == pytest.approx([39.1, 500.0], abs=1.0)  # the whole slice
    lesion = {
        "case_id": "lesion",
        "image": str(SHARED_DATA / "sct_t2/t2_fake_lesion.nii.gz"),
        "vertebra_seg": str(SHARED_DATA / "sct_t2/t2_fake_lesion_lesion_seg.nii.gz"),
        "mask_labels": [1],
        "text": "lesion",
    }  # 99 x 99 px of 0.8 mm: the scan itself is small
    geometry = grid_geometry(preprocessing(dict(lesion))[0])
    assert geometry["window_mm"] == pytest.approx([79.2, 79.2], abs=0.5)
    assert geometry["upsampling"] == pytest.approx(512 / 99, abs=0.05)  # before: 8.5x of a 41 x 48 mm crop
