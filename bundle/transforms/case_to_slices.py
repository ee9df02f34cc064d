"""From a datalist entry to model-grid slice items: the one preprocessing chain every workflow shares.

One entry becomes one item per selected sagittal slice: ``image`` (x0), ``soft_mask`` (M_b) and
``masked_image`` (I_m), each ``(1, S, S)`` in [0, 1] on the model grid, with the entry's text and labels; with
``lesion_mask=True`` also ``lesion_mask``: the lesion's own binary mask from the entry's ``lesion_seg``, on the same
grid (nearest neighbour; all zero for an entry without one, :class:`bundle.transforms.soft_mask.LesionMaskd`).
A series with several labelled coordinates is read once (:class:`bundle.transforms.loading.LoadVolumeOnced`,
with :class:`bundle.data.slice_dataset.SliceDataset` taking an image's entries in a row).
"""

from __future__ import annotations

from monai.transforms import Compose, CopyItemsd, Orientationd

from bundle.data.slice_dataset import SLICE_KEYS
from bundle.transforms.intensity import ScaleIntensityToModeld
from bundle.transforms.loading import LoadVolumeOnced, MatchImageGridd
from bundle.transforms.model_grid import model_grid, require_nearest
from bundle.transforms.slices import LesionSliceGuided, SelectMaskSlicesd
from bundle.transforms.soft_mask import LesionMaskd, MaskImaged, SoftMaskFromSourced
from bundle.transforms.through_plane import ThroughPlaneExtentd
from bundle.transforms.validate_entry import ValidateEntryd

SHARED_WINDOW_KEY = "window_mask"


def slice_grid(
    spatial_size: int,
    pixdim_mm: float | None = 1.0,
    window_key: str | None = "soft_mask",
    window_margin_mm: float = 16.0,
    lesion_mask: bool = False,
    shared_window: bool = False,
) -> Compose:
    """The model grid of the slice items (:data:`SLICE_KEYS` resampled together,
    :func:`bundle.transforms.model_grid.model_grid`): by default the soft mask's working window; ``window_key``
    ``None`` keeps whole slices. ``lesion_mask`` adds the lesion's mask, resampled with nearest neighbour.
    ``shared_window``: the window of every slice of a case is the one of all its slices together (``window_mask``
    of :class:`bundle.transforms.through_plane.ThroughPlaneExtentd`), so neighbouring slices line up pixel by
    pixel on the model grid."""
    carried = ["lesion_mask"] if lesion_mask else []
    if shared_window and window_key is not None:
        carried, window_key = [*carried, SHARED_WINDOW_KEY], SHARED_WINDOW_KEY
    return model_grid(
        [*SLICE_KEYS, *carried],
        spatial_size,
        pixdim_mm,
        nearest_keys=carried,
        window_key=window_key,
        window_margin_mm=window_margin_mm,
    )


def case_to_slices(
    grid: Compose,
    canonical_axcodes: str = "RIP",
    sigma_mm: float = 3.0,
    box_size_mm: float = 30.0,
    slice_mode: str = "all",
    max_slices: int | None = None,
    lesion_guided: bool = False,
    lesion_mask: bool = False,
    through_plane: bool = False,
    lesion_size_mm: float | None = None,
) -> Compose:
    """Validate, load, make the soft mask, orient, scale, mask, pick slices, keep native copies, resample.

    Args:
        grid: the slice -> model-grid chain (:func:`slice_grid`).
        canonical_axcodes: the orientation slices are cut in (first axis: the sagittal slice index).
        sigma_mm: the soft mask's Gaussian sigma (0: a hard mask).
        box_size_mm: the box side for point sources without their own size.
        slice_mode, max_slices: which slices containing the mask are kept.
        lesion_guided: pick slices by the entry's ``lesion_seg`` where it has one (training).
        lesion_mask: carry the lesion's binary mask as ``lesion_mask``; ``grid`` must resample that key with
            nearest neighbour (``slice_grid(..., lesion_mask=True)``).
        through_plane: limit the soft mask across slices to the lesion's extent and keep every slice it then
            reaches (:class:`bundle.transforms.through_plane.ThroughPlaneExtentd`, with ``lesion_size_mm`` or the
            text's size; ``max_slices`` keeps that many nearest the lesion's centre). Not with ``lesion_guided``.
    """
    if through_plane and lesion_guided:
        raise ValueError("through_plane selects the slices by the lesion's extent; lesion_guided by its segmentation")
    if lesion_mask:
        require_nearest(grid, "lesion_mask")
    uses_lesion = lesion_guided or lesion_mask
    volumes = ["image", "vertebra_seg"] + (["lesion_seg"] if uses_lesion else [])
    guide = [LesionSliceGuided()] if lesion_guided else []
    lesion = [LesionMaskd()] if lesion_mask else []
    carried = ["lesion_mask"] if lesion_mask else []
    oriented = ["image", "mask", "soft_mask"] + (["lesion_seg"] if lesion_guided else []) + carried
    extent = []
    if through_plane:
        extent = [ThroughPlaneExtentd(sigma_mm=sigma_mm, size_mm=lesion_size_mm, max_slices=max_slices)]
        max_slices = None
        if SHARED_WINDOW_KEY in grid.transforms[0].keys:
            carried = [*carried, SHARED_WINDOW_KEY]
    return Compose(
        [
            ValidateEntryd(file_keys=volumes),
            LoadVolumeOnced(volumes, allow_missing_keys=True),
            MatchImageGridd(volumes[1:], ref_key="image", allow_missing_keys=True),
            SoftMaskFromSourced(sigma_mm=sigma_mm, default_box_size_mm=box_size_mm),
            *lesion,
            Orientationd(oriented, axcodes=canonical_axcodes, labels=None, allow_missing_keys=True),
            *extent,
            ScaleIntensityToModeld("image"),
            MaskImaged("image"),
            *guide,
            SelectMaskSlicesd(
                [*SLICE_KEYS, *carried],
                mask_key="slice_guide" if lesion_guided or through_plane else "mask",
                mode=slice_mode,
                max_slices=max_slices,
                drop_keys=["vertebra_seg", "lesion_seg", "mask"],
            ),
            CopyItemsd(["image", "soft_mask"], names=["native_image", "native_soft_mask"]),
            grid,
        ]
    )


def slice_transform(
    spatial_size: int = 48,
    pixdim_mm: float = 1.0,
    window_margin_mm: float = 4.0,
    slices_per_case: int = 2,
    sigma_mm: float = 3.0,
    canonical_axcodes: str = "RIP",
    box_size_mm: float = 30.0,
    lesion_mask: bool = False,
) -> Compose:
    """Entry -> the ``slices_per_case`` slices with the largest target-vertebra area, on a ``spatial_size``
    square grid around the soft mask (:func:`case_to_slices`, not lesion-guided: a test case has no lesion
    segmentation to guide it); ``lesion_mask`` carries the lesion's own mask on the same grid."""
    return case_to_slices(
        slice_grid(spatial_size, pixdim_mm, window_margin_mm=window_margin_mm, lesion_mask=lesion_mask),
        canonical_axcodes=canonical_axcodes,
        sigma_mm=sigma_mm,
        box_size_mm=box_size_mm,
        slice_mode="all",
        max_slices=slices_per_case,
        lesion_guided=False,
        lesion_mask=lesion_mask,
    )
