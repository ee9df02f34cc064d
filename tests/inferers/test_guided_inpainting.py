"""MedDiff-FT's sampler: with the dynamic guiding mask the result equals the host outside the last guide and changes
inside it; the inpainting model's mask input is the first (largest) guide; seeds decide the result."""

from __future__ import annotations

import torch
from diffusers import DDPMScheduler

from bundle.inferers.guide_mask import GuideMaskSchedule
from bundle.inferers.guided_inpainting import GuidedInpaintingInferer
from bundle.networks.meddiffft_inpainting import tiny_inpainting_model


def case() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    images = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    host = torch.zeros(2, 1, 32, 32)
    host[:, :, 4:28, 6:26] = 1
    lesion = torch.zeros(2, 1, 32, 32)
    lesion[0, :, 12:18, 12:18] = 1
    lesion[1, :, 8:12, 18:24] = 1
    return images, host, lesion


def test_the_result_is_the_host_outside_the_last_guide_and_the_model_sees_the_first(monkeypatch):
    model = tiny_inpainting_model(32, unet_channels=(16, 32))
    images, host, lesion = case()
    schedule = GuideMaskSchedule("shrink", dilation_fraction=0.5, shrink_until=0.6)
    inferer = GuidedInpaintingInferer.ddim(DDPMScheduler(), num_inference_steps=6, guide_schedule=schedule)
    seen = []
    conditions = model.conditions
    monkeypatch.setattr(model, "conditions", lambda texts, x, mask: seen.append(mask) or conditions(texts, x, mask))
    result = inferer(images, model, lesion, ["a lesion"] * 2, [3, 4], lesion_mask=lesion, host_mask=host)
    guides = schedule(lesion, host, 1.0, 6)
    assert torch.equal(seen[0], guides[0]) and guides[0].sum() > lesion.sum()  # the model painted the larger region
    outside = guides[-1] == 0
    assert torch.equal(result[outside], images[outside])
    assert (result - images).abs()[~outside].mean() > 0.05
    again = inferer(images, model, lesion, ["a lesion"] * 2, [3, 4], lesion_mask=lesion, host_mask=host)
    other = inferer(images, model, lesion, ["a lesion"] * 2, [5, 6], lesion_mask=lesion, host_mask=host)
    assert torch.equal(again, result) and not torch.equal(other, result)
