"""VG-MedGen's stage G: the DiT (with its fusion) trained on crops and their captions, a
:class:`bundle.engines.diffusion_trainer.DiffusionTrainer` with condition dropout of the whole prompt and the
intensity-distribution loss on the one-step estimate of the clean image.

``L = MSE(eps_hat, eps) + intensity_weight * L_int(x0_hat, x)`` where
``x0_hat = (z_t - sqrt(1 - abar_t) eps_hat) / sqrt(abar_t)`` is differentiable in the model's output, so the
colour term trains the fusion and the DiT (the authors' release sampled the image under ``torch.no_grad()``: its
term had no gradient). It counts on the items whose timestep is below ``intensity_max_timestep`` only: at high noise
the estimate divides by a vanishing ``sqrt(abar_t)``. In a latent space (the full profile) the estimate is decoded by
the frozen VAE on the graph (:meth:`bundle.networks.diffusion_space.LatentSpace.images`) and compared with the
decoded real latents: a perfect noise prediction costs nothing, and the DiT is not pushed to make up the VAE's own
reconstruction error. In pixel space both are the images themselves.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from bundle.engines.diffusion_trainer import DiffusionTrainer
from bundle.engines.utils import unwrap
from bundle.losses.intensity_distribution import IntensityDistributionLoss
from bundle.networks.conditions import GROUP_SEPARATOR, Conditions
from bundle.networks.vgmedgen_generator import VGMedGen


class VGMedGenTrainer(DiffusionTrainer):
    """Stage G: ``eps_theta(z_t, t, fusion(t_a, t_s, text states))`` against the added noise, plus the intensity term.

    Batches: dictionaries with ``"image"`` ``(B, 1, S, S)`` in [0, 1] and ``"text"`` (the captions), as the crops of
    :func:`bundle.transforms.case_to_slices.slice_transform` collate.

    Args:
        noise_scheduler: the diffusers training scheduler.
        condition_dropout: probability that an item's whole prompt is replaced by the null prompt (so the sampler's
            classifier-free guidance compares with a condition the model has seen; the release never dropped it).
        intensity_weight: lambda of the intensity-distribution term (0: the plain noise loss).
        intensity_max_timestep: the term counts on items with ``t`` below this.
        kwargs: those of :class:`DiffusionTrainer` and MONAI's ``SupervisedTrainer``; ``network`` a
            :class:`VGMedGen`, ``loss_function`` the noise loss ``(predicted, noise) -> scalar`` (e.g. MSE).
    """

    def __init__(
        self,
        noise_scheduler,
        condition_dropout: float = 0.1,
        intensity_weight: float = 0.05,
        intensity_max_timestep: int = 500,
        **kwargs,
    ) -> None:
        model = unwrap(kwargs["network"])
        dropout = {GROUP_SEPARATOR.join(model.condition_groups): condition_dropout}
        super().__init__(noise_scheduler, condition_dropout=dropout, **kwargs)
        self.space = model.space
        self.intensity_weight = float(intensity_weight)
        self.intensity_max_timestep = int(intensity_max_timestep)
        self.intensity_loss = IntensityDistributionLoss(reduction="none")

    def averaged_module(self, model: VGMedGen) -> torch.nn.Module:
        """The fusion and the DiT under the model's own names, so the average's state dict is in
        :meth:`VGMedGen.save_trained`'s layout."""
        return torch.nn.ModuleDict({"fusion": model.fusion, "denoiser": model.denoiser})

    def prepare(self, model: VGMedGen, batch: Mapping) -> tuple[torch.Tensor, Conditions, dict]:
        latents = model.space.encode(batch["image"])
        return latents, model.conditions(list(batch["text"])), {"latents": latents}

    def compute_loss(
        self, predicted: torch.Tensor, noise: torch.Tensor, loss_inputs: Mapping, timesteps: torch.Tensor
    ) -> torch.Tensor:
        loss = self.loss_function(predicted, noise)
        if not self.intensity_weight:
            return loss
        return loss + self.intensity_weight * self.intensity_term(predicted, noise, loss_inputs["latents"], timesteps)

    def intensity_term(
        self, predicted: torch.Tensor, noise: torch.Tensor, latents: torch.Tensor, timesteps: torch.Tensor
    ) -> torch.Tensor:
        """``L_int`` of the x0 estimate against the real image, averaged over the items with ``t`` below the limit
        (0 when there is none). With ``z_t = sqrt(abar) z_0 + sqrt(1 - abar) eps``, the estimate is
        ``z_0 - sqrt((1 - abar) / abar) (eps_hat - eps)``; both are decoded by the model's space (only the counted
        items: the VAE decoder is the costly part)."""
        counted = timesteps < self.intensity_max_timestep
        if not bool(counted.any()):
            return predicted.new_zeros(())
        latents, noise, predicted = latents[counted], noise[counted], predicted[counted]
        abar = self.noise_scheduler.alphas_cumprod.to(latents.device)[timesteps[counted]].view(-1, 1, 1, 1)
        estimate = latents - ((1 - abar) / abar).sqrt() * (predicted.float() - noise)
        with torch.no_grad():
            real = self.space.images(latents)
        return self.intensity_loss(self.space.images(estimate), real).mean()
