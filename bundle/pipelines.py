"""From datalist entries to model-grid slice items: the preprocessing every workflow shares, and a dataset of
training slices.

One entry becomes one item per selected sagittal slice: ``image`` (x0), ``soft_mask`` (M_b) and
``masked_image`` (I_m), each ``(1, S, S)`` in [0, 1] on the model grid, with the entry's text and labels.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Hashable, Mapping, Sequence

import torch
from monai.transforms import Compose, CopyItemsd, Orientationd

from bundle.datalist import ValidateEntryd
from bundle.errors import find_input_error
from bundle.intensity import ScaleIntensityToModeld
from bundle.loading import LoadVolumed, MatchImageGridd
from bundle.slices import LesionSliceGuided, SelectMaskSlicesd
from bundle.soft_mask import MaskImaged, SoftMaskFromSourced

logger = logging.getLogger(__name__)

SLICE_KEYS = ("image", "soft_mask", "masked_image")


def case_to_slices(grid: Compose, canonical_axcodes: str = "RIP", sigma_mm: float = 3.0,
                   box_size_mm: float = 30.0, slice_mode: str = "all", max_slices: int | None = None,
                   lesion_guided: bool = False) -> Compose:
    """Validate, load, make the soft mask, orient, scale, mask, pick slices, keep native copies, resample.

    Args:
        grid: the slice -> model-grid chain (:func:`bundle.model_grid.model_grid`).
        canonical_axcodes: the orientation slices are cut in (first axis: the sagittal slice index).
        sigma_mm: the soft mask's Gaussian sigma (0: a hard mask).
        box_size_mm: the box side for point sources without their own size.
        slice_mode, max_slices: which slices containing the mask are kept.
        lesion_guided: pick slices by the entry's ``lesion_seg`` where it has one (training).
    """
    volumes = ["image", "vertebra_seg"] + (["lesion_seg"] if lesion_guided else [])
    guide = [LesionSliceGuided()] if lesion_guided else []
    oriented = ["image", "mask", "soft_mask"] + (["lesion_seg"] if lesion_guided else [])
    return Compose([
        ValidateEntryd(file_keys=volumes),
        LoadVolumed(volumes, allow_missing_keys=True),
        MatchImageGridd(volumes[1:], ref_key="image", allow_missing_keys=True),
        SoftMaskFromSourced(sigma_mm=sigma_mm, default_box_size_mm=box_size_mm),
        Orientationd(oriented, axcodes=canonical_axcodes, labels=None, allow_missing_keys=True),
        ScaleIntensityToModeld("image"),
        MaskImaged("image"),
        *guide,
        SelectMaskSlicesd(list(SLICE_KEYS), mask_key="slice_guide" if lesion_guided else "mask", mode=slice_mode,
                          max_slices=max_slices, drop_keys=["vertebra_seg", "lesion_seg", "mask"]),
        CopyItemsd(["image", "soft_mask"], names=["native_image", "native_soft_mask"]),
        grid,
    ])


def inverse_frequency_weights(labels: Sequence[Hashable]) -> torch.Tensor:
    """``1 / (count of its label)`` for each label, as float64: the weights with which ``WeightedRandomSampler``
    draws every label equally often (class-balanced oversampling)."""
    counts = Counter(labels)
    return torch.tensor([1.0 / counts[label] for label in labels], dtype=torch.double)


class SliceDataset(torch.utils.data.Dataset):
    """Model-grid slices of every entry, preprocessed once (deterministic) and held in memory.

    A bad entry is logged and left out (listed in ``failures``); the others are kept. Items hold plain
    tensors ``image``, ``soft_mask``, ``masked_image`` ``(1, S, S)`` and ``text``, ``case_id``, ``label``.

    Args:
        data: datalist entries.
        transform: entry -> list of slice items (:func:`case_to_slices`).
        max_items: keep only the first this many slices (e.g. a small validation set).
    """

    def __init__(self, data: Sequence[Mapping], transform: Compose, max_items: int | None = None) -> None:
        self.data = list(data)
        self.items: list[dict[str, object]] = []
        self.failures: list[dict[str, str]] = []
        for number, entry in enumerate(self.data, start=1):
            case_id = str(entry.get("case_id", entry.get("image")))
            try:
                slices = transform(dict(entry))
            except Exception as error:  # noqa: BLE001 - one bad entry must not lose the others
                input_error = find_input_error(error)
                problem = str(input_error) if input_error else f"{type(error).__name__}: {error}"
                self.failures.append({"case_id": case_id, "error": problem})
                logger.error("[%d/%d] %s left out: %s", number, len(self.data), case_id, problem)
                continue
            for item in slices if isinstance(slices, list) else [slices]:
                self.items.append({**{k: torch.as_tensor(item[k]).float().clone() for k in SLICE_KEYS},
                                   "text": str(item.get("text", "")), "case_id": case_id,
                                   "label": str(item.get("label", ""))})
            if max_items is not None and len(self.items) >= max_items:
                self.items = self.items[:max_items]
                break
        logger.info("%d slices from %d entries (%d left out)", len(self.items), len(self.data), len(self.failures))
        if not self.items:
            raise ValueError(f"no usable slices in {len(self.data)} entries: {self.failures[:3]}")

    def balanced_weights(self) -> torch.Tensor:
        """One sampling weight per slice, ``1 / (slices of its label)``: every label is drawn equally often
        (with ``WeightedRandomSampler``), so rare lesion classes are not drowned by normal slices."""
        return inverse_frequency_weights([item["label"] for item in self.items])

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, object]:
        return self.items[index]
