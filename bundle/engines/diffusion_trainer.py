"""The noise-prediction trainer every conditioned diffusion model of the bundle shares, as a MONAI
``SupervisedTrainer``.

One iteration: the subclass turns the batch into the diffusion variable z_0 and the model's conditions
(:meth:`DiffusionTrainer.prepare`); condition dropout puts the null conditions in the items it draws, by named
groups; noise and a timestep per item are drawn and z_0 is noised by the training scheduler; the model predicts
the noise under autocast; the loss (:meth:`DiffusionTrainer.compute_loss`) goes backward, scaled for fp16 (and
divided by the number of accumulated batches); every ``gradient_accumulation_steps`` batches (and at the end of
each epoch) the gradient is clipped to ``max_grad_norm``, the optimiser steps and the exponential moving average
follows.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping

import torch
from monai.engines import SupervisedTrainer
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from bundle.engines.trainable import require_gradients
from bundle.engines.utils import batch_to_device, unwrap
from bundle.networks.conditions import (
    ConditionedDiffusionModel,
    Conditions,
    check_condition_dropout,
    draw_condition_dropout,
    drop_conditions,
)
from bundle.networks.speed_options import optimise_unet
from bundle.utils.precision import autocast, autocast_dtype


class DiffusionTrainer(SupervisedTrainer):
    """Trains ``eps_theta(z_t, t, conditions)`` against the noise added to z_0.

    Args:
        noise_scheduler: the diffusers training scheduler (its ``add_noise`` and ``num_train_timesteps``).
        condition_dropout: the rate of each way of dropping condition groups, e.g. ``{"text": 0.05, "msc": 0.05,
            "text+msc": 0.05}`` (see :func:`bundle.networks.conditions.draw_condition_dropout`); none: no dropout.
        ema_decay: keep an exponential moving average of :meth:`averaged_module` (``ema``) when given.
        precision: autocast of the model's forward pass and the loss (:mod:`bundle.utils.precision`): ``"auto"``
            (bf16 on a GPU that has it, else float32), ``"bf16"``, ``"fp16"`` (with loss scaling) or ``"fp32"``.
        gradient_checkpointing: recompute the UNet's activations in the backward pass (SD 1.5 at 512 px).
        max_grad_norm: clip the gradient of the optimiser's parameters to this total (2-)norm before each step
            (``torch.nn.utils.clip_grad_norm_``, after unscaling for fp16); none: no clipping.
        gradient_accumulation_steps: sum the gradients of this many batches (each loss divided by it) before one
            optimiser step, as one step on their union would; the last batches of an epoch step whatever their count.
        kwargs: those of ``SupervisedTrainer`` (``network`` a :class:`ConditionedDiffusionModel`, possibly wrapped in
            ``DistributedDataParallel``; ``loss_function`` as :meth:`compute_loss` calls it).
    """

    def __init__(
        self,
        noise_scheduler,
        condition_dropout: Mapping[str, float] | None = None,
        ema_decay: float | None = None,
        precision: str | None = "fp32",
        gradient_checkpointing: bool = False,
        max_grad_norm: float | None = None,
        gradient_accumulation_steps: int = 1,
        **kwargs,
    ) -> None:
        super().__init__(decollate=False, **kwargs)
        self.noise_scheduler = noise_scheduler
        if max_grad_norm is not None and not max_grad_norm > 0:
            raise ValueError(f"max_grad_norm must be positive or None, got {max_grad_norm}")
        if int(gradient_accumulation_steps) != gradient_accumulation_steps or gradient_accumulation_steps < 1:
            raise ValueError(
                f"gradient_accumulation_steps must be a whole number >= 1, got {gradient_accumulation_steps}"
            )
        self.max_grad_norm = max_grad_norm
        self.gradient_accumulation_steps = int(gradient_accumulation_steps)
        self._accumulated = 0  # batches whose gradients wait for the next optimiser step
        model = unwrap(self.network)
        if not isinstance(model, ConditionedDiffusionModel):
            raise TypeError(f"{type(model).__name__} is not a conditioned diffusion model (condition_groups etc.)")
        self.condition_dropout = dict(condition_dropout or {})
        check_condition_dropout(self.condition_dropout, model.condition_groups)
        self.precision = precision
        device = self.state.device or torch.device("cpu")
        self.autocast_dtype = autocast_dtype(precision, device)
        self.grad_scaler = torch.amp.GradScaler(device.type) if self.autocast_dtype == torch.float16 else None
        self._gradients_checked = False
        if gradient_checkpointing:
            optimise_unet(model, gradient_checkpointing=True)
        self.ema = (
            None
            if ema_decay is None
            else AveragedModel(
                self.averaged_module(model), multi_avg_fn=get_ema_multi_avg_fn(ema_decay), use_buffers=True
            )
        )

    def averaged_module(self, model: torch.nn.Module) -> torch.nn.Module:
        """The part of the model the moving average follows (what trains); the whole model by default."""
        return model

    @abstractmethod
    def prepare(self, model: torch.nn.Module, batch: Mapping) -> tuple[torch.Tensor, Conditions, dict]:
        """z_0 ``(B, C, h, w)``, the batch's conditions, and the keyword arguments :meth:`compute_loss` passes on."""

    def draw_noise(self, latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The noise ``(B, C, h, w)`` added to z_0 and a timestep per item ``(B,)``, from the global generator."""
        noise = torch.randn_like(latents)
        timesteps = torch.randint(
            0, self.noise_scheduler.config.num_train_timesteps, (len(latents),), device=latents.device
        )
        return noise, timesteps

    def optimiser_step(self, engine: DiffusionTrainer) -> None:
        """Clip the accumulated gradient to ``max_grad_norm`` (when given) and step the optimiser."""
        if self.grad_scaler is not None and self.max_grad_norm is not None:
            self.grad_scaler.unscale_(engine.optimizer)
        if self.max_grad_norm is not None:
            parameters = [p for group in engine.optimizer.param_groups for p in group["params"]]
            torch.nn.utils.clip_grad_norm_(parameters, self.max_grad_norm)
        if self.grad_scaler is None:
            engine.optimizer.step()
        else:
            self.grad_scaler.step(engine.optimizer)
            self.grad_scaler.update()

    def compute_loss(
        self, predicted: torch.Tensor, noise: torch.Tensor, loss_inputs: Mapping, timesteps: torch.Tensor
    ) -> torch.Tensor:
        """The loss of the predicted noise against the added noise: ``loss_function(predicted, noise, **loss_inputs)``
        (``loss_inputs`` from :meth:`prepare`, e.g. the soft mask; ``timesteps`` ``(B,)`` for terms on the
        estimate of z_0)."""
        return self.loss_function(predicted, noise, **loss_inputs)

    def _iteration(self, engine: DiffusionTrainer, batchdata: Mapping) -> dict[str, torch.Tensor]:
        batch = batch_to_device(batchdata, engine.state.device)
        model = unwrap(engine.network)
        latents, conditions, loss_inputs = self.prepare(model, batch)
        size = latents.shape[0]
        if self.condition_dropout:
            dropped = draw_condition_dropout(size, self.condition_dropout, model.condition_groups)
            conditions = drop_conditions(conditions, model.null_conditions(size), dropped)
        noise, timesteps = self.draw_noise(latents)
        noisy = self.noise_scheduler.add_noise(latents, noise, timesteps)
        engine.network.train()
        if self._accumulated == 0:
            engine.optimizer.zero_grad(set_to_none=True)
        with autocast(self.autocast_dtype, latents.device):
            predicted = engine.network(noisy, timesteps, conditions)
            loss = self.compute_loss(predicted, noise, loss_inputs, timesteps)
        first = not self._gradients_checked  # the first batch of this run (also after resuming)
        if first and not loss.requires_grad:  # no trainable parameter in the graph: backward would fail obscurely
            require_gradients(engine.network)
        share = loss / self.gradient_accumulation_steps
        (share if self.grad_scaler is None else self.grad_scaler.scale(share)).backward()
        if first:
            require_gradients(engine.network)
            self._gradients_checked = True
        self._accumulated += 1
        length = engine.state.epoch_length
        end_of_epoch = bool(length) and engine.state.iteration % length == 0
        if self._accumulated < self.gradient_accumulation_steps and not end_of_epoch:
            return {"loss": loss.detach()}
        self._accumulated = 0
        self.optimiser_step(engine)
        if self.ema is not None:
            self.ema.update_parameters(self.averaged_module(model))
        return {"loss": loss.detach()}
