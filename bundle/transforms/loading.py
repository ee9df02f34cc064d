"""Loading a volume from NIfTI, a DICOM series folder, a single DICOM file or any other ITK format.

The loaded volume is a channel-first ``MetaTensor`` of shape ``(1, X, Y, Z)`` in the file's own voxel order
(for DICOM: column, row, slice sorted by position), with its affine in RAS millimetres. Orientation to the
model's canonical orientation happens later, after the soft mask has been made from coordinates in this grid.
"""

from __future__ import annotations

import os
import zlib
from collections import Counter, OrderedDict
from collections.abc import Callable, Hashable, Mapping
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import torch
from monai.config import KeysCollection
from monai.data import ITKReader, MetaTensor, NibabelReader
from monai.transforms import LoadImage, MapTransform, Orientation, Transform
from nibabel.filebasedimages import ImageFileError
from nibabel.spatialimages import HeaderDataError

from bundle.data.dicom_series import (
    DicomSeriesReader,
    check_writable_instance,
    check_write_back,
    in_slice_order,
    is_dicom_file,
    read_dicom_header,
    series_instances,
)
from bundle.errors import InputError
from bundle.utils.hashing import file_identity

NIFTI_SUFFIXES = (".nii", ".nii.gz")
NIFTI_READ_ERRORS = (OSError, EOFError, ValueError, zlib.error, ImageFileError, HeaderDataError)
"""What nibabel raises for a file that is missing, truncated, not NIfTI or has a broken header."""
IMAGE_READ_ERRORS = (*NIFTI_READ_ERRORS, RuntimeError)
"""What reading an image raises for an unusable file: nibabel's errors, ITK's (RuntimeError) and MONAI
``LoadImage``'s when no reader could read it (RuntimeError). Anything else is a fault of the code, not the input."""
# Volumes larger than this are refused from their header, before any voxel is read: the preprocessing holds several
# float copies of the volume (image, masks, masked image, the writer's change), so this bounds the memory a case
# needs. 2**29 voxels is 512 x 512 x 2048 (2 GiB as float32); raise it with LoadVolume(max_voxels=...).
DEFAULT_MAX_VOXELS = 2**29
# Slice gaps of a DICOM series may differ from their median by this much (the larger of the two) before the
# series is refused as non-uniform: ITK would stack it on one spacing and silently distort the geometry.
SLICE_GAP_TOLERANCE_MM = 0.01
SLICE_GAP_TOLERANCE_RELATIVE = 0.01


def volume_format(path: str | os.PathLike) -> str:
    """``"nifti"``, ``"dicom_series"`` (a folder), ``"dicom_file"`` or ``"itk"`` (any other ITK format)."""
    path = Path(path)
    if path.is_dir():
        return "dicom_series"
    if path.name.lower().endswith(NIFTI_SUFFIXES):
        return "nifti"
    if path.suffix.lower() == ".dcm" or is_dicom_file(path):
        return "dicom_file"
    return "itk"


def _too_large(path: str | os.PathLike, shape: tuple[int, ...], max_voxels: int | None) -> None:
    """Raise :class:`InputError` when a volume of ``shape`` (read from a header) has more than ``max_voxels``."""
    count = int(np.prod([int(n) for n in shape], dtype=object)) if shape else 0
    if max_voxels is not None and count > max_voxels:
        raise InputError(
            path,
            f"too large: {' x '.join(str(int(n)) for n in shape)} = {count:,} voxels "
            f"({count * 4 / 2**30:,.1f} GiB as float32) is more than the limit of {max_voxels:,} "
            "voxels (max_voxels); crop the volume, or raise max_voxels where memory allows",
        )


def _counts(values: list, unit: str = "", noun: str = "file") -> str:
    """``"3 mm (10 files), 5 mm (1 file)"``: each distinct value with how often it occurs."""
    return ", ".join(
        f"{f'{value:g}' if isinstance(value, float) else value}{unit} ({count} {noun}{'' if count == 1 else 's'})"
        for value, count in sorted(Counter(values).items())
    )


def check_dicom_series(
    folder: str | os.PathLike, max_voxels: int | None = DEFAULT_MAX_VOXELS
) -> list[tuple[Path, pydicom.Dataset]]:
    """Check a DICOM series folder from its headers before ITK reads it; returns its instances (file, header).

    ITK would silently read the first of several series (or of the groups it splits one series into by other
    tags), skip a truncated file, or stack slices of uneven spacing on one spacing; each of these is refused here
    instead, naming the folder or the file. The instances are those of
    :func:`bundle.data.dicom_series.series_instances`, the files the writer writes back.

    Raises:
        InputError: a file is not DICOM (by name or marker) or is corrupt or truncated; the folder holds no
            image or more than one series (their UIDs, file counts and descriptions are listed); an instance
            cannot be written back (:func:`bundle.data.dicom_series.check_writable_instance`: multi-frame, a transfer
            syntax without decoder, a rescale that cannot be inverted); the instances differ in size,
            orientation or slice thickness, or lack position tags; two share a position; the slice spacing is
            not uniform; or the volume is larger than ``max_voxels``.
    """
    folder = Path(folder)
    headers = series_instances(folder)
    if not headers:
        dicomdir = any(p.name.upper() == "DICOMDIR" for p in folder.iterdir())
        raise InputError(
            folder,
            "no DICOM image files in the folder"
            + (" (only a DICOMDIR: point the entry at the folder of the series it lists)" if dicomdir else ""),
        )
    series: dict[str, list[pydicom.Dataset]] = {}
    for _, dataset in headers:
        series.setdefault(str(dataset.get("SeriesInstanceUID", "")), []).append(dataset)
    if len(series) > 1:
        listed = "; ".join(
            f"{uid or '<no SeriesInstanceUID>'} ({len(items)} files, "
            f"{str(items[0].get('SeriesDescription', '')) or 'no description'!r})"
            for uid, items in sorted(series.items())
        )
        raise InputError(
            folder,
            f"{len(series)} DICOM series in one folder: {listed}; move each series into its "
            "own folder and point the entry at one of them",
        )
    datasets = [dataset for _, dataset in headers]
    sizes = [f"{int(d.get('Rows', 0))}x{int(d.get('Columns', 0))}" for d in datasets]
    if len(set(sizes)) > 1:
        raise InputError(folder, f"instances of different sizes (rows x columns): {_counts(sizes)}")
    frames = sum(int(d.get("NumberOfFrames") or 1) for d in datasets)
    _too_large(folder, (int(datasets[0].get("Columns", 0)), int(datasets[0].get("Rows", 0)), frames), max_voxels)
    for path, dataset in headers:
        check_writable_instance(path, dataset)
    thickness = [round(float(d.SliceThickness), 3) for d in datasets if d.get("SliceThickness") not in (None, "")]
    if len(set(thickness)) > 1:
        raise InputError(
            folder,
            f"mixed slice thickness: {_counts(thickness, ' mm')}; one series should have "
            "one thickness (a reconstruction or a localizer mixed in?)",
        )
    geometry = [d for d in datasets if "ImagePositionPatient" in d and "ImageOrientationPatient" in d]
    if len(datasets) < 2:
        return headers
    if len(geometry) != len(datasets):
        raise InputError(
            folder,
            f"{len(datasets) - len(geometry)} of {len(datasets)} instances have no "
            "ImagePositionPatient / ImageOrientationPatient: their place in the volume is unknown",
        )
    orientations = [tuple(np.round(np.asarray(d.ImageOrientationPatient, float), 4)) for d in geometry]
    if len(set(orientations)) > 1:
        raise InputError(folder, f"instances of different orientations: {_counts([str(o) for o in orientations])}")
    row, column = np.asarray(orientations[0][:3]), np.asarray(orientations[0][3:])
    normal = np.cross(row, column)
    positions = np.sort([float(np.dot(np.asarray(d.ImagePositionPatient, float), normal)) for d in geometry])
    gaps = np.diff(positions)
    if gaps.min() < SLICE_GAP_TOLERANCE_MM:
        repeated = int((gaps < SLICE_GAP_TOLERANCE_MM).sum())
        where = positions[np.argmin(gaps)]
        raise InputError(
            folder,
            f"{repeated} slice positions occur more than once (e.g. at {where:.2f} mm along the "
            "slice normal): repeated acquisitions, echoes or phases in one series",
        )
    median = float(np.median(gaps))
    tolerance = max(SLICE_GAP_TOLERANCE_MM, SLICE_GAP_TOLERANCE_RELATIVE * median)
    if float(np.abs(gaps - median).max()) > tolerance:
        found = [round(float(g), 2) for g in gaps]
        raise InputError(
            folder,
            f"non-uniform slice spacing: {_counts(found, ' mm', 'gap')} between "
            f"{len(positions)} slice positions (tolerance {tolerance:.3g} mm); a missing or "
            "extra slice? Resampling would distort the geometry, so it is not done",
        )
    return headers


def check_nifti_voxel_type(path: str | os.PathLike) -> None:
    """Refuse a NIfTI whose voxels cannot be read as one real number each, from its header alone.

    Complex voxels (their imaginary part would be dropped without a word) and RGB / structured voxels are refused.

    Raises:
        InputError: naming the file and the voxel type.
    """
    header = nib.load(str(path)).header
    dtype = np.dtype(header.get_data_dtype())
    if dtype.kind == "c":
        raise InputError(
            path,
            f"complex-valued voxels ({dtype.name}): only real images are supported and the "
            "imaginary part would be lost; save the magnitude (or the real part) as its own "
            "image first",
        )
    if dtype.kind not in "iuf":
        raise InputError(
            path,
            f"voxels of type {dtype} (e.g. RGB colour) are not one real number each; save one "
            "grey-value channel as a scalar image first",
        )


def check_affine(path: str | os.PathLike, affine: np.ndarray | torch.Tensor) -> None:
    """Refuse a volume whose voxel-to-world affine has non-finite entries or cannot be inverted (a voxel axis of
    zero length, or two axes along the same direction): its geometry is broken, and masks in world coordinates,
    orientation and the writer's mapping back would all be wrong or fail late.

    Raises:
        InputError: naming the file, the affine's problem and its first three rows.
    """
    matrix = np.asarray(affine, dtype=float)
    shown = np.round(matrix[:3], 3).tolist()
    if not np.isfinite(matrix).all():
        raise InputError(
            path,
            f"the voxel-to-world affine has NaN or infinite entries: {shown}; fix the header's "
            "orientation (NIfTI sform / qform, DICOM position and orientation)",
        )
    spacing = voxel_spacing_mm(matrix)
    singular = np.linalg.cond(matrix[:3, :3]) > 1e8 if spacing.min() > 0 else True
    if singular:
        raise InputError(
            path,
            f"the voxel-to-world affine cannot be inverted (voxel spacing "
            f"{' x '.join(f'{s:.3g}' for s in spacing)} mm): {shown}; fix the header's orientation "
            "(NIfTI sform / qform, DICOM position and orientation)",
        )


def _header_shape(path: Path, kind: str) -> tuple[int, ...] | None:
    """The voxel shape a file's header declares, read without its voxel data (``None`` when unknown)."""
    if kind == "nifti":
        return tuple(int(n) for n in nib.load(str(path)).shape)
    if kind == "dicom_file":
        dataset = read_dicom_header(path)
        return int(dataset.get("Columns", 0)), int(dataset.get("Rows", 0)), int(dataset.get("NumberOfFrames") or 1)
    import itk

    io = itk.ImageIOFactory.CreateImageIO(str(path), itk.CommonEnums.IOFileMode_ReadMode)
    if io is None:
        return None
    io.SetFileName(str(path))
    io.ReadImageInformation()
    return tuple(int(io.GetDimensions(axis)) for axis in range(io.GetNumberOfDimensions())) + (
        (int(io.GetNumberOfComponents()),) if io.GetNumberOfComponents() > 1 else ()
    )


class LoadVolume(Transform):
    """Load one 3-D scalar volume and check that it is usable.

    Returns a float32 ``MetaTensor`` of shape ``(1, X, Y, Z)``; its ``affine`` maps voxel indices to RAS mm
    and ``meta["source_affine"]`` keeps that affine for the writer. A single 2-D DICOM file is a one-slice
    volume (ITK reads DICOM with its full 3-D geometry).

    Before any voxel is read, the header is checked: a volume of more than ``max_voxels`` voxels (``None``: no
    limit) is refused, and a DICOM series folder must hold exactly one complete series of uniform slice spacing
    (:func:`check_dicom_series`); a single DICOM file must be complete (:func:`read_dicom_header`). DICOM is
    read from exactly the checked instances (every one of them, each with its own rescale), and afterwards
    checked to be writable back (:func:`bundle.data.dicom_series.check_write_back`: each instance matches one loaded
    slice and pydicom, the writer's decoder, reads the values ITK loaded), so nothing about the input fails only
    after the model ran.

    Raises:
        InputError: naming the file, when it is missing, unreadable, corrupt or truncated, too large, is not
            3-D (2-D or 4-D input), has more than one channel, has complex or RGB voxels
            (:func:`check_nifti_voxel_type`), contains NaN / infinite voxels, or has a broken affine
            (:func:`check_affine`); for a DICOM folder, see :func:`check_dicom_series`.
    """

    def __init__(self, dtype: np.dtype | type = np.float32, max_voxels: int | None = DEFAULT_MAX_VOXELS) -> None:
        self.dtype = dtype
        self.max_voxels = max_voxels

    def __call__(self, path: str | os.PathLike) -> MetaTensor:
        path = Path(path)
        if not path.exists():
            raise InputError(path, "file not found")
        kind = volume_format(path)
        instances = self._check_header(path, kind)
        if kind == "nifti":
            # a NIfTI of shape (X, Y, Z, 1[, 1 ...]) is one 3-D volume: its singleton dimensions are dropped here
            # and restored by the writer
            reader = NibabelReader(squeeze_non_spatial_dims=True)
        else:  # DICOM: exactly the instances checked above, the ones the writer writes back
            reader = DicomSeriesReader(in_slice_order(instances)) if instances else ITKReader()
        try:
            volume = LoadImage(reader=reader, image_only=True, ensure_channel_first=True, dtype=self.dtype)(str(path))
        except IMAGE_READ_ERRORS as error:  # corrupt, truncated or unsupported file
            raise InputError(path, f"cannot be read as an image ({type(error).__name__}: {error})") from error
        _check_volume(path, volume, instances)
        volume.meta["filename_or_obj"] = str(path)
        volume.meta["volume_format"] = kind
        volume.meta["source_affine"] = np.asarray(volume.affine, float).tolist()
        return volume

    def _check_header(self, path: Path, kind: str) -> list[tuple[Path, pydicom.Dataset]] | None:
        """Check what the header says before any voxel is read; returns a DICOM input's instances."""
        if kind == "dicom_series":
            return check_dicom_series(path, self.max_voxels)
        try:
            if kind == "nifti":
                check_nifti_voxel_type(path)
            shape = _header_shape(path, kind)
        except InputError:  # a ValueError too: it already names the file and the problem
            raise
        except IMAGE_READ_ERRORS as error:
            raise InputError(path, f"cannot be read as an image ({type(error).__name__}: {error})") from error
        if shape is not None:
            _too_large(path, shape, self.max_voxels)
        if kind != "dicom_file":
            return None
        instances = [(path, read_dicom_header(path))]
        check_writable_instance(*instances[0])
        return instances


def _check_volume(path: Path, volume: MetaTensor, instances: list[tuple[Path, pydicom.Dataset]] | None) -> None:
    """Refuse a loaded volume that is not one finite 3-D scalar volume with a usable affine, and a DICOM one the
    writer could not write back."""
    spatial_shape = tuple(volume.shape[1:])
    if len(spatial_shape) != 3:
        raise InputError(path, f"{len(spatial_shape)}-D image {spatial_shape}, expected a 3-D volume")
    if volume.shape[0] != 1:
        raise InputError(
            path, f"4-D input: {volume.shape[0]} volumes or channels of {spatial_shape}, expected a single 3-D volume"
        )
    if min(spatial_shape) < 1:
        raise InputError(path, f"empty volume of shape {spatial_shape}")
    if not torch.isfinite(volume).all():
        bad = int((~torch.isfinite(volume)).sum())
        raise InputError(path, f"{bad} voxels are NaN or infinite")
    check_affine(path, volume.affine)
    if instances:
        if spatial_shape[2] != len(instances):
            raise InputError(
                path, f"ITK read {spatial_shape[2]} slices from the {len(instances)} DICOM instances of the series"
            )
        check_write_back(path, instances, volume[0].numpy(), np.asarray(volume.affine, float))


class LoadVolumed(MapTransform):
    """Dictionary twin of :class:`LoadVolume`: replaces each path under ``keys`` by its volume.

    Entries whose key is absent are left alone when ``allow_missing_keys`` is set (e.g. no segmentation
    when the soft mask comes from a box).
    """

    def __init__(
        self,
        keys: KeysCollection,
        dtype: np.dtype | type = np.float32,
        allow_missing_keys: bool = False,
        max_voxels: int | None = DEFAULT_MAX_VOXELS,
    ):
        super().__init__(keys, allow_missing_keys)
        self.loader = LoadVolume(dtype, max_voxels)

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        for key in self.key_iterator(d):
            if d[key] is not None:  # a datalist's ``null`` is an absent file, as ValidateEntryd treats it
                d[key] = self.loader(d[key])
        return d


def match_image_grid(image: MetaTensor, other: MetaTensor, atol_mm: float = 1e-3) -> MetaTensor:
    """Return ``other`` in ``image``'s voxel order, or raise :class:`InputError` naming ``other``'s file.

    A segmentation stored with another axis order or flips than its image (e.g. an LAS NIfTI mask for an LPS
    DICOM series) is the same grid: it is reordered exactly, without interpolation. Anything else (another
    shape, spacing or position) is an error rather than a silent resampling.
    """
    name = other.meta.get("filename_or_obj")
    image_axcodes = "".join(nib.aff2axcodes(np.asarray(image.affine, float)))
    other_axcodes = "".join(nib.aff2axcodes(np.asarray(other.affine, float)))
    stored_shape = tuple(other.shape[1:])
    if other_axcodes != image_axcodes:
        other = Orientation(axcodes=image_axcodes, labels=None)(other)
    if tuple(image.shape[1:]) != tuple(other.shape[1:]):
        raise InputError(
            name,
            f"grid {stored_shape} ({other_axcodes}) does not match the image grid "
            f"{tuple(image.shape[1:])} ({image_axcodes})",
        )
    difference = float(np.abs(np.asarray(image.affine, float) - np.asarray(other.affine, float)).max())
    if difference > atol_mm:
        raise InputError(name, f"affine differs from the image's by up to {difference:.3g} mm; resample it first")
    return other


class MatchImageGridd(MapTransform):
    """Bring every volume under ``keys`` into the voxel order of ``ref_key`` and check the grids match."""

    def __init__(
        self, keys: KeysCollection, ref_key: str = "image", atol_mm: float = 1e-3, allow_missing_keys: bool = True
    ):
        super().__init__(keys, allow_missing_keys)
        self.ref_key = ref_key
        self.atol_mm = atol_mm

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        for key in self.key_iterator(d):
            if d[key] is not None:
                d[key] = match_image_grid(d[self.ref_key], d[key], self.atol_mm)
        return d


def voxel_spacing_mm(affine: np.ndarray | torch.Tensor) -> np.ndarray:
    """Spacing in mm of each voxel axis: the column norms of the affine's 3x3 part."""
    matrix = np.asarray(affine, dtype=float)[:3, :3]
    return np.linalg.norm(matrix, axis=0)


class RecentVolumes:
    """A volume loader (path -> ``MetaTensor``) that keeps the last ``recent`` volumes it read, by
    :func:`bundle.utils.hashing.file_identity` (a changed file is read again), and hands out copies, so the
    caller may change them.

    Args:
        loader: the loader that reads a path (:class:`bundle.transforms.loading.LoadVolume`).
        recent: how many volumes are kept (memory: that many volumes).
    """

    def __init__(self, loader: Callable[[str | os.PathLike], MetaTensor], recent: int = 1) -> None:
        self.loader = loader
        self.recent = recent
        self._volumes: OrderedDict[str, MetaTensor] = OrderedDict()

    def __call__(self, path: str | os.PathLike) -> MetaTensor:
        key = repr(file_identity(path)) if os.path.exists(path) else None
        if key is None:  # the loader says what is wrong with the path
            return self.loader(path)
        if key not in self._volumes:
            self._volumes[key] = self.loader(path)
            while len(self._volumes) > self.recent:
                self._volumes.popitem(last=False)
        self._volumes.move_to_end(key)
        return self._volumes[key].clone()


class LoadVolumeOnced(LoadVolumed):
    """:class:`bundle.transforms.loading.LoadVolumed` that reads a file again only when it is not among the last
    ``recent`` files read for each key (:class:`RecentVolumes`): consecutive entries of one series (several
    labelled coordinates in one study) read it and its segmentations once."""

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False, recent: int = 1) -> None:
        super().__init__(keys, allow_missing_keys=allow_missing_keys)
        self.loader = RecentVolumes(self.loader, recent * len(self.keys))
