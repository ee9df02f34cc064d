"""Warnings on a synthesised case a person should look at before using it: the change inside the mask is
negligible (per slice and per case), the change leaks outside the soft mask, the lesion goes against its text, or
the quality filter rejected the case.

Everything is measured on the model grid, where the job has both the input slice (``item["image"]``, intensities
scaled to [0, 1], so a change is a fraction of the input's intensity range) and the prediction:

* **in-mask change of a slice**: the 99th percentile of ``|prediction - image|`` where ``soft_mask >
  vertebra_level`` (the vertebra or box); slices without such a pixel are not judged.
* **negligible change**: the case's largest in-mask change is below ``min_change`` (code ``negligible_change``);
  more than ``max_negligible_slice_share`` of the judged slices are below ``min_change`` (``negligible_slices``).
* **change outside the mask**: the largest ``|prediction - image|`` where ``soft_mask < outside_mask_level``
  (beyond the soft mask's blur) above ``max_outside_change`` (``change_outside_mask``).
* **against the text**: the direction verdict of :func:`bundle.metrics.text_adherence.adherence` on the lesion
  :func:`bundle.metrics.lesion_measure.measure_lesion` finds in the case's slices stacked (``before`` the input,
  ``after`` the prediction, the vertebra ``soft_mask > vertebra_level``); only for a text that asks for a signal
  and a case where the lesion can be measured (``against_text``).
* **rejected by the quality filter**: its decision ``passed`` is false (``quality_filter_rejected``).

Each warning is ``{"code", "message", "measured", "threshold"}``, JSON-safe; the figures of every case, warned or
not, come with them (:meth:`SynthesisChecks.measure`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch

from bundle.metrics.lesion_measure import measure_lesion
from bundle.metrics.text_adherence import DIRECTIONS, adherence, requested_facts, slice_to_canonical

DIRECTION_WORDS = {1: "brighter", -1: "darker", 0: "no lesion found"}


def warning(code: str, message: str, measured: object, threshold: object) -> dict[str, object]:
    """One warning record."""
    return {"code": code, "message": message, "measured": measured, "threshold": threshold}


def _plain(image: torch.Tensor) -> np.ndarray:
    return torch.as_tensor(image).as_subclass(torch.Tensor).detach().cpu().double().numpy()


def _stack_spacing(items: Sequence[Mapping]) -> tuple[float, float, float]:
    """(slice spacing, column, row) pixel sizes in mm of a case's model-grid slices; 1 mm where not recorded."""
    image = items[0]["image"]
    row, column = (float(v) for v in image.pixdim[:2]) if hasattr(image, "pixdim") else (1.0, 1.0)
    placement = items[0].get("placement") or {}
    affine = placement.get("canonical_affine")
    axis = int(placement.get("slice_axis", 0))
    thickness = float(np.linalg.norm(np.asarray(affine)[:3, axis])) if affine is not None else 1.0
    return thickness, column, row


@dataclass(frozen=True)
class SynthesisChecks:
    """The thresholds of the module docstring's checks; calling it gives one case's warnings.

    Args:
        min_change: smallest in-mask change (99th percentile of ``|change|``) a slice or the case must reach, as
            a fraction of the intensity range.
        max_negligible_slice_share: largest share of the judged slices whose change may be below ``min_change``.
        max_outside_change: largest ``|change|`` allowed beyond the soft mask, a fraction of the intensity range.
        outside_mask_level: soft-mask weight below which a pixel is outside the mask.
        vertebra_level: soft-mask weight above which a pixel is inside the vertebra (or box).
    """

    min_change: float = 0.01
    max_negligible_slice_share: float = 0.5
    max_outside_change: float = 0.05
    outside_mask_level: float = 0.01
    vertebra_level: float = 0.5

    def settings(self) -> dict[str, float]:
        """The thresholds (what identifies the checks in a provenance record)."""
        return asdict(self)

    def slice_changes(self, items: Sequence[Mapping], predictions: Sequence[torch.Tensor]) -> list[float | None]:
        """Each slice's in-mask change (None for a slice without a pixel above ``vertebra_level``)."""
        changes = []
        for item, prediction in zip(items, predictions, strict=True):
            inside = _plain(item["soft_mask"]) > self.vertebra_level
            change = np.abs(_plain(prediction) - _plain(item["image"]))
            changes.append(float(np.percentile(change[inside], 99)) if inside.any() else None)
        return changes

    def outside_change(self, items: Sequence[Mapping], predictions: Sequence[torch.Tensor]) -> float:
        """The largest ``|change|`` beyond the soft mask over the case's slices (0 when nothing is outside)."""
        largest = 0.0
        for item, prediction in zip(items, predictions, strict=True):
            outside = _plain(item["soft_mask"]) < self.outside_mask_level
            if outside.any():
                largest = max(largest, float(np.abs(_plain(prediction) - _plain(item["image"]))[outside].max()))
        return largest

    def direction(self, items: Sequence[Mapping], predictions: Sequence[torch.Tensor]) -> dict | None:
        """The lesion's measured direction and the text's verdict, ``{"signal", "direction", "direction_ok"}``;
        None when the text asks for no signal or the lesion cannot be measured (no vertebra, no marrow signal,
        slices of different grids)."""
        facts = requested_facts(str(items[0].get("text", "")))
        if facts.signal not in DIRECTIONS:
            return None
        try:
            before = np.concatenate([slice_to_canonical(torch.as_tensor(i["image"])) for i in items])
            after = np.concatenate([slice_to_canonical(torch.as_tensor(p)) for p in predictions])
            vertebra = np.concatenate([slice_to_canonical(torch.as_tensor(i["soft_mask"])) for i in items])
            measure = measure_lesion(before, after, vertebra > self.vertebra_level, _stack_spacing(items))
        except ValueError:
            return None
        verdict = adherence(measure, facts)["direction_ok"]
        return {"signal": facts.signal, "direction": measure.direction, "direction_ok": verdict}

    def measure(self, items: Sequence[Mapping], predictions: Sequence[torch.Tensor]) -> dict[str, object]:
        """One case's figures, JSON-safe: ``slice_changes`` (slice index -> in-mask change, judged slices only),
        ``largest_change``, ``negligible_slices`` (their indices), ``negligible_slice_share``, ``outside_change``
        and ``direction`` (:meth:`direction`, None where not measured); None where no slice is judged."""
        indices = [int(item.get("placement", {}).get("slice_index", n)) for n, item in enumerate(items)]
        changes = self.slice_changes(items, predictions)
        judged = {index: change for index, change in zip(indices, changes, strict=True) if change is not None}
        negligible = sorted(index for index, change in judged.items() if change < self.min_change)
        return {
            "slice_changes": {str(index): change for index, change in judged.items()},
            "largest_change": max(judged.values()) if judged else None,
            "negligible_slices": negligible,
            "negligible_slice_share": len(negligible) / len(judged) if judged else None,
            "outside_change": self.outside_change(items, predictions),
            "direction": self.direction(items, predictions),
        }

    def warnings(
        self, measured: Mapping[str, object], quality: Mapping[str, object] | None = None
    ) -> list[dict[str, object]]:
        """The warnings of one case's :meth:`measure` (an empty list when nothing is doubtful). ``quality``: the
        quality filter's decision (:meth:`bundle.metrics.quality_filter.FeatureSpaceFilter.judge`), if it judged
        the case."""
        found = []
        largest, share = measured["largest_change"], measured["negligible_slice_share"]
        if largest is not None and largest < self.min_change:
            found.append(
                warning(
                    "negligible_change",
                    f"the largest change inside the mask is {largest:.2%} of the intensity range "
                    f"(threshold {self.min_change:.2%})",
                    largest,
                    self.min_change,
                )
            )
        if share is not None and share > self.max_negligible_slice_share:
            negligible = measured["negligible_slices"]
            found.append(
                warning(
                    "negligible_slices",
                    f"{len(negligible)} of {len(measured['slice_changes'])} slices (slice indices {negligible}) "
                    f"changed by less than {self.min_change:.2%} of the intensity range inside the mask: a share of "
                    f"{share:.0%} (threshold {self.max_negligible_slice_share:.0%})",
                    share,
                    self.max_negligible_slice_share,
                )
            )
        outside = measured["outside_change"]
        if outside > self.max_outside_change:
            found.append(
                warning(
                    "change_outside_mask",
                    f"the change outside the soft mask (weight < {self.outside_mask_level}) reaches {outside:.2%} "
                    f"of the intensity range (threshold {self.max_outside_change:.2%})",
                    outside,
                    self.max_outside_change,
                )
            )
        verdict = measured["direction"]
        if verdict is not None and not verdict["direction_ok"]:
            wanted = DIRECTIONS[verdict["signal"]]
            found.append(
                warning(
                    "against_text",
                    f"the text asks for a {verdict['signal']} lesion ({DIRECTION_WORDS[wanted]}); the measured "
                    f"lesion: {DIRECTION_WORDS[verdict['direction']]}",
                    verdict["direction"],
                    wanted,
                )
            )
        if quality is not None and not quality.get("passed", True):
            found.append(
                warning(
                    "quality_filter_rejected",
                    f"the quality filter rejected the case: score {quality['score']:.4g} above its class's "
                    f"threshold {quality['threshold']:.4g}",
                    quality["score"],
                    quality["threshold"],
                )
            )
        return found

    def __call__(
        self,
        items: Sequence[Mapping],
        predictions: Sequence[torch.Tensor],
        quality: Mapping[str, object] | None = None,
    ) -> tuple[dict[str, object], list[dict[str, object]]]:
        """One case's :meth:`measure` and its :meth:`warnings`."""
        measured = self.measure(items, predictions)
        return measured, self.warnings(measured, quality)
