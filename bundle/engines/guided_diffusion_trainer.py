"""MONAI trainers and evaluators for the two training stages.

Stage 1 (:class:`SemanticControllerTrainer`) fits the MSC to ``||e_MSC - e_r||^2``; stage 2
(:class:`GuidedDiffusionTrainer`) fits the guided UNet with the soft-mask-weighted noise loss and the paper's
condition dropout. The evaluators measure e_MSC's cosine similarity to e_r, and the sampler's in-mask quality.
Batches are the dictionaries of :class:`bundle.transforms.case_to_slices.SliceDataset` collated by the data loader.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from monai.engines import SupervisedEvaluator, SupervisedTrainer
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from bundle.networks.medical_clip import MedicalClipEncoder
from bundle.inferers.soft_mask_inpainting import SoftMaskInpaintingInferer
from bundle.utils.precision import autocast, autocast_dtype
from bundle.networks.speed_options import optimise_unet
from bundle.networks.semantic_controller import alignment_loss
from bundle.networks.medsoft_diffusion import MedSoftDiffusion


def unwrap(network: torch.nn.Module) -> torch.nn.Module:
    """The module inside a ``DistributedDataParallel`` wrapper (or the module itself)."""
    return network.module if isinstance(network, torch.nn.parallel.DistributedDataParallel) else network


def _training_setting(network: torch.nn.Module) -> str:
    unet = getattr(unwrap(network), "unet", None)
    if unet is None or not hasattr(unet, "trainable"):
        return ""
    return f" (trainable {unet.trainable!r} with msc_scale {unet.scale:g})"


def trainable_parameters(network: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The parameters the optimiser gets: those that require a gradient; none is refused with a clear error."""
    parameters = [p for p in network.parameters() if p.requires_grad]
    if not parameters:
        raise ValueError(f"nothing to train: no parameter of the network is trainable{_training_setting(network)}. "
                         "With msc_scale 0 the MSC adapter takes no part; the 'without MSC' ablation trains "
                         "LoRA on the text cross-attention instead (configs/ablation_no_msc.json)")
    return parameters


def require_gradients(network: torch.nn.Module) -> None:
    """After a backward pass: every trainable parameter must have received a gradient (taken part in the loss).

    A configuration in which none does would train nothing; one in which some do not leaves them untrained and
    stops DistributedDataParallel at the next step. Both are refused with the names of the parameters.
    """
    trainable = [(name, p) for name, p in unwrap(network).named_parameters() if p.requires_grad]
    if not trainable:
        trainable_parameters(network)  # raises
    unused = [name for name, p in trainable if p.grad is None]
    if not unused:
        return
    what = "no trainable parameter takes part" if len(unused) == len(trainable) else \
        f"{len(unused)} of {len(trainable)} trainable parameters take no part"
    raise ValueError(f"{what} in the loss{_training_setting(network)}, e.g. {', '.join(unused[:3])}; they would "
                     "not train (and stop DistributedDataParallel): freeze them or choose another 'trainable'")


def _to(batch: Mapping, device: torch.device) -> dict[str, object]:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


@torch.no_grad()
def clip_features(clip_encoder: MedicalClipEncoder, batch: Mapping) -> tuple[torch.Tensor, ...]:
    """The frozen features of a slice batch: e_t (text), e_v (masked image), e_r (original image)."""
    return (clip_encoder.encode_text(list(batch["text"])), clip_encoder.encode_image(batch["masked_image"]),
            clip_encoder.encode_image(batch["image"]))


def _controller_outputs(engine, clip_encoder: MedicalClipEncoder, batchdata: Mapping
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """The e_MSC of the engine's controller and the target e_r for a slice batch."""
    batch = _to(batchdata, engine.state.device)
    text_feature, masked_feature, original_feature = clip_features(clip_encoder, batch)
    return engine.network(text_feature, masked_feature), original_feature


class SemanticControllerTrainer(SupervisedTrainer):
    """Stage 1: the MSC (``network``) learns to predict e_r from ``[e_t ; e_v]`` of the frozen ``clip_encoder``."""

    def __init__(self, clip_encoder: MedicalClipEncoder, **kwargs) -> None:
        kwargs.setdefault("loss_function", alignment_loss)
        super().__init__(decollate=False, **kwargs)
        self.clip_encoder = clip_encoder

    def _iteration(self, engine: SemanticControllerTrainer, batchdata: Mapping) -> dict[str, torch.Tensor]:
        engine.network.train()
        engine.optimizer.zero_grad(set_to_none=True)
        semantic_feature, original_feature = _controller_outputs(engine, self.clip_encoder, batchdata)
        loss = engine.loss_function(semantic_feature, original_feature)
        loss.backward()
        engine.optimizer.step()
        return {"loss": loss.detach(), "pred": semantic_feature.detach(), "label": original_feature}


class SemanticControllerEvaluator(SupervisedEvaluator):
    """Stage 1 validation: e_MSC and e_r of held-out slices, for :class:`bundle.metrics.image_quality.MeanCosineSimilarity`."""

    def __init__(self, clip_encoder: MedicalClipEncoder, **kwargs) -> None:
        super().__init__(decollate=False, **kwargs)
        self.clip_encoder = clip_encoder

    def _iteration(self, engine: SemanticControllerEvaluator, batchdata: Mapping) -> dict[str, torch.Tensor]:
        engine.network.eval()
        with torch.no_grad():
            semantic_feature, original_feature = _controller_outputs(engine, self.clip_encoder, batchdata)
        return {"pred": semantic_feature, "label": original_feature}


def condition_dropout(batch_size: int, text_only: float = 0.05, msc_only: float = 0.05, both: float = 0.05,
                      generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
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

    def __init__(self, noise_scheduler, condition_dropout_probabilities: Sequence[float] = (0.05, 0.05, 0.05),
                 ema_decay: float | None = None, precision: str | None = "fp32",
                 gradient_checkpointing: bool = False, **kwargs) -> None:
        super().__init__(decollate=False, **kwargs)
        self.noise_scheduler = noise_scheduler
        self.condition_dropout_probabilities = tuple(condition_dropout_probabilities)
        self.precision = precision
        device = self.state.device or torch.device("cpu")
        self.autocast_dtype = autocast_dtype(precision, device)
        self.grad_scaler = torch.amp.GradScaler(device.type) \
            if self.autocast_dtype == torch.float16 else None
        model = unwrap(self.network)
        self._gradients_checked = False
        if gradient_checkpointing:
            optimise_unet(model, gradient_checkpointing=True)
        self.ema = None if ema_decay is None else AveragedModel(
            model.unet, multi_avg_fn=get_ema_multi_avg_fn(ema_decay), use_buffers=True)

    def _iteration(self, engine: GuidedDiffusionTrainer, batchdata: Mapping) -> dict[str, torch.Tensor]:
        batch = _to(batchdata, engine.state.device)
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


class SynthesisEvaluator(SupervisedEvaluator):
    """Samples each validation slice with its own text and returns ``pred`` (synthesised), ``label`` (the
    original x0), ``mask`` (M_b) and ``masked`` (I_m) for the in-mask metrics and the sample grid.

    ``inferer`` is a :class:`SoftMaskInpaintingInferer`; item ``i`` of the epoch's data gets seed ``seed + i``.
    """

    def __init__(self, inferer: SoftMaskInpaintingInferer, **kwargs) -> None:
        super().__init__(inferer=inferer, decollate=False, **kwargs)

    def _iteration(self, engine: SynthesisEvaluator, batchdata: Mapping) -> dict[str, torch.Tensor]:
        batch = _to(batchdata, engine.state.device)
        model = unwrap(engine.network).eval()
        size = batch["image"].shape[0]
        first = (engine.state.iteration - 1) * size
        seeds = [engine.inferer.seed + first + i for i in range(size)]
        prediction = engine.inferer(batch["image"], model, batch["soft_mask"], list(batch["text"]), seeds)
        return {"pred": prediction, "label": batch["image"], "mask": batch["soft_mask"],
                "masked": batch["masked_image"]}
