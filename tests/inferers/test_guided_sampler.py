"""The guided sampler base: classifier-free guidance over all condition groups, the per-step hook, per-image seeds."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler

from bundle.inferers.guided_sampler import GuidedSampler
from bundle.networks.conditions import concat_conditions
from tests.helpers.conditioned_model import TwoGroupModel

SIZE = 8


def ddim(**kwargs) -> GuidedSampler:
    return GuidedSampler.ddim(DDPMScheduler(num_train_timesteps=1000, clip_sample=False), **kwargs)


@pytest.fixture
def model_and_conditions():
    model = TwoGroupModel().eval()
    return model, model.conditions(2, torch.Generator().manual_seed(1))


def test_guidance_scale_one_is_the_conditional_prediction_over_all_groups(model_and_conditions):
    model, conditions = model_and_conditions
    null = model.null_conditions(2)
    latents = torch.randn(2, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(2))
    timestep = torch.tensor(300)
    with torch.no_grad():
        conditional = model(latents, timestep.expand(2), conditions)
        unconditional = model(latents, timestep.expand(2), null)
        assert (conditional - unconditional).abs().max() > 1e-3
        one = ddim(guidance_scale=1.0).guided_noise(model, latents, timestep, concat_conditions(null, conditions))
        strong = ddim(guidance_scale=4.0).guided_noise(model, latents, timestep, concat_conditions(null, conditions))
    torch.testing.assert_close(one, conditional)
    torch.testing.assert_close(strong, unconditional + 4.0 * (conditional - unconditional))
    seen = model.seen[-1]  # one forward pass: [unconditional; conditional] for every group
    for group in model.condition_groups:
        assert torch.equal(seen[group], torch.cat([null[group], conditions[group]]))


class RecordingDDIM(DDIMScheduler):
    def step(self, model_output, timestep, sample, *args, **kwargs):
        self.started_from.append(sample.clone())
        return super().step(model_output, timestep, sample, *args, **kwargs)


def test_the_hook_runs_after_every_step_and_the_next_step_starts_from_its_result(model_and_conditions):
    model, conditions = model_and_conditions
    scheduler = RecordingDDIM.from_config(DDPMScheduler(clip_sample=False).config)
    scheduler.started_from = []
    calls = []

    def hook(latents, index, timesteps):
        calls.append((index, timesteps.clone()))
        return latents * 0.0 + index  # the next step must start from this

    sampler = GuidedSampler(scheduler, num_inference_steps=4, eta=0.5)
    result = sampler.sample(model, conditions, torch.zeros(2, 1, SIZE, SIZE), sampler.generators(2, [1, 2]), hook)
    assert [index for index, _ in calls] == [0, 1, 2, 3]
    assert all(torch.equal(timesteps, scheduler.timesteps) for _, timesteps in calls)
    for index, started in enumerate(scheduler.started_from[1:]):
        assert torch.equal(started, torch.full_like(started, float(index)))
    assert torch.equal(result, torch.full_like(result, 3.0))


def test_each_image_has_its_own_generator(model_and_conditions):
    model, conditions = model_and_conditions
    sampler = ddim(num_inference_steps=4, eta=1.0)
    like = torch.zeros(2, 1, SIZE, SIZE)
    first = sampler(like, model, conditions, seeds=[5, 6])
    assert torch.equal(sampler.sample(model, conditions, like, sampler.generators(2, [5, 6])), first)
    alone = sampler.sample(model, {g: c[1:] for g, c in conditions.items()}, like[1:], sampler.generators(1, [6]))
    torch.testing.assert_close(alone[0], first[1], atol=1e-5, rtol=0)
    assert not torch.allclose(sampler.sample(model, conditions, like, sampler.generators(2, [7, 6]))[0], first[0])
    with pytest.raises(ValueError, match="1 seeds for 2 images"):
        sampler.generators(2, [1])
