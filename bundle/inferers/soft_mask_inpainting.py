"""Sampling a lesion into the soft-masked region (the paper's Eqs. 7-8) as a MONAI ``Inferer``.

Each step denoises with classifier-free guidance over both conditions (text and MSC), lets the diffusers
scheduler take the step (DDIM by default, with ``eta`` for the sigma_t noise term), then blends:
``z_{t-1} = p_{t-1} * m_b + z_{m,t-1} * (1 - m_b)``, the known background noised to the same step. Noise comes
from one generator per image, seeded per case, so a case's result does not depend on what else is in the batch.

The paper names the background ``z_m``, the latent of ``I_m = x0 * (1 - M_b)``. Blending that with ``(1 - m_b)``
would apply the background weight twice, ``x0 * (1 - m_b)^2``, and darken the whole blend band; on the demo
validation slices the tiny model's in-mask mean fell to 0.24 against 0.56 in the originals. The (1 - M_b)
factor of ``I_m`` *is* the blend weight, so the background here is x0's own latent, weighted once. ``I_m`` is
still what the MSC sees (e_v).

The result is final: it is already weighted by the soft mask, so whoever writes it back must not weight it again
(:class:`bundle.io.volume_writer.SyntheticVolumeWriter`). Where M_b is 0 it *is* the input, exactly. On the pixels
(``PixelSpace``) the blend gives that by itself. A VAE (``LatentSpace``) cannot: decoding x0's own latent gives x0
plus the VAE's reconstruction error, everywhere. So the decoded result gets that error removed with the background
weight, ``decode(z_0) + (x0 - decode(E(x0))) * (1 - M_b)``: the background stays x0 and the blend band meets it
without a seam, while inside the mask the model's decoded content stands as it is.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import torch
from diffusers import DDIMScheduler
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from monai.inferers import Inferer

from bundle.networks.medsoft_diffusion import MedSoftDiffusion
from bundle.utils.precision import autocast, autocast_dtype


def _noise_like(latents: torch.Tensor, generators: Sequence[torch.Generator]) -> torch.Tensor:
    shape = latents.shape[1:]
    return torch.stack([torch.randn(shape, generator=g, dtype=latents.dtype) for g in generators]).to(latents.device)


class SoftMaskInpaintingInferer(Inferer):
    """Synthesise inside the soft mask with guidance; outside it the result follows the (masked) input.

    Args:
        scheduler: a diffusers scheduler configured like the training one (DDIM, DPM-Solver++, ...).
        num_inference_steps: sampling steps (50 in the paper).
        guidance_scale: classifier-free guidance w: ``eps_u + w (eps_c - eps_u)`` (7.5 in the paper).
        eta: DDIM's eta, the weight of the sigma_t noise term (ignored by schedulers without it).
        seed: the default seed when the caller gives none.
        precision: autocast of the UNet's forward pass (:mod:`bundle.networks.speed_options`): ``"fp32"`` (default),
            ``"auto"`` (bf16 on a GPU that has it, else float32), ``"bf16"`` or ``"fp16"``. The scheduler's
            step and the blend stay in float32.
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
    def ddim(cls, training_scheduler: SchedulerMixin, **kwargs) -> SoftMaskInpaintingInferer:
        """DDIM with the training scheduler's noise schedule."""
        return cls(DDIMScheduler.from_config(training_scheduler.config), **kwargs)

    def guided_noise(
        self,
        network: MedSoftDiffusion,
        latents: torch.Tensor,
        timestep: torch.Tensor,
        conditions: tuple[torch.Tensor, torch.Tensor],
        null_conditions: tuple[torch.Tensor, torch.Tensor],
    ) -> torch.Tensor:
        """``eps_u + w (eps_c - eps_u)``, the two branches in one batch."""
        batch = latents.shape[0]
        text_states = torch.cat([null_conditions[0], conditions[0]])
        msc_tokens = torch.cat([null_conditions[1], conditions[1]])
        with autocast(self.precision, latents.device):
            noise = network(torch.cat([latents, latents]), timestep.expand(2 * batch), text_states, msc_tokens)
        noise = noise.to(latents.dtype)
        unconditional, conditional = noise.chunk(2)
        return unconditional + self.guidance_scale * (conditional - unconditional)

    @torch.no_grad()
    def __call__(
        self,
        inputs: torch.Tensor,
        network: MedSoftDiffusion,
        soft_mask: torch.Tensor,
        texts: Sequence[str],
        seeds: Sequence[int] | None = None,
    ) -> torch.Tensor:
        """Synthesised images ``(B, 1, H, W)`` in [0, 1]: the lesion inside M_b, the input (exactly) where M_b is 0.

        Args:
            inputs: the images x0 ``(B, 1, H, W)`` in [0, 1] on the model grid.
            network: the trained :class:`MedSoftDiffusion`.
            soft_mask: M_b ``(B, 1, H, W)`` in [0, 1].
            texts: one lesion description per image.
            seeds: one seed per image (default: ``seed`` for all).
        """
        batch = inputs.shape[0]
        if len(texts) != batch:
            raise ValueError(f"{len(texts)} texts for {batch} images")
        seeds = [self.seed] * batch if seeds is None else list(seeds)
        generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
        conditions = network.conditions(texts, inputs * (1.0 - soft_mask))
        null_conditions = network.null_conditions(batch)
        known = network.space.encode(inputs)
        mask = network.space.mask(soft_mask, known)
        self.scheduler.set_timesteps(self.num_inference_steps, device=inputs.device)
        timesteps = self.scheduler.timesteps
        latents = _noise_like(known, generators) * self.scheduler.init_noise_sigma
        for index, timestep in enumerate(timesteps):
            model_input = self.scheduler.scale_model_input(latents, timestep)
            noise = self.guided_noise(network, model_input, timestep, conditions, null_conditions)
            options = (
                {"eta": self.eta, "variance_noise": _noise_like(known, generators)} if self._step_takes_eta else {}
            )
            latents = self.scheduler.step(noise, timestep, latents, **options).prev_sample
            if index + 1 < len(timesteps):
                known_now = self.scheduler.add_noise(
                    known, _noise_like(known, generators), timesteps[index + 1 : index + 2]
                )
            else:
                known_now = known
            latents = latents * mask + known_now * (1.0 - mask)
        reconstruction_error = inputs - network.space.decode(known)  # 0 on the pixels, the VAE's error in latents
        result = (network.space.decode(latents) + reconstruction_error * (1.0 - soft_mask)).clamp(0.0, 1.0)
        return torch.where(soft_mask > 0, result, inputs)
