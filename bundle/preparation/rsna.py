"""The RSNA 2024 Lumbar Spine Degenerative Classification layout as datalist entries: one per labelled
coordinate, its soft mask a box of ``box_size_mm`` around the coordinate, its text from disease, level and
severity templates.

Layout (``root``; the names of the CSV files and of the image folder are arguments)::

    train_series_descriptions.csv   study_id, series_id, series_description
                                    ("Sagittal T2/STIR", "Sagittal T1", "Axial T2")
    train_label_coordinates.csv     study_id, series_id, instance_number, condition, level, x, y
    train.csv                       study_id, one column per condition and level, e.g.
                                    spinal_canal_stenosis_l4_l5 = "Normal/Mild" | "Moderate" | "Severe" | empty
    train_images/<study_id>/<series_id>/<instance_number>.dcm

Conditions (the paper's three sagittal ones) and the series each is read on: spinal canal stenosis on the
sagittal T2/STIR series, left / right neural foraminal narrowing on the sagittal T1 series. Subarticular
stenosis (read on axial T2, whose RSNA series often hold several stacks of different angulation, not one
regular 3-D grid) is not prepared; its coordinates are counted under ``not_selected``.

Each entry's ``point`` is ``[x, y, k]`` in the loaded series' voxel indices: x (column) and y (row) as given,
k the index of the labelled instance among the series' files sorted the way ITK stacks them
(:class:`bundle.preparation.dicom_series_headers.DicomSeries`).
"""

from __future__ import annotations

import math
import os
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bundle.errors import InputError
from bundle.preparation.dicom_series_headers import DicomSeries, read_dicom_series
from bundle.preparation.prepared import CaseSkipped, Prepared, ReadOnce
from bundle.preparation.tables import read_table

CLASSES = ("normal_mild", "moderate", "severe")
SEVERITIES = {"normal/mild": "normal_mild", "moderate": "moderate", "severe": "severe"}
LEVEL_PATTERN = re.compile(r"^L([1-5])/(L[1-5]|S1)$")
DEFAULT_BOX_SIZE_MM = 20.0


@dataclass(frozen=True)
class Condition:
    """A labelled RSNA condition: its name in the coordinates CSV, the series it is read on, its text."""

    name: str
    series_description: str
    kind: str  # "canal" or "foramen"
    side: str = ""


CONDITIONS = {
    "spinal_canal_stenosis": Condition("Spinal Canal Stenosis", "Sagittal T2/STIR", "canal"),
    "left_neural_foraminal_narrowing": Condition("Left Neural Foraminal Narrowing", "Sagittal T1", "foramen", "left"),
    "right_neural_foraminal_narrowing": Condition(
        "Right Neural Foraminal Narrowing", "Sagittal T1", "foramen", "right"
    ),
}
SEQUENCE_PREFIXES = {
    "Sagittal T2/STIR": "Sagittal T2-weighted lumbar spine MRI: ",
    "Sagittal T1": "Sagittal T1-weighted lumbar spine MRI: ",
}
TEXT_TEMPLATES = {
    ("canal", "normal_mild"): (
        "no significant spinal canal stenosis at {level} (normal or mild narrowing); the "
        "thecal sac and the cerebrospinal fluid around the nerve roots are preserved."
    ),
    ("canal", "moderate"): (
        "moderate spinal canal stenosis at {level}, with narrowing of the thecal sac and "
        "partial effacement of the cerebrospinal fluid around the nerve roots."
    ),
    ("canal", "severe"): (
        "severe spinal canal stenosis at {level}, with marked narrowing of the thecal sac, "
        "complete effacement of the cerebrospinal fluid and crowding of the nerve roots."
    ),
    ("foramen", "normal_mild"): (
        "no significant {side} neural foraminal narrowing at {level} (normal or mild); "
        "the perineural fat around the exiting nerve root is preserved."
    ),
    ("foramen", "moderate"): (
        "moderate {side} neural foraminal narrowing at {level}, with partial effacement of "
        "the perineural fat around the exiting nerve root."
    ),
    ("foramen", "severe"): (
        "severe {side} neural foraminal narrowing at {level}, with obliteration of the "
        "perineural fat and compression of the exiting nerve root."
    ),
}
REQUIRED_COLUMNS = {
    "series": ("study_id", "series_id", "series_description"),
    "coordinates": ("study_id", "series_id", "instance_number", "condition", "level", "x", "y"),
    "labels": ("study_id",),
}


def condition_key(name: str) -> str:
    """``"Left Neural Foraminal Narrowing"`` -> ``"left_neural_foraminal_narrowing"``."""
    return re.sub(r"[^a-z0-9]+", "_", str(name).strip().lower()).strip("_")


def level_key(level: str) -> str:
    """``"L4/L5"`` -> ``"l4_l5"`` (the train.csv column suffix)."""
    return str(level).strip().lower().replace("/", "_")


def lesion_text(condition: str, level: str, severity: str) -> str:
    """The entry text, e.g. ``"Sagittal T2-weighted lumbar spine MRI: severe spinal canal stenosis at L4/L5, ..."``."""
    spec = CONDITIONS[condition]
    body = TEXT_TEMPLATES[(spec.kind, severity)].format(level=level, side=spec.side)
    return SEQUENCE_PREFIXES[spec.series_description] + body


def _select_conditions(conditions: Sequence[str] | str) -> list[str]:
    names = (
        [part for part in re.split(r"[,\s]+", conditions) if part] if isinstance(conditions, str) else list(conditions)
    )
    keys = [condition_key(name) for name in names]
    unknown = [key for key in keys if key not in CONDITIONS]
    if unknown or not keys:
        raise ValueError(f"conditions must be among {sorted(CONDITIONS)}, got {names!r}")
    return list(dict.fromkeys(keys))


def _box_size(box_size_mm: float | Sequence[float]) -> float | list[float]:
    values = [box_size_mm] if isinstance(box_size_mm, (int, float)) else list(box_size_mm)
    try:
        numbers = [float(value) for value in values]
    except (TypeError, ValueError) as error:
        raise ValueError(f"box_size_mm must be a number or 3 numbers, got {box_size_mm!r}") from error
    if len(numbers) not in (1, 3) or any(not math.isfinite(v) or v <= 0 for v in numbers):
        raise ValueError(f"box_size_mm must be one or three positive numbers (mm), got {box_size_mm!r}")
    return numbers[0] if len(numbers) == 1 else numbers


def _read_csv(root: Path, name: str, role: str) -> list[dict]:
    path = root / name
    if not path.is_file():
        raise InputError(path, f"not found: the RSNA layout needs {name} in the dataset folder")
    rows = read_table(path)
    missing = [column for column in REQUIRED_COLUMNS[role] if rows and column not in rows[0]]
    if not rows or missing:
        raise InputError(path, f"no rows or missing columns {missing or list(REQUIRED_COLUMNS[role])}")
    return rows


def _clean(value: object) -> str:
    text = "" if value is None else str(value).strip()
    return text[:-2] if re.fullmatch(r"\d+\.0", text) else text


def collect_rsna(
    root: str | os.PathLike,
    conditions: Sequence[str] | str = tuple(CONDITIONS),
    box_size_mm: float | Sequence[float] = DEFAULT_BOX_SIZE_MM,
    images_dir: str = "train_images",
    series_csv: str = "train_series_descriptions.csv",
    coordinates_csv: str = "train_label_coordinates.csv",
    labels_csv: str = "train.csv",
) -> Prepared:
    """Read the RSNA 2024 lumbar-spine layout (see the module docstring) into datalist entries.

    One entry per labelled coordinate of a selected condition: ``image`` (the series folder), ``point``
    ``[x, y, k]`` (voxel indices), ``box_size_mm``, ``label`` (``normal_mild`` / ``moderate`` / ``severe``),
    ``class_index`` (0 / 1 / 2), ``text``, ``patient_id`` (the study id: RSNA has one study per patient),
    ``study_id``, ``series_id``, ``condition``, ``level``, ``instance_number``, ``series_description``.
    ``case_id`` is ``<study>_<series>_<condition>_<level>``.

    Skipped, with a reason: a malformed coordinate row, a duplicate (same study, condition and level), a
    study without that severity in ``labels_csv`` (or an unknown severity value), a series not listed or of
    another description than the condition needs, a missing or unreadable series folder, an instance number
    absent from the series, and a coordinate outside the image.

    Raises:
        InputError: when ``root``, a CSV file (or its required columns) or the image folder is missing.
    """
    root = Path(root).absolute()
    if not root.is_dir():
        raise InputError(root, "dataset folder not found")
    selected = _select_conditions(conditions)
    box = _box_size(box_size_mm)
    descriptions = {
        (_clean(r["study_id"]), _clean(r["series_id"])): _clean(r["series_description"])
        for r in _read_csv(root, series_csv, "series")
    }
    coordinates = _read_csv(root, coordinates_csv, "coordinates")
    severities = {_clean(r["study_id"]): r for r in _read_csv(root, labels_csv, "labels")}
    images = root / images_dir
    if not images.is_dir():
        raise InputError(images, "image folder not found (expected <study_id>/<series_id>/<instance>.dcm in it)")

    prepared = Prepared(
        classes=CLASSES,
        metadata={
            "name": "rsna2024_lumbar",
            "description": f"RSNA 2024 lumbar spine degenerative classification prepared from {root}: one entry per "
            f"labelled coordinate, soft mask a box around it, text from condition / level / severity "
            f"templates",
            "root": str(root),
            "labels": {name: index for index, name in enumerate(CLASSES)},
            "normal_label": "normal_mild",
            "conditions": selected,
            "box_size_mm": box,
        },
    )
    tables = _Tables(root, images, coordinates_csv, series_csv, labels_csv, descriptions, severities)
    seen: set[str] = set()
    not_selected: Counter = Counter()
    by_condition = {key: dict.fromkeys(CLASSES, 0) for key in selected}
    for number, row in enumerate(coordinates, start=1):
        condition = condition_key(row.get("condition") or "")
        if condition not in selected:
            not_selected[_clean(row.get("condition")) or "(empty)"] += 1
            continue
        study, series, level = (
            _clean(row.get("study_id")),
            _clean(row.get("series_id")),
            _clean(row.get("level")).upper(),
        )
        case = f"{study}_{series}_{condition}_{level_key(level)}"
        try:
            entry = _coordinate_entry(row, number, study, series, condition, level, seen, tables)
        except CaseSkipped as skipped:
            prepared.skip(case, skipped.file, skipped.kind, skipped.reason)
            continue
        prepared.entries.append(
            {
                "case_id": case,
                "patient_id": study,
                "study_id": study,
                "series_id": series,
                **entry,
                "box_size_mm": box,
                "coordinate_space": "voxel",
            }
        )
        by_condition[condition][entry["label"]] += 1
    prepared.counts = {"by_condition": by_condition, "not_selected": dict(sorted(not_selected.items()))}
    return prepared


@dataclass
class _Tables:
    """The layout's tables and folders, and the series read so far (each once, its error included)."""

    root: Path
    images: Path
    coordinates_csv: str
    series_csv: str
    labels_csv: str
    descriptions: dict[tuple[str, str], str]
    severities: dict[str, dict]
    series: ReadOnce = field(default_factory=ReadOnce)


def _coordinate_entry(
    row: dict, number: int, study: str, series: str, condition: str, level: str, seen: set[str], tables: _Tables
) -> dict:
    """The entry fields of one labelled coordinate; one that cannot be used raises :class:`CaseSkipped`."""
    coordinates_file = tables.root / tables.coordinates_csv
    try:
        instance = int(float(_clean(row.get("instance_number"))))
        x, y = float(_clean(row.get("x"))), float(_clean(row.get("y")))
        if not (study and series and LEVEL_PATTERN.match(level) and math.isfinite(x) and math.isfinite(y)):
            raise ValueError("empty study / series, bad level or coordinate")
    except (TypeError, ValueError) as error:
        raise CaseSkipped(coordinates_file, "bad_row", f"row {number} of {tables.coordinates_csv}: {error}") from error
    case = f"{study}_{series}_{condition}_{level_key(level)}"
    if case in seen:
        raise CaseSkipped(
            coordinates_file,
            "duplicate",
            f"row {number} of {tables.coordinates_csv}: {condition} at {level} is labelled twice in "
            f"study {study}, series {series}; the first one is kept",
        )
    seen.add(case)
    severity = _severity(study, condition, level, tables)
    description = _series_description(study, series, condition, tables)
    folder = tables.images / study / series
    headers = _series_headers(folder, tables)
    slice_index = headers.slice_index(instance)
    if slice_index is None:
        raise CaseSkipped(
            folder,
            "instance_not_found",
            f"instance number {instance} is not (exactly once) in the series ({len(headers.files)} files)",
        )
    if not (-0.5 <= x < headers.columns - 0.5 and -0.5 <= y < headers.rows - 0.5):
        raise CaseSkipped(
            headers.files[slice_index],
            "outside_image",
            f"coordinate ({x:g}, {y:g}) is outside the {headers.columns} x {headers.rows} image",
        )
    return {
        "image": str(folder),
        "point": [x, y, slice_index],
        "label": severity,
        "class_index": CLASSES.index(severity),
        "text": lesion_text(condition, level, severity),
        "condition": condition,
        "level": level,
        "instance_number": instance,
        "series_description": description,
    }


def _severity(study: str, condition: str, level: str, tables: _Tables) -> str:
    """The study's severity class for ``condition`` at ``level`` (``labels_csv``)."""
    labels_file, column = tables.root / tables.labels_csv, f"{condition}_{level_key(level)}"
    if study not in tables.severities:
        raise CaseSkipped(labels_file, "missing_severity", f"study {study} is not in {tables.labels_csv}")
    value = _clean(tables.severities[study].get(column)).lower()
    if not value:
        raise CaseSkipped(
            labels_file, "missing_severity", f"no severity for {column} of study {study} in {tables.labels_csv}"
        )
    if value not in SEVERITIES:
        raise CaseSkipped(
            labels_file,
            "unknown_severity",
            f"severity {value!r} for {column} of study {study} is not one of Normal/Mild, Moderate, Severe",
        )
    return SEVERITIES[value]


def _series_description(study: str, series: str, condition: str, tables: _Tables) -> str:
    """The series' description, which must be the one ``condition`` is read on (``series_csv``)."""
    series_file, needed = tables.root / tables.series_csv, CONDITIONS[condition].series_description
    description = tables.descriptions.get((study, series))
    if description is None:
        raise CaseSkipped(
            series_file, "unknown_series", f"series {series} of study {study} is not listed in {tables.series_csv}"
        )
    if description.lower() != needed.lower():
        raise CaseSkipped(
            series_file,
            "wrong_series",
            f"series {series} is {description!r}; {CONDITIONS[condition].name} is read on {needed!r}",
        )
    return description


def _series_headers(folder: Path, tables: _Tables) -> DicomSeries:
    """The series folder's headers in slice order, read once per folder."""
    if not folder.is_dir():
        raise CaseSkipped(folder, "missing_series", "series folder not found")
    try:
        return tables.series.get("series", folder, read_dicom_series)
    except InputError as error:
        raise CaseSkipped(error.source, "unreadable_series", str(error)) from error


def severity_columns(
    conditions: Sequence[str] = tuple(CONDITIONS), levels: Sequence[str] = ("L1/L2", "L2/L3", "L3/L4", "L4/L5", "L5/S1")
) -> list[str]:
    """The train.csv columns of ``conditions`` x ``levels``, e.g. ``spinal_canal_stenosis_l4_l5``."""
    return [f"{condition_key(c)}_{level_key(level)}" for c in conditions for level in levels]
