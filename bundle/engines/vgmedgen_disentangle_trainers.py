"""VG-MedGen's stages V and T (:class:`bundle.engines.loss_terms_trainer.LossTermsTrainer`).

- Stage V (:class:`VisualDisentangleTrainer`): the anatomy encoder, segmentation head and style VAE on the working
  window crops and their anatomy labels, with :class:`bundle.losses.vgmedgen_visual.VisualDisentangleLoss`
  (reconstruction L1, style KL, segmentation Dice, latent regression).
- Stage V's validation (:class:`VisualSegmentationEvaluator`): the segmentation head's classes against the anatomy
  labels, for MONAI's Dice of the vertebra and of the lesion (:func:`one_class`).
- Stage T (:class:`TextDisentangleTrainer`): the text disentangler on a frozen text encoder's embedding of each
  crop's caption, aligned by cosine to the frozen stage-V features of the same crop, with the auxiliary
  reconstruction of the embedding (:class:`bundle.losses.vgmedgen_text.TextAlignmentLoss`).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from monai.engines import SupervisedEvaluator
from monai.networks.utils import one_hot

from bundle.engines.loss_terms_trainer import LossTermsTrainer
from bundle.engines.utils import batch_to_device, unwrap
from bundle.networks.medical_clip import MedicalClipEncoder
from bundle.networks.vgmedgen_text import TextDisentangler
from bundle.networks.vgmedgen_visual import VisualDisentangler


def _plain(tensor: torch.Tensor) -> torch.Tensor:
    """A collated MetaTensor as a plain tensor (the networks need no metadata)."""
    return torch.as_tensor(tensor).as_subclass(torch.Tensor)


class VisualDisentangleTrainer(LossTermsTrainer):
    """Stage V. Batches: ``"image"`` ``(B, 1, S, S)`` in [0, 1] and ``"anatomy_labels"`` ``(B, 1, S, S)`` (0
    background, 1 vertebra, 2 lesion), as :func:`bundle.transforms.vgmedgen_crops.vgmedgen_crop_transform`'s crops
    collate; ``network`` a :class:`VisualDisentangler`, ``loss_function`` a ``VisualDisentangleLoss``."""

    def loss_terms(self, model: VisualDisentangler, batch: Mapping) -> dict[str, torch.Tensor]:
        image = _plain(batch["image"])
        return self.loss_function(model(image), image, _plain(batch["anatomy_labels"]))


class VisualSegmentationEvaluator(SupervisedEvaluator):
    """Stage V's validation on crops as :class:`VisualDisentangleTrainer` takes them: the segmentation head's class of
    each pixel (eval mode, so the anatomy is the deterministic argmax) under ``pred`` and the anatomy labels under
    ``label``, both one-hot ``(B, K, S, S)``; ``kwargs`` those of ``SupervisedEvaluator`` (``network`` a
    :class:`VisualDisentangler`)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(decollate=False, **kwargs)

    def _iteration(self, engine: VisualSegmentationEvaluator, batchdata: Mapping) -> dict[str, torch.Tensor]:
        batch = batch_to_device(batchdata, engine.state.device)
        model: VisualDisentangler = unwrap(engine.network).eval()
        with torch.no_grad():
            logits = model.segmentation(model.anatomy(_plain(batch["image"])))
        classes = logits.shape[1]
        return {
            "pred": one_hot(logits.argmax(dim=1, keepdim=True), classes),
            "label": one_hot(_plain(batch["anatomy_labels"]).round().long(), classes),
        }


def one_class(output: Mapping[str, torch.Tensor], index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The background and class ``index`` of :class:`VisualSegmentationEvaluator`'s output, for MONAI's ``MeanDice``
    with ``include_background=False``: the Dice of that class alone (1 vertebra, 2 lesion)."""
    return output["pred"][:, [0, index]], output["label"][:, [0, index]]


class TextDisentangleTrainer(LossTermsTrainer):
    """Stage T. Batches: ``"image"`` ``(B, 1, S, S)`` and ``"text"`` (the captions); ``network`` a
    :class:`TextDisentangler` on ``text_encoder.encode_text``'s width, ``loss_function`` a ``TextAlignmentLoss``.

    Args:
        text_encoder: the frozen text encoder stage G will use (its pooled embedding ``(B, E)``).
        visual: the trained stage-V :class:`VisualDisentangler` (frozen: its targets get no gradient).
        kwargs: those of ``SupervisedTrainer``.
    """

    def __init__(self, text_encoder: MedicalClipEncoder, visual: VisualDisentangler, **kwargs) -> None:
        super().__init__(**kwargs)
        self.text_encoder = text_encoder
        self.visual = visual.eval().requires_grad_(False)
        model: TextDisentangler = unwrap(self.network)
        if model.settings["input_dim"] != text_encoder.embed_dim:
            raise ValueError(
                f"the text disentangler takes {model.settings['input_dim']}-wide embeddings, the text encoder makes "
                f"{text_encoder.embed_dim}"
            )

    def loss_terms(self, model: TextDisentangler, batch: Mapping) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            embedding = self.text_encoder.encode_text(list(batch["text"]))
        anatomy, style = self.visual.features(_plain(batch["image"]))
        return self.loss_function(*model(embedding), anatomy, style, embedding)
