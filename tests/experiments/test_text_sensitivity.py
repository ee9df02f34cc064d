"""The one-step text-sensitivity probe, against an oracle denoiser whose x0 estimate is known exactly."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDPMScheduler

from bundle.experiments.text_sensitivity import (
    NO_LESION_TEXT,
    one_step_bias,
    summarise,
    swapped_signal,
    text_variants,
)
from bundle.networks.diffusion_space import PixelSpace

SHIFTS = {"a 9 mm hyperintense lesion": 0.05, "a 9 mm hypointense lesion": -0.03, "normal": 0.0}


class OracleDenoiser(torch.nn.Module):
    """Predicts the noise that makes the scheduler's x0 estimate exactly ``x0 + shift(text)`` inside ``core`` and
    ``x0 + 10 shift`` outside it (so a probe that reads outside the core is caught)."""

    def __init__(self, clean: torch.Tensor, core: torch.Tensor, scheduler: DDPMScheduler) -> None:
        super().__init__()
        self.space = PixelSpace()
        self.clean, self.core, self.scheduler = clean, core, scheduler

    def conditions(self, texts, masked_images):
        return {"shift": torch.tensor([SHIFTS[text] for text in texts]).view(-1, 1, 1, 1)}

    def forward(self, noisy, timesteps, conditions):
        shift = conditions["shift"] * (self.core + 10.0 * (1 - self.core))
        target = self.space.encode(self.clean + shift)
        alpha = self.scheduler.alphas_cumprod[timesteps].view(-1, 1, 1, 1)
        return (noisy - alpha.sqrt() * target) / (1 - alpha).sqrt()


def test_bias_is_the_estimate_minus_the_slice_in_the_core_only():
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", clip_sample=False)
    images = 0.3 + 0.4 * torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    soft_masks = torch.zeros_like(images)
    soft_masks[..., 4:12, 4:12] = 0.8
    soft_masks[..., 3, 3:13] = 0.3  # the blur band: outside the core
    core = (soft_masks > 0.5).float()
    texts = {"request": "a 9 mm hyperintense lesion", "swapped": "a 9 mm hypointense lesion", "no_lesion": "normal"}
    result = one_step_bias(OracleDenoiser(images, core, scheduler), scheduler, images, soft_masks, texts, (900, 300))
    for name, shift in (("request", 0.05), ("swapped", -0.03), ("no_lesion", 0.0)):
        for timestep in (900, 300):
            assert result[name][timestep] == pytest.approx(shift, abs=1e-4)


def test_empty_core_and_mismatched_shapes_are_refused():
    scheduler = DDPMScheduler(num_train_timesteps=1000)
    images = torch.full((1, 1, 8, 8), 0.5)
    with pytest.raises(ValueError, match="above 0.5"):
        one_step_bias(None, scheduler, images, torch.full_like(images, 0.4), {"x": "normal"}, (500,))
    with pytest.raises(ValueError, match="differ"):
        one_step_bias(None, scheduler, images, torch.ones(1, 1, 4, 4), {"x": "normal"}, (500,))


def test_text_variants_swap_the_signal_word_and_add_the_no_lesion_reference():
    text = "a 12 mm hypointense lesion in the central L2 vertebral body"
    assert swapped_signal(text) == "a 12 mm hyperintense lesion in the central L2 vertebral body"
    assert swapped_signal("normal L2 vertebral body") is None
    variants = text_variants(text, "L2")
    assert variants["request"] == text and variants["no_lesion"] == NO_LESION_TEXT.format(level="L2")
    assert "L2 vertebral body" in variants["no_lesion"] and "swapped" in variants
    assert set(text_variants("a lesion", "L1")) == {"request", "no_lesion"}


def test_summary_means_biases_and_subtracts_the_no_lesion_bias():
    rows = [
        {"request": {500: 0.02}, "no_lesion": {500: -0.01}},
        {"request": {500: 0.04}, "no_lesion": {500: 0.01}},
    ]
    summary = summarise(rows)
    assert summary["bias"]["request"][500] == pytest.approx(0.03)
    assert summary["bias"]["no_lesion"][500] == pytest.approx(0.0)
    assert summary["text_effect"] == {"request": {500: pytest.approx(0.03)}}
