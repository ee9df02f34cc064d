"""MedDiff-FT's component checks (``../shared/methods.md``, MedDiff-FT M2-M5), each a set of figures and a ``passed``
that can come out false:

- M2 mask generator: its drawn masks are binary, non-empty, one component in >= 95 %; their median area is within
  0.5-2x the real masks' median; they are novel (the best IoU of a drawn shape with any real one, both in the shape
  frame, below 0.9 for >= 50 %); the same draw again gives the same mask.
- M3 guiding mask: the painted slice equals the host outside the final guide (exactly, up to 1e-5) and every change
  lies inside the host structure.
- M4 quality filter: it keeps >= 90 % of real lesion slices it was not fitted on and rejects >= 95 % of pure-noise
  images and >= 80 % of blurred copies of those slices.
- M5 erosion: the written label's precision against the change map (pixels whose change exceeds half the pair's
  largest change) is higher eroded than as drawn (precision and recall reported for both).
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import torch
from scipy import ndimage

from bundle.data.slice_dataset import pixel_size
from bundle.errors import InputError
from bundle.networks.meddiffft_mask_generator import shape_frame
from bundle.transforms.lesion_label import EmptyLabelError, ErodeLesionLabel

if TYPE_CHECKING:  # the schedule is passed in; metrics sit below the inferers
    from bundle.inferers.guide_mask import GuideMaskSchedule

TITLES = {
    "M2": "mask generator",
    "M3": "output equals the host outside the final guide",
    "M4": "quality filter",
    "M5": "erosion raises label precision",
}


def _plain(value: object) -> torch.Tensor:
    return torch.as_tensor(value).as_subclass(torch.Tensor)


def best_iou(shape: torch.Tensor, others: Sequence[torch.Tensor]) -> float:
    """The largest IoU of a binary mask with any of ``others`` (all the same shape)."""
    shape = shape > 0.5
    return max(float((shape & (o > 0.5)).sum()) / max(1.0, float((shape | (o > 0.5)).sum())) for o in others)


def mask_generator_check(sampler, real_masks: Sequence[torch.Tensor], samples: int) -> dict[str, object]:
    """M2 on ``samples`` draws of a :class:`~bundle.networks.meddiffft_mask_generator.HierarchicalMaskSampler` against
    the real masks ``(H, W)`` its shape model and geometry were fitted on (all on one pixel size)."""
    masks, refused = [], 0
    for index in range(samples):
        try:
            masks.append(_plain(sampler.draw(index).mask)[0])
        except InputError:
            refused += 1
    if not masks:
        return {"drawn": 0, "refused": refused, "passed": False}
    binary = all(bool(((m == 0) | (m == 1)).all()) for m in masks)
    components = [ndimage.label(m.numpy() > 0.5)[1] for m in masks]
    one = sum(c == 1 for c in components) / len(masks)
    real_median = statistics.median(float(m.sum()) for m in real_masks)
    area_ratio = statistics.median(float(m.sum()) for m in masks) / real_median
    real_frames = [shape_frame(m)[0] for m in real_masks]
    ious = [best_iou(shape_frame(m)[0], real_frames) if m.any() else 1.0 for m in masks]
    novel = sum(i < 0.9 for i in ious) / len(masks)
    repeatable = bool(torch.equal(_plain(sampler.draw(0).mask)[0], masks[0]))
    return {
        "drawn": len(masks),
        "refused": refused,
        "binary": binary,
        "one_component": round(one, 3),
        "median_area_ratio": round(area_ratio, 3),
        "median_best_iou": round(statistics.median(ious), 3),
        "novel": round(novel, 3),
        "repeatable": repeatable,
        "passed": binary and one >= 0.95 and 0.5 <= area_ratio <= 2.0 and novel >= 0.5 and repeatable,
    }


def pair_items(pairs, request: Mapping) -> list[dict]:
    """A pair request's slice items (:class:`bundle.engines.meddiffft_pairs.LesionPairs`), none when its lesion was
    not drawn."""
    try:
        return pairs(request)
    except InputError:
        return []


def guide_check(
    items: Sequence[Mapping], painted: Sequence[torch.Tensor], schedule: GuideMaskSchedule, steps: int
) -> dict[str, object]:
    """M3 on painted pair items (``image``, ``lesion_mask``, ``host_mask``, each ``(1, H, W)``)."""
    outside, inside, in_host = [], [], []
    for item, result in zip(items, painted, strict=True):
        image, lesion, host = (_plain(item[k]).float()[None] for k in ("image", "lesion_mask", "host_mask"))
        final = schedule(lesion, host, float(pixel_size(item["image"]).mean()), steps)[-1][0, 0] > 0.5
        change = (_plain(result).float() - image[0])[0].abs()
        outside.append(float(change[~final].max()) if (~final).any() else 0.0)
        inside.append(float(change[final].mean()))
        in_host.append(bool(((change > 1e-5) <= (host[0, 0] > 0.5)).all()))
    return {
        "pairs": len(items),
        "max_change_outside_final_guide": max(outside),
        "mean_change_inside_final_guide": round(statistics.mean(inside), 4),
        "changes_inside_host": round(sum(in_host) / len(in_host), 3),
        "passed": max(outside) <= 1e-5 and all(in_host) and min(inside) > 0,
    }


def erosion_check(pairs: Sequence[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]) -> dict[str, object]:
    """M5 on ``(change, drawn, eroded)`` per pair (arrays of one shape: the absolute change the synthesis made to the
    host, the label as drawn and the label as written after erosion): precision and recall of both labels against
    the change map (pixels whose change exceeds half the pair's largest change); an eroded label that is empty is
    counted (``dropped``) and left out of both."""
    drawn_p, drawn_r, eroded_p, eroded_r, dropped, unchanged = [], [], [], [], 0, 0
    for change, drawn, eroded in pairs:
        change = torch.as_tensor(change).float()
        changed = change > 0.5 * float(change.max())
        drawn, eroded = torch.as_tensor(drawn) > 0.5, torch.as_tensor(eroded) > 0.5
        if not eroded.any():
            dropped += 1
            continue
        unchanged += int(torch.equal(drawn, eroded))
        for label, precisions, recalls in ((drawn, drawn_p, drawn_r), (eroded, eroded_p, eroded_r)):
            hit = float((label & changed).sum())
            precisions.append(hit / max(1.0, float(label.sum())))
            recalls.append(hit / max(1.0, float(changed.sum())))
    if not eroded_p:
        return {"pairs": len(pairs), "dropped": dropped, "passed": False}
    figures = {
        "pairs": len(eroded_p),
        "dropped": dropped,
        "labels_erosion_left_unchanged": unchanged,
        "precision_drawn": round(statistics.mean(drawn_p), 3),
        "precision_eroded": round(statistics.mean(eroded_p), 3),
        "recall_drawn": round(statistics.mean(drawn_r), 3),
        "recall_eroded": round(statistics.mean(eroded_r), 3),
    }
    return {**figures, "passed": figures["precision_eroded"] > figures["precision_drawn"]}


def in_plane_erosion(label: torch.Tensor, spacing_mm: Sequence[float], erosion_mm: float) -> torch.Tensor:
    """A label volume ``(X, Y, Z)`` eroded by ``erosion_mm`` within its slices only (the axis of the largest spacing
    is the through-plane one and is left alone: a one-slice lesion would vanish); an empty result stays empty."""
    spacing = [float(s) for s in spacing_mm]
    spacing[spacing.index(max(spacing))] = 1e6  # far below one voxel across slices
    try:
        return ErodeLesionLabel(erosion_mm, spacing)(torch.as_tensor(label).float()[None])[0]
    except EmptyLabelError:
        return torch.zeros_like(torch.as_tensor(label).float())


def filter_check(check, images: Sequence[torch.Tensor], seed: int = 0, blur_sigma: float = 2.0) -> dict[str, object]:
    """M4 of a :class:`bundle.metrics.quality_filter.QualityCheck` on real lesion slice ``images`` ``(1, H, W)`` in
    [0, 1] it was not fitted on, uniform-noise images of the same size and copies blurred by a Gaussian of
    ``blur_sigma`` pixels; each slice judged alone as the filter's lesion class."""
    from monai.transforms import GaussianSmooth

    label = "lesion" if "lesion" in check.filter.classes else check.filter.classes[0]
    generator = torch.Generator().manual_seed(seed)
    real = [_plain(i).float() for i in images]
    sets = {
        "real": real,
        "noise": [torch.rand(i.shape, generator=generator) for i in real],
        "blurred": [_plain(GaussianSmooth(blur_sigma)(i)).float() for i in real],
    }
    passed = {}
    for name, slices in sets.items():
        features = check.features(slices)
        passed[name] = [bool(check.filter.judge(label, features[i : i + 1])["passed"]) for i in range(len(slices))]
    kept = sum(passed["real"]) / len(real)
    noise = 1 - sum(passed["noise"]) / len(real)
    blurred = 1 - sum(passed["blurred"]) / len(real)
    return {
        "slices": len(real),
        "real_kept": round(kept, 3),
        "noise_rejected": round(noise, 3),
        "blurred_rejected": round(blurred, 3),
        "threshold": round(check.filter.thresholds[label], 4),
        "passed": kept >= 0.9 and noise >= 0.95 and blurred >= 0.8,
    }


def describe(label: str, figures: Mapping[str, object]) -> str:
    """One report line: ``**M2** mask generator: **passed** (figures)``."""
    values = ", ".join(f"{k} {v}" for k, v in figures.items() if k != "passed")
    outcome = "passed" if figures.get("passed") else "failed"
    return f"**{label}** {TITLES.get(label.split()[0], '')}: **{outcome}** ({values})"
