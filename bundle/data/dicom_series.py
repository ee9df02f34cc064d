"""Which files form a DICOM series, and whether the writer can write a loaded series back.

The loader reads pixels with ITK (GDCM inside) and the writer re-reads each instance with pydicom, so both must
agree on the files and on the values. One function lists a folder's instances for both (:func:`series_instances`),
ITK is given exactly that list in slice order (:class:`DicomSeriesReader`) instead of grouping the folder by its
own rules, and :func:`check_write_back` checks, before any model runs, that every instance matches one loaded
slice and that pydicom decodes the values ITK loaded.
"""

from __future__ import annotations

import os
import struct
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pydicom
import torch
from monai.data import ITKReader
from pydicom.dataelem import RawDataElement
from pydicom.errors import InvalidDicomError
from pydicom.pixels import get_decoder

from bundle.errors import InputError

DICOM_MAGIC_OFFSET = 128
DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")
# An instance matches a loaded slice when its position lies this close to the slice's voxel centre.
POSITION_TOLERANCE_VOXELS = 0.05
# pydicom's decoded value (after rescale) may differ from ITK's float32 one by this fraction of a stored unit.
VALUE_TOLERANCE_STORED_UNITS = 0.01
_PIXEL_DATA_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)  # PixelData, FloatPixelData, DoubleFloatPixelData
_MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"  # DICOMDIR
_UNDEFINED_LENGTH = 0xFFFFFFFF
_LPS_TO_RAS = np.array([-1.0, -1.0, 1.0])
DICOM_PARSE_ERRORS = (OSError, EOFError, ValueError, struct.error, OverflowError, KeyError, IndexError)
"""What pydicom raises while parsing a damaged or truncated file (besides ``InvalidDicomError``)."""
DICOM_DECODE_ERRORS = (*DICOM_PARSE_ERRORS, NotImplementedError, RuntimeError, AttributeError)
"""What decoding pixel data raises for a file pydicom cannot decode (no decoder, damaged or missing data)."""


def is_dicom_file(path: str | os.PathLike) -> bool:
    """True when ``path`` is a file with the DICOM preamble (``DICM`` at byte 128)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(DICOM_MAGIC_OFFSET)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def _is_dicomdir(dataset: pydicom.Dataset) -> bool:
    meta = getattr(dataset, "file_meta", None)
    return _MEDIA_STORAGE_DIRECTORY in (
        str(dataset.get("SOPClassUID", "")),
        str(meta.get("MediaStorageSOPClassUID", "")) if meta else "",
    )


def read_dicom_header(
    path: str | os.PathLike, required: bool = True, in_folder: bool = False
) -> pydicom.Dataset | None:
    """The header of one DICOM image file, after checking that its pixel data is complete; pixels are not read.

    Args:
        required: the file must be a DICOM image (it has a DICOM name or the ``DICM`` marker, or it is the
            entry itself). Otherwise a file that is not DICOM gives ``None`` (e.g. a README beside a series), as
            does a DICOMDIR.
        in_folder: the file is one of a series folder's, where a DICOMDIR is skipped (``None``) even when required.

    Raises:
        InputError: naming the file, when it is not DICOM (and ``required``), is a DICOMDIR (and ``required``),
            cannot be parsed, has no pixel data (truncated before it, or not an image instance) or its pixel
            data is cut short.
    """
    path = Path(path)
    try:
        with warnings.catch_warnings():  # pydicom warns on early end of file; the checks below say it clearly
            warnings.simplefilter("ignore")
            dataset = pydicom.dcmread(path, defer_size=1024, force=False)
    except InvalidDicomError as error:
        if not required:
            return None
        raise InputError(path, "not a DICOM file (no 'DICM' marker at byte 128 and no DICOM meta header)") from error
    except DICOM_PARSE_ERRORS as error:
        raise InputError(path, f"corrupt DICOM file ({type(error).__name__}: {error})") from error
    if _is_dicomdir(dataset):
        if in_folder or not required:
            return None
        raise InputError(
            path,
            "a DICOMDIR (the index of a DICOM medium), not an image: point the entry at the "
            "folder of the series it lists",
        )
    element = next((dataset.get_item(tag, keep_deferred=True) for tag in _PIXEL_DATA_TAGS if tag in dataset), None)
    if element is None:
        raise InputError(
            path,
            "no pixel data: the file is truncated, or is not an image (e.g. a report or a "
            "presentation state; a series folder must hold only the images of one series)",
        )
    deferred = isinstance(element, RawDataElement) and element.value is None and element.value_tell is not None
    if deferred and element.length != _UNDEFINED_LENGTH:  # encapsulated (compressed) data is checked by parsing
        size = path.stat().st_size
        if element.value_tell + element.length > size:
            raise InputError(
                path,
                f"truncated: its pixel data needs {element.length:,} bytes from byte "
                f"{element.value_tell:,} but the file ends at byte {size:,}",
            )
    return dataset


def _dicom_without_file_header(path: Path) -> bool:
    """True when a file without the ``DICM`` marker still parses as a DICOM image (an old ACR-NEMA style or raw
    export); GDCM reads such files into a series, pydicom does not without guessing their encoding."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dataset = pydicom.dcmread(path, defer_size=1024, force=True)
    except (InvalidDicomError, *DICOM_PARSE_ERRORS):  # it does not parse: not DICOM
        return False
    return 0x7FE00010 in dataset and "Rows" in dataset and "Columns" in dataset


def series_instances(folder: str | os.PathLike) -> list[tuple[Path, pydicom.Dataset]]:
    """The image files of a DICOM series folder with their headers: the one definition the loader and the writer
    both use.

    Hidden files (name starting with ``.``) and subfolders are ignored; so are files that are not DICOM unless
    their name says they are (``.dcm``, ``.dicom``, ``.ima``), and a DICOMDIR. Every other file must be a complete
    DICOM image (see :func:`read_dicom_header`).

    Raises:
        InputError: naming the file, as :func:`read_dicom_header` does, or when a file is DICOM image data
            without the 128-byte preamble and ``DICM`` marker (ITK would read it, pydicom would not).
    """
    instances = []
    for path in sorted(p for p in Path(folder).iterdir() if p.is_file() and not p.name.startswith(".")):
        named = path.suffix.lower() in DICOM_SUFFIXES
        marked = is_dicom_file(path)
        dataset = read_dicom_header(path, required=named or marked, in_folder=True)
        if dataset is None and not marked and _dicom_without_file_header(path):
            raise InputError(
                path,
                "DICOM image data without the DICOM file header (no 'DICM' marker at byte 128): "
                "save it again as a DICOM file (with the file meta information) or move it out "
                "of the series folder",
            )
        if dataset is not None:
            instances.append((path, dataset))
    return instances


def source_instances(source: str | os.PathLike) -> list[tuple[Path, pydicom.Dataset]]:
    """The instances of a DICOM input: a series folder's (:func:`series_instances`) or the one file."""
    source = Path(source)
    return series_instances(source) if source.is_dir() else [(source, read_dicom_header(source))]


def check_writable_instance(path: str | os.PathLike, dataset: pydicom.Dataset) -> None:
    """Refuse, before any voxel is read, an instance the writer could not write back exactly.

    Raises:
        InputError: naming the file, when it has several frames (the writer writes one slice per instance), it
            does not say its transfer syntax (no file meta information), its transfer syntax has no pixel decoder
            in this installation, or its rescale cannot be inverted (a slope of 0 maps every stored value to the
            intercept; a non-finite slope or intercept).
    """
    frames = int(dataset.get("NumberOfFrames") or 1)
    if frames > 1:
        raise InputError(
            path,
            f"multi-frame DICOM ({frames} frames in one file) is not supported: the writer "
            "writes one slice per instance; convert the series to single-frame instances",
        )
    if "TransferSyntaxUID" not in getattr(dataset, "file_meta", {}):
        raise InputError(
            path,
            "no transfer syntax: the file has no DICOM file meta information, so how its pixels "
            "are encoded is a guess; save it again as a DICOM file (with the file meta "
            "information)",
        )
    syntax = pydicom.uid.UID(str(dataset.file_meta.TransferSyntaxUID))
    try:
        decodable = get_decoder(syntax).is_available
    except NotImplementedError:
        decodable = False
    if not decodable:
        raise InputError(
            path,
            f"pixel data in transfer syntax {syntax} ({syntax.name}), which this installation "
            "cannot decode (pydicom has no decoder plugin for it: see requirements.txt)",
        )
    for keyword in ("RescaleSlope", "RescaleIntercept"):
        if dataset.get(keyword) in (None, ""):
            continue
        try:
            value = float(dataset.get(keyword))
        except (TypeError, ValueError) as error:
            raise InputError(path, f"{keyword} {dataset.get(keyword)!r} is not a number") from error
        if not np.isfinite(value):
            raise InputError(path, f"{keyword} is {value}: the stored values cannot be converted to scanner units")
    if dataset.get("RescaleSlope") not in (None, "") and float(dataset.RescaleSlope) == 0:
        raise InputError(
            path,
            "RescaleSlope is 0: every stored value maps to the intercept, so the image holds no "
            "information and a change cannot be written back (stored = (value - intercept) / "
            "slope)",
        )


def slice_normal(dataset: pydicom.Dataset) -> np.ndarray:
    """The slice normal (row direction x column direction, LPS) of an instance."""
    orientation = np.asarray(dataset.ImageOrientationPatient, float)
    return np.cross(orientation[:3], orientation[3:])


def in_slice_order(instances: Sequence[tuple[Path, pydicom.Dataset]]) -> list[Path]:
    """The files in ascending position along the slice normal (GDCM's order); name order without positions."""
    if len(instances) < 2 or any(
        "ImagePositionPatient" not in d or "ImageOrientationPatient" not in d for _, d in instances
    ):
        return [path for path, _ in instances]
    normal = slice_normal(instances[0][1])
    return [
        path
        for _, path in sorted(
            (float(np.dot(np.asarray(d.ImagePositionPatient, float), normal)), path) for path, d in instances
        )
    ]


class DicomSeriesReader(ITKReader):
    """MONAI's ITK reader on exactly the given files of one series, as float32.

    ITK's own folder reading groups files by more tags than the series UID (series number, date, sequence name
    ...) and silently reads only the first group; and it takes the pixel type from the first file, so a slice
    with a fractional rescale slope after one with an integer slope would be rounded. Here every file is read,
    each with its own rescale.

    Args:
        files: the series' files in slice order (:func:`in_slice_order`).
    """

    def __init__(self, files: Sequence[str | os.PathLike], **kwargs) -> None:
        import itk

        super().__init__(pixel_type=itk.F, **kwargs)
        self.files = [str(path) for path in files]

    def read(self, data, **kwargs):
        import itk

        options = {**self.kwargs, **kwargs}
        return itk.imread(self.files if len(self.files) > 1 else self.files[0], **options)


def instance_slice_index(dataset: pydicom.Dataset, to_voxel: np.ndarray, num_slices: int) -> int | None:
    """The loaded slice an instance holds: its ``ImagePositionPatient`` mapped through the inverse of the loaded
    (RAS) affine must land on the first pixel of a slice. ``None`` when it lands anywhere else."""
    voxel = to_voxel @ np.append(np.asarray(dataset.ImagePositionPatient, float) * _LPS_TO_RAS, 1.0)
    index = round(float(voxel[2]))
    if (
        np.abs(voxel[:2]).max() > POSITION_TOLERANCE_VOXELS
        or abs(voxel[2] - index) > POSITION_TOLERANCE_VOXELS
        or not 0 <= index < num_slices
    ):
        return None
    return index


def match_instances(
    source: str | os.PathLike, instances: Sequence[tuple[Path, pydicom.Dataset]], affine: np.ndarray, num_slices: int
) -> list[int]:
    """The loaded slice index of every instance (a single file is slice 0), each slice exactly once.

    Raises:
        InputError: naming the file that matches no slice or the same slice as another, or the series when the
            instances do not cover every loaded slice.
    """
    if Path(source).is_file():
        return [0]
    to_voxel = np.linalg.inv(np.asarray(affine, float))
    owner: dict[int, Path] = {}
    indices = []
    for path, dataset in instances:
        index = instance_slice_index(dataset, to_voxel, num_slices) if "ImagePositionPatient" in dataset else None
        if index is None:
            raise InputError(
                path,
                f"its position {list(dataset.get('ImagePositionPatient', []))} matches none of the "
                f"{num_slices} loaded slices, so it could not be written back",
            )
        if index in owner:
            raise InputError(path, f"it holds the same slice ({index}) as {owner[index].name}")
        owner[index] = path
        indices.append(index)
    if len(owner) != num_slices:
        raise InputError(source, f"{len(owner)} DICOM instances for the {num_slices} slices loaded")
    return indices


def check_write_back(
    source: str | os.PathLike,
    instances: Sequence[tuple[Path, pydicom.Dataset]],
    volume: torch.Tensor | np.ndarray,
    affine: np.ndarray,
) -> None:
    """Check that the writer can write ``volume`` (loaded from ``source``, shape ``(X, Y, Z)`` in scanner units)
    back into the DICOM instances: each instance matches one loaded slice, and pydicom (the writer) decodes the
    stored values of every instance to the values ITK (the loader) read, within a hundredth of a stored unit.

    Call it per case before predicting (:class:`bundle.transforms.loading.LoadVolume` does for every DICOM input); the
    instances' headers are re-read with their pixel data, one at a time.

    Raises:
        InputError: naming the file, when an instance matches no slice or the same as another, or pydicom cannot
            decode it or decodes other values than ITK did.
    """
    volume = np.asarray(volume)
    indices = match_instances(source, instances, affine, volume.shape[2])
    for (path, _), index in zip(instances, indices, strict=True):
        try:
            dataset = pydicom.dcmread(path)
            stored = dataset.pixel_array.astype(np.float64)
        except DICOM_DECODE_ERRORS as error:  # this file's problem
            raise InputError(
                path, f"pydicom cannot decode its pixel data for writing back ({type(error).__name__}: {error})"
            ) from error
        slope = float(dataset.get("RescaleSlope") or 1.0)
        values = stored * slope + float(dataset.get("RescaleIntercept") or 0.0)
        loaded = volume[:, :, index].T
        if values.shape != loaded.shape:
            raise InputError(
                path,
                f"pydicom decodes {values.shape[0]} x {values.shape[1]} pixels, ITK loaded "
                f"{loaded.shape[0]} x {loaded.shape[1]}",
            )
        difference = np.abs(values - loaded)
        tolerance = VALUE_TOLERANCE_STORED_UNITS * abs(slope) + 1e-6 * np.abs(values)
        if (difference > tolerance).any():
            raise InputError(
                path,
                f"pydicom decodes other pixel values than ITK loaded (up to {difference.max():.4g} "
                f"apart, in {(difference > tolerance).sum():,} pixels): the written series would "
                "not match what the model saw",
            )
