"""MONAI transforms from a datalist entry to model-grid slices: each an array transform with a dictionary ``...d``
twin where it acts on one value.

- :mod:`~bundle.transforms.validate_entry`: check an entry's fields and files before anything is loaded;
- :mod:`~bundle.transforms.loading`: read a 3-D volume (NIfTI, DICOM series or file, other ITK formats), check it,
  bring segmentations onto the image's voxel order;
- :mod:`~bundle.transforms.soft_mask`: the mask from vertebra labels, a box or a point, blurred in millimetres,
  the masked image, and the lesion's own mask;
- :mod:`~bundle.transforms.morphology`: binary masks eroded or dilated by a radius in millimetres;
- :mod:`~bundle.transforms.lesion_label`: the lesion label of an image-mask pair, eroded in millimetres;
- :mod:`~bundle.transforms.intensity`: scanner units to the model's [0, 1] and back;
- :mod:`~bundle.transforms.slices`: the sagittal slices that hold the mask (or the lesion);
- :mod:`~bundle.transforms.model_grid`: a slice onto the model's square grid and back;
- :mod:`~bundle.transforms.case_to_slices`: the one chain of all of these every workflow uses;
- :mod:`~bundle.transforms.augmentation`: random transforms of the downstream classifier's inputs.

The functions named like their modules (``model_grid``, ``case_to_slices``, ``augmentation``) are not imported
here, so ``bundle.transforms.model_grid`` stays the module (configs name ``bundle.transforms.model_grid.model_grid``);
``augmentation`` here is the module.
"""

from bundle.transforms import augmentation
from bundle.transforms.case_to_slices import slice_transform
from bundle.transforms.intensity import ScaleIntensityToModel, ScaleIntensityToModeld, invert_intensity
from bundle.transforms.lesion_label import EmptyLabelError, ErodeLesionLabel, ErodeLesionLabeld
from bundle.transforms.loading import (
    LoadVolume,
    LoadVolumed,
    LoadVolumeOnced,
    MatchImageGridd,
    match_image_grid,
    volume_format,
    voxel_spacing_mm,
)
from bundle.transforms.model_grid import invert_to_slice
from bundle.transforms.morphology import DilateMaskMM, DilateMaskMMd, ErodeMaskMM, ErodeMaskMMd
from bundle.transforms.slices import LesionSliceGuided, SelectMaskSlicesd
from bundle.transforms.soft_mask import (
    BoxMask,
    BoxMaskd,
    GaussianBlurMM,
    GaussianBlurMMd,
    LabelMask,
    LabelMaskd,
    LesionMaskd,
    MaskImage,
    MaskImaged,
    PointBoxMask,
    PointBoxMaskd,
    SoftMaskFromSourced,
)
from bundle.transforms.validate_entry import ValidateEntryd, entry_field_problem

__all__ = [
    "BoxMask",
    "BoxMaskd",
    "DilateMaskMM",
    "DilateMaskMMd",
    "EmptyLabelError",
    "ErodeLesionLabel",
    "ErodeLesionLabeld",
    "ErodeMaskMM",
    "ErodeMaskMMd",
    "GaussianBlurMM",
    "GaussianBlurMMd",
    "LabelMask",
    "LabelMaskd",
    "LesionMaskd",
    "LesionSliceGuided",
    "LoadVolume",
    "LoadVolumeOnced",
    "LoadVolumed",
    "MaskImage",
    "MaskImaged",
    "MatchImageGridd",
    "PointBoxMask",
    "PointBoxMaskd",
    "ScaleIntensityToModel",
    "ScaleIntensityToModeld",
    "SelectMaskSlicesd",
    "SoftMaskFromSourced",
    "ValidateEntryd",
    "augmentation",
    "entry_field_problem",
    "invert_intensity",
    "invert_to_slice",
    "match_image_grid",
    "slice_transform",
    "volume_format",
    "voxel_spacing_mm",
]
