"""What a dataset preparation found and what it writes: :class:`Prepared` (datalist entries, the cases it could not
use, each with a reason, and metadata) and ``datalist.json`` / ``skipped.json`` / ``summary.json``.

A preparer (:mod:`bundle.preparation.vertumor`, :mod:`bundle.preparation.rsna`) reads a dataset folder into a
:class:`Prepared`; :func:`write_prepared` splits the entries by patient
(:func:`bundle.preparation.patient_split.patient_split`) and writes the three files. See
``docs/data_preparation.md`` for the layouts and outputs.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bundle.data.class_balance import class_counts
from bundle.data.datalist import FILE_KEYS
from bundle.errors import InputError
from bundle.preparation.patient_split import DEFAULT_FRACTIONS, SPLITS, normalise_fractions, patient_split
from bundle.preparation.preparation_checks import PreparationChecks
from bundle.utils.files import write_atomically, write_json_atomically


class CaseSkipped(Exception):
    """A case a preparer leaves out: the file it is about, a short kind (e.g. ``"missing_image"``) and the reason
    (recorded with :meth:`Prepared.skip`)."""

    def __init__(self, file: str | os.PathLike | None, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.file, self.kind, self.reason = file, kind, reason


class ReadOnce:
    """Each file read once per kind of read (a header, the labels, a series), its :class:`InputError` included,
    so a file that many rows name costs one read and gives every row the same reason."""

    def __init__(self) -> None:
        self.values: dict[tuple[str, Path], object] = {}

    def get(self, kind: str, path: Path, reader):
        key = (kind, path)
        if key not in self.values:
            try:
                self.values[key] = reader(path)
            except InputError as error:
                self.values[key] = error
        value = self.values[key]
        if isinstance(value, InputError):
            raise value
        return value


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
        self.skipped.append(
            {"case": str(case), "file": None if file is None else str(file), "kind": kind, "reason": reason}
        )


def summarise(splits: Mapping[str, Sequence[Mapping]], prepared: Prepared) -> dict[str, object]:
    """Class counts per split and overall, patients per split, skipped cases per kind, and the preparer's own
    counts."""
    every = [entry for name in SPLITS for entry in splits[name]]
    patients = {name: len({str(e.get("patient_id", e.get("case_id"))) for e in splits[name]}) for name in SPLITS}
    return {
        "entries": len(every),
        "patients": sum(patients.values()),
        "skipped": len(prepared.skipped),
        "classes": {
            "all": class_counts(every, prepared.classes),
            **{name: class_counts(splits[name], prepared.classes) for name in SPLITS},
        },
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


def write_prepared(
    prepared: Prepared,
    out_dir: str | os.PathLike,
    fractions: Sequence[float] | Mapping[str, float] = DEFAULT_FRACTIONS,
    seed: int = 0,
    relative_paths: bool = False,
    checks: PreparationChecks | None = None,
) -> PreparedFiles:
    """Split ``prepared.entries`` by patient and write, each atomically, into ``out_dir``:

    - ``datalist.json``: the metadata, ``"split"`` (fractions, seed, rule), ``"summary"`` and the lists
      ``"training"``, ``"validation"``, ``"test"``; file paths absolute, or relative to ``out_dir`` with
      ``relative_paths`` (:func:`bundle.data.datalist.load_datalist` resolves them against the datalist's folder);
    - ``skipped.json``: the list of ``{"case", "file", "kind", "reason"}``;
    - ``summary.json``: the same summary as in the datalist.

    The summary's ``"warnings"`` lists what ``checks`` (default :class:`PreparationChecks` with its default
    thresholds) found: an empty or tiny split, a class too rare to train on, ...; each is also logged.
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
    summary["warnings"] = (checks or PreparationChecks())(splits, shares, prepared.classes, prepared.skipped)
    datalist = {
        **prepared.metadata,
        "split": {
            "fractions": shares,
            "seed": int(seed),
            "group_key": "patient_id",
            "rule": "by patient, class-stratified (bundle.preparation.patient_split.patient_split)",
        },
        "summary": summary,
        **splits,
    }
    skipped_path = write_atomically(out_dir / "skipped.json", (json.dumps(prepared.skipped, indent=2) + "\n").encode())
    summary_path = write_json_atomically(out_dir / "summary.json", summary)
    datalist_path = write_json_atomically(out_dir / "datalist.json", datalist)
    return PreparedFiles(datalist=datalist_path, skipped=skipped_path, summary_file=summary_path, summary=summary)


def format_summary(summary: Mapping[str, object]) -> list[str]:
    """Printable lines: entries and class counts per split, then skipped cases per kind."""
    lines = []
    classes = summary["classes"]
    for name in SPLITS:
        counts = ", ".join(f"{label} {count}" for label, count in classes[name].items())
        lines.append(
            f"{name}: {summary['entries_per_split'][name]} entries from "
            f"{summary['patients_per_split'][name]} patients ({counts})"
        )
    kinds = ", ".join(f"{kind} {count}" for kind, count in summary["skipped_by_kind"].items())
    lines.append(f"skipped: {summary['skipped']}" + (f" ({kinds})" if kinds else ""))
    return lines
