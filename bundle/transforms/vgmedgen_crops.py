"""VG-MedGen's training crops: the working window around a case's target vertebra (the classifier's crop) with a
segmentation target for the anatomy encoder's head.

:func:`vgmedgen_crop_transform` is :func:`bundle.transforms.case_to_slices.case_to_slices` with the lesion's own
mask carried on the same grid, followed by :class:`AnatomyLabelsd`: ``anatomy_labels`` ``(1, S, S)``, 0 background,
1 the target vertebra (its soft mask at half height, which is where the blurred outline lies), 2 the lesion inside
it (lesion voxels in other vertebrae are not this vertebra's lesion).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import torch
from monai.transforms import Compose, MapTransform

from bundle.transforms.case_to_slices import case_to_slices, slice_grid

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


def vgmedgen_crop_transform(
    spatial_size: int = 48,
    pixdim_mm: float = 1.0,
    window_margin_mm: float = 4.0,
    slices_per_case: int = 2,
    sigma_mm: float = 3.0,
    canonical_axcodes: str = "RIP",
    box_size_mm: float = 30.0,
) -> Compose:
    """Entry -> its ``slices_per_case`` largest-area slices of the target vertebra on the classifier's crop
    (the same settings as :func:`bundle.transforms.case_to_slices.slice_transform`), each item with
    ``lesion_mask`` and ``anatomy_labels``."""
    return Compose(
        [
            case_to_slices(
                slice_grid(spatial_size, pixdim_mm, window_margin_mm=window_margin_mm, lesion_mask=True),
                canonical_axcodes=canonical_axcodes,
                sigma_mm=sigma_mm,
                box_size_mm=box_size_mm,
                slice_mode="all",
                max_slices=slices_per_case,
                lesion_mask=True,
            ),
            AnatomyLabelsd(),
        ]
    )
