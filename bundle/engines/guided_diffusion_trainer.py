"""MONAI trainers and evaluators for the two training stages.

Stage 1 (:class:`SemanticControllerTrainer`) fits the MSC to ``||e_MSC - e_r||^2``; stage 2
(:class:`GuidedDiffusionTrainer`) fits the guided UNet with the soft-mask-weighted noise loss and the paper's
condition dropout. The evaluators measure e_MSC's cosine similarity to e_r, and the sampler's in-mask quality.
Batches are the dictionaries of :class:`bundle.data.slice_dataset.SliceDataset` collated by the data loader.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from monai.engines import SupervisedTrainer
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from bundle.engines.trainable import require_gradients
from bundle.engines.utils import batch_to_device, unwrap
from bundle.networks.medsoft_diffusion import MedSoftDiffusion
from bundle.networks.speed_options import optimise_unet
from bundle.utils.precision import autocast, autocast_dtype


def condition_dropout(
    batch_size: int,
    text_only: float = 0.05,
    msc_only: float = 0.05,
    both: float = 0.05,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Which items drop the text and which drop e_MSC: each alone with its probability, both together with
    ``both`` (the paper: 0.05 each), so the sampler can use classifier-free guidance."""
    draw = torch.rand(batch_size, generator=generator)
    drop_text = draw < text_only
    drop_msc = (draw >= text_only) & (draw < text_only + msc_only)
    drop_both = (draw >= text_only + msc_only) & (draw < text_only + msc_only + both)
    return drop_text | drop_both, drop_msc | drop_both


class GuidedDiffusionTrainer(SupervisedTrainer):
    """Stage 2: ``eps_theta(z_t, t, C, e_MSC)`` against the added noise, weighted by the soft mask m_b.

    Args:
        noise_scheduler: the diffusers training scheduler (its ``add_noise`` and ``num_train_timesteps``).
        condition_dropout_probabilities: text alone, e_MSC alone, both (the paper: 0.05, 0.05, 0.05).
        ema_decay: keep an exponential moving average of the UNet (``ema``) when given.
        network: a :class:`MedSoftDiffusion` (possibly wrapped in ``DistributedDataParallel``).
        loss_function: :class:`bundle.losses.soft_masked_noise.SoftMaskedNoiseLoss`.
        precision: autocast of the UNet's forward pass and the loss (:mod:`bundle.networks.speed_options`): ``"auto"``
            (bf16 on a GPU that has it, else float32), ``"bf16"``, ``"fp16"`` (with loss scaling) or ``"fp32"``.
        gradient_checkpointing: recompute the UNet's activations in the backward pass (SD 1.5 at 512 px).
    """

    def __init__(
        self,
        noise_scheduler,
        condition_dropout_probabilities: Sequence[float] = (0.05, 0.05, 0.05),
        ema_decay: float | None = None,
        precision: str | None = "fp32",
        gradient_checkpointing: bool = False,
        **kwargs,
    ) -> None:
        super().__init__(decollate=False, **kwargs)
        self.noise_scheduler = noise_scheduler
        self.condition_dropout_probabilities = tuple(condition_dropout_probabilities)
        self.precision = precision
        device = self.state.device or torch.device("cpu")
        self.autocast_dtype = autocast_dtype(precision, device)
        self.grad_scaler = torch.amp.GradScaler(device.type) if self.autocast_dtype == torch.float16 else None
        model = unwrap(self.network)
        self._gradients_checked = False
        if gradient_checkpointing:
            optimise_unet(model, gradient_checkpointing=True)
        self.ema = (
            None
            if ema_decay is None
            else AveragedModel(model.unet, multi_avg_fn=get_ema_multi_avg_fn(ema_decay), use_buffers=True)
        )

    def _iteration(self, engine: GuidedDiffusionTrainer, batchdata: Mapping) -> dict[str, torch.Tensor]:
        batch = batch_to_device(batchdata, engine.state.device)
        model: MedSoftDiffusion = unwrap(engine.network)
        images, soft_mask = batch["image"], batch["soft_mask"]
        size = images.shape[0]
        text_states, msc_tokens = model.conditions(list(batch["text"]), batch["masked_image"])
        null_text, null_tokens = model.null_conditions(size)
        drop_text, drop_msc = condition_dropout(size, *self.condition_dropout_probabilities)
        text_states = torch.where(drop_text.to(images.device)[:, None, None], null_text, text_states)
        msc_tokens = torch.where(drop_msc.to(images.device)[:, None, None], null_tokens, msc_tokens)
        latents = model.space.encode(images)
        mask = model.space.mask(soft_mask, latents)
        noise = torch.randn_like(latents)
        timesteps = torch.randint(0, self.noise_scheduler.config.num_train_timesteps, (size,), device=images.device)
        noisy = self.noise_scheduler.add_noise(latents, noise, timesteps)
        engine.network.train()
        engine.optimizer.zero_grad(set_to_none=True)
        with autocast(self.autocast_dtype, images.device):
            predicted = engine.network(noisy, timesteps, text_states, msc_tokens)
            loss = engine.loss_function(predicted, noise, mask)
        first = not self._gradients_checked  # the first batch of this run (also after resuming)
        if first and not loss.requires_grad:  # no trainable parameter in the graph: backward would fail obscurely
            require_gradients(engine.network)
        (loss if self.grad_scaler is None else self.grad_scaler.scale(loss)).backward()
        if first:
            require_gradients(engine.network)
            self._gradients_checked = True
        if self.grad_scaler is None:
            engine.optimizer.step()
        else:
            self.grad_scaler.step(engine.optimizer)
            self.grad_scaler.update()
        if self.ema is not None:
            self.ema.update_parameters(model.unet)
        return {"loss": loss.detach()}
