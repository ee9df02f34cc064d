"""A 2-D lesion segmenter's test figures: Dice and HD95 on the slices that hold a lesion, false positives on normal
slices."""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence

import torch
from monai.metrics import compute_hausdorff_distance


def slice_dice(prediction: torch.Tensor, target: torch.Tensor) -> float:
    """Dice of two binary masks ``(H, W)``; 0 when one is empty and the other is not, 1 when both are empty."""
    prediction, target = prediction.bool(), target.bool()
    total = int(prediction.sum()) + int(target.sum())
    return 1.0 if total == 0 else 2.0 * int((prediction & target).sum()) / total


def segmentation_figures(
    predictions: Sequence[torch.Tensor],
    targets: Sequence[torch.Tensor],
    normal: Sequence[bool],
    pixel_mm: float,
) -> dict[str, float | int]:
    """Figures of binary predictions and targets ``(H, W)`` per slice; ``normal[i]``: slice ``i`` is from a normal case.

    Returns:
        ``dice``: mean Dice over the slices whose target holds a lesion (an empty prediction counts 0);
        ``hd95_mm``: the mean 95th-percentile Hausdorff distance (mm, square pixels of ``pixel_mm``) over those slices
        where the prediction is not empty (NaN when there is none); ``detected``: the share of those slices with a
        non-empty prediction; ``fp_rate``: the share of normal slices with any predicted pixel; the slice counts.
    """
    dice, hd95, found, false_positive = [], [], 0, 0
    for prediction, target, is_normal in zip(predictions, targets, normal, strict=True):
        prediction, target = prediction.bool(), target.bool()
        if is_normal:
            false_positive += int(prediction.any())
        if not target.any():
            continue
        dice.append(slice_dice(prediction, target))
        if prediction.any():
            found += 1
            pair = [torch.stack([~m, m])[None].float() for m in (prediction, target)]
            hd95.append(float(compute_hausdorff_distance(*pair, include_background=False, percentile=95)) * pixel_mm)
    normal_count = sum(bool(n) for n in normal)
    return {
        "dice": sum(dice) / len(dice) if dice else math.nan,
        "hd95_mm": sum(hd95) / len(hd95) if hd95 else math.nan,
        "detected": found / len(dice) if dice else math.nan,
        "fp_rate": false_positive / normal_count if normal_count else math.nan,
        "lesion_slices": len(dice),
        "normal_slices": normal_count,
    }


@torch.no_grad()
def evaluate_segmenter(
    network: torch.nn.Module,
    dataset: Sequence[dict],
    normal_cases: Collection[str],
    pixel_mm: float,
    batch_size: int = 16,
) -> dict[str, float | int]:
    """:func:`segmentation_figures` of ``network`` (2 output channels, argmax) on a
    :class:`bundle.data.segmentation_slices.SegmentationSlices`; ``normal_cases``: the ids of the normal cases."""
    network.eval()
    device = next(network.parameters()).device
    predictions, targets, normal = [], [], []
    for start in range(0, len(dataset), batch_size):
        items = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        images = torch.stack([torch.as_tensor(item["image"]).as_subclass(torch.Tensor) for item in items])
        predictions += list(network(images.to(device)).argmax(dim=1).cpu() == 1)
        targets += [torch.as_tensor(item["label"]).as_subclass(torch.Tensor)[0] > 0.5 for item in items]
        normal += [str(item["case_id"]) in normal_cases for item in items]
    return segmentation_figures(predictions, targets, normal, pixel_mm)
