"""The downstream classifier's data: each case of a datalist as items of its target vertebra's sagittal slices,
and the order training items are drawn in (``configs/classify.json``).

Input of one case: the ``slices_per_case`` sagittal slices with the largest area of the target vertebra
(``vertebra_seg == mask_labels``, the same rule the synthesis job uses to pick the slices it changes), each
cropped to the vertebra's soft mask plus a margin and resampled to ``spatial_size`` squared
(:func:`bundle.transforms.case_to_slices.slice_transform`). The network sees the slice and the soft mask as two
channels (the mask says which vertebra is meant: incidental findings sit in the neighbours).

By default a case is one training item, a bag of its slices, for
:class:`bundle.networks.slice_classifier.SliceBagClassifier`; with ``case_bags: false`` slices are separate items
with their case's label. The metrics are :mod:`bundle.metrics.classification`, written by
:class:`bundle.handlers.classification_report.CaseClassificationReport`.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence

import torch
from monai.transforms import Compose

from bundle.data.class_balance import inverse_frequency_weights
from bundle.data.datalist import FILE_KEYS, load_datalist
from bundle.data.slice_dataset import SLICE_KEYS, SliceDataset

logger = logging.getLogger(__name__)

SOURCE_KEYS = ("case_id", "text", *FILE_KEYS, "mask_labels", "box", "point", "box_size_mm", "coordinate_space")
"""The entry fields a case's slices are made from (all the transform sees): its files and soft-mask source, and
the id and text the entry check asks for. Only these reach the slice cache
(:class:`bundle.data.slice_cache.SliceCache`, whose key hashes them), so the arms of a comparison, whose datalists
list the same real cases with other paths and flags (``synthetic``), share the cached slices of those cases; the
label is read from the entry, not the cache."""


def input_channel(item: Mapping[str, torch.Tensor], key: str) -> torch.Tensor:
    """One input channel of a slice item: a slice key (``"image"``, ``"soft_mask"``) or the product of two
    (``"image*soft_mask"``: the slice with everything outside the target vertebra's soft mask faded to 0)."""
    names = key.split("*")
    unknown = [name for name in names if name not in item]
    if unknown or len(names) > 2:
        raise ValueError(f"input key {key!r}: use a slice key {list(SLICE_KEYS)} or the product of two ('a*b')")
    return item[names[0]] * item[names[1]] if len(names) == 2 else item[names[0]]


class ClassificationSlices(torch.utils.data.Dataset):
    """Classifier items of datalist entries: ``image`` ``(C, S, S)`` (the ``input_keys`` as channels),
    ``label`` (the class index in ``classes``), ``case_id`` and ``synthetic``; one item per slice, or with
    ``bag_size`` one per case holding its slices.

    Slices come from :class:`bundle.data.slice_dataset.SliceDataset`; with ``cache_dir`` each case's slices are kept
    in its slice cache (:class:`bundle.data.slice_cache.SliceCache`: a folder per preprocessing setting, a file per
    case keyed by its :data:`SOURCE_KEYS` and files), so runs that share cases (every arm shares the real ones)
    preprocess them once. The augmentation runs on each item drawn, after the cache.

    Args:
        data: datalist entries (each with ``label`` in ``classes`` and a unique ``case_id``).
        transform: entry -> slice items (:func:`slice_transform`).
        classes: class names in class-index order.
        input_keys: input channels, each a slice key or a product of two (:func:`input_channel`).
        allow_failures: keep going when an entry cannot be read (listed in ``failures``); by default such an
            entry is an error, so a test set never shrinks without a word.
        bag_size: one item per case instead of per slice: ``image`` ``(bag_size, C, S, S)``, the case's slices
            (repeated in turn when it has fewer), for :class:`SliceBagClassifier`.
        augment: random transform of an item's ``image`` (training only; :func:`augmentation`).
    """

    def __init__(
        self,
        data: Sequence[Mapping],
        transform: Compose,
        classes: Sequence[str],
        input_keys: Sequence[str] = ("image", "soft_mask"),
        label_key: str = "label",
        cache_dir: str | os.PathLike | None = None,
        allow_failures: bool = False,
        bag_size: int | None = None,
        augment: Callable | None = None,
    ):
        self.entries = [dict(e) for e in data]
        self.augment = augment
        self.classes = [str(c) for c in classes]
        self.input_keys = list(input_keys)
        unknown = sorted({str(e.get(label_key)) for e in self.entries} - set(self.classes))
        if unknown:
            raise ValueError(f"labels {unknown} are not among the classes {self.classes}")
        ids = [str(e.get("case_id")) for e in self.entries]
        repeated = sorted({i for i in ids if ids.count(i) > 1})
        if repeated:
            raise ValueError(f"case ids must be unique: {repeated[:5]}")
        self.label_key = label_key
        by_case = self._slices(transform, cache_dir)
        if self.failures and not allow_failures:
            raise ValueError(
                f"{len(self.failures)} of {len(self.entries)} cases could not be read: {self.failures[:3]}"
            )
        self.items: list[dict[str, object]] = []
        for entry in self.entries:
            case_id = str(entry["case_id"])
            slices = [
                torch.cat([input_channel(item, k) for k in self.input_keys], dim=0) for item in by_case.get(case_id, [])
            ]
            if not slices:
                continue
            label = torch.tensor(self.classes.index(str(entry[label_key])), dtype=torch.long)
            common = {"label": label, "case_id": case_id, "synthetic": bool(entry.get("synthetic", False))}
            if bag_size:
                slices = (slices * bag_size)[:bag_size] if len(slices) < bag_size else slices[:bag_size]
                self.items.append({"image": torch.stack(slices), **common})
            else:
                self.items.extend({"image": image, **common} for image in slices)
        if not self.items:
            raise ValueError(f"no usable slices in {len(self.entries)} entries")

    def _slices(self, transform: Compose, cache_dir: str | os.PathLike | None) -> dict[str, list]:
        """Each case's slices ``{key: (1, S, S)}``, from the slice cache where present."""
        sources = [{k: entry[k] for k in SOURCE_KEYS if k in entry} for entry in self.entries]
        try:
            dataset = SliceDataset(sources, transform, cache_dir=cache_dir)
        except ValueError as error:  # not one entry could be read
            self.failures = [{"case_id": str(e["case_id"]), "error": str(error)} for e in self.entries]
            return {}
        self.failures = dataset.failures
        found: dict[str, list] = defaultdict(list)
        for index in range(len(dataset)):
            item = dataset[index]
            found[str(item["case_id"])].append({k: item[k] for k in SLICE_KEYS})
        return found

    def counts(self) -> dict[str, dict[str, int]]:
        """Cases of each class in the dataset, real and synthetic: ``{class: {"real": n, "synthetic": m}}``."""
        read = {str(item["case_id"]) for item in self.items}
        counts = {c: {"real": 0, "synthetic": 0} for c in self.classes}
        for entry in self.entries:
            if str(entry["case_id"]) in read:
                counts[str(entry[self.label_key])]["synthetic" if entry.get("synthetic") else "real"] += 1
        return counts

    def balanced_weights(self) -> torch.Tensor:
        """One sampling weight per item, ``1 / (items of its class)``: with ``WeightedRandomSampler`` every
        class is drawn equally often (class-balanced oversampling)."""
        return inverse_frequency_weights([int(item["label"]) for item in self.items])

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, object]:
        item = self.items[index]
        if self.augment is None:
            return item
        image = item["image"]
        if image.ndim == 4:  # a bag: the same random transform for all its slices
            changed = self.augment(image.flatten(0, 1)).reshape(image.shape)
        else:
            changed = self.augment(image)
        return {**item, "image": torch.as_tensor(changed).as_subclass(torch.Tensor).float()}


def training_sampler(
    dataset: ClassificationSlices, sampling: str = "natural", num_samples: int | None = None, seed: int = 0
) -> torch.utils.data.Sampler:
    """The order training slices are drawn in, ``num_samples`` per epoch (default: the dataset's size).

    ``"natural"``: shuffled passes over the data as it is (no replacement within a pass); ``"balanced"``:
    class-balanced oversampling, every class equally often (``WeightedRandomSampler`` with replacement).
    A fixed ``num_samples`` gives every arm of a comparison the same number of optimiser steps.
    """
    generator = torch.Generator().manual_seed(int(seed))
    count = len(dataset) if num_samples is None else int(num_samples)
    if count < 1:
        raise ValueError(f"num_samples must be at least 1, got {count}")
    if sampling == "natural":
        return torch.utils.data.RandomSampler(dataset, replacement=False, num_samples=count, generator=generator)
    if sampling == "balanced":
        return torch.utils.data.WeightedRandomSampler(
            dataset.balanced_weights(), count, replacement=True, generator=generator
        )
    raise ValueError(f"sampling must be 'natural' or 'balanced', got {sampling!r}")


def load_training(datalist: str | os.PathLike) -> list[dict]:
    """The datalist's ``training`` list (real and, from ``scripts/balance.py``, synthetic cases)."""
    return load_datalist(datalist, "training")


def load_test(datalist: str | os.PathLike) -> list[dict]:
    """The datalist's ``test`` list; synthetic cases are refused (the test set is real cases only)."""
    entries = load_datalist(datalist, "test")
    synthetic = [str(e["case_id"]) for e in entries if e.get("synthetic")]
    if synthetic:
        raise ValueError(f"the test list of {datalist} holds synthetic cases {synthetic[:5]}; test on real ones")
    return entries
