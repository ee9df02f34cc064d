"""A dataset of model-grid training slices, preprocessed once
(:func:`bundle.transforms.case_to_slices.case_to_slices`).

At real-data scale (tens of thousands of labelled coordinates, several per series) the slices live in a disk
cache (:mod:`bundle.data.slice_cache`) and each series is read once, so memory does not grow with the data set.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch
from monai.transforms import Compose

from bundle.data.class_balance import inverse_frequency_weights
from bundle.data.slice_cache import SliceCache
from bundle.errors import find_input_error

logger = logging.getLogger(__name__)

SLICE_KEYS = ("image", "soft_mask", "masked_image")


def slice_keys(lesion_mask: bool = False) -> tuple[str, ...]:
    """The model-grid images a slice item keeps: :data:`SLICE_KEYS`, and ``"lesion_mask"`` when the preprocessing
    carries the lesion's own mask (``case_to_slices(lesion_mask=True)``)."""
    return SLICE_KEYS + (("lesion_mask",) if lesion_mask else ())


"""The model-grid images of a slice item: x0, the soft mask M_b and the masked image I_m, each ``(1, S, S)``."""


def plain_tensor(values: object) -> torch.Tensor:
    """A float32 tensor without MONAI metadata (what the caches hold: it loads with ``weights_only=True``)."""
    return torch.as_tensor(values).as_subclass(torch.Tensor).detach().float().clone()


def series_order(data: Sequence[Mapping]) -> list[int]:
    """Entry indices with the entries of one ``image`` in a row (images in order of first appearance, entries
    of an image in datalist order), so :class:`LoadVolumeOnced` reads each series once."""
    first: dict[str, int] = {}
    for number, entry in enumerate(data):
        first.setdefault(str(entry.get("image")), number)
    return sorted(range(len(data)), key=lambda number: (first[str(data[number].get("image"))], number))


def pixel_size(image: object) -> torch.Tensor:
    """The (row, column) pixel size in mm of a ``(1, H, W)`` model-grid slice, from its MetaTensor affine (the
    grid resizes each working window, so it differs between slices); ``(1, 1)`` for a tensor without one."""
    affine = getattr(image, "affine", None)
    if affine is None:
        return torch.ones(2)
    return torch.linalg.vector_norm(torch.as_tensor(affine, dtype=torch.float64)[:-1, :2], dim=0).float()


def _stacked(slices: Sequence[Mapping], keys: Sequence[str] = SLICE_KEYS) -> dict[str, object]:
    """An entry's slice items as one record: ``{key: (n, 1, S, S)}``, ``"pixel_mm"`` ``(n, 2)``, ``"text"`` and
    ``"label"`` lists."""
    return {
        **{k: torch.stack([plain_tensor(item[k]) for item in slices]) for k in keys},
        "pixel_mm": torch.stack([pixel_size(item["image"]) for item in slices]),
        "text": [str(item.get("text", "")) for item in slices],
        "label": [str(item.get("label", "")) for item in slices],
    }


class SliceDataset(torch.utils.data.Dataset):
    """Model-grid slices of every entry, preprocessed once (deterministic).

    With ``cache_dir`` the slices are kept on disk (:class:`bundle.data.slice_cache.SliceCache`: a folder per
    preprocessing setting, a file per entry) and read back per item, so memory holds only the index (a few
    numbers and the label per slice) whatever the data set's size, and a later run (a resumed one, or another
    stage with the same preprocessing) reads the cache instead of the images. Without it they are held in
    memory (small sets: tests, a few validation slices).

    Entries are taken one series after another (:func:`series_order`): a series with several labelled
    coordinates is read once. Items are in that order, the same in every run. A bad entry is logged and left
    out (listed in ``failures``); the others are kept. Items hold plain float32 tensors ``image``,
    ``soft_mask``, ``masked_image`` ``(1, S, S)``, ``pixel_mm`` ``(2,)`` (the slice's row and column pixel size, mm:
    :func:`pixel_size`) and ``text``, ``case_id``, ``label``.

    Args:
        data: datalist entries.
        transform: entry -> list of slice items (:func:`case_to_slices`).
        max_items: keep only the first this many slices (e.g. a small validation set).
        cache_dir: where the slice cache lives (``None``: in memory).
        keys: the model-grid images kept per slice (default :data:`SLICE_KEYS`; add ``"lesion_mask"`` when the
            transform carries it).
        augment: a random dictionary transform of each item drawn, after the cache (e.g. MONAI's ``RandFlipd`` on
            the image and its masks together); its results are plain float32 tensors again. ``None``: none.
    """

    def __init__(
        self,
        data: Sequence[Mapping],
        transform: Compose,
        max_items: int | None = None,
        cache_dir: str | os.PathLike | None = None,
        keys: Sequence[str] = SLICE_KEYS,
        augment: Callable[[dict], Mapping] | None = None,
    ) -> None:
        self.data = list(data)
        self.keys = tuple(keys)
        self.augment = augment
        self.cache = SliceCache(cache_dir, transform) if cache_dir is not None else None
        self.failures: list[dict[str, object]] = []  # case_id, error, bad_input
        self.labels: list[str] = []
        self._records: list[Path | dict] = []  # per kept entry: its cache file, or its slices in memory
        self._case_ids: list[str] = []
        self._index: list[tuple[int, int]] = []  # per item: (record, row)
        from_cache = 0
        order = series_order(self.data)
        for count, number in enumerate(order, start=1):
            entry = self.data[number]
            case_id = str(entry.get("case_id", entry.get("image")))
            path = self.cache.path(entry) if self.cache else None
            labels = self.cache.labels(path) if path else None
            if labels is not None:
                from_cache += 1
            else:
                try:
                    slices = transform(dict(entry))
                except (
                    Exception
                ) as error:  # one bad entry must not lose the others; 'bad_input' tells a fault of the code
                    input_error = find_input_error(error)
                    problem = str(input_error) if input_error else f"{type(error).__name__}: {error}"
                    self.failures.append({"case_id": case_id, "error": problem, "bad_input": input_error is not None})
                    logger.error(
                        "[%d/%d] %s left out: %s", count, len(order), case_id, problem, exc_info=input_error is None
                    )
                    continue
                slices = slices if isinstance(slices, list) else [slices]
                if not slices:
                    continue
                record = _stacked(slices, self.keys)
                labels = record["label"]
                if path:
                    self.cache.save(path, record)
            self._records.append(path or record)
            self._case_ids.append(case_id)
            self.labels += labels
            self._index += [(len(self._records) - 1, row) for row in range(len(labels))]
            if max_items is not None and len(self._index) >= max_items:
                del self._index[max_items:], self.labels[max_items:]
                break
            if count % max(1, len(order) // 10) == 0 and count < len(order):
                logger.info("preprocessed %d/%d entries (%d from the cache)", count, len(order), from_cache)
        logger.info(
            "%d slices from %d entries (%d from the cache %s, %d left out)",
            len(self._index),
            len(self.data),
            from_cache,
            self.cache.folder if self.cache else "-",
            len(self.failures),
        )
        if not self._index:
            raise ValueError(f"no usable slices in {len(self.data)} entries: {self.failures[:3]}")

    def balanced_weights(self) -> torch.Tensor:
        """One sampling weight per slice, ``1 / (slices of its label)``: every label is drawn equally often
        (with ``WeightedRandomSampler``), so rare lesion classes are not drowned by normal slices."""
        return inverse_frequency_weights(self.labels)

    def __len__(self) -> int:
        return len(self._index)

    def __getitem__(self, index: int) -> dict[str, object]:
        item = self.stored_item(index)
        if self.augment is None:
            return item
        changed = self.augment(item)
        return {**changed, **{k: plain_tensor(changed[k]) for k in self.keys}}

    def stored_item(self, index: int) -> dict[str, object]:
        """Item ``index`` as preprocessed (before ``augment``)."""
        number, row = self._index[index]
        record = self._records[number]
        if isinstance(record, Path):
            return {**SliceCache.item(record, row), "case_id": self._case_ids[number]}
        return {
            **{k: record[k][row].clone() for k in (*self.keys, "pixel_mm")},
            "text": record["text"][row],
            "case_id": self._case_ids[number],
            "label": record["label"][row],
        }
