"""Warnings on a prepared dataset a person should read before training on it, each logged and written into
``summary.json`` as ``{"code", "message", "measured", "threshold"}`` (:func:`bundle.metrics.synthesis_checks.warning`):

* **empty or tiny split**: a split with a positive fraction that holds fewer than ``min_split_entries`` entries
  (``empty_split`` when it holds none, else ``tiny_split``);
* **too few cases of a class**: a class with fewer than ``min_class_cases`` entries in the training split
  (``few_class_cases``; a class absent from the whole dataset is not judged);
* **patients with a single study**: where the entries carry a ``study_id`` that differs from the ``patient_id``
  (the preparation knows patients and studies apart), more than ``max_single_study_share`` of the patients have
  one study only (``single_study_patients``);
* **slices without the target vertebra**: more than ``max_missing_vertebra_share`` of the rows were skipped because
  the described vertebra is not in the segmentation, unknown or not named (``missing_vertebra``; the skip kinds
  :data:`MISSING_VERTEBRA_KINDS`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from bundle.metrics.synthesis_checks import warning

logger = logging.getLogger(__name__)

MISSING_VERTEBRA_KINDS = ("labels_not_found", "no_vertebra", "unknown_level")


@dataclass(frozen=True)
class PreparationChecks:
    """The thresholds of the module docstring's checks; calling it gives a prepared dataset's warnings.

    Args:
        min_split_entries: a split with a positive fraction and fewer entries than this is tiny (0: empty).
        min_class_cases: a class with fewer training entries than this is too rare to train on.
        max_single_study_share: the largest share of patients with one study only that passes silently.
        max_missing_vertebra_share: the largest share of rows skipped for a missing target vertebra that passes
            silently (of the entries plus those skipped rows).
    """

    min_split_entries: int = 5
    min_class_cases: int = 10
    max_single_study_share: float = 0.5
    max_missing_vertebra_share: float = 0.0

    def __call__(
        self,
        splits: Mapping[str, Sequence[Mapping]],
        fractions: Mapping[str, float],
        classes: Sequence[str],
        skipped: Sequence[Mapping],
    ) -> list[dict[str, object]]:
        """The warnings on ``splits`` (entries by split name) made with ``fractions`` (share by split name),
        ``classes`` (the class names) and ``skipped`` (the ``{"kind", ...}`` records of rows left out), in the
        order of the module docstring; each is also logged."""
        found = [
            *self._splits(splits, fractions),
            *self._classes(splits.get("training", ()), classes),
            *self._studies([entry for entries in splits.values() for entry in entries]),
            *self._vertebrae(sum(len(entries) for entries in splits.values()), skipped),
        ]
        for item in found:
            logger.warning(item["message"])
        return found

    def _splits(self, splits, fractions):
        for name, entries in splits.items():
            if fractions.get(name, 0) > 0 and len(entries) < self.min_split_entries:
                code = "empty_split" if not entries else "tiny_split"
                yield warning(
                    code,
                    f"the {name} split holds {len(entries)} entries (fewer than {self.min_split_entries}) although "
                    f"its fraction is {fractions[name]:.2f}: add cases or change the fractions",
                    len(entries),
                    self.min_split_entries,
                )

    def _classes(self, training, classes):
        counts = {name: 0 for name in classes}
        for entry in training:
            counts[str(entry.get("label"))] = counts.get(str(entry.get("label")), 0) + 1
        for name, count in counts.items():
            if count < self.min_class_cases:
                yield warning(
                    "few_class_cases",
                    f"class {name!r} has {count} training entries (fewer than {self.min_class_cases}): too few to "
                    "train on; add cases or balance it with synthetic ones (scripts/balance.py)",
                    {"class": name, "count": count},
                    self.min_class_cases,
                )

    def _studies(self, entries):
        studies: dict[str, set[str]] = {}
        known = False
        for entry in entries:
            patient, study = entry.get("patient_id"), entry.get("study_id")
            if patient in (None, "") or study in (None, ""):
                continue
            known = known or str(study) != str(patient)
            studies.setdefault(str(patient), set()).add(str(study))
        if not known or not studies:
            return
        single = sum(len(ids) == 1 for ids in studies.values())
        share = single / len(studies)
        if share > self.max_single_study_share:
            yield warning(
                "single_study_patients",
                f"{single} of {len(studies)} patients ({share:.0%}) have a single study (more than "
                f"{self.max_single_study_share:.0%}): no follow-up to compare with for them",
                round(share, 4),
                self.max_single_study_share,
            )

    def _vertebrae(self, entries, skipped):
        missing = sum(record.get("kind") in MISSING_VERTEBRA_KINDS for record in skipped)
        total = entries + missing
        share = missing / total if total else 0.0
        if share > self.max_missing_vertebra_share:
            yield warning(
                "missing_vertebra",
                f"{missing} of {total} rows ({share:.0%}) name a vertebra that is not in their segmentation, "
                f"unknown or not given (more than {self.max_missing_vertebra_share:.0%}); they were skipped, "
                "the reasons are in skipped.json",
                round(share, 4),
                self.max_missing_vertebra_share,
            )
