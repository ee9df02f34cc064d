"""A VerTumor1200-like folder (spine MRI, vertebra segmentations, per-case class and lesion description) as
datalist entries whose soft mask is the described vertebra's segmentation label.

Accepted layout (``root``)::

    labels.csv | labels.json        one row per described vertebra (or per case)
    images/<case_id>.nii.gz | .nii  the MRI volume, or
    images/<case_id>/               a DICOM series folder, or
    images/<case_id>.dcm            a single DICOM file
    segmentations/<case_id>.nii.gz | .nii | <case_id>_seg.nii.gz | <case_id>_seg.nii
                                    vertebra labels on the image's grid (any axis order)

Columns of the labels table (names are case-insensitive; the first alias found is used):

- ``case_id`` (or ``case``, ``id``, ``image_id``, ``name``): required; names the image and segmentation files;
- ``class`` (or ``label``, ``lesion_class``, ``category``): required; ``normal``, ``benign`` or ``malignant``
  (also ``0`` / ``1`` / ``2``, and the diagnoses ``haemangioma`` / ``hemangioma`` -> benign, ``metastasis`` /
  ``myeloma`` -> malignant, kept as ``diagnosis``);
- ``description`` (or ``text``, ``lesion_description``, ``report``): the radiologist's lesion text; required
  for benign and malignant rows;
- ``mask_labels`` (or ``mask_label``, ``vertebra_label``): the segmentation value(s) of the described vertebra
  (``"22"``, ``"22;23"``, ``"[22, 23]"`` or a JSON list), or ``level`` (or ``vertebra``): ``"L3"``, turned
  into a label value by ``label_scheme`` (VerSe numbering by default: C1..C7 = 1..7, T1..T12 = 8..19,
  L1..L6 = 20..25, sacrum / S1 = 26, T13 = 28; or TotalSegmentator v2: S1 = 26, L5..L1 = 27..31,
  T12..T1 = 32..43, C7..C1 = 44..50);
- ``patient_id`` (or ``patient``, ``subject_id``, ``subject``): optional, defaults to ``case_id``; the split
  keeps each patient's rows together;
- ``image`` / ``segmentation`` (or ``vertebra_seg``): optional paths (relative to ``root`` or absolute) that
  replace the folder convention.

Normal rows may leave the description empty: their text becomes :data:`NORMAL_TEXT` ("no focal lesion"), because
every bundle stage needs a text per entry and normal vertebrae are what lesions are synthesised into; a
synthesis request replaces it with the text of a lesion class (:mod:`bundle.balancing.synthesis_requests`).
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

from bundle.data.dicom_series import read_dicom_header
from bundle.errors import InputError
from bundle.preparation.dicom_series_headers import read_dicom_series
from bundle.preparation.prepared import CaseSkipped, Prepared, ReadOnce
from bundle.preparation.tables import pick_column, read_table
from bundle.transforms.loading import NIFTI_READ_ERRORS, volume_format
from bundle.utils.files import safe_case_name

CLASSES = ("normal", "benign", "malignant")
CLASS_ALIASES = {"0": "normal", "1": "benign", "2": "malignant", "healthy": "normal"}
DIAGNOSES = {
    "haemangioma": "benign",
    "hemangioma": "benign",
    "metastasis": "malignant",
    "metastases": "malignant",
    "myeloma": "malignant",
}
NORMAL_TEXT = "Spine MRI: normal {level}vertebral body with homogeneous marrow signal, no focal lesion."
LABEL_FILES = ("labels.csv", "labels.json")

COLUMNS = {
    "case_id": ("case_id", "case", "id", "image_id", "name"),
    "class": ("class", "label", "lesion_class", "category"),
    "description": ("description", "text", "lesion_description", "report"),
    "mask_labels": ("mask_labels", "mask_label", "vertebra_label"),
    "level": ("level", "vertebra", "vertebral_level"),
    "patient_id": ("patient_id", "patient", "subject_id", "subject"),
    "image": ("image", "image_path", "image_file"),
    "segmentation": ("segmentation", "vertebra_seg", "segmentation_path", "seg"),
}


def _verse_levels() -> dict[str, int]:
    levels = {f"C{k}": k for k in range(1, 8)}
    levels.update({f"T{k}": 7 + k for k in range(1, 13)})
    levels.update({f"L{k}": 19 + k for k in range(1, 7)})
    levels.update({"S1": 26, "SACRUM": 26, "T13": 28})
    return levels


def _totalseg_levels() -> dict[str, int]:
    levels = {"S1": 26, "SACRUM": 26}
    levels.update({f"L{k}": 32 - k for k in range(1, 6)})
    levels.update({f"T{k}": 44 - k for k in range(1, 13)})
    levels.update({f"C{k}": 51 - k for k in range(1, 8)})
    return levels


LABEL_SCHEMES = {"verse": _verse_levels(), "totalseg": _totalseg_levels()}


def _text(value: object) -> str:
    return "" if value is None or (isinstance(value, float) and np.isnan(value)) else str(value).strip()


def parse_mask_labels(value: object) -> list[int]:
    """Label values from ``3``, ``"3"``, ``"3;4"``, ``"3 4"``, ``"[3, 4]"`` or ``[3, 4]``; ValueError otherwise."""
    if isinstance(value, (list, tuple)):
        items = list(value)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        items = [value]
    else:
        text = _text(value).strip("[]()")
        items = [item for item in re.split(r"[\s,;|]+", text) if item]
    labels = []
    for item in items:
        number = float(item)
        if not number.is_integer() or number <= 0:
            raise ValueError(f"label values must be positive integers, got {item!r}")
        labels.append(int(number))
    if not labels:
        raise ValueError("no label value")
    return sorted(set(labels))


def normalise_class(value: object) -> tuple[str, str | None] | None:
    """``(class, diagnosis or None)`` for a class cell, or None when it is not a known class or diagnosis."""
    text = _text(value).lower()
    if text in CLASSES:
        return text, None
    if text in CLASS_ALIASES:
        return CLASS_ALIASES[text], None
    if text in DIAGNOSES:
        return DIAGNOSES[text], text
    return None


def find_labels_file(root: Path, labels: str | os.PathLike | None = None) -> Path:
    """``labels`` (relative to ``root`` or absolute), else ``root/labels.csv`` or ``root/labels.json``."""
    if labels is not None:
        path = Path(labels) if Path(labels).is_absolute() else root / labels
        if not path.is_file():
            raise InputError(path, "labels file not found")
        return path
    for name in LABEL_FILES:
        if (root / name).is_file():
            return root / name
    raise InputError(root, f"no labels file ({' or '.join(LABEL_FILES)}) in the dataset folder")


def _find_file(folder: Path, case: str, suffixes: Sequence[str], allow_folder: bool) -> Path | None:
    if allow_folder and (folder / case).is_dir():
        return folder / case
    return next((folder / f"{case}{suffix}" for suffix in suffixes if (folder / f"{case}{suffix}").is_file()), None)


def _given_path(root: Path, value: object) -> Path | None:
    text = _text(value)
    if not text:
        return None
    return Path(text) if Path(text).is_absolute() else root / text


def image_shape(path: Path) -> tuple[int, ...]:
    """The spatial shape of a NIfTI file, DICOM series folder or DICOM file, from its header only.

    Raises:
        InputError: naming the file when it is unreadable, of another format, or not 3-D.
    """
    kind = volume_format(path)
    if kind == "nifti":
        try:
            shape = tuple(int(n) for n in nib.load(str(path)).shape)
        except NIFTI_READ_ERRORS as error:
            raise InputError(path, f"cannot be read as NIfTI ({type(error).__name__}: {error})") from error
        if len(shape) == 4 and shape[3] == 1:
            shape = shape[:3]
        if len(shape) != 3:
            raise InputError(path, f"{len(shape)}-D image {shape}, expected a 3-D volume")
        return shape
    if kind == "dicom_series":
        return read_dicom_series(path).shape
    if kind == "dicom_file":
        header = read_dicom_header(path)
        if header.get("Rows") is None or header.get("Columns") is None:
            raise InputError(path, "no Rows / Columns: not an image")
        return int(header.Columns), int(header.Rows), 1
    raise InputError(path, "unsupported image format (NIfTI file, DICOM series folder or DICOM file expected)")


def segmentation_labels(path: Path) -> tuple[tuple[int, ...], set[int]]:
    """Shape and the non-zero label values (rounded) of a NIfTI segmentation."""
    if volume_format(path) != "nifti":
        raise InputError(path, "unsupported segmentation format (NIfTI expected)")
    try:
        image = nib.load(str(path))
        data = np.asanyarray(image.dataobj)
    except NIFTI_READ_ERRORS as error:
        raise InputError(path, f"cannot be read as NIfTI ({type(error).__name__}: {error})") from error
    shape = tuple(int(n) for n in data.shape)
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        raise InputError(path, f"{len(shape)}-D segmentation {shape}, expected a 3-D label volume")
    values = {int(v) for v in np.unique(np.rint(data[np.isfinite(data)])) if v != 0}
    return shape, values


def collect_vertumor(
    root: str | os.PathLike,
    labels: str | os.PathLike | None = None,
    label_scheme: str = "verse",
    images_dir: str = "images",
    segmentations_dir: str = "segmentations",
    normal_text: str = NORMAL_TEXT,
) -> Prepared:
    """Read a VerTumor1200-like folder (see the module docstring) into datalist entries and skipped cases.

    Each usable row becomes one entry: ``image``, ``vertebra_seg``, ``mask_labels``, ``text``, ``label``,
    ``class_index`` (normal 0, benign 1, malignant 2), ``patient_id``, ``source_case_id`` and, when given,
    ``level`` and ``diagnosis``. ``case_id`` is the row's case id made file-name safe, with the level (or the
    labels) appended when a case has several rows.

    A row is skipped (with a reason) for: no case id, an unknown class, an empty description of a diseased
    case, no or bad vertebra labels / level, a missing or unreadable image or segmentation, a segmentation
    whose grid size differs from the image's, labels absent from the segmentation, or a duplicate case id.

    Raises:
        InputError: when ``root`` is not a folder or its labels file is missing, unreadable or lacks the
            case id / class columns.
    """
    root = Path(root).absolute()
    if not root.is_dir():
        raise InputError(root, "dataset folder not found")
    if label_scheme not in LABEL_SCHEMES:
        raise ValueError(f"label_scheme must be one of {sorted(LABEL_SCHEMES)}, got {label_scheme!r}")
    levels = LABEL_SCHEMES[label_scheme]
    labels_file = find_labels_file(root, labels)
    rows = read_table(labels_file)
    if not rows:
        raise InputError(labels_file, "no rows")
    present = {key for row in rows for key in row}
    for required in ("case_id", "class"):
        if pick_column(present, COLUMNS[required]) is None:
            raise InputError(labels_file, f"no {required} column (one of {', '.join(COLUMNS[required])})")

    prepared = Prepared(
        classes=CLASSES,
        metadata={
            "name": "vertumor",
            "description": f"VerTumor1200-like dataset prepared from {root} (labels: {labels_file.name}); soft mask: "
            f"the described vertebra's label in the vertebra segmentation",
            "root": str(root),
            "labels": {name: index for index, name in enumerate(CLASSES)},
            "normal_label": "normal",
            "label_scheme": label_scheme,
        },
    )

    rows_per_case = Counter(_text(_cell(row, "case_id")) for row in rows)
    cache = ReadOnce()
    used_ids: set[str] = set()
    for number, row in enumerate(rows, start=1):
        case = _text(_cell(row, "case_id"))
        if not case:
            prepared.skip(f"row {number}", labels_file, "bad_row", f"row {number} of {labels_file.name} has no case id")
            continue
        try:
            entry = _row_entry(
                root, case, row, labels_file, levels, label_scheme, images_dir, segmentations_dir, normal_text, cache
            )
        except CaseSkipped as skipped:
            prepared.skip(case, skipped.file, skipped.kind, skipped.reason)
            continue
        if rows_per_case[case] > 1:
            suffix = entry.get("level") or "label" + "_".join(str(v) for v in entry["mask_labels"])
            entry["case_id"] = safe_case_name(f"{case}_{suffix}")
        if entry["case_id"] in used_ids:
            prepared.skip(
                case,
                labels_file,
                "duplicate",
                f"case id {entry['case_id']!r} already used by an earlier row of {labels_file.name}",
            )
            continue
        used_ids.add(entry["case_id"])
        prepared.entries.append(entry)
    return prepared


def _cell(row: Mapping, name: str) -> object:
    """The row's value under the first alias of ``name`` that it fills (rows may use different aliases)."""
    values = [row[alias] for alias in COLUMNS[name] if alias in row]
    return next((value for value in values if _text(value) not in ("", "[]")), values[0] if values else None)


def _row_entry(
    root: Path,
    case: str,
    row: Mapping,
    labels_file: Path,
    levels: Mapping[str, int],
    label_scheme: str,
    images_dir: str,
    segmentations_dir: str,
    normal_text: str,
    cache: ReadOnce,
) -> dict:
    """One row's entry; a row that cannot be used raises :class:`CaseSkipped` with the reason."""
    parsed = normalise_class(_cell(row, "class"))
    if parsed is None:
        raise CaseSkipped(
            labels_file,
            "unknown_class",
            f"unknown class {_text(_cell(row, 'class'))!r} (expected normal, benign or malignant)",
        )
    label, diagnosis = parsed
    description = _text(_cell(row, "description"))
    if not description and label != "normal":
        raise CaseSkipped(labels_file, "empty_description", f"empty lesion description for a {label} case")
    level = _text(_cell(row, "level")).upper()
    mask_labels = _row_mask_labels(row, level, levels, label_scheme, labels_file)
    image, segmentation = _row_files(root, case, row, images_dir, segmentations_dir, mask_labels, cache)
    text = description or " ".join(normal_text.format(level=f"{level} " if level else "").split())
    entry = {
        "case_id": safe_case_name(case),
        "source_case_id": case,
        "patient_id": _text(_cell(row, "patient_id")) or case,
        "image": str(image.absolute()),
        "vertebra_seg": str(segmentation.absolute()),
        "mask_labels": mask_labels,
        "label": label,
        "class_index": CLASSES.index(label),
        "text": text,
        "text_source": "description" if description else "normal_template",
    }
    if level:
        entry["level"] = level
    if diagnosis:
        entry["diagnosis"] = diagnosis
    return entry


def _row_mask_labels(
    row: Mapping, level: str, levels: Mapping[str, int], label_scheme: str, labels_file: Path
) -> list[int]:
    """The described vertebra's label values: the row's ``mask_labels``, else its ``level`` in the scheme."""
    raw_labels = _cell(row, "mask_labels")
    given = bool(raw_labels) if isinstance(raw_labels, (list, tuple)) else bool(_text(raw_labels))
    if given:
        try:
            return parse_mask_labels(raw_labels)
        except ValueError as error:
            raise CaseSkipped(
                labels_file, "bad_mask_labels", f"bad mask_labels {_text(raw_labels)!r}: {error}"
            ) from error
    if not level:
        raise CaseSkipped(labels_file, "no_vertebra", "no mask_labels and no level: which vertebra is unknown")
    if level not in levels:
        raise CaseSkipped(labels_file, "unknown_level", f"level {level!r} is not in the {label_scheme} label scheme")
    return [levels[level]]


def _row_files(
    root: Path,
    case: str,
    row: Mapping,
    images_dir: str,
    segmentations_dir: str,
    mask_labels: list[int],
    cache: ReadOnce,
) -> tuple[Path, Path]:
    """The row's image and segmentation, checked to be readable, on one grid, and to hold ``mask_labels``."""
    image = _given_path(root, _cell(row, "image")) or _find_file(
        root / images_dir, case, (".nii.gz", ".nii", ".dcm"), allow_folder=True
    )
    if image is None or not image.exists():
        raise CaseSkipped(image or root / images_dir / f"{case}.nii.gz", "missing_image", "image not found")
    segmentation = _given_path(root, _cell(row, "segmentation")) or _find_file(
        root / segmentations_dir, case, (".nii.gz", ".nii", "_seg.nii.gz", "_seg.nii"), allow_folder=False
    )
    if segmentation is None or not segmentation.exists():
        raise CaseSkipped(
            segmentation or root / segmentations_dir / f"{case}.nii.gz",
            "missing_segmentation",
            "vertebra segmentation not found",
        )
    try:
        shape = cache.get("image", image, image_shape)
    except InputError as error:
        raise CaseSkipped(image, "unreadable_image", str(error)) from error
    try:
        seg_shape, present = cache.get("segmentation", segmentation, segmentation_labels)
    except InputError as error:
        raise CaseSkipped(segmentation, "unreadable_segmentation", str(error)) from error
    if sorted(seg_shape) != sorted(shape):
        raise CaseSkipped(
            segmentation, "grid_mismatch", f"segmentation grid {seg_shape} does not match the image grid {shape}"
        )
    missing = [value for value in mask_labels if value not in present]
    if missing:
        raise CaseSkipped(
            segmentation,
            "labels_not_found",
            f"label(s) {missing} not in the segmentation (labels found: {sorted(present)[:20]})",
        )
    return image, segmentation
