"""MedDiff-FT's sampler: with the dynamic guiding mask the result equals the host outside the last guide and changes
inside it; the inpainting model's mask input is the first (largest) guide; seeds decide the result. Without the blend,
on SD inpainting weights, it is diffusers' ``StableDiffusionInpaintPipeline``."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler, StableDiffusionInpaintPipeline
from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion_inpaint import retrieve_latents

from bundle.inferers.guide_mask import GuideMaskSchedule
from bundle.inferers.guided_inpainting import GuidedInpaintingInferer
from bundle.networks.meddiffft_inpainting import sd_inpaint_model, tiny_inpainting_model
from tests.helpers.tiny_weights import SIZE, write_tiny_sd15_inpaint


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


# ------------------------------------------------------------------ against diffusers' inpainting pipeline


@pytest.fixture(scope="module")
def sd_inpaint(tmp_path_factory):
    return sd_inpaint_model(write_tiny_sd15_inpaint(tmp_path_factory.mktemp("sd") / "sd-inpainting")).eval()


def pipeline_of(model, scheduler_config) -> StableDiffusionInpaintPipeline:
    """diffusers' pipeline on the very modules of ``model`` (the tiny SD inpainting folder's), its own scheduler."""
    pipe = StableDiffusionInpaintPipeline(
        vae=model.space.vae,
        text_encoder=model.text_states.text_encoder,
        tokenizer=model.text_states.tokenizer,
        unet=model.unet,
        scheduler=DDIMScheduler.from_config(scheduler_config),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def inpainting_case() -> tuple[torch.Tensor, torch.Tensor, list[str], list[int]]:
    images = torch.rand(2, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(5))
    mask = torch.zeros(2, 1, SIZE, SIZE)
    mask[0, :, 4:12, 5:11] = 0.9
    mask[1, :, 2:8, 8:14] = 0.7
    mask[1, :, 9:10, 2:4] = 0.3  # below 0.5: kept, in both
    return images, mask, ["a lesion", "lesion on le"], [3, 11]


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_without_the_blend_the_sampler_is_diffusers_inpainting_pipeline(sd_inpaint, eta, one_torch_thread):
    """The same tiny SD inpainting weights, DDIM from the folder's scheduler config, guidance 7.5, 4 steps, one seed
    per image: the sampler without its per-step blend (its own conditions, then :meth:`GuidedSampler.sample` with no
    hook) lands on the pipeline's latents. The one difference is the masked image's latents: diffusers samples them
    from the VAE's posterior (``retrieve_latents`` with a draw from each image's generator, after the initial noise),
    the model takes the posterior mean; the pipeline gets them as ``masked_image_latents`` from its own image and
    mask processors and ``latent_dist.mode()``."""
    model = sd_inpaint
    folder = model.base_dir
    config = DDIMScheduler.load_config(folder, subfolder="scheduler")
    images, mask, texts, seeds = inpainting_case()
    inferer = GuidedInpaintingInferer(DDIMScheduler.from_config(config), 4, 7.5, eta=eta)
    conditions = inferer.model_conditions(model, texts, images, mask, None)
    ours = inferer.sample(model, conditions, model.space.encode(images), inferer.generators(2, seeds))

    pipe = pipeline_of(model, config)
    rgb = images.repeat(1, 3, 1, 1)
    masked = pipe.image_processor.preprocess(rgb) * (pipe.mask_processor.preprocess(mask) < 0.5)
    mode = pipe.vae.encode(masked).latent_dist.mode() * pipe.vae.config.scaling_factor
    options = {"height": SIZE, "width": SIZE, "num_inference_steps": 4, "guidance_scale": 7.5, "eta": eta}
    generators = [torch.Generator().manual_seed(seed) for seed in seeds]
    theirs = pipe(texts, rgb, mask, masked_image_latents=mode, generator=generators, output_type="latent", **options)
    torch.testing.assert_close(ours, theirs.images, rtol=0, atol=1e-5)
    assert ours.abs().max() > 1  # not a trivial agreement

    # the pipeline's default samples the masked image's latents: that draw, given to the sampler, is its result
    default = pipe(
        texts, rgb, mask, generator=[torch.Generator().manual_seed(s) for s in seeds], output_type="latent", **options
    ).images
    assert (default - ours).abs().max() > 0.1
    draws = [torch.Generator().manual_seed(seed) for seed in seeds]
    for generator in draws:
        torch.randn(ours.shape[1:], generator=generator)  # the initial noise comes first
    sampled = torch.cat([retrieve_latents(pipe.vae.encode(masked[i : i + 1]), draws[i]) for i in range(2)])
    conditions["inpaint"] = torch.cat([conditions["inpaint"][:, :1], sampled * pipe.vae.config.scaling_factor], 1)
    if eta == 0.0:  # with eta > 0 the pipeline's step noise follows that draw on the same generators: not repeated
        again = inferer.sample(model, conditions, model.space.encode(images), inferer.generators(2, seeds))
        torch.testing.assert_close(again, default, rtol=0, atol=1e-5)
