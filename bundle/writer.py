"""Putting 2-D model results back into a copy of the original volume, marked as synthetic.

What is inserted is the model's *change* to each slice, not the resampled slice: the change is mapped back
from the model grid to the slice's native pixels (MONAI's recorded inverse), scaled back to scanner units and
added to the original voxels. The sampler's result is already blended with the soft mask (at every step), so the
change is *not* weighted by the soft mask again; it is only confined to the soft mask's support (the pixels where
the native soft mask is above 0), which removes what interpolation spreads beyond it. Untouched anatomy therefore
keeps its native resolution and exact values: with a model that returns its input, the written volume equals the
input (NIfTI: bit for bit; DICOM: within one stored unit).

Formats: NIfTI in, NIfTI out (same dtype, affine, qform/sform, header; ``descrip`` says synthetic); DICOM in
(a series folder or one file), a new DICOM series out (new Study/Series/SOP Instance UIDs, ``ImageType``
DERIVED\\SECONDARY, a ``SeriesDescription`` saying synthetic, every geometry and patient/study tag kept);
any other ITK format out in the same format with the same geometry. Each output is written under a
temporary name and renamed, and is never an input path. Beside it: a provenance JSON and a PNG preview.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import itk
import nibabel as nib
import numpy as np
import pydicom
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, Orientation
from pydicom.uid import generate_uid

from bundle.errors import InputError
from bundle.intensity import invert_intensity
from bundle.loading import is_dicom_file
from bundle.model_grid import invert_to_slice
from bundle.preview import render_preview
from bundle.provenance import make_readable, provenance_record, remove_leftovers, write_json_atomically

SYNTHETIC_DESCRIPTION = "SYNTHETIC lesion (MedSoft-Diffusion)"
DICOM_SERIES_DESCRIPTION_LENGTH = 64
NIFTI_DESCRIP_LENGTH = 80
SAFE_NAME_LENGTH = 100
POSITION_TOLERANCE_VOXELS = 0.05


def safe_case_name(name: str) -> str:
    """A file-name-safe version of a case id: letters, digits, ``. _ -`` only, no leading dot, bounded length.

    Case ids can come from DICOM tags (non-ASCII, slashes, ``..``); they must never steer the output path.
    An id that had to be changed (or shortened) gets ``_`` and 8 hex digits of its SHA-1, so two ids that clean
    to the same text (``a/b`` and ``a\\b``) never share an output; an already-safe id is kept as it is.
    """
    name = str(name)
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "case"
    if cleaned == name and len(cleaned) <= SAFE_NAME_LENGTH:
        return cleaned
    digest = hashlib.sha1(name.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{cleaned[:SAFE_NAME_LENGTH - len(digest) - 1]}_{digest}"


def _cast_like(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Round and clip to an integer dtype's range, or cast to a float dtype."""
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.clip(np.rint(values), info.min, info.max).astype(dtype)
    return values.astype(dtype)


def _save_via_temporary(output: Path, save: Callable[[str], None]) -> None:
    """Call ``save`` on a temporary path beside ``output`` (same extension), then rename it into place."""
    descriptor, name = tempfile.mkstemp(prefix=f".{output.name}.", suffix=f".partial{''.join(output.suffixes)}",
                                        dir=output.parent)
    os.close(descriptor)
    temporary = Path(name)
    try:
        save(str(temporary))
        make_readable(temporary)
        os.replace(temporary, output)
    finally:
        temporary.unlink(missing_ok=True)


def write_nifti(source: Path, output: Path, delta: np.ndarray) -> None:
    """Original NIfTI + ``delta`` (file voxel order, scanner units) -> ``output`` with the original header."""
    original = nib.load(str(source))
    values = np.asanyarray(original.dataobj).astype(np.float64) + delta
    header = original.header.copy()
    header["descrip"] = SYNTHETIC_DESCRIPTION.encode()[:NIFTI_DESCRIP_LENGTH]
    slope, intercept = original.header.get_slope_inter()
    on_disk = original.get_data_dtype()
    if slope is None and intercept is None:
        data = _cast_like(values, on_disk)
    else:  # scaled integers: nibabel chooses the scaling, exact to within one stored unit
        data = values
    image = type(original)(data, None, header=header)
    _save_via_temporary(output, image.to_filename)


def _dicom_files(source: Path) -> list[Path]:
    if source.is_dir():
        return sorted(p for p in source.iterdir() if p.is_file() and is_dicom_file(p))
    return [source]


def write_dicom_series(source: Path, output: Path, delta: np.ndarray, source_affine: np.ndarray,
                       description: str) -> None:
    """Write a new DICOM series into the folder ``output``: each source instance with ``delta`` added.

    ``delta`` is in the loaded volume's voxel order ``(column, row, slice)``; each source file is matched to
    its slice through its ``ImagePositionPatient`` and the loaded affine (RAS), so the ordering ITK used is
    never guessed.
    """
    to_voxel = np.linalg.inv(np.asarray(source_affine, float))
    study_uid, series_uid = generate_uid(), generate_uid()
    temporary = Path(tempfile.mkdtemp(prefix=f".{output.name}.", suffix=".partial", dir=output.parent))
    try:
        written = 0
        for path in _dicom_files(source):
            dataset = pydicom.dcmread(path)
            if source.is_dir():
                position_ras = np.asarray(dataset.ImagePositionPatient, float) * [-1.0, -1.0, 1.0]
                voxel = to_voxel @ np.append(position_ras, 1.0)
                index = round(voxel[2])
                if (np.abs(voxel[:2]).max() > POSITION_TOLERANCE_VOXELS
                        or abs(voxel[2] - index) > POSITION_TOLERANCE_VOXELS or not 0 <= index < delta.shape[2]):
                    continue  # an instance of another series or geometry in the same folder
            else:
                index = 0
            stored = dataset.pixel_array
            slope = float(getattr(dataset, "RescaleSlope", 1.0))
            intercept = float(getattr(dataset, "RescaleIntercept", 0.0))
            values = stored.astype(np.float64) * slope + intercept + delta[:, :, index].T
            new_stored = (values - intercept) / slope
            bits_stored = int(dataset.BitsStored)
            if dataset.PixelRepresentation == 1:
                low, high = -(2 ** (bits_stored - 1)), 2 ** (bits_stored - 1) - 1
            else:
                low, high = 0, 2**bits_stored - 1
            pixels = np.clip(np.rint(new_stored), low, high).astype(stored.dtype)
            dataset.set_pixel_data(pixels, dataset.PhotometricInterpretation, bits_stored)
            dataset.StudyInstanceUID = study_uid
            dataset.SeriesInstanceUID = series_uid
            dataset.SOPInstanceUID = generate_uid()
            dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
            dataset.ImageType = ["DERIVED", "SECONDARY", *list(getattr(dataset, "ImageType", []))[2:]]
            series = f"SYNTHETIC {getattr(dataset, 'SeriesDescription', '')}".strip()
            dataset.SeriesDescription = series[:DICOM_SERIES_DESCRIPTION_LENGTH]
            dataset.DerivationDescription = f"{SYNTHETIC_DESCRIPTION}: {description}"[:1024]
            dataset.save_as(temporary / f"IM_{written:05d}.dcm", enforce_file_format=True)
            written += 1
        if written != delta.shape[2]:
            raise InputError(source, f"matched {written} DICOM instances to the {delta.shape[2]} slices loaded")
        make_readable(temporary)
        if output.exists():
            shutil.rmtree(output)
        os.replace(temporary, output)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


def write_itk_image(source: Path, output: Path, delta: np.ndarray) -> None:
    """Any other ITK format: original + ``delta`` (ITK index order x, y, z) with the original geometry."""
    original = itk.imread(str(source))
    values = itk.array_from_image(original)
    new = _cast_like(values.astype(np.float64) + delta.T, values.dtype)
    image = itk.image_from_array(new)
    image.CopyInformation(original)
    _save_via_temporary(output, lambda path: itk.imwrite(image, path))


def _output_name(source: Path, source_format: str, case_name: str, suffix: str) -> str:
    if source_format == "nifti":
        extension = ".nii.gz" if source.name.lower().endswith(".gz") else ".nii"
    elif source_format in ("dicom_series", "dicom_file"):
        extension = ""
    else:
        extension = "".join(source.suffixes)
    return f"{case_name}{suffix}{extension}"


def _check_not_input(output: Path, inputs: Sequence[Path]) -> None:
    resolved = output.resolve()
    for path in inputs:
        path = path.resolve()
        if resolved == path or (path.is_dir() and path in resolved.parents) or resolved in path.parents:
            raise InputError(path, f"refusing to write {output}: it would overwrite an input")


class SyntheticVolumeWriter:
    """Write one case's 2-D results into a copy of its volume, plus provenance JSON and PNG preview.

    Args:
        output_dir: folder for the outputs (created if needed).
        grid: the slice -> model-grid chain (:func:`bundle.model_grid.model_grid`) whose inverse maps results
            back to the slices.
        image_key: the model-grid input image of each slice item (its ``applied_operations`` are used).
        native_image_key, native_soft_mask_key: the slice's image (model intensity range) and soft mask on
            native pixels, kept before resampling.
        confine_to_soft_mask: set the change to 0 wherever the native soft mask is 0, so no voxel outside the
            mask's support changes (the results are already weighted by the soft mask: see :meth:`slice_change`).
        suffix: appended to the case name for every output file.
    """

    def __init__(self, output_dir: str | os.PathLike, grid: Compose, image_key: str = "image",
                 native_image_key: str = "native_image", native_soft_mask_key: str = "native_soft_mask",
                 confine_to_soft_mask: bool = True, suffix: str = "_synthetic") -> None:
        self.output_dir = Path(output_dir)
        self.grid = grid
        self.image_key = image_key
        self.native_image_key = native_image_key
        self.native_soft_mask_key = native_soft_mask_key
        self.confine_to_soft_mask = confine_to_soft_mask
        self.suffix = suffix

    def slice_change(self, item: Mapping, prediction: torch.Tensor) -> torch.Tensor:
        """The model's change on the slice's native pixels, in model intensity units: ``(1, H, W)``.

        ``prediction`` is the sampler's result, already blended with the soft mask (``p * M_b + x0 * (1 - M_b)``
        at every step, and equal to x0 where M_b is 0), so its change is mapped back as it is: weighting it by
        M_b again would give the model's content M_b^2 in the blend band. Mapping back interpolates, which can
        spread a change by up to one model pixel beyond the mask's edge; that spread is cut at the native soft
        mask's support (``confine_to_soft_mask``).
        """
        reference = item[self.image_key]
        change = invert_to_slice(torch.as_tensor(prediction) - torch.as_tensor(reference), reference, self.grid)
        if self.confine_to_soft_mask:
            change = change * (torch.as_tensor(item[self.native_soft_mask_key]) > 0)
        return change

    def __call__(self, items: Sequence[Mapping], predictions: Sequence[torch.Tensor],
                 details: Mapping[str, object] | None = None) -> dict[str, str]:
        """Write the case made of ``items`` (one per slice, from ``SelectMaskSlicesd``) and their predictions.

        Returns the paths written: ``{"volume", "provenance", "preview"}``.
        """
        if len(items) != len(predictions) or not items:
            raise ValueError(f"need one prediction per slice item, got {len(items)} items, {len(predictions)}")
        placement = items[0]["placement"]
        source = Path(placement["source"])
        source_format = str(items[0][self.image_key].meta.get("volume_format") or "nifti")
        case_name = self.case_name({"case_id": items[0].get("case_id"), "image": source})
        self.output_dir.mkdir(parents=True, exist_ok=True)
        output = self.output_dir / _output_name(source, source_format, case_name, self.suffix)
        _check_not_input(output, [source, *[Path(p) for p in items[0].get("input_files", [])]])

        axis = int(placement["slice_axis"])
        delta = torch.zeros(placement["canonical_shape"], dtype=torch.float64)
        changes = []
        for item, prediction in zip(items, predictions):
            change = self.slice_change(item, prediction)
            changes.append(change)
            scanner_change = invert_intensity(change[0].double(), item["intensity_scaling"], difference=True)
            delta.select(axis, int(item["placement"]["slice_index"])).copy_(scanner_change)
        source_affine = np.asarray(placement["source_affine"], float)
        canonical = MetaTensor(delta[None], affine=torch.as_tensor(placement["canonical_affine"]))
        in_source_order = Orientation(axcodes="".join(nib.aff2axcodes(source_affine)), labels=None)(canonical)
        if not np.allclose(np.asarray(in_source_order.affine, float), source_affine, atol=1e-3):
            raise RuntimeError(f"{source}: cannot map the canonical grid back to the file's voxel order")
        delta_source = in_source_order[0].numpy()

        text = str(items[0].get("text", ""))
        if source_format == "nifti":
            write_nifti(source, output, delta_source)
        elif source_format in ("dicom_series", "dicom_file"):
            write_dicom_series(source, output, delta_source, source_affine, text)
        else:
            write_itk_image(source, output, delta_source)

        record = provenance_record(source, source_format, output, {
            "case_id": items[0].get("case_id"), "text": text, "label": items[0].get("label"),
            "mask_source": items[0].get("mask_source"), "seed": items[0].get("seed"),
            "slices": {"canonical_axcodes": placement.get("canonical_axcodes"), "slice_axis": axis,
                       "indices": [int(i["placement"]["slice_index"]) for i in items]},
            **(details or {}),
        })
        preview = self.output_dir / f"{case_name}{self.suffix}.png"
        shown = max(range(len(items)), key=lambda i: float(torch.as_tensor(items[i][self.native_soft_mask_key]).sum()))
        native_image = torch.as_tensor(items[shown][self.native_image_key])[0].numpy()
        render_preview(preview, native_image, torch.as_tensor(items[shown][self.native_soft_mask_key])[0].numpy(),
                       native_image + changes[shown][0].numpy(), title=text)
        # the provenance record goes last: its presence marks the case as complete (see ``completed``)
        provenance = write_json_atomically(self.output_dir / f"{case_name}{self.suffix}.json", record)
        return {"volume": str(output), "provenance": str(provenance), "preview": str(preview)}

    def case_name(self, case: Mapping) -> str:
        """The file-name stem of a case's outputs (before ``suffix``): its safe ``case_id``, else the image's name."""
        return safe_case_name(case.get("case_id") or Path(str(case["image"])).name.split(".")[0])

    def provenance_path(self, case: Mapping) -> Path:
        return self.output_dir / f"{self.case_name(case)}{self.suffix}.json"

    def completed(self, case: Mapping, details: Mapping[str, object] | None = None) -> dict[str, str] | None:
        """The outputs of an earlier run for this datalist entry, when that run finished it, else ``None``.

        Finished means: the provenance record (written last) exists, names this entry's input image and text
        and the same ``details`` (model, sampler settings), and the volume it records exists. Anything else (no
        record, another text or model, a missing volume) is redone.
        """
        record_path = self.provenance_path(case)
        try:
            record = json.loads(record_path.read_text())
        except (OSError, ValueError):
            return None
        same_input = record.get("input", {}).get("path") == str(Path(str(case.get("image"))).resolve())
        volume = Path(str(record.get("output", "")))
        same_details = all(record.get(key) == value for key, value in (details or {}).items())
        if not (same_input and same_details and record.get("text") == case.get("text") and volume.exists()):
            return None
        preview = record_path.with_suffix(".png")
        return {"volume": str(volume), "provenance": str(record_path), "preview": str(preview)}

    def remove_partial_outputs(self) -> list[Path]:
        """Delete the temporary files and folders a killed run left in ``output_dir``; returns what was removed.

        Only this writer's own temporary names are touched: ``.<output name>.<random>.partial[...]``.
        """
        return remove_leftovers(self.output_dir, r"\..+\.partial.*")
