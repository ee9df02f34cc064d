"""MedDiff-FT's image-mask pairs: the host volume with its synthetic lesion plus the lesion's label volume, and a
datalist the segmentation workflow (``configs/segment.json``) reads as it is.

:class:`LesionPairWriter` is the MedSoft writer (:class:`bundle.io.volume_writer.SyntheticVolumeWriter`: the model's
change put back into a copy of the host with its geometry and header, marked synthetic, a provenance record and a
preview) with one more file per case, ``<case>_synthetic_lesion.nii.gz``: the lesion label on the host's voxel grid
(its affine; for a NIfTI host its header, as uint8). The label of each slice is the item's lesion mask on the model
grid mapped back to the slice's native pixels (the writer's own inverse of the grid), cut to the soft mask's
support (nothing changes outside it) and eroded by ``erosion_mm`` in the slice's pixel size
(:class:`bundle.transforms.lesion_label.ErodeLesionLabel`), so label voxels are where the synthetic lesion surely
is. The erosion is whole pixels per axis (``floor(erosion_mm / pixel_mm)``): the provenance records the pixels
applied per in-plane axis, and an erosion below the pixel size along both axes (it changes nothing) is logged as a
warning, once per writer (one job). With ``label_mode="change"`` the label is also cut to the voxels the model
changed by more than ``change_threshold`` (in the model grid's normalised intensities, the writer's own change
mapped back): the eroded mask AND ``|synthetic - host| > tau``. A case whose label is empty, or erodes to nothing, is
refused before anything is written (:class:`bundle.transforms.lesion_label.EmptyLabelError`, naming the case): the
job lists it as failed and goes on.
The label is written into the case's temporary folder with the volume and moved into place with it, so a case's
files appear together or not at all.

:func:`pair_entry` and :func:`write_pair_datalist` list the written pairs as ``training`` entries (``image`` the
synthetic volume, ``lesion_seg`` its label, the host's vertebra labels as the soft-mask source, ``synthetic:
true``) beside a base datalist's real cases.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.data.utils import affine_to_spacing
from monai.transforms import Compose

from bundle.data.datalist import load_datalist
from bundle.io.volume_writer import SyntheticVolumeWriter, case_of_items, check_not_input, source_order_volume
from bundle.transforms.lesion_label import EmptyLabelError, ErodeLesionLabel
from bundle.transforms.model_grid import invert_to_slice
from bundle.transforms.morphology import radius_in_voxels
from bundle.utils.files import read_json_object, relative_paths, write_json_atomically

LABEL_SUFFIX = "_lesion"
LABEL_DESCRIPTION = "SYNTHETIC lesion label (MedDiff-FT pair)"
LABEL_MODES = ("mask", "change")
PAIR_PATH_KEYS = ("image", "vertebra_seg", "lesion_seg", "provenance", "source_image")

logger = logging.getLogger(__name__)


def write_label_nifti(path: Path, label: np.ndarray, source: Path, source_format: str, affine: np.ndarray) -> None:
    """Write a ``{0, 1}`` label volume (the source's voxel order) as uint8 NIfTI on the source's grid: a NIfTI
    source's header (qform, sform, units), else a new header with the loaded ``affine`` (RAS)."""
    data = label.astype(np.uint8)
    if source_format == "nifti":
        original = nib.load(str(source))
        header = original.header.copy()
        header.set_data_dtype(np.uint8)
        image = type(original)(data, None, header=header)
        image.header.set_slope_inter(1.0, 0.0)
    else:
        image = nib.Nifti1Image(data, affine)
        image.set_qform(affine, code=1)
        image.set_sform(affine, code=1)
    image.header["descrip"] = LABEL_DESCRIPTION.encode()[:80]
    image.to_filename(str(path))


class LesionPairWriter(SyntheticVolumeWriter):
    """The MedSoft writer plus the lesion label volume (see the module docstring).

    Args:
        output_dir, grid: :class:`SyntheticVolumeWriter`'s.
        writer_options: :class:`SyntheticVolumeWriter`'s other arguments, by name (``suffix``,
            ``keep_patient_identity``, the item keys, ``confine_to_soft_mask``).
        label_key: each slice item's lesion mask on the model grid ``(1, S, S)`` (values above 0.5 inside).
        erosion_mm: the label's erosion in mm, in each slice's native pixel size (0: none).
        label_mode: ``"mask"``: the eroded lesion mask; ``"change"``: the eroded lesion mask where the model also
            changed the host by more than ``change_threshold``.
        change_threshold: tau, in the model grid's normalised intensity units (the images' [0, 1]); ``"change"`` only.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        grid: Compose,
        label_key: str = "lesion_mask",
        erosion_mm: float = 1.0,
        label_mode: str = "mask",
        change_threshold: float = 0.05,
        **writer_options,
    ) -> None:
        super().__init__(output_dir, grid, **writer_options)
        if label_mode not in LABEL_MODES:
            raise ValueError(f"label_mode must be one of {LABEL_MODES}, got {label_mode!r}")
        if not change_threshold >= 0:
            raise ValueError(f"change_threshold must be >= 0, got {change_threshold}")
        self.label_key = label_key
        self.erosion_mm = float(erosion_mm)
        self.label_mode, self.change_threshold = label_mode, float(change_threshold)
        ErodeLesionLabel(self.erosion_mm)  # refuses a bad erosion here, not at the first case
        self.warned_below_pixel = False

    def __call__(
        self, items: Sequence[Mapping], predictions: Sequence[torch.Tensor], details: Mapping[str, object] | None = None
    ) -> dict[str, str]:
        """Write the pair (:meth:`SyntheticVolumeWriter.__call__`); the provenance also records
        ``label_erosion_mm``, ``label_erosion_pixels`` (:meth:`erosion_pixels`) and, from the pair job, the first
        item's ``lesion_pair`` (how its mask was drawn). Returns the paths written, the label's under
        ``"lesion_label"``.

        Raises:
            EmptyLabelError: the case's label is empty or erodes to nothing (nothing is written).
        """
        drawn = {"lesion_pair": items[0]["lesion_pair"]} if items and "lesion_pair" in items[0] else {}
        label = {
            "label_erosion_mm": self.erosion_mm,
            "label_erosion_pixels": self.erosion_pixels(items),
            "label_mode": self.label_mode,
        }
        if self.label_mode == "change":
            label["label_change_threshold"] = self.change_threshold
        return super().__call__(items, predictions, {**label, **drawn, **(details or {})})

    def slice_spacing(self, items: Sequence[Mapping]) -> list[float]:
        """The case's in-plane pixel size in mm, per axis of its native slices (they share one pixel grid)."""
        return affine_to_spacing(items[0][self.native_image_key].affine, r=2).tolist()

    def erosion_pixels(self, items: Sequence[Mapping]) -> list[int]:
        """The erosion applied to the case's label, in whole pixels per in-plane axis (``floor(erosion_mm /
        pixel_mm)``, :func:`bundle.transforms.morphology.radius_in_voxels`). The first case whose erosion is
        below its pixel size along both axes (a nonzero ``erosion_mm`` that changes nothing) is logged as a
        warning naming the pixel size and ``erosion_mm``; later cases are not."""
        spacing = self.slice_spacing(items)
        pixels = radius_in_voxels(self.erosion_mm, spacing)
        if self.erosion_mm > 0 and not any(pixels) and not self.warned_below_pixel:
            self.warned_below_pixel = True
            logger.warning(
                "the label erosion of %g mm is below the pixel size (%s mm) of %s: it removes no pixel, the labels "
                "are the painted masks as they are (an erosion of at least %g mm removes one pixel)",
                self.erosion_mm,
                " x ".join(f"{s:.3g}" for s in spacing),
                items[0].get("case_id") or items[0]["placement"]["source"],
                min(spacing),
            )
        return pixels

    def slice_label(self, item: Mapping) -> torch.Tensor:
        """The item's lesion label on its native slice pixels ``(1, H, W)``, in {0, 1}, before the erosion."""
        label = invert_to_slice((torch.as_tensor(item[self.label_key]) > 0.5).float(), item[self.image_key], self.grid)
        return ((label > 0.5) & (torch.as_tensor(item[self.native_soft_mask_key]) > 0)).float()

    def label_slices(self, items: Sequence[Mapping], predictions: Sequence[torch.Tensor]) -> torch.Tensor:
        """The case's eroded labels, one channel per slice item ``(N, H, W)`` (a case's slices share one pixel
        grid: they are cut from one volume along one axis); with ``label_mode="change"`` cut to where the model's
        change (:meth:`slice_change`) exceeds ``change_threshold``.

        Raises:
            EmptyLabelError: naming the case, when its label is empty, erodes to nothing or, in ``"change"`` mode,
                has no voxel changed by more than the threshold.
        """
        labels = torch.cat([self.slice_label(item) for item in items])
        case = str(items[0].get("case_id") or items[0]["placement"]["source"])
        eroded = ErodeLesionLabel(self.erosion_mm, spacing_mm=self.slice_spacing(items))(labels, source=case)
        if self.label_mode == "mask":
            return eroded
        changes = torch.cat([self.slice_change(item, p) for item, p in zip(items, predictions, strict=True)])
        changed = eroded * (changes.abs() > self.change_threshold)
        if not changed.any():
            raise EmptyLabelError(
                case,
                f"no voxel of the eroded lesion label ({int(eroded.sum())} voxels) changed by more than "
                f"{self.change_threshold:g}; the pair is dropped",
            )
        return changed

    def label_name(self, items: Sequence[Mapping]) -> str:
        """The label volume's file name: the case's output stem + ``_lesion.nii.gz``."""
        return f"{self.output_stem(case_of_items(items))}{LABEL_SUFFIX}.nii.gz"

    def companion_files(
        self, items: Sequence[Mapping], predictions: Sequence[torch.Tensor]
    ) -> dict[str, tuple[str, Callable[[Path], None]]]:
        placement = items[0]["placement"]
        source, affine = Path(placement["source"]), np.asarray(placement["source_affine"], float)
        source_format = str(items[0][self.image_key].meta.get("volume_format") or "nifti")
        label = source_order_volume(items, list(self.label_slices(items, predictions))) > 0.5

        def write(path: Path) -> None:
            write_label_nifti(path, label, source, source_format, affine)

        return {"lesion_label": (self.label_name(items), write)}

    def check_writable(self, items: Sequence[Mapping]) -> Path:
        """:meth:`SyntheticVolumeWriter.check_writable`, and the label volume would not overwrite an input."""
        output = super().check_writable(items)
        inputs = [Path(items[0]["placement"]["source"]), *[Path(p) for p in items[0].get("input_files", [])]]
        check_not_input(self.output_dir / self.label_name(items), inputs)
        return output

    def completed(self, case: Mapping, details: Mapping[str, object] | None = None) -> dict[str, str] | None:
        """:meth:`SyntheticVolumeWriter.completed`, and the label volume its record names exists."""
        outputs = super().completed(case, details)
        if outputs is None:
            return None
        record = read_json_object(outputs["provenance"], "a provenance record")
        label = record.get("lesion_label")
        return {**outputs, "lesion_label": label} if isinstance(label, str) and Path(label).is_file() else None


def pair_entry(host: Mapping, outputs: Mapping[str, str]) -> dict[str, object]:
    """The datalist entry of a written pair: the host's entry (its vertebra labels stay the soft-mask source) with
    ``image`` the synthetic volume, ``lesion_seg`` its label, ``synthetic: true``, ``source_image`` the host's image
    and ``provenance`` the record."""
    return {
        **host,
        "image": outputs["volume"],
        "lesion_seg": outputs["lesion_label"],
        "source_image": host["image"],
        "provenance": outputs["provenance"],
        "synthetic": True,
    }


def write_pair_datalist(
    path: str | os.PathLike,
    pairs: Sequence[Mapping],
    base_datalist: str | os.PathLike | None = None,
    dropped: Sequence[Mapping] = (),
    summary_key: str = "pairs",
) -> Path:
    """Write a datalist at ``path`` for ``configs/segment.json``: the base datalist's ``training`` cases (marked
    ``synthetic: false``) and then ``pairs`` (:func:`pair_entry`) as ``training``, the base's other lists as they
    are (``test``), file paths relative to ``path``'s folder; ``dropped`` (e.g. the job report's failures: case id
    and why) is kept under ``summary_key`` with the counts (VG-MedGen's generated crops use it too, under
    ``"generated"``). Written atomically."""
    path = Path(path)
    folder = path.parent
    content: dict[str, object] = {"training": [], "test": []}
    if base_datalist is not None:
        base = read_json_object(base_datalist, "the base datalist")
        content = dict(base)
        for split, entries in base.items():
            if isinstance(entries, list) and entries and all(isinstance(e, dict) for e in entries):
                content[split] = [
                    relative_paths(
                        {**e, **({"synthetic": False} if split == "training" else {})}, folder, PAIR_PATH_KEYS
                    )
                    for e in load_datalist(base_datalist, split)
                ]
        content.setdefault("training", [])
    content["training"] = [*content["training"], *[relative_paths(p, folder, PAIR_PATH_KEYS) for p in pairs]]
    content[summary_key] = {
        "written": len(pairs),
        "dropped": [dict(d) for d in dropped],
        "base_datalist": None if base_datalist is None else str(Path(base_datalist).resolve()),
    }
    return write_json_atomically(path, content)


def write_job_pairs(
    path: str | os.PathLike,
    requests: Sequence[Mapping],
    report: Mapping[str, Sequence[Mapping]],
    base_datalist: str | os.PathLike | None = None,
) -> Path:
    """The pair job's datalist (:func:`write_pair_datalist`): each written (or earlier written) pair that passed the
    quality filter, or was judged by none, as a :func:`pair_entry` of its request; the failed and the rejected ones
    (report ``"rejected"``, with their score and threshold) are listed as dropped."""
    by_id = {str(request["case_id"]): request for request in requests}
    done = [*report.get("written", []), *report.get("skipped", [])]
    passed = [o for o in done if (o.get("quality") or {}).get("passed", True)]
    rejected = [o for o in [*done, *report.get("rejected", [])] if not (o.get("quality") or {}).get("passed", True)]
    dropped = [
        *report.get("failed", []),
        *[
            {"case_id": o["case_id"], "error": "rejected by the quality filter", "quality": o["quality"]}
            for o in rejected
        ],
    ]
    pairs = [pair_entry(by_id[str(o["case_id"])], o) for o in passed]
    return write_pair_datalist(path, pairs, base_datalist, dropped)
