"""The slice chain carries the lesion's own mask onto the model grid, where the source's lesion voxels are."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data.utils import affine_to_spacing
from scipy import ndimage

from bundle.data.datalist import load_datalist
from bundle.transforms.case_to_slices import case_to_slices
from bundle.transforms.model_grid import model_grid

KEYS = ["image", "soft_mask", "masked_image", "lesion_mask"]


def lesion_chain(nearest_keys=("lesion_mask",)):
    grid = model_grid(KEYS, 48, 1.0, nearest_keys=nearest_keys, window_key="soft_mask", window_margin_mm=4.0)
    return case_to_slices(grid, lesion_mask=True)


def canonical_lesion(path, axcodes: str) -> np.ndarray:
    """The lesion file read with nibabel alone, reoriented to ``axcodes``: the reference, no bundle code."""
    image = nib.load(str(path))
    transform = nib.orientations.ornt_transform(
        nib.orientations.io_orientation(image.affine), nib.orientations.axcodes2ornt(tuple(axcodes))
    )
    return nib.orientations.apply_orientation(np.asarray(image.dataobj) > 0, transform)


def expected_on_grid(item, source: np.ndarray) -> np.ndarray:
    """The source slice's lesion at the native pixel nearest each model-grid pixel centre, found through the grid's
    2-D affine (model pixel -> in-plane mm of the native slice) and the native pixel spacing."""
    placement = item["placement"]
    native = source[placement["slice_index"]]
    spacing = affine_to_spacing(item["native_image"].affine, r=2).numpy()
    rows, cols = np.meshgrid(*[np.arange(n) for n in item["lesion_mask"].shape[1:]], indexing="ij")
    affine = np.asarray(item["lesion_mask"].affine, float)
    millimetres = np.einsum("ij,jhw->ihw", affine[:2, :2], np.stack([rows, cols])) + affine[:2, 2, None, None]
    pixels = np.rint(millimetres / spacing[:, None, None]).astype(int)
    inside = (pixels >= 0).all(0) & (pixels[0] < native.shape[0]) & (pixels[1] < native.shape[1])
    expected = np.zeros(rows.shape, bool)
    expected[inside] = native[pixels[0][inside], pixels[1][inside]]
    return expected


@pytest.fixture(scope="module")
def lesion_case(demo_data):
    entries = load_datalist(demo_data / "datalist.json", "training")
    case = next(e for e in entries if e["label"] != "normal")
    return case, lesion_chain()(dict(case))


def test_lesion_mask_on_the_grid_is_the_sources_lesion_inside_the_soft_mask(lesion_case):
    case, items = lesion_case
    source = canonical_lesion(case["lesion_seg"], items[0]["placement"]["canonical_axcodes"])
    shown = [item for item in items if item["lesion_mask"].sum() > 0]
    assert shown, "no selected slice shows the lesion"
    overlap = total = 0
    for item in items:
        mask = item["lesion_mask"]
        assert mask.shape == item["soft_mask"].shape == (1, 48, 48)
        assert set(torch.unique(mask).tolist()) <= {0.0, 1.0}
        assert item["has_lesion_mask"] is True
        assert not ((mask > 0) & (item["soft_mask"] <= 0)).any(), "lesion pixels outside the soft mask's support"
        assert torch.equal(mask.affine, item["soft_mask"].affine)
        expected = expected_on_grid(item, source)
        found = mask[0].numpy() > 0
        overlap, total = overlap + (found & expected).sum(), total + found.sum() + expected.sum()
        # the grid resamples twice (to 1 mm, then to the model's size): edge pixels may differ, nothing more
        assert not (found & ~ndimage.binary_dilation(expected)).any()
        assert not (expected & ~ndimage.binary_dilation(found)).any()
    assert 2 * overlap / total > 0.9, f"Dice {2 * overlap / total:.3f} against the source's lesion"


def test_a_bilinear_lesion_mask_is_refused_and_the_key_is_required():
    with pytest.raises(ValueError, match="nearest_keys"):
        lesion_chain(nearest_keys=())
    grid = model_grid(["image", "soft_mask", "masked_image"], 48, 1.0, window_key="soft_mask")
    with pytest.raises(ValueError, match="does not resample 'lesion_mask'"):
        case_to_slices(grid, lesion_mask=True)


def test_an_entry_without_a_lesion_segmentation_gets_an_all_zero_mask(lesion_case):
    case, items = lesion_case
    without = {k: v for k, v in case.items() if k != "lesion_seg"}
    plain = lesion_chain()(without)
    assert len(plain) == len(items)
    for item, with_lesion in zip(plain, items, strict=True):
        assert item["has_lesion_mask"] is False
        assert float(item["lesion_mask"].sum()) == 0.0
        assert torch.equal(item["image"], with_lesion["image"])


def test_the_chain_without_lesion_masks_is_unchanged(lesion_case):
    """``lesion_mask=False`` (every existing config) keeps the items' keys: no lesion key, no change."""
    case, items = lesion_case
    grid = model_grid(KEYS[:3], 48, 1.0, window_key="soft_mask", window_margin_mm=4.0)
    plain = case_to_slices(grid)(dict(case))
    assert "lesion_mask" not in plain[0] and "has_lesion_mask" not in plain[0]
    assert torch.equal(plain[0]["soft_mask"], items[0]["soft_mask"])


def test_through_plane_slices_are_the_lesions_extent_on_one_shared_window(shared_data):
    from bundle.transforms.case_to_slices import slice_grid
    from tests.helpers.paths import SCT_LEVELS, SCT_T2

    entry = {"image": str(SCT_T2), "vertebra_seg": str(SCT_LEVELS), "mask_labels": [3], "text": "a 6 mm lesion"}
    everything = case_to_slices(slice_grid(48, 1.0, window_margin_mm=4.0))(dict(entry))
    chain = case_to_slices(slice_grid(48, 1.0, window_margin_mm=4.0, shared_window=True), through_plane=True)
    items = chain(dict(entry))
    unlimited = chain({**entry, "text": "a lesion"})  # no size: every slice the soft mask reaches
    indices = [i["placement"]["slice_index"] for i in items]
    centre = items[0]["through_plane"]["centre_slice"]
    assert indices == list(range(indices[0], indices[-1] + 1)) and centre in indices
    reach = [i["placement"]["slice_index"] for i in unlimited]
    assert set(indices) < set(reach) and set(reach) >= {i["placement"]["slice_index"] for i in everything}
    assert float(items[0]["placement"]["canonical_affine"][0][0]) == 1.0  # 1 mm slices: half the size + 3 sigma
    assert 3 < max(abs(i - centre) for i in indices) <= 3 + 3 * 3.0
    assert all(i["through_plane"]["size_mm"] == 6.0 for i in items)
    # one window: every slice's model grid maps to the same native pixels, which a per-slice window does not
    affines = [np.asarray(i["image"].affine, float) for i in items]
    assert all(np.allclose(a, affines[0]) for a in affines)
    per_slice = [np.asarray(i["image"].affine, float) for i in everything]
    assert not all(np.allclose(a, per_slice[0]) for a in per_slice)
    centre_item = items[indices.index(centre)]
    assert all(float(i["soft_mask"].max()) <= float(centre_item["soft_mask"].max()) + 1e-6 for i in items)
    with pytest.raises(ValueError, match="through_plane"):
        case_to_slices(slice_grid(48), through_plane=True, lesion_guided=True)
