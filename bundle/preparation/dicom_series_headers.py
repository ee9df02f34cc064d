"""A DICOM series folder's headers in the order ITK stacks its slices, for finding a labelled instance's slice.

The files and their headers are those the loader reads and the writer writes back
(:func:`bundle.data.dicom_series.series_instances`: one meaning of "the DICOM images of a series folder").
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom

from bundle.data.dicom_series import series_instances
from bundle.errors import InputError

ORIENTATION_TOLERANCE = 1e-4


POSITION_TOLERANCE_MM = 1e-3


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
    instances = series_instances(folder)
    if not instances:
        raise InputError(folder, "no DICOM files in the folder")
    files = [path for path, _ in instances]
    headers = [header for _, header in instances]
    for path, header in zip(files, headers, strict=True):
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
    order = _slice_order(folder, files, headers)

    def instance(header: pydicom.Dataset) -> int | None:
        value = header.get("InstanceNumber")
        return None if value in (None, "") else int(value)

    rows, columns = sizes[0]
    return DicomSeries(
        folder=folder,
        files=tuple(files[k] for k in order),
        instance_numbers=tuple(instance(headers[k]) for k in order),
        rows=rows,
        columns=columns,
        series_uid=series_uids[0],
        description=str(headers[0].get("SeriesDescription", "")),
    )


def _slice_order(folder: Path, files: list[Path], headers: list[pydicom.Dataset]) -> list[int]:
    """The indices of ``files`` in ITK's slice order: ascending position along the slice normal.

    Raises:
        InputError: a slice has no position or orientation, the orientations differ, or two slices share a
            position.
    """
    if len(files) < 2:
        return list(range(len(files)))
    for path, header in zip(files, headers, strict=True):
        if header.get("ImageOrientationPatient") is None or header.get("ImagePositionPatient") is None:
            raise InputError(path, "no ImageOrientationPatient / ImagePositionPatient: slice order unknown")
    orientations = np.array([[float(v) for v in h.ImageOrientationPatient] for h in headers])
    if np.abs(orientations - orientations[0]).max() > ORIENTATION_TOLERANCE:
        raise InputError(
            folder, "slices with different orientations (several stacks in one series); ITK would read only one of them"
        )
    normal = np.cross(orientations[0, :3], orientations[0, 3:])
    distances = np.array([np.dot([float(v) for v in h.ImagePositionPatient], normal) for h in headers])
    order = sorted(range(len(files)), key=lambda k: (distances[k], files[k].name))
    gaps = np.diff(distances[order])
    if (np.abs(gaps) < POSITION_TOLERANCE_MM).any():
        k = int(np.argmin(np.abs(gaps)))
        raise InputError(
            folder, f"two slices at the same position ({files[order[k]].name}, {files[order[k + 1]].name})"
        )
    return order
