"""Putting 2-D model results back into a copy of the original volume, marked as synthetic.

What is inserted is the model's *change* to each slice, not the resampled slice: the change is mapped back
from the model grid to the slice's native pixels (MONAI's recorded inverse), scaled back to scanner units and
added to the original voxels. The sampler's result is already blended with the soft mask (at every step), so the
change is *not* weighted by the soft mask again; it is only confined to the soft mask's support (the pixels where
the native soft mask is above 0), which removes what interpolation spreads beyond it. Untouched anatomy therefore
keeps its native resolution and exact values: with a model that returns its input, the written volume equals the
input (NIfTI: bit for bit; DICOM: within one stored unit).

Formats: NIfTI in, NIfTI out (same dtype, affine, qform/sform, header; ``descrip`` says synthetic); DICOM in
(a series folder or one file), a new DICOM series out, uncompressed (new Study/Series/SOP Instance UIDs,
every geometry tag kept, marked synthetic and referencing its source instances, de-identified unless
``keep_patient_identity``: :mod:`bundle.io.synthetic_dicom`); any other ITK format out in the same format with
the same geometry. Beside it: a provenance JSON, a PNG preview and the case's thumbnail strip for the review gallery
(:mod:`bundle.io.gallery`). A case's outputs appear together or not at
all: they are written into a temporary folder in the output folder and moved into place at the end, the
provenance record last (it marks the case complete); no output is ever an input path.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path

import itk
import nibabel as nib
import numpy as np
import pydicom
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, Orientation
from pydicom.uid import generate_uid

from bundle.data.dicom_series import match_instances, source_instances
from bundle.errors import InputError, OutputError
from bundle.io.gallery import render_thumbnail
from bundle.io.preview import render_preview
from bundle.io.provenance import provenance_record
from bundle.io.synthetic_dicom import (
    DEIDENTIFICATION_METHOD,
    SYNTHETIC_DESCRIPTION,
    Deidentifier,
    check_deidentifiable,
    derived_series_number,
    mark_synthetic,
    new_instance_uids,
    patient_key,
    reference_source,
    source_reference,
)
from bundle.transforms.intensity import invert_intensity
from bundle.transforms.model_grid import invert_to_slice
from bundle.utils.files import (
    check_folder_writable,
    make_readable,
    move_into_place,
    remove_leftovers,
    safe_case_name,
    size_of_path,
    write_json_atomically,
)

NIFTI_DESCRIP_LENGTH = 80
OUTPUT_SIZE_MARGIN_BYTES = 2**20  # the preview and the provenance record, beside a volume about the input's size


def _cast_like(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Round and clip to an integer dtype's range, or cast to a float dtype."""
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.clip(np.rint(values), info.min, info.max).astype(dtype)
    return values.astype(dtype)


def write_nifti(source: Path, output: Path, delta: np.ndarray) -> None:
    """Original NIfTI + ``delta`` (file voxel order, scanner units) -> ``output`` with the original header.

    ``delta`` is added in the file's stored units and the file's own scaling (``scl_slope`` / ``scl_inter``) is
    kept, so every voxel ``delta`` leaves at zero is stored bit for bit (scaled integers included); a file of shape
    ``(X, Y, Z, 1, ...)`` keeps its singleton dimensions.
    """
    original = nib.load(str(source))
    stored = np.asanyarray(original.dataobj.get_unscaled())
    if stored.shape[:3] != delta.shape or any(n != 1 for n in stored.shape[3:]):
        raise ValueError(f"{source}: a change of shape {delta.shape} does not fit its voxels {stored.shape}")
    slope, inter = float(original.dataobj.slope), float(original.dataobj.inter)
    data = _cast_like(stored.astype(np.float64) + delta.reshape(stored.shape) / slope, original.get_data_dtype())
    header = original.header.copy()
    header["descrip"] = SYNTHETIC_DESCRIPTION.encode()[:NIFTI_DESCRIP_LENGTH]
    image = type(original)(data, None, header=header)
    if (slope, inter) != (1.0, 0.0):
        image.header.set_slope_inter(slope, inter)  # nibabel then stores ``data`` as it is, with this scaling
    image.to_filename(str(output))


def check_dicom_identity(source: Path, deidentifier: Deidentifier | None) -> None:
    """Refuse, before predicting, a DICOM input the writer would refuse to de-identify (burned-in annotation)."""
    if deidentifier is not None:
        for path, dataset in source_instances(source):
            check_deidentifiable(str(path), dataset)


def write_dicom_series(
    source: Path,
    output: Path,
    delta: np.ndarray,
    source_affine: np.ndarray,
    description: str,
    deidentifier: Deidentifier | None = None,
) -> dict[str, object]:
    """Write a new DICOM series into the folder ``output``: each source instance with ``delta`` added.

    ``delta`` is in the loaded volume's voxel order ``(column, row, slice)``; the instances are those the loader
    read (:func:`bundle.data.dicom_series.series_instances`), each matched to its slice through its
    ``ImagePositionPatient`` and the loaded affine (RAS), so the ordering ITK used is never guessed. Every
    instance is written uncompressed (Explicit VR Little Endian), marked synthetic and pointing at its source
    (:mod:`bundle.io.synthetic_dicom`), in a new study and series; with a ``deidentifier`` it is de-identified first
    (PS3.15 basic profile, pseudonymous patient ID), otherwise the patient and study tags are kept.

    Returns:
        The de-identification record for the provenance (``{}`` when identity is kept): the method and the real
        -> pseudonym mapping of the patient ID and the source series and study UIDs.
    """
    instances = source_instances(source)
    indices = match_instances(source, instances, source_affine, delta.shape[2])
    study_uid, series_uid = generate_uid(), generate_uid()
    created = datetime.now()
    identity: dict[str, object] = {}
    output.mkdir()
    for number, ((path, _), index) in enumerate(zip(instances, indices, strict=True)):
        dataset = pydicom.dcmread(path)
        source_uids = source_reference(dataset)
        stored = dataset.pixel_array
        slope = float(dataset.get("RescaleSlope") or 1.0)
        new_stored = stored.astype(np.float64) + delta[:, :, index].T / slope
        bits_stored = int(dataset.BitsStored)
        if dataset.PixelRepresentation == 1:
            low, high = -(2 ** (bits_stored - 1)), 2 ** (bits_stored - 1) - 1
        else:
            low, high = 0, 2**bits_stored - 1
        pixels = np.clip(np.rint(new_stored), low, high).astype(stored.dtype)
        dataset.set_pixel_data(pixels, dataset.PhotometricInterpretation, bits_stored, generate_instance_uid=False)
        dataset.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
        series_description = str(dataset.get("SeriesDescription", ""))
        series_number = derived_series_number(dataset)
        if deidentifier is not None:
            check_deidentifiable(str(path), dataset)
            real = patient_key(dataset, str(source.resolve()))
            pseudonym = deidentifier.pseudonym(real)
            deidentifier(dataset, pseudonym)
            mapped = {key: deidentifier.uid(uid) for key, uid in source_uids.items() if key != "sop_class"}
            identity = {
                "method": DEIDENTIFICATION_METHOD,
                "patient_id": {"real": real, "pseudonym": pseudonym},
                "source_series_uid": {"real": source_uids["series"], "pseudonym": mapped["series"]},
                "source_study_uid": {"real": source_uids["study"], "pseudonym": mapped["study"]},
            }
            source_uids, series_description = {**source_uids, **mapped}, ""
        reference_source(dataset, source_uids)
        new_instance_uids(dataset, study_uid, series_uid)
        mark_synthetic(dataset, description, series_description, series_number, created)
        dataset.save_as(output / f"IM_{number:05d}.dcm", enforce_file_format=True)
    make_readable(output)
    return identity


def write_itk_image(source: Path, output: Path, delta: np.ndarray) -> None:
    """Any other ITK format: original + ``delta`` (ITK index order x, y, z) with the original geometry."""
    original = itk.imread(str(source))
    values = itk.array_from_image(original)
    new = _cast_like(values.astype(np.float64) + delta.T, values.dtype)
    image = itk.image_from_array(new)
    image.CopyInformation(original)
    itk.imwrite(image, str(output))  # with its data file for header + data formats (.mhd + .raw, .hdr + .img)


def _output_name(source: Path, source_format: str, case_name: str, suffix: str) -> str:
    if source_format == "nifti":
        extension = ".nii.gz" if source.name.lower().endswith(".gz") else ".nii"
    elif source_format in ("dicom_series", "dicom_file"):
        extension = ""
    else:
        extension = "".join(source.suffixes)
    return f"{case_name}{suffix}{extension}"


def check_not_input(output: Path, inputs: Sequence[Path]) -> None:
    """Raise :class:`InputError` naming the input when ``output`` is an input, lies in an input folder or holds one."""
    resolved = output.resolve()
    for path in inputs:
        path = path.resolve()
        if resolved == path or (path.is_dir() and path in resolved.parents) or resolved in path.parents:
            raise InputError(path, f"refusing to write {output}: it would overwrite an input")


def source_order_volume(items: Sequence[Mapping], slice_values: Sequence[torch.Tensor]) -> np.ndarray:
    """One case's per-slice values ``(H, W)`` (native slice pixels, one per item) as a volume in the source file's
    voxel order, zero on the slices not given; the items' ``placement`` says where each slice sits."""
    placement = items[0]["placement"]
    axis = int(placement["slice_axis"])
    volume = torch.zeros(placement["canonical_shape"], dtype=torch.float64)
    for item, values in zip(items, slice_values, strict=True):
        volume.select(axis, int(item["placement"]["slice_index"])).copy_(torch.as_tensor(values, dtype=torch.float64))
    source_affine = np.asarray(placement["source_affine"], float)
    canonical = MetaTensor(volume[None], affine=torch.as_tensor(placement["canonical_affine"]))
    in_source_order = Orientation(axcodes="".join(nib.aff2axcodes(source_affine)), labels=None)(canonical)
    if not np.allclose(np.asarray(in_source_order.affine, float), source_affine, atol=1e-3):
        raise RuntimeError(f"{placement['source']}: cannot map the canonical grid back to the file's voxel order")
    return in_source_order[0].numpy()


def case_of_items(items: Sequence[Mapping]) -> dict[str, object]:
    """The case id and image path of the case that slice items come from (what output names are made of)."""
    return {"case_id": items[0].get("case_id"), "image": items[0]["placement"]["source"]}


class SyntheticVolumeWriter:
    """Write one case's 2-D results into a copy of its volume, plus provenance JSON and PNG preview.

    Args:
        output_dir: folder for the outputs (created if needed).
        grid: the slice -> model-grid chain (:func:`bundle.transforms.model_grid.model_grid`) whose inverse maps results
            back to the slices.
        image_key: the model-grid input image of each slice item (its ``applied_operations`` are used).
        native_image_key, native_soft_mask_key: the slice's image (model intensity range) and soft mask on
            native pixels, kept before resampling.
        confine_to_soft_mask: set the change to 0 wherever the native soft mask is 0, so no voxel outside the
            mask's support changes (the results are already weighted by the soft mask: see :meth:`slice_change`).
        suffix: appended to the case name for every output file.
        keep_patient_identity: write DICOM output with the source's patient and study tags. By default (``False``)
            it is de-identified (:class:`bundle.io.synthetic_dicom.Deidentifier`: PS3.15 basic profile, a
            pseudonymous patient ID that is the same for a patient's cases within the run; the mapping is only in
            the provenance record).
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        grid: Compose,
        image_key: str = "image",
        native_image_key: str = "native_image",
        native_soft_mask_key: str = "native_soft_mask",
        confine_to_soft_mask: bool = True,
        suffix: str = "_synthetic",
        keep_patient_identity: bool = False,
    ) -> None:
        self.output_dir = Path(output_dir)
        self.grid = grid
        self.image_key = image_key
        self.native_image_key = native_image_key
        self.native_soft_mask_key = native_soft_mask_key
        self.confine_to_soft_mask = confine_to_soft_mask
        self.suffix = suffix
        self.deidentifier = None if keep_patient_identity else Deidentifier()

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

    def __call__(
        self, items: Sequence[Mapping], predictions: Sequence[torch.Tensor], details: Mapping[str, object] | None = None
    ) -> dict[str, str]:
        """Write the case made of ``items`` (one per slice, from ``SelectMaskSlicesd``) and their predictions.

        Returns the paths written: ``{"volume", "provenance", "preview", "thumbnail"}``. They appear together or not
        at all.

        Raises:
            InputError: an output would overwrite an input (see :meth:`check_writable`).
            OutputError: naming the output, when it cannot be written (no permission, disk full).
        """
        if len(items) != len(predictions) or not items:
            raise ValueError(f"need one prediction per slice item, got {len(items)} items, {len(predictions)}")
        output = self.check_writable(items)
        placement = items[0]["placement"]
        source = Path(placement["source"])
        source_format = str(items[0][self.image_key].meta.get("volume_format") or "nifti")
        axis = int(placement["slice_axis"])
        source_affine = np.asarray(placement["source_affine"], float)
        changes = [self.slice_change(item, prediction) for item, prediction in zip(items, predictions, strict=True)]
        delta_source = source_order_volume(
            items,
            [
                invert_intensity(change[0].double(), item["intensity_scaling"], difference=True)
                for item, change in zip(items, changes, strict=True)
            ],
        )
        companions = self.companion_files(items, predictions)

        text = str(items[0].get("text", ""))
        stem = self.output_stem(case_of_items(items))
        preview, provenance = self.output_dir / f"{stem}.png", self.output_dir / f"{stem}.json"
        thumbnail = self.thumbnail_path(stem)
        staging = Path(tempfile.mkdtemp(prefix=f".{stem}.", suffix=".partial", dir=self.output_dir))
        try:
            identity: dict[str, object] = {}
            if source_format == "nifti":
                write_nifti(source, staging / output.name, delta_source)
            elif source_format in ("dicom_series", "dicom_file"):
                identity = write_dicom_series(
                    source, staging / output.name, delta_source, source_affine, text, self.deidentifier
                )
                identity = {"deidentification": identity or {"keep_patient_identity": True}}
            else:
                write_itk_image(source, staging / output.name, delta_source)
            written = {}
            for key, (name, write) in companions.items():
                write(staging / name)
                written[key] = str(self.output_dir / name)
            record = provenance_record(
                source,
                source_format,
                output,
                {
                    "case_id": items[0].get("case_id"),
                    "text": text,
                    "label": items[0].get("label"),
                    "mask_source": items[0].get("mask_source"),
                    "seed": items[0].get("seed"),
                    "slices": {
                        "canonical_axcodes": placement.get("canonical_axcodes"),
                        "slice_axis": axis,
                        "indices": [int(i["placement"]["slice_index"]) for i in items],
                    },
                    "through_plane": items[0].get("through_plane"),
                    **identity,
                    **written,
                    **(details or {}),
                },
            )
            shown = max(
                range(len(items)), key=lambda i: float(torch.as_tensor(items[i][self.native_soft_mask_key]).sum())
            )
            native_image = torch.as_tensor(items[shown][self.native_image_key])[0].numpy()
            render_preview(
                staging / preview.name,
                native_image,
                torch.as_tensor(items[shown][self.native_soft_mask_key])[0].numpy(),
                native_image + changes[shown][0].numpy(),
                title=text,
            )
            self.render_thumbnail(staging / thumbnail.name, items, changes)
            write_json_atomically(staging / provenance.name, record)
            # the provenance record goes last: its presence marks the case as complete (see ``completed``)
            move_into_place(staging, self.output_dir, last=provenance.name)
        except OSError as error:
            problem = str(error).replace(str(staging), str(self.output_dir))
            raise OutputError(
                output, f"could not be written ({type(error).__name__}: {problem}); nothing of this case was kept"
            ) from error
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return {
            "volume": str(output),
            "provenance": str(provenance),
            "preview": str(preview),
            "thumbnail": str(thumbnail),
            **written,
        }

    def render_thumbnail(self, path: Path, items: Sequence[Mapping], changes: Sequence[torch.Tensor]) -> None:
        """The case's strip for the review gallery (:func:`bundle.io.gallery.render_thumbnail`), from its native
        slices in slice order."""
        order = sorted(range(len(items)), key=lambda i: int(items[i]["placement"]["slice_index"]))
        placement = items[0]["placement"]
        spacing = np.linalg.norm(np.asarray(placement["canonical_affine"], float)[:3, :3], axis=0)
        axis = int(placement["slice_axis"])
        render_thumbnail(
            path,
            [torch.as_tensor(items[i][self.native_image_key])[0].numpy() for i in order],
            [torch.as_tensor(items[i][self.native_soft_mask_key])[0].numpy() for i in order],
            [changes[i][0].numpy() for i in order],
            slice_spacing_mm=float(spacing[axis]),
            pixel_spacing_mm=[float(s) for k, s in enumerate(spacing) if k != axis],
        )

    def thumbnail_path(self, stem: str) -> Path:
        return self.output_dir / f"{stem}_thumbnail.png"

    def companion_files(
        self, items: Sequence[Mapping], predictions: Sequence[torch.Tensor]
    ) -> dict[str, tuple[str, Callable[[Path], None]]]:
        """Further files of the case, written beside the volume and moved into place with it: ``{key: (file name,
        write(path))}``; each path is returned and recorded in the provenance under its key. Called before
        anything of the case is written, so raising here refuses the case with nothing left behind. None here."""
        return {}

    def check_writable(self, items: Sequence[Mapping]) -> Path:
        """Check, before anything is predicted, that the case made of ``items`` (its slice items, as for
        :meth:`__call__`) can be written; returns the path its volume will have.

        Checked: the output folder can be written to and has room for about the input's size, and no output (the
        volume, its preview, its provenance record) would overwrite an input. This is the place for checks a
        format needs before its write-back: a DICOM input that could not be de-identified (the loader already
        checked that its instances can be written back).

        Raises:
            InputError: naming the input an output would overwrite.
            OutputError: naming the output folder, when it cannot be written to or is full.
        """
        source = Path(items[0]["placement"]["source"])
        source_format = str(items[0][self.image_key].meta.get("volume_format") or "nifti")
        entry = case_of_items(items)
        stem = self.output_stem(entry)
        output = self.output_dir / _output_name(source, source_format, self.case_name(entry), self.suffix)
        inputs = [source, *[Path(p) for p in items[0].get("input_files", [])]]
        for path in (
            output,
            self.output_dir / f"{stem}.png",
            self.output_dir / f"{stem}.json",
            self.thumbnail_path(stem),
        ):
            check_not_input(path, inputs)
        check_folder_writable(self.output_dir, needed_bytes=size_of_path(source) + OUTPUT_SIZE_MARGIN_BYTES)
        if source_format in ("dicom_series", "dicom_file"):
            check_dicom_identity(source, self.deidentifier)
        return output

    def case_name(self, case: Mapping) -> str:
        """The file-name stem of a case's outputs (before ``suffix``): its safe ``case_id``, else the image's name."""
        return safe_case_name(case.get("case_id") or Path(str(case["image"])).name.split(".")[0])

    def output_stem(self, case: Mapping) -> str:
        """The name every output of ``case`` starts with: :meth:`case_name` + ``suffix``."""
        return f"{self.case_name(case)}{self.suffix}"

    def provenance_path(self, case: Mapping) -> Path:
        return self.output_dir / f"{self.output_stem(case)}.json"

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
        preview, thumbnail = record_path.with_suffix(".png"), self.thumbnail_path(self.output_stem(case))
        return {
            "volume": str(volume),
            "provenance": str(record_path),
            "preview": str(preview),
            "thumbnail": str(thumbnail),
        }

    def remove_partial_outputs(self) -> list[Path]:
        """Delete the temporary files and folders a killed run left in ``output_dir``; returns what was removed.

        Only this writer's own temporary names are touched: ``.<output name>.<random>.partial[...]``.
        """
        return remove_leftovers(self.output_dir, r"\..+\.partial.*")
