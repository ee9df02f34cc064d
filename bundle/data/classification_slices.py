"""The downstream experiment's classifier: which class (normal / benign / malignant) the target vertebra of a
case shows, from 2-D sagittal crops around that vertebra (``configs/classify.json``).

Input of one case: the ``slices_per_case`` sagittal slices with the largest area of the target vertebra
(``vertebra_seg == mask_labels``, the same rule the synthesis job uses to pick the slices it changes), each
cropped to the vertebra's soft mask plus a margin and resampled to ``spatial_size`` squared by
:func:`bundle.transforms.case_to_slices.case_to_slices`. The network sees the slice and the soft mask as two channels (the
mask says which vertebra is meant: incidental findings sit in the neighbours).

By default a case is one training item, a bag of its slices: a 2-D ResNet scores every slice and the case's
logits are the mean of its slices' (:class:`SliceBagClassifier`), so a lesion seen in one slice can decide the
case while its other slices (a lesion fills only part of the vertebra's width) look normal. With
``case_bags: false`` slices are separate items with their case's label. Either way a test case's class
probabilities are the mean softmax of its items (one item per case with bags).

Metrics (case level, :func:`classification_metrics`): accuracy, macro precision / recall / F1 (the unweighted
mean of the per-class values from the confusion matrix; a class never predicted has precision 0), and the
macro one-vs-rest ROC AUC of the class probabilities (the mean over classes with both positive and negative
test cases).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.metrics import compute_roc_auc
from monai.transforms import Compose
from monai.utils import CommonKeys

from bundle.data.datalist import load_datalist
from bundle.transforms.model_grid import model_grid
from bundle.transforms.case_to_slices import SLICE_KEYS, SliceDataset, case_to_slices, inverse_frequency_weights, plain_tensor
from bundle.utils.bundle_files import code_version
from bundle.utils.hashing import sha256_of_path
from bundle.utils.files import write_json_atomically
from bundle.utils.hashing import file_identity

logger = logging.getLogger(__name__)

METRIC_NAMES = ("auc", "accuracy", "precision", "recall", "f1")
"""The headline metrics of ``metrics.json`` (precision, recall and F1 are macro averages)."""
SOURCE_KEYS = ("image", "vertebra_seg", "mask_labels", "box", "point", "box_size_mm", "coordinate_space")
"""The entry fields that decide a case's slices (the slice cache key; the label is not part of it)."""


# ------------------------------------------------------------------------------------------------ input
def slice_transform(spatial_size: int = 48, pixdim_mm: float = 1.0, window_margin_mm: float = 4.0,
                    slices_per_case: int = 2, sigma_mm: float = 3.0, canonical_axcodes: str = "RIP",
                    box_size_mm: float = 30.0) -> Compose:
    """Entry -> the ``slices_per_case`` slices with the largest target-vertebra area, on a ``spatial_size``
    square grid around the soft mask (:func:`bundle.transforms.case_to_slices.case_to_slices`, not lesion-guided: a test case
    has no lesion segmentation to guide it)."""
    grid = model_grid(list(SLICE_KEYS), spatial_size, pixdim_mm, window_key="soft_mask",
                      window_margin_mm=window_margin_mm)
    return case_to_slices(grid, canonical_axcodes=canonical_axcodes, sigma_mm=sigma_mm, box_size_mm=box_size_mm,
                          slice_mode="all", max_slices=slices_per_case, lesion_guided=False)


def slice_cache_key(entry: Mapping, tag: str = "") -> str:
    """The cache name of an entry's slices: a hash of what decides them (:data:`SOURCE_KEYS`, the files' size
    and modification time) and ``tag`` (the preprocessing settings)."""
    source = {key: file_identity(value) if isinstance(value, str) and os.path.exists(value) else value
              for key in SOURCE_KEYS if (value := entry.get(key)) is not None}
    text = json.dumps({"source": source, "tag": tag}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


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

    Slices come from :class:`bundle.transforms.case_to_slices.SliceDataset`; with ``cache_dir`` each case's slices are kept in
    ``cache_dir/<key>.pt`` (:func:`slice_cache_key` with ``cache_tag``: use one tag per preprocessing setting),
    so runs that share cases (every arm shares the real ones) preprocess them once.

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

    def __init__(self, data: Sequence[Mapping], transform: Compose, classes: Sequence[str],
                 input_keys: Sequence[str] = ("image", "soft_mask"), label_key: str = "label",
                 cache_dir: str | os.PathLike | None = None, cache_tag: str = "", allow_failures: bool = False,
                 bag_size: int | None = None, augment: Callable | None = None):
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
        by_case = self._slices(transform, cache_dir, cache_tag)
        if self.failures and not allow_failures:
            raise ValueError(f"{len(self.failures)} of {len(self.entries)} cases could not be read: "
                             f"{self.failures[:3]}")
        self.items: list[dict[str, object]] = []
        for entry in self.entries:
            case_id = str(entry["case_id"])
            slices = [torch.cat([input_channel(item, k) for k in self.input_keys], dim=0)
                      for item in by_case.get(case_id, [])]
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

    def _slices(self, transform: Compose, cache_dir: str | os.PathLike | None, tag: str) -> dict[str, list]:
        """Each case's slices ``{key: (1, S, S)}``, from the cache where present."""
        cache = Path(cache_dir) if cache_dir else None
        found: dict[str, list] = {}
        uncached = []
        for entry in self.entries:
            path = cache / f"{slice_cache_key(entry, tag)}.pt" if cache else None
            if path is not None and path.is_file():
                found[str(entry["case_id"])] = torch.load(path, weights_only=True)
            else:
                uncached.append((entry, path))
        self.failures: list[dict[str, str]] = []
        if uncached:
            try:
                dataset = SliceDataset([entry for entry, _ in uncached], transform)
                items, self.failures = [dataset[i] for i in range(len(dataset))], dataset.failures
            except ValueError as error:  # not one entry could be read
                items, self.failures = [], [{"case_id": str(e["case_id"]), "error": str(error)} for e, _ in uncached]
            for entry, path in uncached:
                case_id = str(entry["case_id"])
                slices = [{k: plain_tensor(item[k]) for k in SLICE_KEYS} for item in items if item["case_id"] == case_id]
                if not slices:
                    continue
                found[case_id] = slices
                if path is not None:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    temporary = path.with_name(f".{path.name}.{os.getpid()}.partial")
                    torch.save(slices, temporary)
                    os.replace(temporary, path)
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


def augmentation(rotate_degrees: float = 10.0, scale: float = 0.1, shift_pixels: float = 3.0,
                 intensity: float = 0.1, flip: bool = True, seed: int = 0) -> Compose:
    """Random training transforms of a ``(C, S, S)`` input: an up-down flip (the sagittal slice's
    superior-inferior axis), a small rotation, scaling and shift, and an intensity scale of the first channel
    (the slice). Cheap on the small model grid. Seeded: the same ``seed`` draws the same transforms."""
    from monai.transforms import RandAffine, RandFlip, RandScaleIntensity

    transforms = [RandFlip(prob=0.5, spatial_axis=0)] if flip else []
    transforms.append(RandAffine(prob=1.0, rotate_range=math.radians(rotate_degrees), scale_range=scale,
                                 translate_range=(shift_pixels, shift_pixels), padding_mode="zeros"))
    transforms.append(RandScaleIntensity(factors=intensity, prob=1.0, channel_wise=True))
    return Compose(transforms).set_random_state(seed=int(seed))


class SliceBagClassifier(torch.nn.Module):
    """A 2-D classifier applied to each slice of a case, the slice logits averaged: ``(B, k, C, S, S)`` ->
    ``(B, classes)``; a plain slice batch ``(B, C, S, S)`` passes straight through.

    Averaging logits (not probabilities) lets a slice that shows the lesion outweigh the case's other slices,
    which look normal, without forcing every slice of a lesion case to look like a lesion.
    """

    def __init__(self, backbone: torch.nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 5:
            return self.backbone(images)
        batch, slices = images.shape[:2]
        logits = self.backbone(images.flatten(0, 1))
        return logits.view(batch, slices, -1).mean(dim=1)


def training_sampler(dataset: ClassificationSlices, sampling: str = "natural", num_samples: int | None = None,
                     seed: int = 0) -> torch.utils.data.Sampler:
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
        return torch.utils.data.WeightedRandomSampler(dataset.balanced_weights(), count, replacement=True,
                                                      generator=generator)
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


# ------------------------------------------------------------------------------------------------ metrics
def confusion_matrix(labels: Sequence[int], predictions: Sequence[int], num_classes: int) -> np.ndarray:
    """``matrix[t, p]``: how many cases of true class ``t`` were predicted as ``p``."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    for true, predicted in zip(labels, predictions, strict=True):
        matrix[int(true), int(predicted)] += 1
    return matrix


def scores_from_confusion(matrix: np.ndarray) -> dict[str, object]:
    """Accuracy and macro precision / recall / F1 of a confusion matrix, with the per-class values.

    Per class: precision = TP / (TP + FP), recall = TP / (TP + FN), F1 = 2 P R / (P + R); a 0 / 0 counts as 0
    (a class never predicted has precision 0). Macro values are the unweighted means over the classes that
    have test cases (a class absent from the test set has no recall and is left out).
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    true_positive = np.diag(matrix)
    predicted, actual = matrix.sum(axis=0), matrix.sum(axis=1)
    precision = np.divide(true_positive, predicted, out=np.zeros_like(true_positive), where=predicted > 0)
    recall = np.divide(true_positive, actual, out=np.zeros_like(true_positive), where=actual > 0)
    both = precision + recall
    f1 = np.divide(2 * precision * recall, both, out=np.zeros_like(both), where=both > 0)
    present = actual > 0
    total = matrix.sum()
    return {
        "accuracy": float(true_positive.sum() / total) if total else math.nan,
        "precision": float(precision[present].mean()) if present.any() else math.nan,
        "recall": float(recall[present].mean()) if present.any() else math.nan,
        "f1": float(f1[present].mean()) if present.any() else math.nan,
        "per_class": [{"precision": float(p), "recall": float(r), "f1": float(f), "support": int(n)}
                      for p, r, f, n in zip(precision, recall, f1, actual, strict=True)],
    }


def roc_auc_one_vs_rest(labels: Sequence[int], probabilities: np.ndarray) -> tuple[float, list[float]]:
    """Macro one-vs-rest ROC AUC (MONAI ``compute_roc_auc`` per class) and the per-class values; a class
    without both positive and negative cases has no AUC (NaN) and is left out of the mean."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    per_class = []
    for k in range(probabilities.shape[1]):
        positive = labels == k
        if positive.all() or not positive.any():
            per_class.append(math.nan)
            continue
        per_class.append(float(compute_roc_auc(torch.as_tensor(probabilities[:, k]),
                                               torch.as_tensor(positive.astype(np.float64)))))
    defined = [a for a in per_class if not math.isnan(a)]
    return (float(np.mean(defined)) if defined else math.nan), per_class


def classification_metrics(labels: Sequence[int], probabilities: np.ndarray,
                           classes: Sequence[str]) -> dict[str, object]:
    """Every metric of ``metrics.json`` from case labels and case class probabilities ``(N, K)``; the
    prediction is the most probable class."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    predictions = probabilities.argmax(axis=1)
    matrix = confusion_matrix(labels, predictions, len(classes))
    scores = scores_from_confusion(matrix)
    auc, auc_per_class = roc_auc_one_vs_rest(labels, probabilities)
    per_class = {name: {**values, "auc": auc_per_class[k]}
                 for k, (name, values) in enumerate(zip(classes, scores.pop("per_class"), strict=True))}
    return {"auc": auc, **scores, "per_class": per_class, "confusion_matrix": matrix.tolist(),
            "confusion_matrix_axes": "rows: true class, columns: predicted class, in the order of 'classes'"}


# ------------------------------------------------------------------------------------------------ report
def _json_safe(value: object) -> object:
    """NaN as null, so metrics.json stays valid JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, Mapping):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


class CaseClassificationReport:
    """Evaluator handler: each test case's class probabilities (the mean softmax of its slices), the metrics
    of :func:`classification_metrics` in ``engine.state.metrics`` and in ``output_path`` (JSON) with the
    per-case predictions, ``training_counts`` and ``details``.

    The evaluator must run with ``decollate=False`` (batched ``pred``); case ids come from the batch.
    """

    def __init__(self, output_path: str | os.PathLike, classes: Sequence[str],
                 training_counts: Mapping | None = None, details: Mapping | None = None) -> None:
        self.output_path = Path(output_path)
        self.classes = list(classes)
        self.training_counts = dict(training_counts or {})
        self.details = dict(details or {})
        self.reset()

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, lambda _: self.reset())
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.collect)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.finish)

    def reset(self) -> None:
        self.probabilities: dict[str, list[np.ndarray]] = {}
        self.labels: dict[str, int] = {}

    def collect(self, engine: Engine) -> None:
        output = engine.state.output
        logits = output[CommonKeys.PRED]
        labels = output[CommonKeys.LABEL]
        probabilities = torch.softmax(torch.as_tensor(logits).detach().float(), dim=1).cpu().numpy()
        for case_id, label, row in zip(engine.state.batch["case_id"], torch.as_tensor(labels).cpu().tolist(),
                                       probabilities, strict=True):
            self.probabilities.setdefault(str(case_id), []).append(row)
            self.labels[str(case_id)] = int(label)

    def result(self) -> dict[str, object]:
        case_ids = sorted(self.probabilities)
        probabilities = np.stack([np.mean(self.probabilities[c], axis=0) for c in case_ids])
        labels = [self.labels[c] for c in case_ids]
        metrics = classification_metrics(labels, probabilities, self.classes)
        predictions = [{"case_id": c, "label": self.classes[y], "predicted": self.classes[int(p.argmax())],
                        "probabilities": [round(float(v), 6) for v in p], "slices": len(self.probabilities[c])}
                       for c, y, p in zip(case_ids, labels, probabilities, strict=True)]
        return {**metrics, "classes": self.classes, "test_cases": len(case_ids),
                "test_counts": {name: labels.count(k) for k, name in enumerate(self.classes)},
                "training_counts": self.training_counts, "details": self.details, "predictions": predictions}

    def finish(self, engine: Engine) -> None:
        report = self.result()
        report["epoch"] = int(getattr(engine.state, "epoch", 0))
        for name in METRIC_NAMES:
            engine.state.metrics[f"test_{name}"] = report[name]
        self.output_path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomically(self.output_path, _json_safe(report))
        logger.info("test (%d cases): %s -> %s", report["test_cases"],
                    ", ".join(f"{name} {report[name]:.3f}" for name in METRIC_NAMES), self.output_path)


def run_details(datalist: str | os.PathLike, **settings) -> dict[str, object]:
    """What ``metrics.json`` records about a run: the datalist and its SHA-256, the settings, code version."""
    datalist = Path(datalist)
    return {"datalist": str(datalist.resolve()), "datalist_sha256": sha256_of_path(datalist),
            "code_version": code_version(), **settings}
