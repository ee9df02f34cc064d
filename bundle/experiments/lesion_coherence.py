"""Through-plane coherence of lesions, real and synthetic, on the same measure.

The real reference is the demo phantom: it makes the same anatomy with and without the lesion (same seed and case
index, class ``normal``: same acquisition, anatomy, incidental findings and noise stream), so a lesion case minus
its normal twin is the lesion's own change volume, and the phantom knows the lesion's true size and mask. The same
:func:`bundle.metrics.lesion_measure.measure_lesion` applied to a synthetic volume minus its normal source
(:func:`bundle.experiments.text_adherence.synthesis_adherence`) gives the synthetic side;
:func:`through_plane_summary` reduces either to per-class statistics with their spread.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import nibabel as nib
import numpy as np

from bundle.demo.cases import PhantomCase, generate_case
from bundle.demo.dataset import DATALIST_NAME
from bundle.metrics.lesion_measure import measure_lesion
from bundle.metrics.text_adherence import adherence, requested_facts, summarise
from bundle.utils.files import read_json_object


def _canonical_array(case: PhantomCase, array: np.ndarray) -> np.ndarray:
    return np.asarray(nib.as_closest_canonical(nib.Nifti1Image(array, case.affine)).dataobj)


def phantom_lesion_change(
    seed: int, case_index: int, lesion_class: str, difficulty: float = 0.5
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, PhantomCase]:
    """A phantom lesion case and its normal twin in RAS: ``(before, after, vertebra, lesion_mask, spacing, case)``.

    ``vertebra`` is the described level's label in both (a malignant lesion's height loss deforms its body, so the
    part both share), ``lesion_mask`` the phantom's own lesion mask.
    """
    case = generate_case(seed, case_index, lesion_class, difficulty)
    twin = generate_case(seed, case_index, "normal", difficulty)
    if case.attributes.level != twin.attributes.level or case.image.shape != twin.image.shape:
        raise ValueError(f"case {case_index} of seed {seed}: the normal twin differs in level or grid")
    label = int(np.unique(case.vertebrae[case.lesion > 0]).max()) if case.lesion.any() else None
    if label is None:
        raise ValueError(f"case {case_index} of seed {seed} ({lesion_class}) has no lesion")
    vertebra = _canonical_array(case, case.vertebrae) == label
    vertebra &= _canonical_array(twin, twin.vertebrae) == label
    spacing = np.linalg.norm(nib.as_closest_canonical(nib.Nifti1Image(case.image, case.affine)).affine[:3, :3], axis=0)
    before = _canonical_array(twin, twin.image).astype(np.float64)
    after = _canonical_array(case, case.image).astype(np.float64)
    return before, after, vertebra, _canonical_array(case, case.lesion) > 0, spacing, case


def phantom_lesions(datalist_path: str | os.PathLike, splits: Sequence[str] = ("training", "test")) -> list[dict]:
    """The measure of every lesion case of a demo phantom datalist against its normal twin, with what its text asks
    for, whether the measure recovers it, and the true lesion mask's slices."""
    datalist = read_json_object(datalist_path, "the phantom datalist")
    if datalist.get("name") != DATALIST_NAME:
        raise ValueError(f"{datalist_path}: not a demo phantom datalist (name {datalist.get('name')!r})")
    rows = []
    for split in splits:
        for entry in datalist.get(split, []):
            if entry["label"] == "normal":
                continue
            index = int(str(entry["case_id"]).rsplit("_", 1)[-1])
            before, after, vertebra, truth, spacing, case = phantom_lesion_change(
                int(datalist["seed"]), index, entry["label"], float(datalist["difficulty"])
            )
            measure = measure_lesion(before, after, vertebra, spacing)
            facts = requested_facts(case.text)
            rows.append(
                {
                    "case_id": entry["case_id"],
                    "split": split,
                    "label": entry["label"],
                    "text": case.text,
                    **vars(facts),
                    "true_size_mm": case.attributes.size_mm,
                    "true_slices": np.nonzero(truth.any(axis=(1, 2)))[0].tolist(),
                    "thickness_mm": float(spacing[0]),
                    "measure": measure.to_json(),
                    "adherence": adherence(measure, facts),
                }
            )
    return rows


def _spread(values: Sequence[float]) -> dict[str, float] | None:
    values = [float(v) for v in values if v is not None]
    if not values:
        return None
    return {
        "mean": float(np.mean(values)),
        "sd": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
        "min": min(values),
        "max": max(values),
    }


def through_plane_summary(rows: Sequence[Mapping]) -> dict[str, dict]:
    """Per class label (rows with ``label``, ``size_mm`` (the text's) and ``measure``): how many lesions were found,
    their through-plane extent in slices and in mm, that extent over the text's size, and the neighbour
    correlation, each as mean, sd, min and max over the lesions found."""
    summary = {}
    for label in sorted({str(row["label"]) for row in rows}):
        found = [row for row in rows if str(row["label"]) == label and row["measure"]["direction"] != 0]
        summary[label] = {
            "count": sum(str(row["label"]) == label for row in rows),
            "found": len(found),
            "slices": _spread([len(row["measure"]["slices"]) for row in found]),
            "extent_mm": _spread([row["measure"]["extent_mm"] for row in found]),
            "extent_over_text_size": _spread(
                [row["measure"]["extent_mm"] / row["size_mm"] for row in found if row.get("size_mm")]
            ),
            "neighbour_correlation": _spread([row["measure"]["neighbour_correlation"] for row in found]),
        }
    return summary


def real_lesion_report(datalist_path: str | os.PathLike) -> dict[str, object]:
    """:func:`phantom_lesions` of a phantom datalist with the shares per requested signal and the through-plane
    statistics per class: the reference a synthesis output is compared with."""
    rows = phantom_lesions(datalist_path)
    return {"cases": rows, "by_signal": summarise(rows), "through_plane": through_plane_summary(rows)}
