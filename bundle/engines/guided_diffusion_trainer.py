"""Stage 2 of MedSoft-Diffusion: the guided UNet's trainer, a :class:`bundle.engines.diffusion_trainer.DiffusionTrainer`
with the soft-mask-weighted noise loss and the paper's condition dropout."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from bundle.engines.diffusion_trainer import DiffusionTrainer
from bundle.networks.conditions import Conditions
from bundle.networks.medsoft_diffusion import MedSoftDiffusion


def medsoft_condition_dropout(text_only: float = 0.05, msc_only: float = 0.05, both: float = 0.05) -> dict[str, float]:
    """The paper's condition dropout by groups: the text alone, e_MSC alone, both together (0.05 each), so the sampler
    can use classifier-free guidance."""
    return {"text": text_only, "msc": msc_only, "text+msc": both}


class GuidedDiffusionTrainer(DiffusionTrainer):
    """Stage 2: ``eps_theta(z_t, t, C, e_MSC)`` against the added noise, weighted by the soft mask m_b.

    Batches are the dictionaries of :class:`bundle.data.slice_dataset.SliceDataset` collated by the data loader.

    Args:
        noise_scheduler: the diffusers training scheduler.
        condition_dropout_probabilities: text alone, e_MSC alone, both (the paper: 0.05, 0.05, 0.05).
        ema_decay: keep an exponential moving average of the guided UNet (``ema``) when given.
        lesion_loss_weight: ``w``: the loss weight becomes ``m_b + w * m_lesion`` (the lesion's own mask, the batch's
            ``lesion_mask``, all zero where a case has no lesion segmentation), so the few lesion pixels, where
            the text decides the signal, are not outweighed by the marrow around them. 0: the paper's Eq. 6.
        kwargs: those of :class:`DiffusionTrainer` (``precision``, ``gradient_checkpointing``) and MONAI's
            ``SupervisedTrainer``; ``network`` a :class:`MedSoftDiffusion`, ``loss_function``
            :class:`bundle.losses.soft_masked_noise.SoftMaskedNoiseLoss`.
    """

    def __init__(
        self,
        noise_scheduler,
        condition_dropout_probabilities: Sequence[float] = (0.05, 0.05, 0.05),
        ema_decay: float | None = None,
        lesion_loss_weight: float = 0.0,
        **kwargs,
    ) -> None:
        if lesion_loss_weight < 0:
            raise ValueError(f"lesion_loss_weight must be >= 0, got {lesion_loss_weight}")
        self.lesion_loss_weight = lesion_loss_weight
        super().__init__(
            noise_scheduler,
            condition_dropout=medsoft_condition_dropout(*condition_dropout_probabilities),
            ema_decay=ema_decay,
            **kwargs,
        )

    def averaged_module(self, model: MedSoftDiffusion) -> torch.nn.Module:
        return model.unet

    def prepare(self, model: MedSoftDiffusion, batch: Mapping) -> tuple[torch.Tensor, Conditions, dict]:
        conditions = model.conditions(list(batch["text"]), batch["masked_image"])
        latents = model.space.encode(batch["image"])
        weight = batch["soft_mask"]
        if self.lesion_loss_weight > 0:
            if "lesion_mask" not in batch:
                raise KeyError(
                    "lesion_loss_weight > 0 needs the batch's 'lesion_mask' (case_to_slices(lesion_mask=True))"
                )
            weight = weight + self.lesion_loss_weight * batch["lesion_mask"].to(weight)
        return latents, conditions, {"mask": model.space.mask(weight, latents)}
