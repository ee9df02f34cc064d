"""Stage 2 validation: sampling each validation slice with its own text, for the in-mask metrics and the sample
grid."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from monai.engines import SupervisedEvaluator

from bundle.engines.utils import batch_to_device, unwrap
from bundle.inferers.soft_mask_inpainting import SoftMaskInpaintingInferer


class SynthesisEvaluator(SupervisedEvaluator):
    """Samples each validation slice with its own text and returns ``pred`` (synthesised), ``label`` (the
    original x0), ``mask`` (M_b), ``masked`` (I_m), ``text`` (the texts, a list) and ``pixel_mm`` (``(B, 2)`` pixel
    sizes, or None from a slice cache written before they were kept) for the in-mask metrics, the text adherence
    (:class:`bundle.metrics.text_adherence.TextAdherence`) and the sample grid.

    ``inferer`` is a :class:`SoftMaskInpaintingInferer`; item ``i`` of the epoch's data gets seed ``seed + i``.
    """

    def __init__(self, inferer: SoftMaskInpaintingInferer, **kwargs) -> None:
        super().__init__(inferer=inferer, decollate=False, **kwargs)

    def _iteration(self, engine: SynthesisEvaluator, batchdata: Mapping) -> dict[str, torch.Tensor]:
        batch = batch_to_device(batchdata, engine.state.device)
        model = unwrap(engine.network).eval()
        size = batch["image"].shape[0]
        first = (engine.state.iteration - 1) * size
        seeds = [engine.inferer.seed + first + i for i in range(size)]
        prediction = engine.inferer(batch["image"], model, batch["soft_mask"], list(batch["text"]), seeds)
        return {
            "pred": prediction,
            "label": batch["image"],
            "mask": batch["soft_mask"],
            "masked": batch["masked_image"],
            "text": list(batch["text"]),
            "pixel_mm": batch.get("pixel_mm"),
        }
