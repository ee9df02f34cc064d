"""The demo data set: classes, the train / test split, the case files and datalist.json."""

from __future__ import annotations

import gzip
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from bundle.data.class_balance import class_counts as count_labels
from bundle.data.splits import normalised_shares, stratified_holdout
from bundle.demo.cases import AXIS_CODES, generate_case
from bundle.demo.difficulty import difficulty_settings
from bundle.demo.labels import LESION_CLASSES, NEIGHBOUR_BONE_LABELS, VERTEBRA_LABELS
from bundle.utils.files import write_atomically, write_json_atomically

DEFAULT_CLASS_FRACTIONS: dict[str, float] = {"normal": 0.60, "benign": 0.25, "malignant": 0.15}


DATALIST_NAME = "spine_mri_phantom"


_CLASS_STREAM = 1  # stream ids of the dataset-level draws (class sequence, split)


_SPLIT_STREAM = 2


def _normalised_fractions(class_fractions: Mapping[str, float] | Sequence[float]) -> dict[str, float]:
    """Class fractions as {class: fraction} summing to 1; a sequence is read in class-index order."""
    return normalised_shares(class_fractions, list(LESION_CLASSES), "class_fractions")


def assign_classes(
    num_cases: int, seed: int, class_fractions: Mapping[str, float] | Sequence[float] = DEFAULT_CLASS_FRACTIONS
) -> list[str]:
    """Deterministic class of each case, the same prefix whatever ``num_cases`` is.

    The first cases hold two of every class with a positive fraction (in a seeded order), so from
    ``2 * number_of_classes`` cases on every class can appear in both splits; after that each case takes the
    class furthest below its target count, with seeded jitter, so the counts track ``class_fractions``.
    """
    fractions = _normalised_fractions(class_fractions)
    names = list(fractions)
    targets = np.array([fractions[name] for name in names])
    rng = np.random.default_rng([int(seed), _CLASS_STREAM])
    sequence = [names[i] for i in rng.permutation(np.repeat(np.flatnonzero(targets > 0), 2))]
    counts = np.array([sequence.count(name) for name in names], float)
    while len(sequence) < num_cases:
        deficit = targets * (len(sequence) + 1) - counts + rng.uniform(0.0, 0.9, len(names))
        choice = int(np.argmax(np.where(targets > 0, deficit, -np.inf)))
        sequence.append(names[choice])
        counts[choice] += 1
    return sequence[:num_cases]


def stratified_split(classes: Sequence[str], seed: int, test_fraction: float) -> list[bool]:
    """Whether each case is in the test split: :func:`bundle.data.splits.held_out_count` of every class's cases
    (``round(test_fraction * n)``, at least one and at most n - 1 when n >= 2 and ``test_fraction`` > 0), chosen
    with a seeded shuffle."""
    rng = np.random.default_rng([int(seed), _SPLIT_STREAM])
    return stratified_holdout(
        list(classes), test_fraction, lambda _, members: rng.permutation(members), label_order=list(LESION_CLASSES)
    )


def _nifti_gz_bytes(array: np.ndarray, affine: np.ndarray, description: str, is_label: bool) -> bytes:
    """Reproducible .nii.gz bytes: qform and sform = ``affine`` (code 1, scanner), mm units, slice axis 2,
    gzip without a timestamp."""
    image = nib.Nifti1Image(array, affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    header = image.header
    header.set_xyzt_units("mm", "sec")
    header.set_dim_info(slice=2)
    header["descrip"] = description.encode("ascii")[:79]
    if is_label:
        header.set_intent("label")
    return gzip.compress(image.to_bytes(), compresslevel=6, mtime=0)


def _validate_dataset_arguments(num_cases: int, seed: int, difficulty: float, test_fraction: float) -> None:
    if isinstance(num_cases, bool) or not isinstance(num_cases, int) or num_cases < 1:
        raise ValueError(f"num_cases must be an integer >= 1, got {num_cases!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    difficulty_settings(difficulty)
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, (int, float)) or not 0 <= test_fraction < 1:
        raise ValueError(f"test_fraction must be a number in [0, 1), got {test_fraction!r}")


def _prepare_output_folder(out_dir: Path) -> None:
    """Create ``out_dir`` and its case folders and check that a file can be written there."""
    try:
        for folder in ("images", "vertebrae", "lesions"):
            (out_dir / folder).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out_dir):
            pass
    except OSError as error:
        raise OSError(f"cannot write to the output folder {str(out_dir)!r}: {error.strerror or error}") from error


def generate_dataset(
    out_dir: str | os.PathLike,
    num_cases: int,
    seed: int,
    difficulty: float = 0.5,
    test_fraction: float = 0.25,
    class_fractions: Mapping[str, float] | Sequence[float] = DEFAULT_CLASS_FRACTIONS,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Write ``num_cases`` cases and ``datalist.json`` to ``out_dir``; byte-identical for the same arguments.

    Layout: ``images/case_000.nii.gz`` (int16), ``vertebrae/case_000.nii.gz`` and ``lesions/case_000.nii.gz``
    (uint8), ``datalist.json`` (sorted keys, indent 2) with ``training`` and ``test`` lists of entries
    ``{case_id, image, vertebra_seg, lesion_seg, label, class_index, level, mask_labels, text, attributes}``,
    paths relative to ``out_dir``. Every file is written under a temporary name and renamed.

    Args:
        out_dir: output folder, created if needed.
        num_cases: at least 1; from 8 on every class with a positive fraction is in both splits.
        seed: non-negative integer.
        difficulty: in [0, 1], see :class:`DifficultySettings`.
        test_fraction: in [0, 1), share of each class that goes to ``test``.
        class_fractions: {class: fraction} or three fractions in class-index order; normalised to sum to 1.
        progress: called with one line per written case.

    Returns:
        The datalist as written.

    Raises:
        ValueError: for a bad argument; OSError: when ``out_dir`` cannot be written.
    """
    _validate_dataset_arguments(num_cases, seed, difficulty, test_fraction)
    fractions = _normalised_fractions(class_fractions)
    out_dir = Path(out_dir)
    _prepare_output_folder(out_dir)
    classes = assign_classes(num_cases, seed, fractions)
    is_test = stratified_split(classes, seed, test_fraction)
    splits: dict[str, list[dict[str, Any]]] = {"training": [], "test": []}
    for index, lesion_class in enumerate(classes):
        case = generate_case(seed, index, lesion_class, difficulty)
        case_id = f"case_{index:03d}"
        paths = {
            key: f"{folder}/{case_id}.nii.gz"
            for key, folder in (("image", "images"), ("vertebra_seg", "vertebrae"), ("lesion_seg", "lesions"))
        }
        for key, array, description, is_label in (
            ("image", case.image, "SYNTHETIC spine MRI phantom, T1w sagittal", False),
            ("vertebra_seg", case.vertebrae, "SYNTHETIC vertebra labels (TotalSegmentator v2)", True),
            ("lesion_seg", case.lesion, "SYNTHETIC lesion mask", True),
        ):
            write_atomically(out_dir / paths[key], _nifti_gz_bytes(array, case.affine, description, is_label))
        attributes = case.attributes
        split = "test" if is_test[index] else "training"
        splits[split].append(
            {
                "case_id": case_id,
                **paths,
                "label": lesion_class,
                "class_index": LESION_CLASSES[lesion_class],
                "level": attributes.level,
                "mask_labels": [VERTEBRA_LABELS[attributes.level]],
                "text": case.text,
                "attributes": attributes.to_json(),
            }
        )
        if progress is not None:
            size = f" {attributes.size_mm} mm" if attributes.size_mm else ""
            progress(f"[{index + 1}/{num_cases}] {case_id} {split:8s} {lesion_class:9s} {attributes.level}{size}")
    datalist = {
        "name": DATALIST_NAME,
        "description": (
            "Procedural sagittal T1-weighted lumbar-spine MRI phantom (synthetic, not patient data): "
            "one lesion class per case, vertebra labels in TotalSegmentator v2 numbering, "
            "lesion masks and radiology-style texts built from the lesion attributes."
        ),
        "seed": seed,
        "difficulty": float(difficulty),
        "test_fraction": float(test_fraction),
        "class_fractions": fractions,
        "axis_codes": "".join(AXIS_CODES),
        "labels": dict(LESION_CLASSES),
        "vertebra_labels": dict(VERTEBRA_LABELS),
        "neighbour_bone_labels": dict(NEIGHBOUR_BONE_LABELS),
        **splits,
    }
    write_json_atomically(out_dir / "datalist.json", datalist)
    return datalist


def class_counts(entries: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """Number of entries of each class, in class-index order."""
    return count_labels(entries, tuple(LESION_CLASSES))
