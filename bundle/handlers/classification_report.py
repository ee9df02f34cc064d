"""The downstream classifier's test report: an evaluator handler that writes each test case's class probabilities
(the mean softmax of its items) and the case-level metrics of :mod:`bundle.metrics.classification` to
``metrics.json``."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.utils import CommonKeys

from bundle.metrics.classification import METRIC_NAMES, classification_metrics
from bundle.utils.bundle_files import code_version
from bundle.utils.files import write_json_atomically
from bundle.utils.hashing import sha256_of_path

logger = logging.getLogger(__name__)


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

    def __init__(
        self,
        output_path: str | os.PathLike,
        classes: Sequence[str],
        training_counts: Mapping | None = None,
        details: Mapping | None = None,
    ) -> None:
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
        for case_id, label, row in zip(
            engine.state.batch["case_id"], torch.as_tensor(labels).cpu().tolist(), probabilities, strict=True
        ):
            self.probabilities.setdefault(str(case_id), []).append(row)
            self.labels[str(case_id)] = int(label)

    def result(self) -> dict[str, object]:
        case_ids = sorted(self.probabilities)
        probabilities = np.stack([np.mean(self.probabilities[c], axis=0) for c in case_ids])
        labels = [self.labels[c] for c in case_ids]
        metrics = classification_metrics(labels, probabilities, self.classes)
        predictions = [
            {
                "case_id": c,
                "label": self.classes[y],
                "predicted": self.classes[int(p.argmax())],
                "probabilities": [round(float(v), 6) for v in p],
                "slices": len(self.probabilities[c]),
            }
            for c, y, p in zip(case_ids, labels, probabilities, strict=True)
        ]
        return {
            **metrics,
            "classes": self.classes,
            "test_cases": len(case_ids),
            "test_counts": {name: labels.count(k) for k, name in enumerate(self.classes)},
            "training_counts": self.training_counts,
            "details": self.details,
            "predictions": predictions,
        }

    def finish(self, engine: Engine) -> None:
        report = self.result()
        report["epoch"] = int(getattr(engine.state, "epoch", 0))
        for name in METRIC_NAMES:
            engine.state.metrics[f"test_{name}"] = report[name]
        self.output_path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomically(self.output_path, _json_safe(report))
        logger.info(
            "test (%d cases): %s -> %s",
            report["test_cases"],
            ", ".join(f"{name} {report[name]:.3f}" for name in METRIC_NAMES),
            self.output_path,
        )


def run_details(datalist: str | os.PathLike, **settings) -> dict[str, object]:
    """What ``metrics.json`` records about a run: the datalist and its SHA-256, the settings, code version."""
    datalist = Path(datalist)
    return {
        "datalist": str(datalist.resolve()),
        "datalist_sha256": sha256_of_path(datalist),
        "code_version": code_version(),
        **settings,
    }
