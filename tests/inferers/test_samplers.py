"""The sampler by name: each on the training scheduler's noise schedule, DPM-Solver++ clipped for the cosine one."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, UniPCMultistepScheduler

from bundle.inferers.samplers import COSINE_LAMBDA_MIN_CLIPPED, sampling_scheduler


def training(beta_schedule: str = "squaredcos_cap_v2") -> DDPMScheduler:
    """A training scheduler with DDPM's default spacing, "leading" (the samplers' own default is "linspace")."""
    return DDPMScheduler(num_train_timesteps=1000, beta_schedule=beta_schedule, clip_sample=False)


@pytest.mark.parametrize(
    "name, kind",
    [("ddim", DDIMScheduler), ("dpmsolver++", DPMSolverMultistepScheduler), ("unipc", UniPCMultistepScheduler)],
)
def test_each_sampler_keeps_the_training_noise_schedule_and_spacing(name, kind):
    for beta_schedule in ("squaredcos_cap_v2", "scaled_linear"):
        trained = training(beta_schedule)
        sampler = sampling_scheduler(trained, name)
        assert type(sampler) is kind
        assert torch.allclose(sampler.alphas_cumprod, trained.alphas_cumprod)
        assert sampler.config.prediction_type == "epsilon" and sampler.config.timestep_spacing == "leading"
    assert sampling_scheduler(training("scaled_linear"), name, "trailing").config.timestep_spacing == "trailing"


@pytest.mark.parametrize("name", ["ddim", "unipc"])
@pytest.mark.parametrize("spacing", ["trailing", "linspace"])
def test_unclipped_samplers_refuse_to_start_at_the_cosine_schedules_last_step(name, spacing):
    with pytest.raises(ValueError, match="last training step"):
        sampling_scheduler(training(), name, spacing)
    assert sampling_scheduler(training(), "dpmsolver++", spacing).config.timestep_spacing == spacing


def test_dpm_solver_is_2m_clipped_for_the_cosine_schedule_only():
    cosine = sampling_scheduler(training(), "dpmsolver++", "trailing")
    assert cosine.config.algorithm_type == "dpmsolver++" and cosine.config.solver_order == 2
    assert cosine.config.lambda_min_clipped == COSINE_LAMBDA_MIN_CLIPPED
    assert sampling_scheduler(training("scaled_linear"), "dpmsolver++").config.lambda_min_clipped == float("-inf")
    # the clip moves the first step off the last training step, where the cosine schedule's lambda is about -10
    cosine.set_timesteps(20)
    unclipped = DPMSolverMultistepScheduler.from_config(training().config, timestep_spacing="trailing")
    unclipped.set_timesteps(20)
    assert unclipped.timesteps[0] == 999 and cosine.timesteps[0] < 999
    lambdas = 0.5 * torch.log(cosine.alphas_cumprod / (1 - cosine.alphas_cumprod))
    assert lambdas[int(cosine.timesteps[0])] >= COSINE_LAMBDA_MIN_CLIPPED


def test_an_unknown_sampler_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="unknown sampler 'euler'.*ddim, dpmsolver\\+\\+, unipc"):
        sampling_scheduler(training(), "euler")
