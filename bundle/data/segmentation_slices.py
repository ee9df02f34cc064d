"""The 2-D segmentation workflow's data (``configs/segment.json``): model-grid slices as input channels and a
binary target.

Each entry becomes the slices :func:`bundle.transforms.case_to_slices.case_to_slices` picks (with
``lesion_mask=True``: the lesion's own mask rides along on the same grid). An item is ``image`` ``(C, S, S)`` (the
``input_keys`` as channels, e.g. the slice and the vertebra's soft mask that says where to look), ``label``
``(1, S, S)`` (the ``target_key``, 0 / 1), ``case_id`` and ``synthetic``.

An entry without a lesion segmentation (a MedSoft synthetic case only knows its lesion as the soft mask; a
VerTumor case has none) cannot be a lesion-mask training example: its all-zero ``lesion_mask`` would teach "no
lesion here" on an image that has one. Such entries are left out when the target is ``lesion_mask`` (listed in
``without_target`` and logged), never silently turned into negatives.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence

import torch
from monai.transforms import Compose

from bundle.data.classification_slices import input_channel
from bundle.data.slice_dataset import SLICE_KEYS, SliceDataset

logger = logging.getLogger(__name__)

TARGET_SOURCES = {"lesion_mask": "lesion_seg"}
"""Target keys whose values come from an entry file that a case may lack: the file's datalist key."""


class SegmentationSlices(torch.utils.data.Dataset):
    """Segmentation items of datalist entries (see the module docstring).

    Args:
        data: datalist entries.
        transform: entry -> slice items carrying ``target_key`` (:func:`case_to_slices` with ``lesion_mask=True``).
        input_keys: input channels, each a slice key or a product of two
            (:func:`bundle.data.classification_slices.input_channel`).
        target_key: the binary target, ``"lesion_mask"`` or a slice key.
        cache_dir: the slice cache folder (:class:`bundle.data.slice_dataset.SliceDataset`), ``None``: in memory.
        allow_failures: keep going when an entry cannot be read (listed in ``failures``); by default that is an
            error, so a test set never shrinks without a word.
    """

    def __init__(
        self,
        data: Sequence[Mapping],
        transform: Compose,
        input_keys: Sequence[str] = ("image", "soft_mask"),
        target_key: str = "lesion_mask",
        cache_dir: str | os.PathLike | None = None,
        allow_failures: bool = False,
    ) -> None:
        entries = [dict(e) for e in data]
        source = TARGET_SOURCES.get(target_key)
        self.without_target = [str(e.get("case_id")) for e in entries if source and not e.get(source)]
        if self.without_target:
            logger.warning(
                "%d of %d entries have no %r for the %r target and are left out: %s",
                len(self.without_target),
                len(entries),
                source,
                target_key,
                self.without_target[:5],
            )
        kept = [e for e in entries if str(e.get("case_id")) not in set(self.without_target)]
        if not kept:
            raise ValueError(f"none of the {len(entries)} entries has a {source!r} for the {target_key!r} target")
        keys = tuple(dict.fromkeys([*SLICE_KEYS, target_key]))
        slices = SliceDataset(kept, transform, cache_dir=cache_dir, keys=keys)
        self.failures = slices.failures
        if self.failures and not allow_failures:
            raise ValueError(f"{len(self.failures)} of {len(kept)} cases could not be read: {self.failures[:3]}")
        synthetic = {str(e.get("case_id")): bool(e.get("synthetic", False)) for e in kept}
        self.items = []
        for index in range(len(slices)):
            item = slices[index]
            self.items.append(
                {
                    "image": torch.cat([input_channel(item, k) for k in input_keys], dim=0),
                    "label": (item[target_key] > 0.5).float(),
                    "case_id": item["case_id"],
                    "synthetic": synthetic[str(item["case_id"])],
                }
            )

    def counts(self) -> dict[str, int]:
        """Slices and cases, real and synthetic, and how many slices hold target pixels."""
        cases = {(item["case_id"], item["synthetic"]) for item in self.items}
        return {
            "slices": len(self.items),
            "slices_with_target": sum(int(item["label"].any()) for item in self.items),
            "real_cases": sum(1 for _, synthetic in cases if not synthetic),
            "synthetic_cases": sum(1 for _, synthetic in cases if synthetic),
            "left_out_without_target": len(self.without_target),
        }

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, object]:
        return self.items[index]
