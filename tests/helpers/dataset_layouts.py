"""Tiny synthetic dataset folders in the layouts scripts/prepare.py reads: VerTumor1200-like (NIfTI and DICOM
volumes, vertebra label maps, labels.csv) and RSNA 2024 lumbar spine (DICOM series with shuffled instance
numbers, the three CSV files). Each writer returns what the tests expect to find."""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

from bundle.preparation.rsna import severity_columns
from bundle.transforms.loading import LoadVolume

SAGITTAL = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)
AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
BACKGROUND = 100


def write_dicom_series(
    folder: Path,
    instance_order: Sequence[int],
    rows: int = 32,
    columns: int = 32,
    orientation: Sequence[float] = SAGITTAL,
    spacing: float = 1.0,
    thickness: float = 4.0,
    description: str = "Sagittal T2/STIR",
    patient: str = "p",
    study_uid: str | None = None,
    pixels: Mapping[int, Sequence[tuple[int, int, int]]] | None = None,
) -> list[Path]:
    """A series of ``len(instance_order)`` slices: the k-th along the slice normal has instance number
    ``instance_order[k]`` and file ``<instance>.dcm``; ``pixels[instance]`` lists (row, column, value) set on
    that instance's image (background 100 plus a gradient)."""
    folder.mkdir(parents=True, exist_ok=True)
    study_uid = study_uid or generate_uid()
    series_uid = generate_uid()
    row_direction, column_direction = np.asarray(orientation[:3], float), np.asarray(orientation[3:], float)
    normal = np.cross(row_direction, column_direction)
    origin = np.array([-20.0, -30.0, 40.0])
    files = []
    for position, instance in enumerate(instance_order):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        path = folder / f"{instance}.dcm"
        dataset = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
        dataset.SOPClassUID = MRImageStorage
        dataset.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        dataset.StudyInstanceUID = study_uid
        dataset.SeriesInstanceUID = series_uid
        dataset.PatientID = patient
        dataset.Modality = "MR"
        dataset.SeriesDescription = description
        dataset.SeriesNumber = 1
        dataset.InstanceNumber = int(instance)
        dataset.ImageOrientationPatient = [float(v) for v in orientation]
        dataset.ImagePositionPatient = [float(v) for v in origin + position * thickness * normal]
        dataset.PixelSpacing = [spacing, spacing]
        dataset.SliceThickness = thickness
        dataset.Rows, dataset.Columns = rows, columns
        dataset.SamplesPerPixel = 1
        dataset.PhotometricInterpretation = "MONOCHROME2"
        dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit, dataset.PixelRepresentation = 16, 16, 15, 0
        image = (BACKGROUND + np.add.outer(np.arange(rows), np.arange(columns)) % 7).astype(np.uint16)
        for row, column, value in (pixels or {}).get(instance, ()):
            image[row, column] = value
        dataset.PixelData = image.tobytes()
        dataset.save_as(path, enforce_file_format=True)
        files.append(path)
    return files


def _write_csv(path: Path, rows: Sequence[Mapping], columns: Sequence[str]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns))
        writer.writeheader()
        for row in rows:
            writer.writerow({key: row.get(key, "") for key in columns})


# Coordinates of the RSNA layout: (study, series, instance, condition, level, x, y, severity or None).
RSNA_COORDINATES = [
    ("1001", "11", 3, "Spinal Canal Stenosis", "L3/L4", 10.4, 20.6, "Severe"),
    ("1001", "11", 5, "Spinal Canal Stenosis", "L4/L5", 12.0, 24.0, "Moderate"),
    ("1001", "12", 2, "Left Neural Foraminal Narrowing", "L4/L5", 8.0, 9.0, "Normal/Mild"),
    ("1001", "12", 6, "Right Neural Foraminal Narrowing", "L5/S1", 20.0, 22.0, "Severe"),
    ("1001", "13", 2, "Left Subarticular Stenosis", "L4/L5", 15.0, 15.0, "Moderate"),
    ("1002", "21", 4, "Spinal Canal Stenosis", "L1/L2", 16.0, 5.0, "Normal/Mild"),
    ("1002", "22", 1, "Left Neural Foraminal Narrowing", "L2/L3", 7.0, 28.0, "Moderate"),
    ("1003", "31", 6, "Spinal Canal Stenosis", "L4/L5", 30.0, 2.0, "Severe"),
    ("1006", "61", 1, "Spinal Canal Stenosis", "L2/L3", 11.0, 11.0, "Normal/Mild"),
    ("1007", "71", 2, "Right Neural Foraminal Narrowing", "L3/L4", 19.0, 13.0, "Moderate"),
]
# Rows that must be skipped: (study, series, instance, condition, level, x, y, severity, kind).
RSNA_BROKEN = [
    ("1001", "11", 3, "Spinal Canal Stenosis", "L3/L4", 10.4, 20.6, "Severe", "duplicate"),
    ("1002", "21", 99, "Spinal Canal Stenosis", "L2/L3", 5.0, 5.0, "Moderate", "instance_not_found"),
    ("1002", "21", 2, "Spinal Canal Stenosis", "L3/L4", 5.0, 5.0, None, "missing_severity"),
    ("1003", "32", 1, "Spinal Canal Stenosis", "L1/L2", 5.0, 5.0, "Severe", "wrong_series"),
    ("1003", "33", 1, "Left Neural Foraminal Narrowing", "L1/L2", 5.0, 5.0, "Moderate", "missing_series"),
    ("1003", "31", 2, "Spinal Canal Stenosis", "L5/S1", 500.0, 5.0, "Moderate", "outside_image"),
    ("1003", "39", 1, "Spinal Canal Stenosis", "L2/L3", 5.0, 5.0, "Moderate", "unknown_series"),
    ("1004", "41", 1, "Spinal Canal Stenosis", "L4/L5", 5.0, 5.0, "Severe", "missing_severity"),
    ("1005", "51", 1, "Spinal Canal Stenosis", "L4/L5", 5.0, 5.0, "Severe", "unreadable_series"),
    ("1003", "31", 1, "Spinal Canal Stenosis", "L9/L10", 5.0, 5.0, "Severe", "bad_row"),
]
SERIES = {  # (study, series): (description, orientation, instance order along the normal)
    ("1001", "11"): ("Sagittal T2/STIR", SAGITTAL, [4, 1, 6, 2, 5, 3]),
    ("1001", "12"): ("Sagittal T1", SAGITTAL, [6, 5, 4, 3, 2, 1]),
    ("1001", "13"): ("Axial T2", AXIAL, [1, 2, 3]),
    ("1002", "21"): ("Sagittal T2/STIR", SAGITTAL, [2, 4, 1, 3]),
    ("1002", "22"): ("Sagittal T1", SAGITTAL, [1, 3, 2]),
    ("1003", "31"): ("Sagittal T2/STIR", SAGITTAL, [5, 6, 1, 2, 3, 4]),
    ("1004", "41"): ("Sagittal T2/STIR", SAGITTAL, [1, 2, 3]),
    ("1006", "61"): ("Sagittal T2/STIR", SAGITTAL, [3, 1, 2]),
    ("1007", "71"): ("Sagittal T1", SAGITTAL, [2, 3, 1]),
}


def case_id(study: str, series: str, condition: str, level: str) -> str:
    return f"{study}_{series}_{condition.lower().replace(' ', '_')}_{level.lower().replace('/', '_')}"


def write_rsna_layout(root: Path) -> dict[str, dict]:
    """The RSNA layout with good and broken rows; returns ``{"good": {case_id: {..., "value": v}},
    "broken": {case_id: kind}}`` where ``value`` is the bright pixel written at the labelled (x, y)."""
    images = root / "train_images"
    good: dict[str, dict] = {}
    pixels: dict[tuple[str, str], dict[int, list]] = {}
    for number, (study, series, instance, condition, level, x, y, severity) in enumerate(RSNA_COORDINATES):
        value = 2000 + 37 * number
        pixels.setdefault((study, series), {}).setdefault(instance, []).append((round(y), round(x), value))
        if "Subarticular" not in condition:
            good[case_id(study, series, condition, level)] = {
                "study": study,
                "series": series,
                "instance": instance,
                "x": x,
                "y": y,
                "value": value,
                "severity": severity,
                "condition": condition,
                "level": level,
            }
    for (study, series), (description, orientation, order) in SERIES.items():
        write_dicom_series(
            images / study / series,
            order,
            orientation=orientation,
            description=description,
            patient=study,
            pixels=pixels.get((study, series)),
        )
    broken_folder = images / "1005" / "51"
    write_dicom_series(broken_folder, [1, 2])
    (broken_folder / "2.dcm").write_bytes((broken_folder / "2.dcm").read_bytes()[:200])  # truncated

    descriptions = [{"study_id": s, "series_id": r, "series_description": d} for (s, r), (d, _, _) in SERIES.items()]
    descriptions += [
        {"study_id": "1003", "series_id": "32", "series_description": "Sagittal T1"},
        {"study_id": "1003", "series_id": "33", "series_description": "Sagittal T1"},
        {"study_id": "1005", "series_id": "51", "series_description": "Sagittal T2/STIR"},
    ]
    _write_csv(root / "train_series_descriptions.csv", descriptions, ["study_id", "series_id", "series_description"])

    coordinates = [
        dict(zip(("study_id", "series_id", "instance_number", "condition", "level", "x", "y"), row[:7], strict=False))
        for row in RSNA_COORDINATES + RSNA_BROKEN
    ]
    _write_csv(
        root / "train_label_coordinates.csv",
        coordinates,
        ["study_id", "series_id", "instance_number", "condition", "level", "x", "y"],
    )

    columns = severity_columns() + [
        f"{side}_subarticular_stenosis_{level}"
        for side in ("left", "right")
        for level in ("l1_l2", "l2_l3", "l3_l4", "l4_l5", "l5_s1")
    ]
    labels: dict[str, dict] = {}
    for study, _, _, condition, level, _, _, severity, *_ in RSNA_COORDINATES + RSNA_BROKEN:
        if study == "1004":
            continue
        row = labels.setdefault(study, {"study_id": study})
        column = f"{condition.lower().replace(' ', '_')}_{level.lower().replace('/', '_')}"
        if severity and column not in row:
            row[column] = severity
    _write_csv(root / "train.csv", list(labels.values()), ["study_id", *columns])
    broken = {case_id(*row[:2], row[3], row[4]): row[8] for row in RSNA_BROKEN if row[8] != "duplicate"}
    return {"good": good, "broken": broken}


def _volume(shape: Sequence[int], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (200 + 50 * rng.standard_normal(shape)).astype(np.int16)


def _vertebrae(shape: Sequence[int], labels: Sequence[int]) -> np.ndarray:
    """Label blocks stacked along the second axis (superior-inferior), one per label."""
    seg = np.zeros(shape, np.uint8)
    height = shape[1] // (len(labels) + 1)
    for k, label in enumerate(labels):
        seg[4:-4, 2 + k * height : (k + 1) * height, 1:-1] = label
    return seg


AFFINE = np.diag([1.0, 1.2, 2.5, 1.0])
SHAPE = (24, 30, 8)
LUMBAR = (20, 21, 22)  # L1, L2, L3 in VerSe numbering


def write_vertumor_layout(root: Path) -> dict[str, dict]:
    """A VerTumor1200-like folder: NIfTI cases, one DICOM case, labels.csv with good and broken rows.

    Returns ``{"good": {case_id: {"label", "patient", "mask_labels"}}, "broken": {case: kind}}``."""
    images, segmentations = root / "images", root / "segmentations"
    images.mkdir(parents=True)
    segmentations.mkdir()
    rows, good = [], {}

    def add_case(name: str, image: bool = True, seg: bool = True, seg_shape: Sequence[int] = SHAPE) -> None:
        if image:
            nib.save(nib.Nifti1Image(_volume(SHAPE, len(rows)), AFFINE), str(images / f"{name}.nii.gz"))
        if seg:
            nib.save(nib.Nifti1Image(_vertebrae(seg_shape, LUMBAR), AFFINE), str(segmentations / f"{name}.nii.gz"))

    classes = ["normal", "normal", "benign", "malignant", "normal", "benign", "malignant", "normal", "normal"]
    for k, label in enumerate(classes):
        name = f"case{k:02d}"
        add_case(name)
        level = ("L1", "L2", "L3")[k % 3]
        description = "" if label == "normal" else f"a {label} lesion in the {level} vertebral body"
        rows.append(
            {"case_id": name, "patient_id": f"P{k // 2}", "class": label, "description": description, "level": level}
        )
        good[name] = {"label": label, "patient": f"P{k // 2}", "mask_labels": [LUMBAR[k % 3]]}
    # a second described vertebra of case00: two rows of one case
    rows.append(
        {
            "case_id": "case00",
            "patient_id": "P0",
            "class": "Hemangioma",
            "description": "well-defined hyperintense haemangioma in L3",
            "mask_labels": "22",
        }
    )
    good["case00_L1"] = good.pop("case00")
    good["case00_label22"] = {"label": "benign", "patient": "P0", "mask_labels": [22]}

    dicom_files = write_dicom_series(images / "dicom01", [3, 1, 2, 5, 4], rows=30, columns=24, patient="P9")
    volume = LoadVolume()(dicom_files[0].parent)
    seg = np.zeros(volume.shape[1:], np.uint8)
    seg[6:18, 8:20, 1:4] = 21
    nib.save(nib.Nifti1Image(seg, np.asarray(volume.affine, float)), str(segmentations / "dicom01.nii.gz"))
    rows.append(
        {
            "case_id": "dicom01",
            "patient_id": "P9",
            "class": "malignant",
            "description": "ill-defined hypointense metastasis replacing the L2 vertebral body",
            "level": "L2",
        }
    )
    good["dicom01"] = {"label": "malignant", "patient": "P9", "mask_labels": [21]}

    broken = {}
    add_case("no_image", image=False)
    rows.append({"case_id": "no_image", "class": "benign", "description": "x", "level": "L1"})
    broken["no_image"] = "missing_image"
    add_case("no_seg", seg=False)
    rows.append({"case_id": "no_seg", "class": "benign", "description": "x", "level": "L1"})
    broken["no_seg"] = "missing_segmentation"
    (images / "corrupt.nii.gz").write_bytes(b"not a nifti file at all" * 10)
    add_case("corrupt", image=False)
    rows.append({"case_id": "corrupt", "class": "malignant", "description": "x", "level": "L1"})
    broken["corrupt"] = "unreadable_image"
    add_case("fracture")
    rows.append({"case_id": "fracture", "class": "fracture", "description": "x", "level": "L1"})
    broken["fracture"] = "unknown_class"
    add_case("no_text")
    rows.append({"case_id": "no_text", "class": "malignant", "description": "  ", "level": "L1"})
    broken["no_text"] = "empty_description"
    add_case("absent_label")
    rows.append({"case_id": "absent_label", "class": "benign", "description": "x", "level": "L5"})
    broken["absent_label"] = "labels_not_found"
    add_case("wrong_grid", seg_shape=(20, 30, 8))
    rows.append({"case_id": "wrong_grid", "class": "benign", "description": "x", "level": "L1"})
    broken["wrong_grid"] = "grid_mismatch"
    add_case("no_vertebra")
    rows.append({"case_id": "no_vertebra", "class": "normal", "description": ""})
    broken["no_vertebra"] = "no_vertebra"
    add_case("bad_level")
    rows.append({"case_id": "bad_level", "class": "normal", "level": "X9"})
    broken["bad_level"] = "unknown_level"
    _write_csv(root / "labels.csv", rows, ["case_id", "patient_id", "class", "description", "level", "mask_labels"])
    return {"good": good, "broken": broken}
