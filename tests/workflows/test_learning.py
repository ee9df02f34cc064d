"""Short training runs *learn*: the session's tiny model (``conftest.trained``: stage 1 and stage 2 for two epochs
each on 10 phantom cases, 32 px) against the untrained networks it started from, on held-out cases (the
datalist's ``test`` list, never trained on).

Measured on this CPU (seed 0, 6 held-out slices): stage 1 squared distance ||e_MSC - e_r||^2 24.2 at
initialisation -> 1.27 (cosine to e_r -0.12 -> 0.70); stage 2 masked noise loss 1.10 -> 0.40 and in-mask PSNR of
10-step samples 9.2 -> 14.4 dB. The assertions keep a margin below these (distance x0.25, cosine +0.3, loss x0.6,
PSNR +3 dB); an untrained or non-learning model fails each of them.
"""

from __future__ import annotations

import pytest
import torch
from diffusers import DDPMScheduler
from monai.bundle import ConfigParser

from bundle.data.datalist import load_datalist
from bundle.data.slice_dataset import SliceDataset
from bundle.engines.semantic_controller_trainer import clip_features
from bundle.inferers.soft_mask_inpainting import SoftMaskInpaintingInferer
from bundle.losses.alignment import alignment_loss
from bundle.losses.soft_masked_noise import SoftMaskedNoiseLoss
from bundle.metrics.image_quality import InMaskPSNR
from bundle.networks.medical_clip import MedicalClipEncoder
from bundle.networks.medsoft_diffusion import load_trained, tiny_model
from bundle.networks.semantic_controller import MedicalSemanticController
from tests.helpers.paths import CONFIGS, REPO
from tests.helpers.workflows import TINY

pytestmark = pytest.mark.usefixtures("one_torch_thread")
HELD_OUT_SLICES = 6


@pytest.fixture(scope="module")
def held_out(demo_data) -> dict[str, object]:
    """Model-grid slices of the datalist's test cases, made by stage 2's own preprocessing, as one batch."""
    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "train.json"))
    parser.update({"bundle_root": str(REPO), "dataset_dir": str(demo_data), **TINY})
    dataset = SliceDataset(
        load_datalist(demo_data / "datalist.json", "test"),
        parser.get_parsed_content("train#preprocessing"),
        max_items=HELD_OUT_SLICES,
    )
    items = [dataset[index] for index in range(len(dataset))]  # SliceDataset no longer keeps a list of items
    batch = {key: torch.stack([item[key] for item in items]) for key in ("image", "soft_mask", "masked_image")}
    return {**batch, "text": [item["text"] for item in items]}


def test_stage_one_brings_e_msc_closer_to_e_r(trained, held_out):
    clip = MedicalClipEncoder.from_local_dir(trained / "clip")
    text_feature, masked_feature, original_feature = clip_features(clip, held_out)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        untrained = MedicalSemanticController(clip.embed_dim)
    learned = MedicalSemanticController.load(trained / "msc.safetensors")
    with torch.no_grad():
        before, after = untrained(text_feature, masked_feature), learned(text_feature, masked_feature)
    distance_before = float(alignment_loss(before, original_feature))
    distance_after = float(alignment_loss(after, original_feature))
    assert distance_after < 0.25 * distance_before, (distance_before, distance_after)
    cosine_before = float(torch.cosine_similarity(before, original_feature).mean())
    cosine_after = float(torch.cosine_similarity(after, original_feature).mean())
    assert cosine_after > cosine_before + 0.3, (cosine_before, cosine_after)


@pytest.fixture(scope="module")
def untrained_and_trained(trained) -> dict[str, torch.nn.Module]:
    """Stage 2's starting point (``configs/train.json``'s network at seed 0, same frozen CLIP and MSC) and its
    result."""
    model = load_trained(trained).eval()
    start = tiny_model(
        spatial_size=TINY["spatial_size"], clip_encoder=model.clip_encoder, controller=model.controller, seed=0
    ).eval()
    return {"untrained": start, "trained": model}


def test_stage_two_lowers_the_masked_noise_loss(trained, untrained_and_trained, held_out):
    scheduler = DDPMScheduler.from_pretrained(trained, local_files_only=True)  # the training noise schedule
    generator = torch.Generator().manual_seed(0)
    repeats = 8  # the same slices at 8 noise levels each
    images, mask = held_out["image"].repeat(repeats, 1, 1, 1), held_out["soft_mask"].repeat(repeats, 1, 1, 1)
    noise = torch.randn(images.shape, generator=generator)
    timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (images.shape[0],), generator=generator)
    losses = {}
    with torch.no_grad():
        for name, model in untrained_and_trained.items():
            conditions = model.conditions(held_out["text"] * repeats, held_out["masked_image"].repeat(repeats, 1, 1, 1))
            noisy = scheduler.add_noise(model.space.encode(images), noise, timesteps)
            losses[name] = float(SoftMaskedNoiseLoss()(model(noisy, timesteps, conditions), noise, mask))
    assert losses["trained"] < 0.6 * losses["untrained"], losses


def test_stage_two_beats_the_untrained_model_in_the_mask(trained, untrained_and_trained, held_out):
    sampler = SoftMaskInpaintingInferer.ddim(
        DDPMScheduler.from_pretrained(trained, local_files_only=True), num_inference_steps=10
    )
    seeds = list(range(len(held_out["text"])))
    psnr = {}
    for name, model in untrained_and_trained.items():
        result = sampler(held_out["image"], model, held_out["soft_mask"], held_out["text"], seeds)
        metric = InMaskPSNR()
        metric.reset()
        metric.update((result, held_out["image"], held_out["soft_mask"]))
        psnr[name] = metric.compute()
    assert psnr["trained"] > psnr["untrained"] + 3.0, psnr  # dB
