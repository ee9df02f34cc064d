"""DICOM series for the MONAI Deploy app, whose loader needs real UIDs and a SeriesNumber: a copy of the CT series in
``../shared/data`` (which leaves them empty) with real ones, and a sagittal MR series made from a NIfTI volume."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid

LPS = np.array([-1.0, -1.0, 1.0])  # RAS -> LPS (and back)


def series_with_uids(source: Path, target: Path, sop_class: str = CTImageStorage, **tags: object) -> Path:
    """Copy the series in ``source`` to ``target`` (files ``<index>.dcm``) with one new Study, Series and Frame of
    Reference UID, a new SOP Instance UID per instance, ``sop_class``, SeriesNumber 1 and the further ``tags``
    (keyword -> value)."""
    target.mkdir(parents=True, exist_ok=True)
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


def mr_series_from_nifti(nifti: Path, target: Path, series_number: int = 2, patient_position: str = "HFS") -> Path:
    """Write the int16 volume ``nifti`` as an MR series, one instance ``mr_<k>.dcm`` per index ``k`` of its third
    axis: instance ``k``'s pixel (row ``j``, column ``i``) is voxel ``(i, j, k)``, with the position, orientation and
    spacing of the NIfTI affine (RAS) in patient coordinates (LPS). A volume whose third axis runs left-right gives a
    sagittal series. ``patient_position`` "" leaves PatientPosition out."""
    image = nib.load(str(nifti))
    volume = np.asarray(image.dataobj).astype(np.int16)
    affine = np.asarray(image.affine, float)
    columns_step, rows_step, slices_step = (affine[:3, axis] * LPS for axis in range(3))
    study_uid, series_uid, frame_uid = generate_uid(), generate_uid(), generate_uid()
    target.mkdir(parents=True, exist_ok=True)
    for k in range(volume.shape[2]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = MRImageStorage, generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        path = target / f"mr_{k:04d}.dcm"
        dataset = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
        dataset.SOPClassUID, dataset.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
        dataset.StudyInstanceUID, dataset.SeriesInstanceUID, dataset.FrameOfReferenceUID = (
            study_uid,
            series_uid,
            frame_uid,
        )
        dataset.PatientID, dataset.PatientName, dataset.Modality = "MR-TEST", "Test^Sagittal", "MR"
        dataset.SeriesNumber, dataset.InstanceNumber = series_number, k + 1
        if patient_position:
            dataset.PatientPosition = patient_position
        dataset.SeriesDescription = f"T2 sagittal from {nifti.name}"
        dataset.ImageOrientationPatient = [
            *(columns_step / np.linalg.norm(columns_step)),
            *(rows_step / np.linalg.norm(rows_step)),
        ]
        dataset.ImagePositionPatient = list((affine @ [0, 0, k, 1])[:3] * LPS)
        dataset.PixelSpacing = [float(np.linalg.norm(rows_step)), float(np.linalg.norm(columns_step))]
        dataset.SliceThickness = float(np.linalg.norm(slices_step))
        dataset.Rows, dataset.Columns = volume.shape[1], volume.shape[0]
        dataset.SamplesPerPixel, dataset.PhotometricInterpretation = 1, "MONOCHROME2"
        dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit, dataset.PixelRepresentation = 16, 16, 15, 1
        dataset.PixelData = np.ascontiguousarray(volume[:, :, k].T).tobytes()
        dataset.save_as(path, enforce_file_format=True)
    return target
