"""Loading a volume from NIfTI, a DICOM series folder, a single DICOM file or any other ITK format.

The loaded volume is a channel-first ``MetaTensor`` of shape ``(1, X, Y, Z)`` in the file's own voxel order
(for DICOM: column, row, slice sorted by position), with its affine in RAS millimetres. Orientation to the
model's canonical orientation happens later, after the soft mask has been made from coordinates in this grid.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import ITKReader, MetaTensor, NibabelReader
from monai.transforms import LoadImage, MapTransform, Orientation, Transform

from bundle.errors import InputError

NIFTI_SUFFIXES = (".nii", ".nii.gz")
DICOM_MAGIC_OFFSET = 128


def is_dicom_file(path: str | os.PathLike) -> bool:
    """True when ``path`` is a file with the DICOM preamble (``DICM`` at byte 128)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(DICOM_MAGIC_OFFSET)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


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


class LoadVolume(Transform):
    """Load one 3-D scalar volume and check that it is usable.

    Returns a float32 ``MetaTensor`` of shape ``(1, X, Y, Z)``; its ``affine`` maps voxel indices to RAS mm
    and ``meta["source_affine"]`` keeps that affine for the writer. A single 2-D DICOM file is a one-slice
    volume (ITK reads DICOM with its full 3-D geometry).

    Raises:
        InputError: naming the file, when it is missing or unreadable, is not 3-D (2-D or 4-D input),
            has more than one channel, or contains NaN / infinite voxels.
    """

    def __init__(self, dtype: np.dtype | type = np.float32) -> None:
        self.dtype = dtype

    def __call__(self, path: str | os.PathLike) -> MetaTensor:
        path = Path(path)
        if not path.exists():
            raise InputError(path, "file not found")
        kind = volume_format(path)
        reader = NibabelReader() if kind == "nifti" else ITKReader()
        try:
            volume = LoadImage(reader=reader, image_only=True, ensure_channel_first=True, dtype=self.dtype)(str(path))
        except Exception as error:  # any reader failure: corrupt, truncated or unsupported file
            raise InputError(path, f"cannot be read as an image ({type(error).__name__}: {error})") from error
        spatial_shape = tuple(volume.shape[1:])
        if len(spatial_shape) != 3:
            raise InputError(path, f"{len(spatial_shape)}-D image {spatial_shape}, expected a 3-D volume")
        if volume.shape[0] != 1:
            raise InputError(path, f"4-D input: {volume.shape[0]} volumes or channels of {spatial_shape}, "
                                   "expected a single 3-D volume")
        if min(spatial_shape) < 1:
            raise InputError(path, f"empty volume of shape {spatial_shape}")
        if not torch.isfinite(volume).all():
            bad = int((~torch.isfinite(volume)).sum())
            raise InputError(path, f"{bad} voxels are NaN or infinite")
        volume.meta["filename_or_obj"] = str(path)
        volume.meta["volume_format"] = kind
        volume.meta["source_affine"] = np.asarray(volume.affine, float).tolist()
        return volume


class LoadVolumed(MapTransform):
    """Dictionary twin of :class:`LoadVolume`: replaces each path under ``keys`` by its volume.

    Entries whose key is absent are left alone when ``allow_missing_keys`` is set (e.g. no segmentation
    when the soft mask comes from a box).
    """

    def __init__(self, keys: KeysCollection, dtype: np.dtype | type = np.float32, allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.loader = LoadVolume(dtype)

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        for key in self.key_iterator(d):
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
        raise InputError(name, f"grid {stored_shape} ({other_axcodes}) does not match the image grid "
                               f"{tuple(image.shape[1:])} ({image_axcodes})")
    difference = float(np.abs(np.asarray(image.affine, float) - np.asarray(other.affine, float)).max())
    if difference > atol_mm:
        raise InputError(name, f"affine differs from the image's by up to {difference:.3g} mm; resample it first")
    return other


class MatchImageGridd(MapTransform):
    """Bring every volume under ``keys`` into the voxel order of ``ref_key`` and check the grids match."""

    def __init__(self, keys: KeysCollection, ref_key: str = "image", atol_mm: float = 1e-3,
                 allow_missing_keys: bool = True):
        super().__init__(keys, allow_missing_keys)
        self.ref_key = ref_key
        self.atol_mm = atol_mm

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = match_image_grid(d[self.ref_key], d[key], self.atol_mm)
        return d


def voxel_spacing_mm(affine: np.ndarray | torch.Tensor) -> np.ndarray:
    """Spacing in mm of each voxel axis: the column norms of the affine's 3x3 part."""
    matrix = np.asarray(affine, dtype=float)[:3, :3]
    return np.linalg.norm(matrix, axis=0)

