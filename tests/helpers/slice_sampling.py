"""A tiny MedSoft-Diffusion model with a few-step DDIM inferer, and the slice items of one case on a shared model
grid: what the tests of the slice predictor and its cross-case batching sample."""

from __future__ import annotations

import torch
from diffusers import DDPMScheduler

from bundle.inferers.soft_mask_inpainting import SoftMaskInpaintingInferer
from bundle.networks.medical_clip import MedicalClipEncoder
from bundle.networks.medsoft_diffusion import MedSoftDiffusion, tiny_model

SIZE = 32
CORE = (slice(None), slice(8, 24), slice(8, 24))


def tiny_sampling(steps: int = 8) -> tuple[MedSoftDiffusion, SoftMaskInpaintingInferer]:
    """A random tiny model (32 px) and a DDIM soft-mask inferer of ``steps`` steps."""
    clip = MedicalClipEncoder.tiny(embed_dim=32, image_size=32, vision_width=32, text_width=32, heads=2)
    model = tiny_model(spatial_size=SIZE, clip_encoder=clip, unet_channels=(16, 32), seed=0).eval()
    schedule = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", clip_sample=False)
    return model, SoftMaskInpaintingInferer.ddim(schedule, num_inference_steps=steps, guidance_scale=3.0)


def neighbouring_slices(count: int = 5, case_id: str = "case", seed: int = 0, centre: int | None = None) -> list[dict]:
    """Slice items of one case: the same smooth anatomy with its own noise, a soft mask with a blend band; the
    centre slice (``centre``, an index into the items) in the middle by default."""
    generator = torch.Generator().manual_seed(seed)
    anatomy = torch.nn.functional.avg_pool2d(torch.rand(1, 1, SIZE, SIZE, generator=generator), 5, 1, 2)
    soft_mask = torch.zeros(1, SIZE, SIZE)
    soft_mask[:, 6:26, 6:26] = 0.5
    soft_mask[CORE] = 1.0
    centre = count // 2 if centre is None else centre
    return [
        {
            "image": (anatomy[0] + 0.02 * torch.randn(1, SIZE, SIZE, generator=generator)).clamp(0, 1),
            "soft_mask": soft_mask,
            "text": "a 9 mm hyperintense lesion in the L2 vertebral body",
            "case_id": case_id,
            "placement": {"slice_index": 20 + i},
            "through_plane": {"centre_slice": 20 + centre},
        }
        for i in range(count)
    ]
