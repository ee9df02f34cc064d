"""Sampling a conditioned diffusion model with classifier-free guidance, as a MONAI ``Inferer``.

Each step denoises with guidance over the model's conditions (the null conditions are the unconditional branch),
lets the diffusers scheduler take the step (DDIM by default, with ``eta`` for the sigma_t noise term) and then
calls a per-step hook, which may change the latents (the soft-mask blend of
:class:`bundle.inferers.soft_mask_inpainting.SoftMaskInpaintingInferer`). Noise comes from one generator per image,
seeded per case, so a case's result does not depend on what else is in the batch.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence

import torch
from diffusers import DDIMScheduler
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from monai.inferers import Inferer

from bundle.networks.conditions import (
    ConditionedDiffusionModel,
    Conditions,
    concat_conditions,
    guidance_null_conditions,
)
from bundle.utils.precision import autocast, autocast_dtype

StepHook = Callable[[torch.Tensor, int, torch.Tensor], torch.Tensor]
"""``(latents after step index, index, the scheduler's timesteps) -> the latents the next step starts from``."""

NoiseHook = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""``(guided noise, the latents it was predicted at, timestep) -> the noise the scheduler's step takes``."""


def noise_like(latents: torch.Tensor, generators: Sequence[torch.Generator]) -> torch.Tensor:
    """Standard normal noise of ``latents``' shape, item ``i`` drawn from ``generators[i]`` (on the CPU)."""
    shape = latents.shape[1:]
    noise = torch.stack([torch.randn(shape, generator=g, dtype=latents.dtype) for g in generators])
    return noise.to(latents.device, non_blocking=True)  # a host-to-device copy that does not wait for the GPU


def seeded_generators(seeds: Sequence[int]) -> list[torch.Generator]:
    """One CPU generator per image, seeded with its seed."""
    return [torch.Generator().manual_seed(int(seed)) for seed in seeds]


class GuidedSampler(Inferer):
    """Classifier-free guided sampling of a :class:`bundle.networks.conditions.ConditionedDiffusionModel`.

    Args:
        scheduler: a diffusers scheduler configured like the training one (DDIM, DPM-Solver++, ...).
        num_inference_steps: sampling steps (50 in MedSoft-Diffusion's paper).
        guidance_scale: classifier-free guidance w: ``eps_u + w (eps_c - eps_u)`` (7.5 in the paper).
        eta: DDIM's eta, the weight of the sigma_t noise term (ignored by schedulers without it).
        seed: the default seed when the caller gives none.
        precision: autocast of the model's forward pass (:mod:`bundle.utils.precision`): ``"fp32"`` (default),
            ``"auto"`` (bf16 on a GPU that has it, else float32), ``"bf16"`` or ``"fp16"``. The scheduler's step and
            the hook stay in float32.
    """

    def __init__(
        self,
        scheduler: SchedulerMixin,
        num_inference_steps: int = 50,
        guidance_scale: float = 7.5,
        eta: float = 0.0,
        seed: int = 0,
        precision: str | None = "fp32",
    ) -> None:
        super().__init__()
        self.scheduler = scheduler
        self.num_inference_steps = num_inference_steps
        self.guidance_scale = guidance_scale
        self.eta = eta
        self.seed = seed
        autocast_dtype(precision, "cpu")  # refuses an unknown name here, not at the first step
        self.precision = precision
        self._step_takes_eta = "eta" in inspect.signature(scheduler.step).parameters

    @classmethod
    def ddim(cls, training_scheduler: SchedulerMixin, **kwargs) -> GuidedSampler:
        """DDIM with the training scheduler's noise schedule."""
        return cls(DDIMScheduler.from_config(training_scheduler.config), **kwargs)

    def generators(self, batch_size: int, seeds: Sequence[int] | None = None) -> list[torch.Generator]:
        """The per-image generators: ``seeds`` (one per image) or ``seed`` for all."""
        seeds = [self.seed] * batch_size if seeds is None else list(seeds)
        if len(seeds) != batch_size:
            raise ValueError(f"{len(seeds)} seeds for {batch_size} images")
        return seeded_generators(seeds)

    def guided_noise(
        self,
        network: ConditionedDiffusionModel,
        latents: torch.Tensor,
        timestep: torch.Tensor,
        guidance_conditions: Conditions,
    ) -> torch.Tensor:
        """``eps_u + w (eps_c - eps_u)``, the two branches in one batch; ``guidance_conditions`` is
        ``concat_conditions(null, conditions)`` (joined once per sampling, not per step; groups the model never
        drops are the same in both branches)."""
        batch = latents.shape[0]
        with autocast(self.precision, latents.device):
            noise = network(torch.cat([latents, latents]), timestep.expand(2 * batch), guidance_conditions)
        noise = noise.to(latents.dtype)
        unconditional, conditional = noise.chunk(2)
        return unconditional + self.guidance_scale * (conditional - unconditional)

    @torch.no_grad()
    def sample(
        self,
        network: ConditionedDiffusionModel,
        conditions: Conditions,
        like: torch.Tensor,
        generators: Sequence[torch.Generator],
        step_hook: StepHook | None = None,
        start: torch.Tensor | None = None,
        strength: float = 1.0,
        noise_hook: NoiseHook | None = None,
    ) -> torch.Tensor:
        """The sampled z_0, of ``like``'s shape, dtype and device, from noise drawn by ``generators``.

        Per step, after the initial noise: the guided noise, the scheduler's step (with ``eta`` and per-image
        variance noise where the scheduler takes them), then ``step_hook``. With ``start`` (latents of ``like``'s
        shape) the reverse process starts from ``start`` noised to the ``strength`` fraction of the steps and runs
        only those steps (SDEdit; ``strength`` 1 starts from pure noise, as without ``start``). ``noise_hook`` may
        change the guided noise before the step (e.g. :class:`bundle.inferers.soft_mask_inpainting.PredictedX0Blend`).
        """
        null = guidance_null_conditions(network.null_conditions(like.shape[0]), conditions)
        guidance_conditions = concat_conditions(null, conditions)
        self.scheduler.set_timesteps(self.num_inference_steps, device=like.device)
        timesteps = self.scheduler.timesteps
        if start is None or strength >= 1.0:
            latents = noise_like(like, generators) * self.scheduler.init_noise_sigma
        else:
            if not 0.0 < strength:
                raise ValueError(f"strength must be in (0, 1], got {strength}")
            timesteps = timesteps[len(timesteps) - max(1, round(strength * len(timesteps))) :]
            latents = self.scheduler.add_noise(start.to(like), noise_like(like, generators), timesteps[:1])
        # the scheduler reads its tables with host timesteps: on a GPU, indexing them with device ones would make
        # the host wait for the GPU at every step
        host_timesteps = timesteps.cpu()
        for index, timestep in enumerate(timesteps):
            model_input = self.scheduler.scale_model_input(latents, host_timesteps[index])
            noise = self.guided_noise(network, model_input, timestep, guidance_conditions)
            if noise_hook is not None:
                noise = noise_hook(noise, latents, timestep)
            options = {"eta": self.eta, "variance_noise": noise_like(like, generators)} if self._step_takes_eta else {}
            latents = self.scheduler.step(noise, host_timesteps[index], latents, **options).prev_sample
            if step_hook is not None:
                latents = step_hook(latents, index, timesteps)
        return latents

    @torch.no_grad()
    def __call__(
        self,
        inputs: torch.Tensor,
        network: ConditionedDiffusionModel,
        conditions: Conditions,
        seeds: Sequence[int] | None = None,
    ) -> torch.Tensor:
        """Plain guided sampling: z_0 of ``inputs``' shape (the latents' ``(B, C, h, w)``) given ``conditions``, one
        seed per image (default: ``seed`` for all). Subclasses add their inputs and a per-step hook."""
        return self.sample(network, conditions, inputs, self.generators(inputs.shape[0], seeds))
