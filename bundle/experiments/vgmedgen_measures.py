"""The measures of VG-MedGen's evidence that are not a network: numeric attribute targets for the probes, prompt
pairs for text control and how a generated crop answers them, the style swap's intensity measure, the classifier arms'
training lists and the verdict rule. Each is a small function on plain values, tested on cases whose answer is
known (``tests/experiments/test_vgmedgen_measures.py``)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import torch

from bundle.experiments.runner import Comparison

ANATOMY_ATTRIBUTES = ("size_mm", "height_loss", "position_ap", "position_si")
STYLE_ATTRIBUTES = ("signal", "signed_contrast")
POSITION_CODES = {
    "anterior": 1.0,
    "central": 0.0,
    "posterior": -1.0,
    "superior": 1.0,
    "mid": 0.0,
    "inferior": -1.0,
}
SIGNAL_CODES = {"hyperintense": 1.0, "hypointense": -1.0}


def attribute_targets(attributes: Mapping | None) -> dict[str, float]:
    """The probes' numeric targets from a case's ground-truth ``attributes`` (the phantom's): anatomy = lesion size
    (mm, 0 without a lesion), height loss (%), position front-back and up-down (+1 / 0 / -1); style = signal (+1
    hyper, -1 hypo, 0 none or iso) and the signed contrast (signal x contrast)."""
    attributes = attributes or {}
    lesion = attributes.get("lesion_class") not in (None, "normal")
    signal = SIGNAL_CODES.get(str(attributes.get("signal")), 0.0) if lesion else 0.0
    return {
        "size_mm": float(attributes.get("size_mm", 0.0)) if lesion else 0.0,
        "height_loss": float(attributes.get("height_loss_percent", 0.0)),
        "position_ap": POSITION_CODES.get(str(attributes.get("position_ap")), 0.0) if lesion else 0.0,
        "position_si": POSITION_CODES.get(str(attributes.get("position_si")), 0.0) if lesion else 0.0,
        "signal": signal,
        "signed_contrast": signal * float(attributes.get("contrast", 0.0)) if lesion else 0.0,
    }


# --------------------------------------------------------------------------------------------- text control
_SIGNAL = re.compile(r"\b(hyper|hypo|iso)intense\b")
_SIZE = re.compile(r"\b\d+(?:\.\d+)? mm\b")


def with_signal(caption: str, signal: str) -> str:
    """``caption`` with its lesion signal word(s) replaced by ``signal`` ("hyperintense", "hypointense")."""
    if not _SIGNAL.search(caption):
        raise ValueError(f"no signal word to replace in {caption!r}")
    return _SIGNAL.sub(signal, caption)


def with_size(caption: str, size_mm: int) -> str:
    """``caption`` with its first lesion size ("<n> mm") replaced by ``size_mm``."""
    if not _SIZE.search(caption):
        raise ValueError(f"no size to replace in {caption!r}")
    return _SIZE.sub(f"{int(size_mm)} mm", caption, count=1)


def control_pairs(
    captions: Sequence[str], count: int, small_mm: int = 6, large_mm: int = 24
) -> dict[str, list[tuple[str, str]]]:
    """Prompt pairs ``(low, high)`` that differ in one phrase, from lesion ``captions`` (those with a signal word and
    a size; up to ``count`` per kind): ``signal`` (hypo- vs hyperintense: the second should be brighter) and
    ``size`` (``small_mm`` vs ``large_mm``: the second's lesion should be larger)."""
    usable = [c for c in captions if _SIGNAL.search(c) and _SIZE.search(c)][:count]
    return {
        "signal": [(with_signal(c, "hypointense"), with_signal(c, "hyperintense")) for c in usable],
        "size": [(with_size(c, small_mm), with_size(c, large_mm)) for c in usable],
    }


def region_of(segmentation: torch.Tensor) -> torch.Tensor:
    """The generated vertebra (head classes >= 1) of a ``(S, S)`` segmentation; the whole crop when it is empty."""
    region = segmentation >= 1
    return region if bool(region.any()) else torch.ones_like(region)


def signal_measure(image: torch.Tensor, segmentation: torch.Tensor) -> float:
    """The mean intensity of a ``(1, S, S)`` crop inside its vertebra (:func:`region_of`)."""
    return float(image.reshape(segmentation.shape)[region_of(segmentation)].mean())


def lesion_area_measure(image: torch.Tensor, segmentation: torch.Tensor, deviation: float = 0.15) -> float:
    """The share of the vertebra's pixels (:func:`region_of`) whose intensity differs from the vertebra's median by
    more than ``deviation`` (data range 1): the lesion-like area, whatever its signal."""
    values = image.reshape(segmentation.shape)[region_of(segmentation)]
    return float(((values - values.median()).abs() > deviation).float().mean())


def moved_fraction(low: Sequence[float], high: Sequence[float]) -> float:
    """The share of pairs whose ``high`` member measures strictly above its ``low`` member (a tie is a miss)."""
    if len(low) != len(high) or not low:
        raise ValueError(f"need paired, non-empty measures, got {len(low)} and {len(high)}")
    return sum(h > lo for lo, h in zip(low, high, strict=True)) / len(low)


# ------------------------------------------------------------------------------------------------ style swap
def toward_donor(own: Sequence[float], swapped: Sequence[float], donor: Sequence[float], margin: float = 0.02) -> float:
    """Of the swaps whose own and donor intensities differ by more than ``margin``, the share whose swapped image's
    intensity is closer to the donor's than its own reconstruction's is (NaN when no pair differs enough)."""
    moved = [abs(s - d) < abs(o - d) for o, s, d in zip(own, swapped, donor, strict=True) if abs(o - d) > margin]
    return sum(moved) / len(moved) if moved else float("nan")


# --------------------------------------------------------------------------------------------- classifier arms
def fill_to_majority(real: Sequence[Mapping], generated: Sequence[Mapping]) -> list[dict]:
    """Real training entries plus generated ones of each class below the largest real class, in their order, until
    that class reaches the largest class's count (fewer when not enough were generated)."""
    counts: dict[str, int] = {}
    for entry in real:
        counts[str(entry["label"])] = counts.get(str(entry["label"]), 0) + 1
    target = max(counts.values()) if counts else 0
    added = []
    for entry in generated:
        label = str(entry["label"])
        if counts.get(label, 0) < target:
            counts[label] = counts.get(label, 0) + 1
            added.append(dict(entry))
    return [*[dict(e) for e in real], *added]


def arm_training(arm: str, real: Sequence[Mapping], generated: Sequence[Mapping] | None) -> list[dict]:
    """An arm's training entries: ``real`` and ``oversampling`` the real list (oversampling differs in how the
    classifier draws it), ``synthetic_only`` the generated crops alone, any other arm (a generator's) the real list
    filled to the majority class with its generated crops (:func:`fill_to_majority`)."""
    if arm in ("real", "oversampling"):
        return [dict(e) for e in real]
    if generated is None:
        raise ValueError(f"arm {arm!r} needs generated crops")
    if arm == "synthetic_only":
        return [dict(e) for e in generated]
    return fill_to_majority(real, generated)


def class_counts(entries: Sequence[Mapping]) -> dict[str, dict[str, int]]:
    """``{label: {"real": n, "synthetic": m}}``."""
    counts: dict[str, dict[str, int]] = {}
    for entry in entries:
        kind = "synthetic" if entry.get("synthetic") else "real"
        counts.setdefault(str(entry["label"]), {"real": 0, "synthetic": 0})[kind] += 1
    return counts


def predicted_classes(confusion: Sequence[Sequence[int]]) -> int:
    """How many classes a classifier predicted at all, from its confusion matrix (rows true, columns predicted)."""
    return sum(1 for column in zip(*confusion, strict=True) if sum(column) > 0) if confusion else 0


# --------------------------------------------------------------------------------------------------- verdicts
def verdict(
    claim: str, a: tuple[float, float], b: tuple[float, float], higher: bool = True, seeds: int = 2
) -> tuple[bool, str]:
    """The claim "A better than B" on ``(mean, std)`` over seeds (``higher``: larger is better): holds when A is on
    the better side; *clearly* when the difference exceeds the larger standard deviation, else *within the seed
    spread*; with fewer than 2 ``seeds`` (the smaller count of the two) there is no spread to judge by, and the line
    says so. Returns ``(holds, line)``; the line is printed whatever the outcome."""
    if higher:
        comparison = Comparison.of(a, b)
    else:
        comparison = Comparison.of((-a[0], a[1]), (-b[0], b[1]))
    if comparison.difference != comparison.difference:
        return False, f"- {claim}: **not measured** (a value is undefined)."
    holds = comparison.above
    how = (
        "one seed: no spread to judge by"
        if seeds < 2
        else "clearly"
        if comparison.clearly_above
        else "within the seed spread"
    )
    sign = "+" if a[0] - b[0] >= 0 else "-"
    return holds, (
        f"- {claim}: **{'yes' if holds else 'no'}**{f' ({how})' if holds else ''}: {a[0]:.3f} ± {a[1]:.3f} vs "
        f"{b[0]:.3f} ± {b[1]:.3f} (difference {sign}{abs(a[0] - b[0]):.3f}, larger spread {comparison.spread:.3f})."
    )


def threshold_verdict(claim: str, value: tuple[float, float], threshold: float) -> tuple[bool, str]:
    """The claim "mean >= threshold" on ``(mean, std)``, with the spread printed."""
    mean, std = value
    if mean != mean:
        return False, f"- {claim}: **not measured**."
    holds = mean >= threshold
    return holds, f"- {claim}: **{'yes' if holds else 'no'}**: {mean:.3f} ± {std:.3f} against {threshold:.2f}."
