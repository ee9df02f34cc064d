"""What every dataset preparation shares: the patient-grouped split, DICOM series headers in ITK's slice order,
label tables, and writing ``datalist.json`` / ``skipped.json`` / ``summary.json``.

A preparer (:mod:`bundle.preparation.vertumor`, :mod:`bundle.preparation.rsna`) reads a dataset folder into a
:class:`Prepared`: datalist entries, the cases it could not use (each with a reason), and metadata.
:func:`write_prepared` splits the entries by patient and writes the three files. See
``docs/data_preparation.md`` for the layouts and outputs.
"""

from __future__ import annotations

import csv
import json
import math
import os
import random
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom

from bundle.data.datalist import FILE_KEYS
from bundle.errors import InputError
from bundle.transforms.loading import is_dicom_file
from bundle.utils.files import write_atomically, write_json_atomically

SPLITS = ("training", "validation", "test")
DEFAULT_FRACTIONS = (0.7, 0.1, 0.2)
ORIENTATION_TOLERANCE = 1e-4
POSITION_TOLERANCE_MM = 1e-3


@dataclass
class Prepared:
    """What a preparer found in a dataset folder.

    Attributes:
        entries: datalist entries, each with ``case_id``, ``patient_id``, ``label``, ``class_index``, ``text``,
            ``image`` and one soft-mask source.
        skipped: ``{"case", "file", "kind", "reason"}`` for every case left out.
        classes: the class names in ``class_index`` order.
        metadata: top-level datalist keys (name, description, root, ...).
        counts: extra summary counts (e.g. entries per condition).
    """

    entries: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    classes: tuple[str, ...] = ()
    metadata: dict = field(default_factory=dict)
    counts: dict = field(default_factory=dict)

    def skip(self, case: object, file: str | os.PathLike | None, kind: str, reason: str) -> None:
        """Record a case left out: ``kind`` is a short code (e.g. ``"missing_image"``), ``reason`` a sentence."""
        self.skipped.append({"case": str(case), "file": None if file is None else str(file), "kind": kind,
                             "reason": reason})


def normalise_fractions(fractions: Sequence[float] | Mapping[str, float]) -> dict[str, float]:
    """``{"training": f0, "validation": f1, "test": f2}`` summing to 1, from three non-negative numbers (or a
    mapping by split name) with a positive sum."""
    if isinstance(fractions, Mapping):
        unknown = set(fractions) - set(SPLITS)
        if unknown:
            raise ValueError(f"unknown split names {sorted(unknown)} in fractions (expected {list(SPLITS)})")
        values = [fractions.get(name, 0.0) for name in SPLITS]
    else:
        values = list(fractions) if not isinstance(fractions, (str, bytes)) else [fractions]
    if len(values) != len(SPLITS):
        raise ValueError(f"fractions needs 3 numbers (training, validation, test), got {values!r}")
    try:
        numbers = [float(value) for value in values]
    except (TypeError, ValueError) as error:
        raise ValueError(f"fractions must be numbers, got {values!r}") from error
    if any(not math.isfinite(v) or v < 0 for v in numbers) or sum(numbers) <= 0:
        raise ValueError(f"fractions must be non-negative with a positive sum, got {numbers}")
    total = sum(numbers)
    return {name: value / total for name, value in zip(SPLITS, numbers)}


def patient_split(entries: Sequence[Mapping], fractions: Sequence[float] | Mapping[str, float] = DEFAULT_FRACTIONS,
                  seed: int = 0, group_key: str = "patient_id", label_key: str = "label") -> dict[str, list[dict]]:
    """Split ``entries`` into training / validation / test with every patient in exactly one split.

    Deterministic for a given ``seed`` and independent of the entries' order. Stratified by class as far as
    the groups allow: patients are placed one by one (those holding the rarest classes first, in a seeded
    random order within each class) into the split that is relatively furthest below its target count of the
    patient's classes (each class weighted by its rarity; ties: the split relatively furthest below its
    target of all entries, then training before validation before test). So the first patients of a class
    go one to each split, and with enough patients the splits approach their fractions per class. A split
    with fraction 0 stays empty. Entries without ``group_key`` are their own patient
    (their ``case_id``). Within each split the entries keep their input order.
    """
    shares = normalise_fractions(fractions)
    groups: dict[str, list[int]] = {}
    for index, entry in enumerate(entries):
        patient = entry.get(group_key)
        patient = str(patient) if patient not in (None, "") else f"case:{entry.get('case_id', index)}"
        groups.setdefault(patient, []).append(index)
    labels = [str(entry.get(label_key, "")) for entry in entries]
    totals = Counter(labels)
    composition = {patient: Counter(labels[i] for i in members) for patient, members in groups.items()}

    def rarity(label: str) -> tuple[int, str]:
        return totals[label], label

    stratum = {patient: min(counts, key=rarity) for patient, counts in composition.items()}
    order: list[str] = []
    for label in sorted(set(stratum.values()), key=rarity):
        members = sorted(patient for patient in groups if stratum[patient] == label)
        random.Random(f"{seed}:{label}").shuffle(members)
        order.extend(members)

    active = [name for name in SPLITS if shares[name] > 0]
    per_label = {name: Counter() for name in SPLITS}
    sizes = dict.fromkeys(SPLITS, 0)
    assigned: dict[str, str] = {}
    for patient in order:
        def score(name: str, patient: str = patient) -> tuple[float, float, int]:
            class_deficit = sum(count / totals[label] * (1 - per_label[name][label] / (shares[name] * totals[label]))
                                for label, count in composition[patient].items())
            overall_deficit = 1 - sizes[name] / (shares[name] * len(entries))
            return round(class_deficit, 9), round(overall_deficit, 9), -SPLITS.index(name)

        chosen = max(active, key=score)
        assigned[patient] = chosen
        per_label[chosen].update(composition[patient])
        sizes[chosen] += sum(composition[patient].values())

    split_of = {i: assigned[patient] for patient, members in groups.items() for i in members}
    result: dict[str, list[dict]] = {name: [] for name in SPLITS}
    for index, entry in enumerate(entries):
        result[split_of[index]].append(dict(entry))
    return result


@dataclass(frozen=True)
class DicomSeries:
    """The headers of one DICOM series folder, with its files in the order ITK stacks them.

    ITK (GDCM) sorts the slices by their ``ImagePositionPatient`` projected on the slice normal (the cross
    product of the two ``ImageOrientationPatient`` directions), ascending; :class:`bundle.transforms.loading.LoadVolume`
    then gives voxel ``[column, row, k]`` for pixel (row, column) of the k-th file in that order.
    """

    folder: Path
    files: tuple[Path, ...]
    instance_numbers: tuple[int | None, ...]
    rows: int
    columns: int
    series_uid: str
    description: str

    @property
    def shape(self) -> tuple[int, int, int]:
        """The loaded volume's spatial shape: (columns, rows, slices)."""
        return self.columns, self.rows, len(self.files)

    def slice_index(self, instance_number: int) -> int | None:
        """Index along the loaded volume's third axis of the file with ``instance_number`` (None if absent
        or not unique)."""
        matches = [k for k, number in enumerate(self.instance_numbers) if number == int(instance_number)]
        return matches[0] if len(matches) == 1 else None


def _dicom_candidates(folder: Path) -> list[Path]:
    return [path for path in sorted(folder.iterdir()) if path.is_file() and not path.name.startswith(".")
            and (path.suffix.lower() == ".dcm" or is_dicom_file(path))]


def read_dicom_header(path: str | os.PathLike) -> pydicom.Dataset:
    """The header of one DICOM file (no pixel data), or :class:`InputError` naming the file."""
    try:
        return pydicom.dcmread(str(path), stop_before_pixels=True)
    except Exception as error:  # any parser failure means an unusable file
        raise InputError(path, f"unreadable DICOM file ({type(error).__name__}: {error})") from error


def read_dicom_series(folder: str | os.PathLike) -> DicomSeries:
    """Read the headers of every DICOM file in ``folder`` (not its pixels) and order them as ITK does.

    Raises:
        InputError: naming the folder or file, when there is no DICOM file, a file cannot be parsed, the
            folder holds several series or multi-frame files, the slices differ in size or orientation (ITK
            would read only one stack), a slice has no position, or two slices share a position.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(folder, "series folder not found")
    files = _dicom_candidates(folder)
    if not files:
        raise InputError(folder, "no DICOM files in the folder")
    headers = [read_dicom_header(path) for path in files]
    for path, header in zip(files, headers):
        if int(header.get("NumberOfFrames", 1) or 1) > 1:
            raise InputError(path, "multi-frame DICOM is not supported (one image per file expected)")
        if header.get("Rows") is None or header.get("Columns") is None:
            raise InputError(path, "no Rows / Columns: not an image (truncated or not an image file)")
    series_uids = sorted({str(h.get("SeriesInstanceUID", "")) for h in headers})
    if len(series_uids) > 1:
        raise InputError(folder, f"{len(series_uids)} series in one folder (SeriesInstanceUID {series_uids[:3]})")
    sizes = sorted({(int(h.Rows), int(h.Columns)) for h in headers})
    if len(sizes) > 1:
        raise InputError(folder, f"slices of different sizes (rows, columns) {sizes}")
    if len(files) > 1:
        for path, header in zip(files, headers):
            if header.get("ImageOrientationPatient") is None or header.get("ImagePositionPatient") is None:
                raise InputError(path, "no ImageOrientationPatient / ImagePositionPatient: slice order unknown")
        orientations = np.array([[float(v) for v in h.ImageOrientationPatient] for h in headers])
        if np.abs(orientations - orientations[0]).max() > ORIENTATION_TOLERANCE:
            raise InputError(folder, "slices with different orientations (several stacks in one series); "
                                     "ITK would read only one of them")
        normal = np.cross(orientations[0, :3], orientations[0, 3:])
        distances = np.array([np.dot([float(v) for v in h.ImagePositionPatient], normal) for h in headers])
        order = sorted(range(len(files)), key=lambda k: (distances[k], files[k].name))
        gaps = np.diff(distances[order])
        if (np.abs(gaps) < POSITION_TOLERANCE_MM).any():
            k = int(np.argmin(np.abs(gaps)))
            raise InputError(folder, f"two slices at the same position ({files[order[k]].name}, "
                                     f"{files[order[k + 1]].name})")
    else:
        order = [0]

    def instance(header: pydicom.Dataset) -> int | None:
        value = header.get("InstanceNumber")
        return None if value in (None, "") else int(value)

    rows, columns = sizes[0]
    return DicomSeries(folder=folder, files=tuple(files[k] for k in order),
                       instance_numbers=tuple(instance(headers[k]) for k in order), rows=rows, columns=columns,
                       series_uid=series_uids[0], description=str(headers[0].get("SeriesDescription", "")))


def read_table(path: str | os.PathLike) -> list[dict[str, object]]:
    """Rows of a CSV file (header row required) or a JSON file (a list of objects, an object with one list
    of objects such as ``{"cases": [...]}``, or an object of objects keyed by case id, which becomes
    ``case_id``). Column names are stripped and lower-cased.

    Raises:
        InputError: naming the file when it cannot be read or has no rows of the expected shape.
    """
    path = Path(path)
    try:
        if path.suffix.lower() == ".json":
            content = json.loads(path.read_text(encoding="utf-8"))
            rows = _json_rows(path, content)
        else:
            with open(path, newline="", encoding="utf-8-sig") as handle:
                reader = csv.DictReader(handle)
                if not reader.fieldnames:
                    raise InputError(path, "empty CSV file (no header row)")
                rows = [dict(row) for row in reader]
    except (OSError, UnicodeDecodeError, ValueError, csv.Error) as error:
        if isinstance(error, InputError):
            raise
        raise InputError(path, f"cannot be read as a table ({type(error).__name__}: {error})") from error
    return [{str(key).strip().lower(): value for key, value in row.items() if key is not None} for row in rows]


def _json_rows(path: Path, content: object) -> list[dict]:
    if isinstance(content, Mapping):
        lists = [value for value in content.values() if isinstance(value, list)]
        if len(lists) == 1:
            content = lists[0]
        elif content and all(isinstance(value, Mapping) for value in content.values()):
            return [{"case_id": key, **value} for key, value in content.items()]
    if not isinstance(content, list) or not all(isinstance(row, Mapping) for row in content):
        raise InputError(path, "expected a list of objects (one per case), an object holding one such list, "
                               "or an object of objects keyed by case id")
    return [dict(row) for row in content]


def pick_column(columns: Iterable[str], aliases: Sequence[str]) -> str | None:
    """The first of ``aliases`` that is one of ``columns``."""
    available = set(columns)
    return next((name for name in aliases if name in available), None)


def class_counts(entries: Iterable[Mapping], classes: Sequence[str] = ()) -> dict[str, int]:
    """Entries per ``label``: the known ``classes`` first (zeros included), then any other label."""
    counts = Counter(str(entry.get("label", "")) for entry in entries)
    ordered = {name: counts.pop(name, 0) for name in classes}
    ordered.update(sorted(counts.items()))
    return ordered


def summarise(splits: Mapping[str, Sequence[Mapping]], prepared: Prepared) -> dict[str, object]:
    """Class counts per split and overall, patients per split, skipped cases per kind, and the preparer's own
    counts."""
    every = [entry for name in SPLITS for entry in splits[name]]
    patients = {name: len({str(e.get("patient_id", e.get("case_id"))) for e in splits[name]}) for name in SPLITS}
    return {
        "entries": len(every),
        "patients": sum(patients.values()),
        "skipped": len(prepared.skipped),
        "classes": {"all": class_counts(every, prepared.classes),
                    **{name: class_counts(splits[name], prepared.classes) for name in SPLITS}},
        "patients_per_split": patients,
        "entries_per_split": {name: len(splits[name]) for name in SPLITS},
        "skipped_by_kind": dict(sorted(Counter(s["kind"] for s in prepared.skipped).items())),
        **prepared.counts,
    }


@dataclass(frozen=True)
class PreparedFiles:
    """Where :func:`write_prepared` wrote, and the summary it wrote."""

    datalist: Path
    skipped: Path
    summary_file: Path
    summary: dict


def write_prepared(prepared: Prepared, out_dir: str | os.PathLike,
                   fractions: Sequence[float] | Mapping[str, float] = DEFAULT_FRACTIONS, seed: int = 0,
                   relative_paths: bool = False) -> PreparedFiles:
    """Split ``prepared.entries`` by patient and write, each atomically, into ``out_dir``:

    - ``datalist.json``: the metadata, ``"split"`` (fractions, seed, rule), ``"summary"`` and the lists
      ``"training"``, ``"validation"``, ``"test"``; file paths absolute, or relative to ``out_dir`` with
      ``relative_paths`` (:func:`bundle.data.datalist.load_datalist` resolves them against the datalist's folder);
    - ``skipped.json``: the list of ``{"case", "file", "kind", "reason"}``;
    - ``summary.json``: the same summary as in the datalist.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    shares = normalise_fractions(fractions)
    splits = patient_split(prepared.entries, shares, seed)
    if relative_paths:
        base = out_dir.absolute()
        for entries in splits.values():
            for entry in entries:
                for key in FILE_KEYS:
                    if isinstance(entry.get(key), str):
                        entry[key] = os.path.relpath(Path(entry[key]).absolute(), base)
    summary = summarise(splits, prepared)
    datalist = {**prepared.metadata,
                "split": {"fractions": shares, "seed": int(seed), "group_key": "patient_id",
                          "rule": "by patient, class-stratified (bundle.preparation.prepared.patient_split)"},
                "summary": summary, **splits}
    skipped_path = write_atomically(out_dir / "skipped.json",
                                    (json.dumps(prepared.skipped, indent=2) + "\n").encode())
    summary_path = write_json_atomically(out_dir / "summary.json", summary)
    datalist_path = write_json_atomically(out_dir / "datalist.json", datalist)
    return PreparedFiles(datalist=datalist_path, skipped=skipped_path, summary_file=summary_path, summary=summary)


def format_summary(summary: Mapping[str, object]) -> list[str]:
    """Printable lines: entries and class counts per split, then skipped cases per kind."""
    lines = []
    classes = summary["classes"]
    for name in SPLITS:
        counts = ", ".join(f"{label} {count}" for label, count in classes[name].items())
        lines.append(f"{name}: {summary['entries_per_split'][name]} entries from "
                     f"{summary['patients_per_split'][name]} patients ({counts})")
    kinds = ", ".join(f"{kind} {count}" for kind, count in summary["skipped_by_kind"].items())
    lines.append(f"skipped: {summary['skipped']}" + (f" ({kinds})" if kinds else ""))
    return lines
