"""Stage 1: the trainer and evaluator of the Medical Semantic Controller (MSC), which learns to predict the
original image's CLIP feature e_r from the text's e_t and the masked image's e_v."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from monai.engines import SupervisedEvaluator, SupervisedTrainer

from bundle.engines.utils import batch_to_device
from bundle.losses.alignment import alignment_loss
from bundle.networks.medical_clip import MedicalClipEncoder


@torch.no_grad()
def clip_features(clip_encoder: MedicalClipEncoder, batch: Mapping) -> tuple[torch.Tensor, ...]:
    """The frozen features of a slice batch: e_t (text), e_v (masked image), e_r (original image)."""
    return (
        clip_encoder.encode_text(list(batch["text"])),
        clip_encoder.encode_image(batch["masked_image"]),
        clip_encoder.encode_image(batch["image"]),
    )


def _controller_outputs(
    engine, clip_encoder: MedicalClipEncoder, batchdata: Mapping
) -> tuple[torch.Tensor, torch.Tensor]:
    """The e_MSC of the engine's controller and the target e_r for a slice batch."""
    batch = batch_to_device(batchdata, engine.state.device)
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
    """Stage 1 validation: e_MSC and e_r of held-out slices, for
    :class:`bundle.metrics.embedding.MeanCosineSimilarity`."""

    def __init__(self, clip_encoder: MedicalClipEncoder, **kwargs) -> None:
        super().__init__(decollate=False, **kwargs)
        self.clip_encoder = clip_encoder

    def _iteration(self, engine: SemanticControllerEvaluator, batchdata: Mapping) -> dict[str, torch.Tensor]:
        engine.network.eval()
        with torch.no_grad():
            semantic_feature, original_feature = _controller_outputs(engine, self.clip_encoder, batchdata)
        return {"pred": semantic_feature, "label": original_feature}
