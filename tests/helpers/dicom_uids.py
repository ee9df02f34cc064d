"""A copy of a DICOM series with real UIDs: the CT series in ``../shared/data`` leaves its UIDs and SeriesNumber empty,
and the MONAI Deploy App SDK's loader drops such instances."""

from __future__ import annotations

from pathlib import Path

import pydicom
from pydicom.uid import CTImageStorage, generate_uid


def series_with_uids(source: Path, target: Path, sop_class: str = CTImageStorage, **tags: object) -> Path:
    """Copy the series in ``source`` to ``target`` with one new Study, Series and Frame of Reference UID, a new SOP
    Instance UID per instance, ``sop_class``, SeriesNumber 1 and the further ``tags`` (keyword -> value)."""
    target.mkdir(parents=True)
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    for index, path in enumerate(sorted(p for p in source.iterdir() if p.is_file())):
        dataset = pydicom.dcmread(path)
        dataset.StudyInstanceUID, dataset.SeriesInstanceUID, dataset.FrameOfReferenceUID = study, series, frame
        dataset.SOPClassUID, dataset.SOPInstanceUID = sop_class, generate_uid()
        dataset.SeriesNumber = 1
        for keyword, value in tags.items():
            setattr(dataset, keyword, value)
        dataset.file_meta.MediaStorageSOPClassUID = dataset.SOPClassUID
        dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
        dataset.save_as(target / f"{index:04d}.dcm")
    return target
