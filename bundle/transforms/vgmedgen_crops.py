"""VG-MedGen's training crops: the working window around a case's target vertebra (the classifier's crop) with a
segmentation target for the anatomy encoder's head.

:func:`vgmedgen_crop_transform` is :func:`bundle.transforms.case_to_slices.slice_transform` with the lesion's own
mask carried on the same grid, followed by :class:`AnatomyLabelsd`: ``anatomy_labels`` ``(1, S, S)``, 0 background,
1 the target vertebra (its soft mask at half height, which is where the blurred outline lies), 2 the lesion inside
it (lesion voxels in other vertebrae are not this vertebra's lesion).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import torch
from monai.transforms import Compose, MapTransform

from bundle.transforms.case_to_slices import slice_transform

VERTEBRA_LEVEL = 0.5


class AnatomyLabelsd(MapTransform):
    """``d[output_key]`` ``(1, S, S)`` float32 class indices from ``soft_mask`` and ``lesion_mask`` (both
    ``(1, S, S)`` on the model grid): 1 where the soft mask is at least :data:`VERTEBRA_LEVEL`, 2 where the lesion
    mask is set there too, else 0."""

    def __init__(
        self, soft_mask_key: str = "soft_mask", lesion_key: str = "lesion_mask", output_key: str = "anatomy_labels"
    ) -> None:
        super().__init__([soft_mask_key, lesion_key])
        self.soft_mask_key, self.lesion_key, self.output_key = soft_mask_key, lesion_key, output_key

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        vertebra = torch.as_tensor(d[self.soft_mask_key]) >= VERTEBRA_LEVEL
        lesion = (torch.as_tensor(d[self.lesion_key]) > 0.5) & vertebra
        d[self.output_key] = (vertebra.float() + lesion.float()).as_subclass(torch.Tensor)
        return d


def vgmedgen_crop_transform(**slice_settings: Any) -> Compose:
    """Entry -> the classifier's crops (:func:`bundle.transforms.case_to_slices.slice_transform` with
    ``slice_settings``, the lesion's own mask carried on the same grid), each item with ``anatomy_labels``."""
    return Compose([slice_transform(**slice_settings, lesion_mask=True), AnatomyLabelsd()])
