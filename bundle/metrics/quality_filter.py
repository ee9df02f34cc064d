"""A feature-space quality filter for synthetic cases of any generator: is a synthetic case as close to the real
lesion cases of its class as real cases are?

Definition (per class ``c``, in one frozen feature space):

* The real cases of ``c`` are split by case (seeded) into a *reference* part and a held-out *calibration* part
  (``calibration_fraction`` of the cases, at least one; at least one case stays in the reference).
* A slice's score is its k-nearest-neighbour distance: the mean Euclidean distance from its feature to the ``k``
  nearest reference slice features of ``c``. A case's score is the mean of its slices' scores.
* The threshold of ``c`` is the ``quantile`` (e.g. 0.95) of the calibration cases' scores (linear
  interpolation, :func:`torch.quantile`): by construction about that share of unseen real cases of ``c`` pass.
* A case passes when its score is at most its class's threshold.

Scores are distances in one extractor's feature space: they are only comparable with scores from the same
extractor (its ``description`` is stored as ``feature_space`` and checked on use) and the same preprocessing.
The filter asks "does this look like the real lesion cases of its class", not "is this the right class".

Files: a safetensors file with one ``reference/<class>`` tensor per class and the settings, thresholds and
calibration scores as JSON in its metadata (no pickle).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file, safe_open, save

from bundle.errors import InputError
from bundle.networks.weight_files import SAFETENSORS_READ_ERRORS
from bundle.utils.files import write_atomically

METADATA_KEY = "quality_filter"
REFERENCE_PREFIX = "reference/"


def knn_distance(features: torch.Tensor, reference: torch.Tensor, k: int) -> torch.Tensor:
    """Each row of ``features`` ``(N, D)``: the mean Euclidean distance to its ``k`` nearest rows of ``reference``
    ``(M, D)``, ``M >= k``; ``(N,)`` float64."""
    if features.ndim != 2 or reference.ndim != 2 or features.shape[1] != reference.shape[1]:
        raise ValueError(f"need (N, D) and (M, D) features, got {tuple(features.shape)} and {tuple(reference.shape)}")
    if not 1 <= k <= len(reference):
        raise ValueError(f"k must be in [1, {len(reference)}] (the reference size), got {k}")
    distances = torch.cdist(features.double(), reference.double())
    return distances.topk(k, dim=1, largest=False).values.mean(dim=1)


def calibration_split(case_ids: Sequence[str], fraction: float, seed: int, label: str) -> tuple[list[str], list[str]]:
    """``(reference, calibration)`` case ids: a seeded shuffle of the sorted ids, the first
    ``max(1, round(fraction * n))`` held out for calibration, at least one kept for the reference."""
    if len(case_ids) < 2:
        raise ValueError(
            f"class {label!r} has {len(case_ids)} real case(s); the quality filter needs at least 2 "
            "(a reference part and a held-out calibration part)"
        )
    if not 0 < fraction < 1:
        raise ValueError(f"calibration_fraction must be in (0, 1), got {fraction}")
    order = sorted(case_ids)
    random.Random(f"{seed}:{label}").shuffle(order)
    held = min(max(1, round(fraction * len(order))), len(order) - 1)
    return sorted(order[held:]), sorted(order[:held])


class FeatureSpaceFilter:
    """Per-class k-NN distance scores and thresholds (see the module docstring for the definition).

    Args:
        reference: ``{class: (M, D) reference slice features}``.
        thresholds: ``{class: largest passing case score}``.
        k: neighbours averaged.
        quantile: the calibration quantile the thresholds were set at.
        feature_space: the extractor's description (scores are comparable only within one).
        calibration: ``{class: {case_id: score}}`` of the held-out real cases (a record; not used to score).
    """

    def __init__(
        self,
        reference: Mapping[str, torch.Tensor],
        thresholds: Mapping[str, float],
        k: int,
        quantile: float,
        feature_space: str,
        calibration: Mapping[str, Mapping[str, float]] | None = None,
    ) -> None:
        if set(reference) != set(thresholds):
            raise ValueError(
                f"reference classes {sorted(reference)} differ from threshold classes {sorted(thresholds)}"
            )
        self.reference = {str(c): torch.as_tensor(f).double() for c, f in reference.items()}
        self.thresholds = {str(c): float(t) for c, t in thresholds.items()}
        self.k, self.quantile, self.feature_space = int(k), float(quantile), str(feature_space)
        self.calibration = {str(c): dict(s) for c, s in (calibration or {}).items()}
        for features in self.reference.values():
            knn_distance(features[:1], features, self.k)  # shape and k checked once

    @classmethod
    def fit(
        cls,
        cases: Mapping[str, Mapping[str, torch.Tensor]],
        k: int = 5,
        quantile: float = 0.95,
        calibration_fraction: float = 0.3,
        seed: int = 0,
        feature_space: str = "",
        held_out: Mapping[str, Sequence[str]] | None = None,
    ) -> FeatureSpaceFilter:
        """Fit on real cases' slice features, ``{class: {case_id: (S, D)}}``: reference / calibration split
        (:func:`calibration_split`, or the case ids of ``held_out[class]``), threshold = ``quantile`` of the
        calibration cases' scores."""
        if not 0 <= quantile <= 1:
            raise ValueError(f"quantile must be in [0, 1], got {quantile}")
        reference, thresholds, calibration = {}, {}, {}
        for label, by_case in cases.items():
            if held_out is not None and label in held_out:
                held = [str(c) for c in held_out[label]]
                kept = [c for c in by_case if c not in held]
                if not held or not kept or set(held) - set(by_case):
                    raise ValueError(
                        f"class {label!r}: held-out cases {held} must be some, not all, of {list(by_case)}"
                    )
            else:
                kept, held = calibration_split(list(by_case), calibration_fraction, seed, str(label))
            reference[label] = torch.cat([torch.as_tensor(by_case[c]).double() for c in kept])
            if len(reference[label]) < k:
                raise ValueError(
                    f"class {label!r}: {len(reference[label])} reference slices ({len(kept)} cases) are fewer than "
                    f"k = {k}; lower k or add real cases"
                )
            scores = {c: float(knn_distance(torch.as_tensor(by_case[c]), reference[label], k).mean()) for c in held}
            calibration[label] = scores
            thresholds[label] = float(
                torch.quantile(torch.tensor(list(scores.values()), dtype=torch.float64), quantile)
            )
        return cls(reference, thresholds, k, quantile, feature_space, calibration)

    @property
    def classes(self) -> list[str]:
        return sorted(self.reference)

    def score(self, label: str, features: torch.Tensor) -> float:
        """A case's score: the mean over its slices ``(S, D)`` of their k-NN distance to ``label``'s reference."""
        if label not in self.reference:
            raise KeyError(f"the quality filter has no class {label!r} (it has {self.classes})")
        return float(knn_distance(torch.as_tensor(features), self.reference[label], self.k).mean())

    def judge(self, label: str, features: torch.Tensor) -> dict[str, object]:
        """The JSON-safe decision for one case of class ``label``: score, threshold, passed and the settings."""
        score = self.score(label, features)
        return {
            "score": score,
            "threshold": self.thresholds[label],
            "passed": score <= self.thresholds[label],
            "k": self.k,
            "quantile": self.quantile,
            "feature_space": self.feature_space,
        }

    def _metadata(self) -> dict[str, str]:
        settings = {
            "k": self.k,
            "quantile": self.quantile,
            "feature_space": self.feature_space,
            "thresholds": self.thresholds,
            "calibration": self.calibration,
        }
        return {METADATA_KEY: json.dumps(settings, sort_keys=True)}

    def to_bytes(self) -> bytes:
        """The safetensors serialisation (what :meth:`save` writes)."""
        tensors = {f"{REFERENCE_PREFIX}{c}": f.contiguous() for c, f in sorted(self.reference.items())}
        return save(tensors, metadata=self._metadata())

    def fingerprint(self) -> str:
        """SHA-256 of :meth:`to_bytes`: equal for equal filters (references, thresholds, settings)."""
        return hashlib.sha256(self.to_bytes()).hexdigest()

    def save(self, path: str | os.PathLike) -> Path:
        """Write the filter as one safetensors file (atomically); returns the path."""
        return write_atomically(Path(path), self.to_bytes())

    @classmethod
    def load(cls, path: str | os.PathLike) -> FeatureSpaceFilter:
        """Read a file written by :meth:`save` (tensors and JSON only)."""
        path = Path(path)
        if not path.is_file():
            raise InputError(path, "quality-filter file not found")
        try:
            with safe_open(str(path), framework="pt") as stream:
                metadata = stream.metadata() or {}
            tensors = load_file(str(path))
            settings = json.loads(metadata[METADATA_KEY])
            reference = {k[len(REFERENCE_PREFIX) :]: v for k, v in tensors.items() if k.startswith(REFERENCE_PREFIX)}
            return cls(
                reference,
                settings["thresholds"],
                settings["k"],
                settings["quantile"],
                settings["feature_space"],
                settings.get("calibration"),
            )
        except (*SAFETENSORS_READ_ERRORS, KeyError, TypeError, ValueError) as error:
            raise InputError(path, f"not a quality-filter file ({type(error).__name__}: {error})") from error


FeatureFunction = Callable[[torch.Tensor], torch.Tensor]


class QualityCheck:
    """A case's slice images -> the filter's decision for its class, in the filter's feature space.

    Args:
        quality_filter: a :class:`FeatureSpaceFilter` or the path of a saved one.
        extractor: images ``(B, 1, H, W)`` in [0, 1] -> features ``(B, D)``, with a ``description`` that must equal
            the filter's ``feature_space`` (scores from another extractor are not comparable).
    """

    def __init__(self, quality_filter: FeatureSpaceFilter | str | os.PathLike, extractor: FeatureFunction) -> None:
        self.filter = (
            quality_filter
            if isinstance(quality_filter, FeatureSpaceFilter)
            else FeatureSpaceFilter.load(quality_filter)
        )
        description = str(getattr(extractor, "description", ""))
        if description != self.filter.feature_space:
            raise ValueError(
                "the quality filter was fitted in another feature space: "
                f"{self.filter.feature_space!r}, but the extractor is {description!r}"
            )
        self.extractor = extractor

    def identity(self) -> dict[str, object]:
        """What identifies the filter in a provenance record: a case judged by another filter is judged again."""
        return {"fingerprint": self.filter.fingerprint(), "feature_space": self.filter.feature_space}

    @torch.no_grad()
    def features(self, images: Sequence[torch.Tensor]) -> torch.Tensor:
        """Slice images, each ``(1, H, W)`` in [0, 1] -> ``(S, D)``."""
        stack = torch.stack([torch.as_tensor(i).as_subclass(torch.Tensor).float() for i in images])
        return self.extractor(stack.clamp(0, 1)).double().cpu()

    def __call__(self, label: object, images: Sequence[torch.Tensor]) -> dict[str, object]:
        if label is None or str(label) not in self.filter.reference:
            raise ValueError(
                f"the quality filter judges cases of the classes {self.filter.classes}; this case's label is {label!r}"
            )
        return self.filter.judge(str(label), self.features(images))


def case_features(
    entries: Sequence[Mapping],
    preprocessing: Callable[[dict], list[Mapping]],
    extractor: FeatureFunction,
    key: str = "image",
    label: str | None = None,
) -> dict[str, dict[str, torch.Tensor]]:
    """``{label: {case_id: (S, D)}}``: each entry's slice items (``preprocessing``, e.g. the synthesis job's),
    their ``key`` images through ``extractor``. The same preprocessing and extractor must score the synthetic cases.
    ``label``: file every entry under this one class (e.g. all real lesion cases pooled) instead of its own.

    Raises:
        InputError: naming the case that could not be read.
    """
    found: dict[str, dict[str, torch.Tensor]] = {}
    for entry in entries:
        case_id = str(entry.get("case_id", entry.get("image")))
        try:
            items = preprocessing(dict(entry))
        except Exception as error:  # any unreadable case: name it
            raise InputError(case_id, f"cannot be read for the quality filter: {error}") from error
        items = items if isinstance(items, list) else [items]
        images = torch.stack([torch.as_tensor(i[key]).as_subclass(torch.Tensor).float() for i in items])
        with torch.no_grad():
            found.setdefault(str(entry["label"] if label is None else label), {})[case_id] = (
                extractor(images.clamp(0, 1)).double().cpu()
            )
    return found
