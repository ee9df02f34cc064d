"""Checks of a written synthetic volume against its source: the voxels, the soft mask of a request, the geometry."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
from monai.transforms import Compose

from bundle.transforms.loading import LoadVolumed
from bundle.transforms.soft_mask import SoftMaskFromSourced


def voxels(path: Path) -> np.ndarray:
    return np.asarray(nib.load(str(path)).dataobj)


def soft_mask(entry: dict) -> np.ndarray:
    """The soft mask the bundle makes for a datalist ``entry`` (``image`` and a box, point or ``vertebra_seg``)."""
    loaded = Compose([LoadVolumed(["image", "vertebra_seg"], allow_missing_keys=True), SoftMaskFromSourced()])(entry)
    return loaded["soft_mask"][0].numpy()


def assert_changed_in_mask_only(written: Path, source: Path, entry: dict) -> None:
    """``written`` has the affine and data type of ``source``, and differs from it inside the soft mask of the mask
    source in ``entry`` only (and somewhere)."""
    original, synthetic = nib.load(str(source)), nib.load(str(written))
    assert np.allclose(synthetic.affine, original.affine) and synthetic.get_data_dtype() == original.get_data_dtype()
    changed = voxels(written) != voxels(source)
    assert changed.any() and not changed[soft_mask({"image": str(source), **entry}) == 0].any()
