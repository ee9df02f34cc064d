"""Soft masks from each source land where they should (centroid and extent in mm); the blur is physical."""

from __future__ import annotations

import math

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import GaussianSmooth

from bundle.errors import InputError
from bundle.transforms.loading import LoadVolume, match_image_grid, voxel_spacing_mm
from bundle.transforms.soft_mask import (
    BoxMask,
    BoxMaskd,
    GaussianBlurMM,
    GaussianBlurMMd,
    LabelMask,
    LabelMaskd,
    MaskImage,
    MaskImaged,
    PointBoxMask,
    PointBoxMaskd,
    SoftMaskFromSourced,
)
from tests.helpers.paths import (
    CT_DICOM,
    CT_DICOM_SEG,
    MR_VERTEBRAE_LABEL,
    SCT_LEVELS,
    SCT_T2,
    T12_LABEL,
    TOTALSEG_MR,
    TOTALSEG_MR_SEG,
)


def world_points(mask: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """RAS mm coordinates of the voxels where ``mask`` (3-D) is non-zero: ``(N, 3)``."""
    voxels = np.argwhere(mask > 0)
    return voxels @ np.asarray(affine)[:3, :3].T + np.asarray(affine)[:3, 3]


def nibabel_world_centroid(path, labels) -> np.ndarray:
    """The reference: centroid computed straight from the NIfTI file with nibabel, no bundle code."""
    image = nib.load(str(path))
    return world_points(np.isin(np.rint(image.get_fdata()), labels), image.affine).mean(axis=0)


def test_label_mask_centroid_matches_nibabel(shared_data):
    segmentation = LoadVolume()(SCT_LEVELS)
    mask = LabelMask([3])(segmentation)
    assert set(torch.unique(mask).tolist()) == {0.0, 1.0}
    centroid = world_points(mask[0].numpy(), mask.affine.numpy()).mean(axis=0)
    np.testing.assert_allclose(centroid, nibabel_world_centroid(SCT_LEVELS, [3]), atol=1e-3)


def test_segmentation_in_another_voxel_order_is_matched_to_the_dicom_grid(shared_data):
    """The CT mask is an LAS NIfTI, the series loads as LPS: same grid, reordered exactly."""
    image = LoadVolume()(CT_DICOM)
    segmentation = match_image_grid(image, LoadVolume()(CT_DICOM_SEG))
    mask = LabelMask([T12_LABEL])(segmentation)
    centroid = world_points(mask[0].numpy(), image.affine.numpy()).mean(axis=0)
    np.testing.assert_allclose(centroid, nibabel_world_centroid(CT_DICOM_SEG, [T12_LABEL]), atol=1e-3)
    mr = LoadVolume()(TOTALSEG_MR)
    vertebrae = LabelMask([MR_VERTEBRAE_LABEL])(match_image_grid(mr, LoadVolume()(TOTALSEG_MR_SEG)))
    assert int(vertebrae.sum()) == int((np.rint(nib.load(str(TOTALSEG_MR_SEG)).get_fdata()) == 19).sum())


def test_point_box_in_voxels_has_the_requested_extent_in_mm(shared_data):
    image = LoadVolume()(TOTALSEG_MR)  # 3 mm voxels
    point = np.array([58.0, 45.0, 10.0])
    mask = PointBoxMask(size_mm=[30.0, 18.0, 12.0], space="voxel")(image, point)
    voxels = np.argwhere(mask[0].numpy() > 0)
    extent_mm = (voxels.max(axis=0) - voxels.min(axis=0) + 1) * 3.0
    np.testing.assert_allclose(extent_mm, [33.0, 21.0, 15.0])  # voxel centres within +-15, +-9, +-6 mm
    np.testing.assert_allclose(voxels.mean(axis=0), point)


def test_world_box_centroid_and_extent(shared_data):
    image = LoadVolume()(SCT_T2)  # 1 mm, axes P, S, R: world axes are not voxel axes
    centre = image.affine.numpy()[:3, :3] @ np.array([30.0, 27.0, 26.0]) + image.affine.numpy()[:3, 3]
    half = np.array([5.0, 8.0, 11.0])
    mask = BoxMask(space="world")(image, [centre - half, centre + half])
    points = world_points(mask[0].numpy(), image.affine.numpy())
    np.testing.assert_allclose(points.mean(axis=0), centre, atol=1e-6)
    np.testing.assert_allclose(points.max(axis=0) - points.min(axis=0), 2 * half)
    point_mask = PointBoxMask(size_mm=2 * half, space="world")(image, centre)
    assert torch.equal(point_mask, mask)


def test_box_outside_the_image_is_an_error_naming_the_file(shared_data):
    image = LoadVolume()(SCT_T2)
    with pytest.raises(InputError, match=r"t2\.nii\.gz: empty mask"):
        BoxMask(space="voxel")(image, [[100, 100, 100], [120, 120, 120]])
    with pytest.raises(InputError, match=r"labeled\.nii\.gz: empty mask: none of the labels \[9\]"):
        LabelMask([9])(LoadVolume()(SCT_LEVELS))


def block_mask(spacing_mm: float, size: int, block_mm: float = 13.0) -> MetaTensor:
    """A cube of ``block_mm`` centred in a ``size``-voxel volume: the voxels lying wholly inside it."""
    coordinates = (np.arange(size) - (size - 1) / 2) * spacing_mm
    inside_1d = np.abs(coordinates) + spacing_mm / 2 <= block_mm / 2 + 1e-9
    inside = inside_1d[:, None, None] & inside_1d[None, :, None] & inside_1d[None, None, :]
    affine = np.diag([spacing_mm, spacing_mm, spacing_mm, 1.0])
    return MetaTensor(torch.as_tensor(inside[None], dtype=torch.float32), affine=torch.as_tensor(affine))


def test_blur_sigma_is_physical():
    """The same sigma in mm gives the same profile in mm at 1 mm and 0.5 mm voxels."""
    coarse, fine = block_mask(1.0, 49), block_mask(0.5, 98)  # both tile exactly the 13 mm cube
    assert float(coarse.sum()) == pytest.approx(float(fine.sum()) / 8)
    positions_coarse = np.arange(49) - 24.0
    positions_fine = (np.arange(98) - 48.5) * 0.5
    profile_coarse = GaussianBlurMM(3.0)(coarse)[0].numpy()[:, 24, 24]
    blurred_fine = GaussianBlurMM(3.0)(fine)[0].numpy()
    centre_fine = blurred_fine[:, 48:50, 48:50].mean(axis=(1, 2))  # the fine grid has no voxel at 0 mm
    profile_fine = np.interp(positions_coarse, positions_fine, centre_fine)
    assert np.abs(profile_coarse - profile_fine).max() < 0.02
    assert profile_coarse.max() > 0.8
    assert blurred_fine.min() >= 0.0 and blurred_fine.max() <= 1.0
    assert abs(blurred_fine.sum() - fine.numpy().sum()) < 1e-2 * fine.numpy().sum()  # mass kept
    ignoring_spacing = GaussianBlurMM(3.0)(MetaTensor(fine.as_tensor(), affine=torch.eye(4)))[0].numpy()
    wrong = np.interp(positions_coarse, positions_fine, ignoring_spacing[:, 48:50, 48:50].mean(axis=(1, 2)))
    assert np.abs(wrong - profile_coarse).max() > 0.05  # a sigma in voxels would not match


def test_anisotropic_blur_follows_each_axis_spacing():
    mask = MetaTensor(torch.zeros(1, 21, 21, 21), affine=torch.diag(torch.tensor([1.0, 1.0, 4.0, 1.0])))
    mask[0, 10, 10, 10] = 1.0
    blurred = GaussianBlurMM(4.0)(mask)[0].numpy()
    along_fine, along_thick = blurred[10:, 10, 10], blurred[10, 10, 10:]
    assert along_fine[4] == pytest.approx(along_thick[1], rel=0.05)  # both are 4 mm from the centre


def test_soft_mask_from_source_and_masked_image(shared_data):
    image = LoadVolume()(SCT_T2)
    data = SoftMaskFromSourced(sigma_mm=2.0)({"image": image, "point": [31, 44, 26], "box_size_mm": 10})
    soft = data["soft_mask"]
    assert data["mask_source"]["type"] == "point" and data["mask_source"]["sigma_mm"] == 2.0
    assert float(soft.max()) > 0.95 and float(soft.min()) >= 0.0
    outside = data["mask"] == 0
    assert float(soft[outside].max()) < 1.0 and float(soft[outside].max()) > 0.0  # a blurred boundary
    masked = MaskImage()(image, soft)
    far = soft == 0
    assert torch.equal(masked[far], image[far])
    centre = (0, 31, 44, 26)
    assert float(soft[centre]) > 0.95 and float(masked[centre]) < 0.05 * float(image[centre])
    with pytest.raises(InputError, match="no soft-mask source"):
        SoftMaskFromSourced()({"image": image, "case_id": "c1"})


def test_dictionary_twins_match_the_array_transforms(shared_data):
    image, segmentation = LoadVolume()(SCT_T2), LoadVolume()(SCT_LEVELS)
    d = LabelMaskd("seg", labels=[4])({"seg": segmentation})
    assert torch.equal(d["mask"], LabelMask([4])(segmentation))
    d = BoxMaskd("image")({"image": image, "box": [[20, 20, 20], [30, 30, 30]]})
    assert int(d["mask"].sum()) == 11**3
    d = PointBoxMaskd("image", size_mm=4)({"image": image, "point": [30, 30, 30]})
    assert int(d["mask"].sum()) == 5**3
    d = GaussianBlurMMd("mask", sigma_mm=1.5)(d)
    assert torch.equal(d["soft_mask"], GaussianBlurMM(1.5)(d["mask"]))
    d = MaskImaged("image")({**d, "image": image})
    assert torch.equal(d["masked_image"], image * (1 - d["soft_mask"]))


def monai_blur(mask: MetaTensor, sigma_mm) -> torch.Tensor:
    sigma = np.broadcast_to(np.asarray(sigma_mm, float), (3,)) / voxel_spacing_mm(mask.affine)
    return GaussianSmooth(sigma=sigma.tolist())(mask.to(torch.float32)).clamp_(0, 1)


@pytest.mark.parametrize("sigma_mm", [3.0, [2.0, 0.0, 5.0], 0.0, 0.3])
@pytest.mark.parametrize("where", ["inside", "touching_edges", "dense", "empty"])
def test_support_cropped_blur_is_monai_gaussian_smooth(sigma_mm, where):
    generator = torch.Generator().manual_seed(0)
    mask = torch.zeros(1, 70, 53, 19)
    if where == "inside":
        mask[0, 30:40, 20:31, 8:11] = 1.0
    elif where == "touching_edges":
        mask[0, :4, 50:, 15:] = 1.0
        mask[0, 66:, :3, :2] = 0.5
    elif where == "dense":
        mask = (torch.rand(1, 70, 53, 19, generator=generator) > 0.7).float()
    affine = torch.tensor(
        [[0.0, 0.0, 3.3, 5.0], [0.6, 0.0, 0.0, -2.0], [0.0, 0.8, 0.0, 1.0], [0, 0, 0, 1.0]], dtype=torch.float64
    )  # anisotropic and permuted axes
    mask = MetaTensor(mask, affine=affine, meta={"filename_or_obj": "mask.nii.gz"})
    blurred = GaussianBlurMM(sigma_mm)(mask)
    expected = monai_blur(mask, sigma_mm)
    assert isinstance(blurred, MetaTensor) and blurred.dtype == torch.float32 and blurred.shape == mask.shape
    assert torch.equal(blurred.affine, mask.affine) and blurred.meta["filename_or_obj"] == "mask.nii.gz"
    assert float((blurred - expected).abs().max()) < 1e-6
    assert not torch.equal(mask, torch.zeros_like(mask)) or float(blurred.abs().max()) == 0.0


@pytest.mark.parametrize(
    "source, labels, sigma_mm",
    [(CT_DICOM_SEG, [T12_LABEL], 3.0), (TOTALSEG_MR_SEG, [MR_VERTEBRAE_LABEL], 3.0), (SCT_LEVELS, [3, 4], 1.5)],
)
def test_blur_of_real_vertebra_masks_is_monai_gaussian_smooth(shared_data, source, labels, sigma_mm):
    mask = LabelMask(labels)(LoadVolume()(source))
    blurred = GaussianBlurMM(sigma_mm)(mask)
    expected = monai_blur(mask, sigma_mm)
    assert torch.equal(blurred.affine, mask.affine) and blurred.meta == mask.meta
    assert float((blurred - expected).abs().max()) < 1e-6 and float(blurred.max()) > 0.5


def test_blur_support_counts_signed_and_nan_values_as_monai_does():
    """-0.0 is zero (no support), a negative value is support (then clipped), NaN is support (not dropped)."""
    mask = MetaTensor(torch.zeros(1, 40, 30, 12), affine=torch.diag(torch.tensor([1.0, 1.0, 2.0, 1.0])))
    mask[0, 2, 3, 4] = -0.0
    assert float(GaussianBlurMM(2.0)(mask).abs().max()) == 0.0
    mask[0, 30:34, 20:25, 6:8] = -0.5
    mask[0, 10:15, 5:9, 2:4] = 1.0
    assert float((GaussianBlurMM(2.0)(mask) - monai_blur(mask, 2.0)).abs().max()) < 1e-6
    lone_nan = torch.zeros_like(mask)
    lone_nan[0, 12, 6, 3] = float("nan")
    assert bool(GaussianBlurMM(2.0)(lone_nan).isnan().any())


def test_blur_does_torch_work_on_the_support_crop_only():
    """Only the crop (support grown by the kernel tail) is processed by torch: no op reads or writes a
    full-volume tensor (the support is found in one numpy read and the output starts as zero pages)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class LargestTensor(TorchDispatchMode):
        largest, ops = 0, []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            result = func(*args, **(kwargs or {}))
            if not func.is_view:  # a view (slice, detach) reads nothing
                for value in torch.utils._pytree.tree_leaves((args, kwargs, result)):
                    if isinstance(value, torch.Tensor):  # elements addressed (a broadcast axis repeats one)
                        addressed = math.prod(
                            n for n, step in zip(value.shape, value.stride(), strict=True) if step != 0
                        )
                        self.largest = max(self.largest, addressed)
                        self.ops.append((str(func), addressed))
            return result

    mask = MetaTensor(torch.zeros(1, 160, 140, 40), affine=torch.diag(torch.tensor([0.5, 0.5, 3.0, 1.0])))
    mask[0, 70:90, 60:75, 18:22] = 1.0
    blur = GaussianBlurMM(3.0)  # tails 24, 24, 4 voxels: crop 68 x 63 x 12
    assert blur.crop(mask) == (slice(None), slice(46, 114), slice(36, 99), slice(14, 26))
    blur(mask)  # kernels built and cached outside the count
    with LargestTensor() as counter:
        blurred = blur(mask)
    assert counter.largest <= 68 * 63 * 12, sorted(counter.ops, key=lambda o: -o[1])[:6]
    assert float((blurred - monai_blur(mask, 3.0)).abs().max()) < 1e-6
