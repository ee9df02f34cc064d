"""Selecting the 2-D sagittal slices that contain the soft mask, and recording where they came from."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Literal

import nibabel as nib
import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform

from bundle.errors import InputError
from bundle.transforms.loading import voxel_spacing_mm

SliceMode = Literal["all", "largest"]
MIN_SLICE_SIDE = 8


def mask_slice_indices(
    mask: torch.Tensor, slice_axis: int = 0, mode: SliceMode = "all", max_slices: int | None = None
) -> list[int]:
    """Indices along ``slice_axis`` (a spatial axis of a ``(1, X, Y, Z)`` mask) of the slices with mask voxels.

    ``mode="all"`` keeps every such slice (``max_slices`` keeps that many with the largest mask area, in index
    order); ``mode="largest"`` keeps the one with the largest area.
    """
    other_axes = [a + 1 for a in range(3) if a != slice_axis]
    areas = (torch.as_tensor(mask) > 0).sum(dim=other_axes).flatten()
    indices = torch.nonzero(areas).flatten().tolist()
    if mode == "largest":
        max_slices = 1
    elif mode != "all":
        raise ValueError(f"slice mode must be 'all' or 'largest', got {mode!r}")
    if max_slices is not None and len(indices) > max_slices:
        ranked = sorted(indices, key=lambda i: (-int(areas[i]), i))
        indices = sorted(ranked[:max_slices])
    return indices


def take_slice(volume: MetaTensor, index: int, slice_axis: int = 0) -> MetaTensor:
    """The 2-D slice ``(1, H, W)`` of a ``(1, X, Y, Z)`` volume, with a 2-D affine holding its pixel spacing.

    The 2-D affine is in-plane millimetres with the origin at pixel (0, 0); it lets MONAI's spatial transforms
    (spacing, resize, pad) work in physical units. Where the slice sits in 3-D is recorded separately.
    """
    in_plane = [a for a in range(3) if a != slice_axis]
    spacing = voxel_spacing_mm(volume.affine)[in_plane]
    plane = torch.as_tensor(volume).select(slice_axis + 1, index)
    affine = torch.diag(torch.tensor([spacing[0], spacing[1], 1.0], dtype=torch.float64))
    meta = {k: v for k, v in volume.meta.items() if k in ("filename_or_obj", "volume_format")}
    return MetaTensor(plane.clone(), affine=affine, meta=meta)


class SelectMaskSlicesd(MapTransform):
    """Split a case into one dictionary per selected slice (MONAI flattens a returned list into samples).

    Volumes under ``keys`` are ``(1, X, Y, Z)`` in the canonical orientation; each output dictionary holds
    their 2-D slices ``(1, H, W)`` under the same keys, the case's other (non-volume) entries, and
    ``d["placement"]``: the slice index, the slice axis, how many slices the case has, and the canonical 3-D
    grid (shape and affine), which the writer needs to put results back.

    Raises:
        InputError: when the mask under ``mask_key`` is empty, or the slices are degenerate (fewer than
            ``MIN_SLICE_SIDE`` pixels on a side, e.g. one axial image cut into sagittal lines).
    """

    def __init__(
        self,
        keys: KeysCollection,
        mask_key: str = "mask",
        slice_axis: int = 0,
        mode: SliceMode = "all",
        max_slices: int | None = None,
        drop_keys: Sequence[str] = (),
    ):
        super().__init__(keys, allow_missing_keys=False)
        self.mask_key = mask_key
        self.slice_axis = slice_axis
        self.mode = mode
        self.max_slices = max_slices
        self.drop_keys = set(drop_keys) | {mask_key}

    def __call__(self, data: Mapping[Hashable, object]) -> list[dict[Hashable, object]]:
        d = dict(data)
        mask = d[self.mask_key]
        indices = mask_slice_indices(mask, self.slice_axis, self.mode, self.max_slices)
        if not indices:
            raise InputError(mask.meta.get("filename_or_obj"), "empty mask: no slice contains mask voxels")
        reference = d[self.first_key(d)]
        in_plane = [int(n) for a, n in enumerate(reference.shape[1:]) if a != self.slice_axis]
        if min(in_plane) < MIN_SLICE_SIDE:
            raise InputError(
                reference.meta.get("filename_or_obj"),
                f"slices across axis {self.slice_axis} of the canonical grid are only {in_plane} pixels: "
                "the volume does not cover the sagittal plane (is it a single axial slice?)",
            )
        common = {
            k: v
            for k, v in d.items()
            if k not in self.keys and k not in self.drop_keys and not isinstance(v, torch.Tensor)
        }
        grid = {
            "canonical_shape": [int(n) for n in reference.shape[1:]],
            "canonical_affine": np.asarray(reference.affine, float).tolist(),
            "slice_axis": self.slice_axis,
            "slice_count": len(indices),
            "source": str(reference.meta.get("filename_or_obj")),
            "source_affine": reference.meta["source_affine"],
            "canonical_axcodes": "".join(nib.aff2axcodes(np.asarray(reference.affine, float))),
        }
        items = []
        for position, index in enumerate(indices):
            item = dict(common)
            item.update({key: take_slice(d[key], index, self.slice_axis) for key in self.key_iterator(d)})
            item["placement"] = {**grid, "slice_index": int(index), "slice_position": position}
            items.append(item)
        return items


class LesionSliceGuided(MapTransform):
    """``d[output_key]``: the lesion segmentation inside the mask where the case has one, else the mask.

    Training slices are chosen from it, so a lesion case trains on the slices that show its lesion (its text
    describes them) while a normal case trains on its mask's central slices.
    """

    def __init__(self, mask_key: str = "mask", lesion_key: str = "lesion_seg", output_key: str = "slice_guide"):
        super().__init__([mask_key], allow_missing_keys=False)
        self.mask_key, self.lesion_key, self.output_key = mask_key, lesion_key, output_key

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        mask = d[self.mask_key]
        guide = mask
        lesion = d.get(self.lesion_key)
        if isinstance(lesion, torch.Tensor) and lesion.shape == mask.shape:
            inside = (torch.as_tensor(lesion) > 0) & (torch.as_tensor(mask) > 0)
            if inside.any():
                guide = mask.clone()
                guide.copy_(inside.to(mask.dtype))
        d[self.output_key] = guide
        return d
