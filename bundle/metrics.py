"""Image-quality measures inside the soft mask, as ignite metrics for MONAI evaluators.

MONAI's PSNR / SSIM metrics have no mask argument, so the in-mask versions are written here: PSNR over the
pixels where the mask exceeds ``threshold``, and MONAI's SSIM on the mask's bounding box. Inputs are the
evaluator's ``(pred, label, mask)`` batches, images in [0, 1].
"""

from __future__ import annotations

import torch
from ignite.metrics import Metric
from monai.metrics.regression import SSIMMetric


def mask_box(mask: torch.Tensor, threshold: float = 0.5, min_side: int = 7) -> tuple[slice, slice]:
    """The bounding box of ``mask > threshold`` for a ``(1, H, W)`` mask, grown to at least ``min_side``."""
    rows, cols = torch.nonzero(mask[0] > threshold, as_tuple=True)
    if rows.numel() == 0:
        raise ValueError("the mask is empty; no in-mask measure is defined")
    box = []
    for low, high, size in ((rows.min(), rows.max(), mask.shape[-2]), (cols.min(), cols.max(), mask.shape[-1])):
        low, high = int(low), int(high) + 1
        grow = max(0, min_side - (high - low))
        low = max(0, low - (grow + 1) // 2)
        high = min(size, max(high + grow // 2, low + min_side))
        box.append(slice(low, high))
    return box[0], box[1]


def in_mask_psnr(prediction: torch.Tensor, reference: torch.Tensor, mask: torch.Tensor,
                 threshold: float = 0.5) -> float:
    """PSNR (dB, data range 1) over the pixels of one ``(1, H, W)`` image where ``mask > threshold``."""
    inside = mask > threshold
    if not inside.any():
        raise ValueError("the mask is empty; no in-mask measure is defined")
    mse = (prediction - reference)[inside].pow(2).mean().clamp_min(1e-10)
    return float(10.0 * torch.log10(1.0 / mse))


def in_mask_ssim(prediction: torch.Tensor, reference: torch.Tensor, mask: torch.Tensor,
                 threshold: float = 0.5) -> float:
    """MONAI's SSIM (data range 1, 7 px window) on the bounding box of ``mask > threshold``."""
    rows, cols = mask_box(mask, threshold)
    ssim = SSIMMetric(spatial_dims=2, data_range=1.0, win_size=7)
    return float(ssim(prediction[None, :, rows, cols].float(), reference[None, :, rows, cols].float()).mean())


class _InMaskMean(Metric):
    """The mean over images of a per-image in-mask measure; ``update`` takes ``(pred, label, mask)``."""

    measure = staticmethod(in_mask_psnr)

    def reset(self) -> None:
        self._values: list[float] = []

    def update(self, output) -> None:
        predictions, references, masks = output
        for prediction, reference, mask in zip(predictions, references, masks):
            self._values.append(self.measure(prediction.detach().cpu(), reference.detach().cpu(),
                                             mask.detach().cpu()))

    def compute(self) -> float:
        if not self._values:
            raise RuntimeError(f"{type(self).__name__} has no images to measure")
        return sum(self._values) / len(self._values)


class InMaskPSNR(_InMaskMean):
    """Mean in-mask PSNR (dB)."""

    measure = staticmethod(in_mask_psnr)


class InMaskSSIM(_InMaskMean):
    """Mean in-mask SSIM."""

    measure = staticmethod(in_mask_ssim)


class MeanCosineSimilarity(Metric):
    """Mean cosine similarity of ``(pred, target)`` feature rows: how well e_MSC matches e_r in stage 1."""

    def reset(self) -> None:
        self._sum, self._count = 0.0, 0

    def update(self, output) -> None:
        prediction, target = output
        similarity = torch.nn.functional.cosine_similarity(prediction.detach(), target.detach(), dim=-1)
        self._sum += float(similarity.sum())
        self._count += similarity.numel()

    def compute(self) -> float:
        if self._count == 0:
            raise RuntimeError("MeanCosineSimilarity has no features to measure")
        return self._sum / self._count
