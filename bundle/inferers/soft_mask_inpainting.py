"""Sampling a lesion into the soft-masked region (the paper's Eqs. 7-8) as a MONAI ``Inferer``.

A :class:`bundle.inferers.guided_sampler.GuidedSampler` (classifier-free guidance over both conditions, text and
MSC; the scheduler's step; per-image generators) whose per-step hook is the blend :class:`SoftMaskBlend`:
``z_{t-1} = p_{t-1} * m_b + z_{m,t-1} * (1 - m_b)``, the known background noised to the same step.

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

With a :class:`bundle.inferers.guide_mask.GuideMaskSchedule` (MedDiff-FT's dynamic guiding mask) the region the
blend keeps changing is that schedule's guide of each step instead of M_b (the conditions still see I_m), and the
result equals the input outside the last guide. Without one the sampler is MedSoft-Diffusion's, unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from bundle.inferers.guide_mask import GuideMaskSchedule
from bundle.inferers.guided_sampler import GuidedSampler, noise_like
from bundle.networks.conditions import Conditions
from bundle.networks.medsoft_diffusion import MedSoftDiffusion


class SoftMaskBlend:
    """The per-step hook of soft-mask inpainting: after step ``index`` the latents become
    ``latents * mask + known_t * (1 - mask)``, ``known_t`` the known latents noised to the next timestep, and after
    the last step the known latents themselves.

    Args:
        scheduler: the sampler's scheduler (its ``add_noise``).
        known: the known latents z_0 of the input ``(B, C, h, w)``.
        mask: m_b on the latents' grid ``(B, 1, h, w)`` in [0, 1], or one such mask per step (a guide schedule).
        generators: the per-image generators (the sampler's, so the draws interleave with its own).
        fixed_noise: ``False``: fresh per-image noise for ``known_t`` at every step (the paper's blend). ``True``:
            one draw per image, reused at every step, so the known region follows one deterministic trajectory
            ``sqrt(a_t) z_0 + sqrt(1 - a_t) n``, the kind a multistep solver (DPM-Solver++, UniPC) extrapolates.
    """

    def __init__(
        self,
        scheduler: SchedulerMixin,
        known: torch.Tensor,
        mask: torch.Tensor | Sequence[torch.Tensor],
        generators: Sequence[torch.Generator],
        fixed_noise: bool = False,
    ) -> None:
        self.scheduler, self.known, self.mask, self.generators = scheduler, known, mask, generators
        self.noise = noise_like(known, generators) if fixed_noise else None

    def __call__(self, latents: torch.Tensor, index: int, timesteps: torch.Tensor) -> torch.Tensor:
        # a run shortened by SDEdit's strength takes the last steps, so the per-step masks are aligned at the end
        mask = self.mask if isinstance(self.mask, torch.Tensor) else self.mask[len(self.mask) - len(timesteps) + index]
        if index + 1 < len(timesteps):
            noise = noise_like(self.known, self.generators) if self.noise is None else self.noise
            known_now = self.scheduler.add_noise(self.known, noise, timesteps[index + 1 : index + 2])
        else:
            known_now = self.known
        return latents * mask + known_now * (1.0 - mask)


class PredictedX0Blend:
    """A blend for few steps, before each step: the noise the scheduler takes is the one whose predicted z_0 is the
    model's inside the mask and the known latents outside, ``x0 = x0_model * mask + known * (1 - mask)`` with
    ``x0_model = (z_t - sqrt(1 - a_t) eps) / sqrt(a_t)``, returned as ``eps' = (z_t - sqrt(a_t) x0) / sqrt(1 - a_t)``
    (epsilon prediction). The step then lands on latents consistent with the known region instead of leaving the
    per-step blend to correct it, which 20 steps give too few chances to do.

    Args:
        alphas_cumprod: the scheduler's cumulative alphas ``(num_train_timesteps,)``.
        known: the known latents z_0 ``(B, C, h, w)``.
        mask: m_b on the latents' grid ``(B, 1, h, w)`` in [0, 1].
    """

    def __init__(self, alphas_cumprod: torch.Tensor, known: torch.Tensor, mask: torch.Tensor) -> None:
        self.alphas_cumprod, self.known, self.mask = alphas_cumprod, known, mask

    def __call__(self, noise: torch.Tensor, latents: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        alpha = self.alphas_cumprod[int(timestep)].to(latents)
        predicted = (latents - (1.0 - alpha).sqrt() * noise) / alpha.sqrt()
        blended = predicted * self.mask + self.known * (1.0 - self.mask)
        return (latents - alpha.sqrt() * blended) / (1.0 - alpha).sqrt()


class SoftMaskInpaintingInferer(GuidedSampler):
    """Synthesise inside the soft mask with guidance; outside it the result follows the (masked) input.

    Args:
        scheduler: the diffusers scheduler (:class:`GuidedSampler`).
        sampler_args, sampler_options: :class:`GuidedSampler`'s other arguments, in its order or by name (steps,
            guidance scale, eta, seed, precision).
        guide_schedule: MedDiff-FT's dynamic guiding mask; each call then needs the lesion and host masks, and
            the blend keeps the schedule's guide of each step (not M_b). ``None``: MedSoft-Diffusion's blend.
        blend_noise: the noise of the re-noised known region, :class:`SoftMaskBlend`'s: "fresh" (every step) or
            "fixed" (one draw per image, for few-step multistep solvers).
        blend_x0: also blend the model's predicted z_0 with the known latents before each step
            (:class:`PredictedX0Blend`; epsilon prediction, no guide schedule).
    """

    def __init__(
        self,
        scheduler: SchedulerMixin,
        *sampler_args,
        guide_schedule: GuideMaskSchedule | None = None,
        blend_noise: str = "fresh",
        blend_x0: bool = False,
        **sampler_options,
    ) -> None:
        super().__init__(scheduler, *sampler_args, **sampler_options)
        if blend_noise not in ("fresh", "fixed"):
            raise ValueError(f"blend_noise must be 'fresh' or 'fixed', got {blend_noise!r}")
        if blend_x0 and (guide_schedule is not None or scheduler.config.prediction_type != "epsilon"):
            raise ValueError("blend_x0 needs epsilon prediction and no guide_schedule")
        self.guide_schedule = guide_schedule
        self.blend_noise = blend_noise
        self.blend_x0 = blend_x0

    def blend(
        self, known: torch.Tensor, mask: torch.Tensor | Sequence[torch.Tensor], generators: Sequence[torch.Generator]
    ) -> SoftMaskBlend:
        """The per-step hook of one call."""
        return SoftMaskBlend(self.scheduler, known, mask, generators, fixed_noise=self.blend_noise == "fixed")

    def model_conditions(
        self,
        network: MedSoftDiffusion,
        texts: Sequence[str],
        inputs: torch.Tensor,
        soft_mask: torch.Tensor,
        guides: Sequence[torch.Tensor] | None,
    ) -> Conditions:
        """The model's conditions of one call: MedSoft-Diffusion's text and MSC of ``I_m`` (with or without a guide
        schedule)."""
        return network.conditions(texts, inputs * (1.0 - soft_mask))

    @torch.no_grad()
    def inpaint(
        self,
        inputs: torch.Tensor,
        network: MedSoftDiffusion,
        soft_mask: torch.Tensor,
        texts: Sequence[str],
        seeds: Sequence[int] | None = None,
        start: torch.Tensor | None = None,
        strength: float = 1.0,
        lesion_mask: torch.Tensor | None = None,
        host_mask: torch.Tensor | None = None,
        pixel_mm: float | Sequence[float] = 1.0,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(result, content)``, each ``(B, 1, H, W)`` in [0, 1]: the synthesised images (see :meth:`__call__`) and
        the model's own image before the last blend, whose change ``content - inputs`` is the lesion at full
        weight (inside the mask the result is ``content * M_b + inputs * (1 - M_b)``).

        ``start``: images ``(B, 1, H, W)`` the reverse process starts from, noised to the ``strength`` fraction of
        the steps (SDEdit, :meth:`GuidedSampler.sample`); ``None``: from pure noise. ``lesion_mask``, ``host_mask``,
        ``pixel_mm``: as in :meth:`__call__` (a guide schedule's; a shortened run keeps the schedule's last guides).
        """
        batch = inputs.shape[0]
        if len(texts) != batch:
            raise ValueError(f"{len(texts)} texts for {batch} images")
        generators = self.generators(batch, seeds)
        known = network.space.encode(inputs)
        if self.guide_schedule is None:
            if lesion_mask is not None or host_mask is not None:
                raise ValueError("lesion and host masks are only used with a guide_schedule, and this inferer has none")
            guides = None
            region, mask = soft_mask, network.space.mask(soft_mask, known)
        else:
            if lesion_mask is None or host_mask is None:
                raise ValueError("an inferer with a guide_schedule needs the lesion_mask and host_mask of each image")
            self.scheduler.set_timesteps(self.num_inference_steps)
            guides = self.guide_schedule(lesion_mask, host_mask, pixel_mm, len(self.scheduler.timesteps))
            region, mask = guides[-1], [network.space.mask(guide, known) for guide in guides]
        conditions = self.model_conditions(network, texts, inputs, soft_mask, guides)
        blend, unblended = self.blend(known, mask, generators), []

        def keep_unblended(latents: torch.Tensor, index: int, timesteps: torch.Tensor) -> torch.Tensor:
            if index + 1 == len(timesteps):
                unblended.append(latents)  # the model's own z_0 everywhere, before the last blend
            return blend(latents, index, timesteps)

        initial = None if start is None else network.space.encode(start)
        x0_blend = PredictedX0Blend(self.scheduler.alphas_cumprod, known, mask) if self.blend_x0 else None
        latents = self.sample(network, conditions, known, generators, keep_unblended, initial, strength, x0_blend)
        reconstruction_error = inputs - network.space.decode(known)  # 0 on the pixels, the VAE's error in latents
        result = (network.space.decode(latents) + reconstruction_error * (1.0 - region)).clamp(0.0, 1.0)
        content = (network.space.decode(unblended[0]) + reconstruction_error).clamp(0.0, 1.0)
        return torch.where(region > 0, result, inputs), content

    @torch.no_grad()
    def __call__(
        self,
        inputs: torch.Tensor,
        network: MedSoftDiffusion,
        soft_mask: torch.Tensor,
        texts: Sequence[str],
        seeds: Sequence[int] | None = None,
        lesion_mask: torch.Tensor | None = None,
        host_mask: torch.Tensor | None = None,
        pixel_mm: float | Sequence[float] = 1.0,
    ) -> torch.Tensor:
        """Synthesised images ``(B, 1, H, W)`` in [0, 1]: the lesion inside M_b, the input (exactly) where M_b is 0
        (with a ``guide_schedule``: inside the last guide, the input exactly outside it).

        Args:
            inputs: the images x0 ``(B, 1, H, W)`` in [0, 1] on the model grid.
            network: the trained :class:`MedSoftDiffusion`.
            soft_mask: M_b ``(B, 1, H, W)`` in [0, 1].
            texts: one lesion description per image.
            seeds: one seed per image (default: ``seed`` for all).
            lesion_mask, host_mask: ``(B, 1, H, W)``, the guide schedule's lesion and host (only with one).
            pixel_mm: the image grid's pixel size in mm, one value or one per image (only with a guide schedule).
        """
        return self.inpaint(
            inputs, network, soft_mask, texts, seeds, lesion_mask=lesion_mask, host_mask=host_mask, pixel_mm=pixel_mm
        )[0]
