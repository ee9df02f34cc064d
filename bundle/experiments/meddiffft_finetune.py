"""What MedDiff-FT's fine-tuning buys: the noise-prediction loss inside each held-out lesion's first guiding mask, at
fixed noise and timesteps, of the stand-in foundation and of the fine-tuned model (lower: the model predicts the
lesion it is asked to paint better)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from bundle.losses.soft_masked_noise import SoftMaskedNoiseLoss
from bundle.networks.meddiffft_inpainting import InpaintingDiffusion


@torch.no_grad()
def held_out_masked_loss(
    model: InpaintingDiffusion,
    images: torch.Tensor,
    texts: Sequence[str],
    masks: torch.Tensor,
    noise_scheduler: SchedulerMixin,
    repeats: int = 4,
    timestep_range: tuple[int, int] = (100, 900),
    seed: int = 7,
) -> float:
    """The mean over ``repeats`` draws of the noise loss inside ``masks`` (:class:`SoftMaskedNoiseLoss`), the same
    noise and timesteps (uniform in ``timestep_range``) for every model given the same ``seed``.

    Args:
        images: ``(B, 1, H, W)`` in [0, 1]; texts: one per image; masks: the inpainting masks ``(B, 1, H, W)``.
    """
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    latents = model.space.encode(images)
    conditions = model.conditions(list(texts), images, masks)
    loss = SoftMaskedNoiseLoss()
    total = 0.0
    for _ in range(repeats):
        noise = torch.randn(latents.shape, generator=generator)
        timesteps = torch.randint(*timestep_range, (len(texts),), generator=generator)
        predicted = model(noise_scheduler.add_noise(latents, noise, timesteps), timesteps, conditions)
        total += float(loss(predicted, noise, conditions["inpaint"][:, :1]))
    return total / repeats
