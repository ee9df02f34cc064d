"""The soft-mask sampler: the background follows the input, the mask changes, seeds repeat, guidance 1 is the
conditional prediction."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

from bundle.inferers.guide_mask import GuideMaskSchedule
from bundle.inferers.soft_mask_inpainting import PredictedX0Blend, SoftMaskInpaintingInferer
from bundle.networks.conditions import concat_conditions
from bundle.networks.medical_clip import MedicalClipEncoder
from bundle.networks.medsoft_diffusion import tiny_model

SIZE = 32
TEXTS = ["a 9 mm hyperintense lesion in the L2 vertebral body", "an ill-defined hypointense lesion in L4"]


@pytest.fixture(scope="module")
def model():
    clip = MedicalClipEncoder.tiny(embed_dim=32, image_size=32, vision_width=32, text_width=32, heads=2)
    return tiny_model(spatial_size=SIZE, clip_encoder=clip, unet_channels=(16, 32), seed=0).eval()


@pytest.fixture(scope="module")
def batch():
    generator = torch.Generator().manual_seed(1)
    image = torch.rand(2, 1, SIZE, SIZE, generator=generator)
    soft_mask = torch.zeros(2, 1, SIZE, SIZE)
    soft_mask[:, :, 10:22, 8:24] = 1.0
    soft_mask[:, :, 9, 8:24] = 0.5
    return image, soft_mask


def scheduler():
    return DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", clip_sample=False)


def test_outside_the_soft_mask_the_result_is_the_input_and_inside_it_changes(model, batch):
    image, soft_mask = batch
    inferer = SoftMaskInpaintingInferer.ddim(scheduler(), num_inference_steps=8, guidance_scale=3.0, eta=0.5)
    result = inferer(image, model, soft_mask, TEXTS, seeds=[1, 2])
    outside, inside, band = soft_mask == 0, soft_mask == 1, soft_mask == 0.5
    assert result.shape == image.shape
    assert torch.allclose(result[outside], image[outside], atol=1e-6)
    assert (result[inside] - image[inside]).abs().mean() > 0.05
    # in the blend band the background counts once: result = 0.5 * synthesis + 0.5 * x0
    assert (result[band] - 0.5 * image[band]).min() >= -1e-6


class RecordingDDIM(DDIMScheduler):
    """DDIM that keeps the latents each step starts from."""

    def step(self, model_output, timestep, sample, *args, **kwargs):
        self.started_from.append(sample.clone())
        return super().step(model_output, timestep, sample, *args, **kwargs)


def test_the_background_is_blended_in_at_every_step_not_pasted_at_the_end(model, batch):
    """Per step, the latents outside M_b are the known image noised to that step: the same whatever the text (the
    model's prediction), while inside they follow the text. A sampler that pastes the background in only at the
    end would carry the model's own background through every intermediate step."""
    image, soft_mask = batch
    trajectories = []
    for texts in (TEXTS, ["a large hypointense metastasis", "a small bright haemangioma"]):
        recording = RecordingDDIM.from_config(scheduler().config)
        recording.started_from = []
        SoftMaskInpaintingInferer(recording, num_inference_steps=6, eta=0.5)(image, model, soft_mask, texts, [3, 4])
        trajectories.append(recording.started_from)
    outside, inside = (soft_mask == 0).expand_as(trajectories[0][0]), (soft_mask == 1).expand_as(trajectories[0][0])
    for step, (first, second) in enumerate(zip(*trajectories, strict=False)):
        if step == 0:  # pure noise, the same seeds
            assert torch.equal(first, second)
            continue
        assert torch.equal(first[outside], second[outside]), step
        assert (first[inside] - second[inside]).abs().mean() > 1e-3, step


def test_a_guide_schedule_blends_with_each_steps_guide_and_keeps_the_input_outside_the_last(model, batch):
    """MedDiff-FT's guiding mask: the latents each step starts from are the known image noised to that step outside
    the previous step's guide (whatever the text), the region between the first and the last guide is in play early
    on (it follows the text), and the result is the input exactly outside the last guide (the lesion in its host)."""
    image, soft_mask = batch
    lesion, host = torch.zeros_like(soft_mask), (soft_mask == 1).float()
    lesion[:, :, 13:19, 12:20] = 1.0
    lesion[:, :, 13:19, 4:8] = 1.0  # outside the host: never changed
    schedule = GuideMaskSchedule("shrink", dilation_fraction=0.5, shrink_until=0.5)
    guides = schedule(lesion, host, 1.0, 6)
    final = guides[-1].bool()
    results, trajectories = [], []
    for texts in (TEXTS, ["a large hypointense metastasis", "a small bright haemangioma"]):
        recording = RecordingDDIM.from_config(scheduler().config)
        recording.started_from = []
        inferer = SoftMaskInpaintingInferer(recording, num_inference_steps=6, eta=0.5, guide_schedule=schedule)
        results.append(inferer(image, model, soft_mask, texts, [3, 4], lesion_mask=lesion, host_mask=host))
        trajectories.append(recording.started_from)
    for result in results:
        assert torch.equal(result[~final], image[~final])
        assert (result[final] - image[final]).abs().mean() > 0.05
    for step in range(1, 6):
        outside = guides[step - 1].expand_as(trajectories[0][step]) == 0
        assert torch.equal(trajectories[0][step][outside], trajectories[1][step][outside]), step
    ring = (guides[0] > 0) & ~final
    assert ring.sum() > 40
    assert (trajectories[0][1][ring] - trajectories[1][1][ring]).abs().mean() > 1e-3


def test_lesion_masks_without_a_guide_schedule_are_refused(model, batch):
    image, soft_mask = batch
    with pytest.raises(ValueError, match="only used with a guide_schedule"):
        SoftMaskInpaintingInferer(scheduler(), num_inference_steps=2)(
            image, model, soft_mask, TEXTS, lesion_mask=soft_mask, host_mask=soft_mask
        )


class RecordingBlend(SoftMaskInpaintingInferer):
    """Keeps, per step, the scheduler's result, the generators' states before the blend's draw, and the blend."""

    def blend(self, known, mask, generators):
        hook = super().blend(known, mask, generators)
        self.steps = []

        def recorded(latents, index, timesteps):
            states = [generator.get_state() for generator in generators]
            blended = hook(latents, index, timesteps)
            self.steps.append((latents.clone(), index, timesteps, states, blended.clone()))
            return blended

        return recorded


def test_each_step_is_the_papers_blend_of_the_model_step_and_the_noised_original(model, batch):
    """x_{t-1} = M * x_model + (1 - M) * (sqrt(abar) x0 + sqrt(1 - abar) eps) at the next timestep, with eps the
    next draw of each image's generator; after the last step the original itself; the result is the last blend."""
    image, soft_mask = batch
    inferer = RecordingBlend.ddim(scheduler(), num_inference_steps=5, guidance_scale=3.0, eta=0.5)
    result = inferer(image, model, soft_mask, TEXTS, seeds=[1, 2])
    x0 = image * 2.0 - 1.0  # z_0 on the pixels
    alphas_cumprod = inferer.scheduler.alphas_cumprod
    assert [step[1] for step in inferer.steps] == [0, 1, 2, 3, 4]
    for stepped, index, timesteps, states, blended in inferer.steps:
        if index + 1 < len(timesteps):
            eps = torch.stack([torch.randn(x0.shape[1:], generator=torch.Generator().set_state(s)) for s in states])
            alpha = alphas_cumprod[timesteps[index + 1]]
            noised = alpha.sqrt() * x0 + (1.0 - alpha).sqrt() * eps
        else:
            noised = x0
        assert (stepped - noised)[soft_mask.expand_as(x0) < 1].abs().max() > 1e-3  # the blend has work to do
        torch.testing.assert_close(blended, soft_mask * stepped + (1.0 - soft_mask) * noised, atol=1e-6, rtol=0)
    final = ((inferer.steps[-1][-1] + 1.0) / 2.0).clamp(0.0, 1.0)
    torch.testing.assert_close(result, torch.where(soft_mask > 0, final, image))


def test_the_same_seed_gives_the_same_result_and_another_seed_does_not(model, batch):
    image, soft_mask = batch
    inferer = SoftMaskInpaintingInferer.ddim(scheduler(), num_inference_steps=5, eta=1.0)
    first = inferer(image, model, soft_mask, TEXTS, seeds=[7, 8])
    assert torch.equal(inferer(image, model, soft_mask, TEXTS, seeds=[7, 8]), first)
    assert not torch.allclose(inferer(image, model, soft_mask, TEXTS, seeds=[9, 8])[0], first[0])
    alone = inferer(image[1:], model, soft_mask[1:], TEXTS[1:], seeds=[8])  # independent of the batch
    assert torch.allclose(alone[0], first[1], atol=1e-3)  # batched vs alone: float rounding only


def test_guidance_scale_one_is_the_conditional_prediction(model, batch):
    image, soft_mask = batch
    masked = image * (1 - soft_mask)
    latents = torch.randn(2, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(3))
    timestep = torch.tensor(400)
    conditions = model.conditions(TEXTS, masked)
    null = model.null_conditions(2)
    with torch.no_grad():
        conditional = model(latents, timestep.expand(2), conditions)
        unconditional = model(latents, timestep.expand(2), null)
        guided = SoftMaskInpaintingInferer(scheduler(), guidance_scale=1.0).guided_noise(
            model, latents, timestep, concat_conditions(null, conditions)
        )
        assert torch.allclose(guided, conditional, atol=1e-5)
        strong = SoftMaskInpaintingInferer(scheduler(), guidance_scale=7.5).guided_noise(
            model, latents, timestep, concat_conditions(null, conditions)
        )
        assert torch.allclose(strong, unconditional + 7.5 * (conditional - unconditional), atol=1e-4)


def test_another_diffusers_scheduler_runs_by_config(model, batch):
    image, soft_mask = batch
    solver = DPMSolverMultistepScheduler.from_config(scheduler().config)
    result = SoftMaskInpaintingInferer(solver, num_inference_steps=4)(image, model, soft_mask, TEXTS)
    assert torch.allclose(result[soft_mask == 0], image[soft_mask == 0], atol=1e-6)


def test_missing_text_is_refused(model, batch):
    image, soft_mask = batch
    with pytest.raises(ValueError, match="lesion text"):
        SoftMaskInpaintingInferer(scheduler(), num_inference_steps=2)(image, model, soft_mask, ["ok", " "])


def test_inpaint_gives_the_content_the_result_blends_and_starts_from_an_image_at_a_strength(model, batch):
    image, soft_mask = batch
    inferer = SoftMaskInpaintingInferer.ddim(scheduler(), num_inference_steps=8, guidance_scale=3.0)
    result, content = inferer.inpaint(image, model, soft_mask, TEXTS, seeds=[1, 2])
    assert torch.equal(result, inferer(image, model, soft_mask, TEXTS, seeds=[1, 2]))
    unclamped = (content > 0) & (content < 1)  # both are clamped to [0, 1]; the untrained model overshoots
    blended = content * soft_mask + image * (1 - soft_mask)
    assert unclamped.float().mean() > 0.5
    assert torch.allclose(result[unclamped], blended[unclamped], atol=1e-5)
    # SDEdit: from a start image, a low strength keeps close to it, strength 1 is sampling from noise
    start = image.clone()
    start[soft_mask == 1] = 0.9
    inside = soft_mask == 1
    distances = {}
    for strength in (0.25, 1.0):
        result = inferer.inpaint(image, model, soft_mask, TEXTS, [1, 2], start=start, strength=strength)[0]
        distances[strength] = float((result[inside] - start[inside]).abs().mean())
    assert distances[0.25] < 0.5 * distances[1.0]
    from_noise = inferer.inpaint(image, model, soft_mask, TEXTS, [1, 2], start=start, strength=1.0)[0]
    assert torch.equal(from_noise, inferer(image, model, soft_mask, TEXTS, seeds=[1, 2]))


@pytest.mark.parametrize("blend_noise", ["fresh", "fixed"])
def test_fixed_blend_noise_keeps_the_known_region_on_one_noise_trajectory(model, batch, blend_noise):
    """With ``blend_noise="fixed"`` the known region each step starts from is z_0 noised with the same draw at every
    step, ``(z_t - sqrt(abar_t) z_0) / sqrt(1 - abar_t)`` is one tensor; with fresh noise it changes per step."""
    image, soft_mask = batch
    recording = RecordingDDIM.from_config(scheduler().config)
    recording.started_from = []
    inferer = SoftMaskInpaintingInferer(recording, num_inference_steps=5, blend_noise=blend_noise)
    result = inferer(image, model, soft_mask, TEXTS, seeds=[1, 2])
    x0, outside = image * 2.0 - 1.0, (soft_mask == 0)
    noises = []
    for timestep, latents in zip(recording.timesteps[1:], recording.started_from[1:], strict=True):
        abar = recording.alphas_cumprod[int(timestep)]
        noises.append(((latents - abar.sqrt() * x0) / (1 - abar).sqrt())[outside])
    changes = [(later - noises[0]).abs().max() for later in noises[1:]]
    if blend_noise == "fixed":
        assert max(changes) < 1e-4
    else:
        assert min(changes) > 0.5
    assert torch.allclose(result[outside], image[outside], atol=1e-6)
    assert (result[soft_mask == 1] - image[soft_mask == 1]).abs().mean() > 0.05


def test_an_unknown_blend_noise_is_refused():
    with pytest.raises(ValueError, match="blend_noise must be 'fresh' or 'fixed'"):
        SoftMaskInpaintingInferer(scheduler(), blend_noise="same")


def test_the_predicted_x0_blend_gives_the_noise_of_the_known_latents_outside_and_the_models_inside():
    generator = torch.Generator().manual_seed(0)
    latents, noise, known = (torch.randn(2, 1, 8, 8, generator=generator) for _ in range(3))
    mask = torch.zeros(2, 1, 8, 8)
    mask[:, :, 2:6, 2:6] = 1.0
    mask[:, :, 1, 2:6] = 0.25
    alphas_cumprod = scheduler().alphas_cumprod
    timestep = torch.tensor(600)
    alpha = alphas_cumprod[600]
    blended = PredictedX0Blend(alphas_cumprod, known, mask)(noise, latents, timestep)
    implied = (latents - (1 - alpha).sqrt() * blended) / alpha.sqrt()
    model_x0 = (latents - (1 - alpha).sqrt() * noise) / alpha.sqrt()
    torch.testing.assert_close(implied, model_x0 * mask + known * (1 - mask), rtol=1e-4, atol=1e-4)
    assert (implied[mask == 0] - model_x0[mask == 0]).abs().mean() > 0.5  # it does change the outside


def test_blend_x0_changes_the_sample_keeps_the_input_outside_and_needs_epsilon_without_a_guide_schedule(model, batch):
    image, soft_mask = batch
    plain = SoftMaskInpaintingInferer.ddim(scheduler(), num_inference_steps=5)(image, model, soft_mask, TEXTS, [1, 2])
    inferer = SoftMaskInpaintingInferer.ddim(scheduler(), num_inference_steps=5, blend_x0=True)
    result = inferer(image, model, soft_mask, TEXTS, seeds=[1, 2])
    outside, inside = soft_mask == 0, soft_mask == 1
    assert torch.allclose(result[outside], image[outside], atol=1e-6)
    assert (result[inside] - plain[inside]).abs().mean() > 1e-3
    with pytest.raises(ValueError, match="blend_x0 needs epsilon prediction"):
        SoftMaskInpaintingInferer(scheduler(), blend_x0=True, guide_schedule=GuideMaskSchedule("shrink"))
    v_prediction = DDIMScheduler.from_config(scheduler().config, prediction_type="v_prediction")
    with pytest.raises(ValueError, match="blend_x0 needs epsilon prediction"):
        SoftMaskInpaintingInferer(v_prediction, blend_x0=True)
