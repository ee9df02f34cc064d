"""Prepare a MONAI datalist (training / validation / test, split by patient) from a dataset folder.

Usage (from the repository root)::

    python scripts/prepare.py vertumor --root /data/vertumor --out_dir prepared/vertumor
        [--labels labels.csv] [--label_scheme verse|totalseg] [--fractions "[0.7,0.1,0.2]"] [--seed 0]
    python scripts/prepare.py rsna --root /data/rsna-2024 --out_dir prepared/rsna
        [--box_size_mm 20] [--conditions spinal_canal_stenosis,left_neural_foraminal_narrowing]
        [--fractions "[0.7,0.1,0.2]"] [--seed 0]

Both write ``<out_dir>/datalist.json``, ``<out_dir>/skipped.json`` (the cases left out, with reasons) and
``<out_dir>/summary.json`` (class counts per split and the warnings: an empty or tiny split, a class with too few
training cases, ...; also printed). The layouts are described in docs/data_preparation.md.
Exit status 1 with a message when the dataset folder is unusable or no case could be prepared.
"""

from __future__ import annotations

from collections.abc import Sequence

import fire

from bundle.errors import InputError
from bundle.preparation.patient_split import DEFAULT_FRACTIONS
from bundle.preparation.preparation_checks import PreparationChecks
from bundle.preparation.prepared import Prepared, format_summary, write_prepared
from bundle.preparation.rsna import CONDITIONS, DEFAULT_BOX_SIZE_MM, collect_rsna
from bundle.preparation.vertumor import collect_vertumor


def _write(
    prepared: Prepared,
    out_dir: str,
    fractions: Sequence[float],
    seed: int,
    relative_paths: bool,
    checks: PreparationChecks,
) -> None:
    files = write_prepared(prepared, out_dir, fractions, seed, relative_paths, checks)
    for line in format_summary(files.summary):
        print(line)
    print(f"datalist: {files.datalist}")
    print(f"skipped: {files.skipped}")
    print(f"summary: {files.summary_file}")
    if not prepared.entries:
        raise SystemExit(
            f"prepare.py: error: no usable case in {prepared.metadata.get('root')}; the reasons are in {files.skipped}"
        )


def vertumor(
    root: str,
    out_dir: str,
    labels: str | None = None,
    label_scheme: str = "verse",
    images_dir: str = "images",
    segmentations_dir: str = "segmentations",
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    seed: int = 0,
    relative_paths: bool = False,
    min_split_entries: int = PreparationChecks.min_split_entries,
    min_class_cases: int = PreparationChecks.min_class_cases,
) -> None:
    """A VerTumor1200-like folder: labels.csv / labels.json, images/, segmentations/.

    Args:
        root: the dataset folder.
        out_dir: where datalist.json, skipped.json and summary.json go (created if needed).
        labels: the labels table (default: root/labels.csv or root/labels.json).
        label_scheme: vertebra numbering for rows that give a ``level`` instead of ``mask_labels``:
            "verse" (L1 = 20) or "totalseg" (TotalSegmentator v2, L1 = 31).
        images_dir, segmentations_dir: sub-folders of ``root`` holding the volumes and segmentations.
        fractions: training, validation, test shares (of entries; whole patients go to one split).
        seed: seed of the patient split.
        relative_paths: write file paths relative to ``out_dir`` instead of absolute.
        min_split_entries, min_class_cases: warn (log and summary.json ``warnings``) about a split with fewer
            entries, a class with fewer training entries (:class:`PreparationChecks`).
    """
    try:
        prepared = collect_vertumor(root, labels, label_scheme, images_dir, segmentations_dir)
        _write(
            prepared, out_dir, fractions, seed, relative_paths, PreparationChecks(min_split_entries, min_class_cases)
        )
    except (InputError, ValueError, OSError) as error:
        raise SystemExit(f"prepare.py: error: {error}") from None


def rsna(
    root: str,
    out_dir: str,
    conditions: Sequence[str] | str = tuple(CONDITIONS),
    box_size_mm: float | Sequence[float] = DEFAULT_BOX_SIZE_MM,
    images_dir: str = "train_images",
    series_csv: str = "train_series_descriptions.csv",
    coordinates_csv: str = "train_label_coordinates.csv",
    labels_csv: str = "train.csv",
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    seed: int = 0,
    relative_paths: bool = False,
    min_split_entries: int = PreparationChecks.min_split_entries,
    min_class_cases: int = PreparationChecks.min_class_cases,
) -> None:
    """The RSNA 2024 lumbar-spine layout: CSVs and train_images/<study>/<series>/<instance>.dcm.

    Args:
        root: the dataset folder.
        out_dir: where datalist.json, skipped.json and summary.json go (created if needed).
        conditions: which of spinal_canal_stenosis (sagittal T2/STIR), left_neural_foraminal_narrowing and
            right_neural_foraminal_narrowing (sagittal T1) to prepare (comma-separated or a list).
        box_size_mm: edge of the box soft mask around each coordinate, one number or three (per voxel axis:
            column, row, slice).
        images_dir, series_csv, coordinates_csv, labels_csv: names of the image folder and CSV files in root.
        fractions: training, validation, test shares (of entries; whole studies go to one split).
        seed: seed of the patient split.
        relative_paths: write file paths relative to ``out_dir`` instead of absolute.
        min_split_entries, min_class_cases: warn (log and summary.json ``warnings``) about a split with fewer
            entries, a class with fewer training entries (:class:`PreparationChecks`).
    """
    try:
        prepared = collect_rsna(root, conditions, box_size_mm, images_dir, series_csv, coordinates_csv, labels_csv)
        _write(
            prepared, out_dir, fractions, seed, relative_paths, PreparationChecks(min_split_entries, min_class_cases)
        )
    except (InputError, ValueError, OSError) as error:
        raise SystemExit(f"prepare.py: error: {error}") from None


if __name__ == "__main__":
    fire.Fire({"vertumor": vertumor, "rsna": rsna})
