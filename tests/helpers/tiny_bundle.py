"""A cheap, untrained models folder of the tiny profile (what stages 1 and 2 would leave), for tests that only
need the workflows to run: the random CLIP, a fresh MSC, a small UNet with its adapter, the noise schedule."""

from __future__ import annotations

from pathlib import Path

from diffusers import DDPMScheduler

from bundle.networks.medical_clip import MedicalClipEncoder
from bundle.networks.medsoft_diffusion import CLIP_FOLDER, CONTROLLER_FILE, save_trained, tiny_model

TINY_SPATIAL_SIZE = 32


def make_tiny_models(models_dir: Path, spatial_size: int = TINY_SPATIAL_SIZE, seed: int = 0) -> Path:
    """Write an untrained tiny-profile models folder that ``load_trained`` and ``configs/inference.json`` read."""
    clip = MedicalClipEncoder.tiny(seed=seed)
    model = tiny_model(spatial_size=spatial_size, clip_encoder=clip, unet_channels=(16, 32), seed=seed)
    models_dir.mkdir(parents=True, exist_ok=True)
    clip.save_local_dir(models_dir / CLIP_FOLDER)
    model.controller.save(models_dir / CONTROLLER_FILE)
    save_trained(model, models_dir)
    # the schedule of configs/train.json
    DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", clip_sample=False).save_config(
        models_dir
    )
    return models_dir
