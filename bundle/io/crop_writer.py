"""VG-MedGen's generated crops written as cases the classifier reads: each crop a one-slice NIfTI volume with its
millimetre geometry, its vertebra label volume (the stage-V segmentation head's answer on the generated crop), a
provenance record and a preview PNG, marked synthetic; :func:`crop_entry` lists one for the classifier
(:func:`bundle.io.pair_writer.write_pair_datalist` writes the list beside the real cases).

The volume is ``(1, S, S)`` in the bundle's canonical orientation (``RIP``: one sagittal slice, rows running
inferior, columns posterior) with ``pixel_mm`` pixels (the request's own window's when it has one, see
:class:`bundle.engines.vgmedgen_generation.CaptionGenerationJob`) and voxel 0 at ``details["origin_mm"]`` when
given, in [0, ``intensity_scale``]; ``descrip`` says synthetic. The
label volume marks the vertebra (segmentation classes 1 and 2, the lesion being inside it) as label
:data:`VERTEBRA_LABEL`, so the classifier's own working window (:func:`bundle.transforms.case_to_slices.
slice_transform`) finds the crop's vertebra as it finds a real one. A case's files are written into a temporary
folder and moved into place with the provenance record last (:func:`bundle.utils.files.move_into_place`): they
appear together or not at all, and an existing case's files are replaced only by a complete new set.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from PIL import Image

from bundle.errors import OutputError
from bundle.utils.bundle_files import code_version
from bundle.utils.files import (
    check_folder_writable,
    move_into_place,
    safe_case_name,
    write_atomically,
    write_json_atomically,
)

SYNTHETIC_DESCRIPTION = "SYNTHETIC VG-MedGen crop"
VERTEBRA_LABEL = 1


def canonical_affine(pixel_mm: Sequence[float], origin_mm: Sequence[float] | None = None) -> np.ndarray:
    """The RAS affine of a ``(1, S, S)`` volume in ``RIP`` order: axis 0 to the right, 1 inferior, 2 posterior;
    ``origin_mm`` the RAS position of voxel ``(0, 0, 0)`` (default the origin)."""
    rows, columns = (float(p) for p in pixel_mm)
    affine = np.array([[rows, 0, 0, 0], [0, 0, -columns, 0], [0, -rows, 0, 0], [0, 0, 0, 1]], float)
    if origin_mm is not None:
        affine[:3, 3] = [float(v) for v in origin_mm]
    return affine


def write_crop_nifti(path: Path, values: np.ndarray, affine: np.ndarray, description: str) -> None:
    image = nib.Nifti1Image(values[None], affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    image.header.set_xyzt_units("mm")
    image.header["descrip"] = description.encode()[:80]
    image.to_filename(str(path))


def render_crop_preview(path: Path, crop: np.ndarray, segmentation: np.ndarray, scale: int = 4) -> None:
    """A PNG a person can look at: the crop (grey) beside its segmentation (vertebra grey, lesion white)."""
    grey = (np.clip(crop, 0, 1) * 255).round().astype(np.uint8)
    labels = (np.clip(segmentation, 0, 2) * 127).astype(np.uint8)
    strip = np.concatenate([grey, np.full((grey.shape[0], 2), 255, np.uint8), labels], axis=1)
    picture = Image.fromarray(strip).resize((strip.shape[1] * scale, strip.shape[0] * scale), Image.NEAREST)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    write_atomically(path, buffer.getvalue())


class GeneratedCropWriter:
    """Writes one generated crop per call (see the module docstring).

    Args:
        output_dir: where the cases go (created if needed).
        intensity_scale: the volume's values are the crop's [0, 1] times this.
    """

    def __init__(self, output_dir: str | os.PathLike, intensity_scale: float = 1000.0) -> None:
        self.output_dir = Path(output_dir)
        self.intensity_scale = float(intensity_scale)

    def __call__(
        self, crop: torch.Tensor, segmentation: torch.Tensor, pixel_mm: Sequence[float], details: Mapping[str, object]
    ) -> dict[str, str]:
        """Write the case ``details["case_id"]``: ``crop`` ``(1, S, S)`` in [0, 1], ``segmentation`` ``(S, S)``
        classes (0 background, 1 vertebra, 2 lesion), ``pixel_mm`` the crop's pixel size (rows, columns).
        ``details`` (case id, text, label, class index, seed, model, ...) go into the provenance record; its
        ``origin_mm`` (RAS, mm), when present, places voxel 0 (:func:`canonical_affine`). Returns the
        written paths: ``volume``, ``vertebra_seg``, ``preview``, ``provenance``.

        Raises:
            OutputError: naming the case's volume when it could not be written (nothing of the case is kept).
        """
        stem = safe_case_name(str(details["case_id"]))
        check_folder_writable(self.output_dir)
        names = {
            "volume": f"{stem}.nii.gz",
            "vertebra_seg": f"{stem}_vertebra.nii.gz",
            "preview": f"{stem}_preview.png",
            "provenance": f"{stem}_provenance.json",
        }
        outputs = {key: str(self.output_dir / name) for key, name in names.items()}
        crop_values = crop.detach().float().cpu().numpy()[0]
        labels = segmentation.detach().cpu().numpy()
        affine = canonical_affine(pixel_mm, details.get("origin_mm"))
        record = {
            "synthetic": True,
            "generator": "VG-MedGen",
            "output": outputs["volume"],
            "vertebra_seg": outputs["vertebra_seg"],
            "pixel_mm": [float(p) for p in pixel_mm],
            "code_version": code_version(),
            "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            **details,
        }
        staging = Path(tempfile.mkdtemp(prefix=f".{stem}.", dir=self.output_dir))
        try:
            volume = (crop_values * self.intensity_scale).astype(np.float32)
            write_crop_nifti(staging / names["volume"], volume, affine, SYNTHETIC_DESCRIPTION)
            vertebra = ((labels >= 1) * VERTEBRA_LABEL).astype(np.uint8)
            write_crop_nifti(staging / names["vertebra_seg"], vertebra, affine, SYNTHETIC_DESCRIPTION + " label")
            render_crop_preview(staging / names["preview"], crop_values, labels)
            write_json_atomically(staging / names["provenance"], record)
            move_into_place(staging, self.output_dir, last=names["provenance"])
        except OSError as error:
            raise OutputError(
                outputs["volume"], f"could not be written ({type(error).__name__}: {error}); nothing of it was kept"
            ) from error
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return outputs


def crop_entry(details: Mapping[str, object], outputs: Mapping[str, str]) -> dict[str, object]:
    """The classifier's datalist entry of a written crop: its volume and vertebra label (``mask_labels``
    ``[VERTEBRA_LABEL]``), the request's text and class, ``synthetic: true`` and the provenance record."""
    return {
        "case_id": details["case_id"],
        "image": outputs["volume"],
        "vertebra_seg": outputs["vertebra_seg"],
        "mask_labels": [VERTEBRA_LABEL],
        "label": details["label"],
        "class_index": details["class_index"],
        "text": details["text"],
        "provenance": outputs["provenance"],
        "synthetic": True,
    }
