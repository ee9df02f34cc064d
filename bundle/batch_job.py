"""Running a job over a datalist case by case: one bad case is reported and the others still complete."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch
from monai.transforms import Compose

from bundle.datalist import load_datalist
from bundle.errors import find_input_error
from bundle.provenance import write_json_atomically
from bundle.writer import SyntheticVolumeWriter

logger = logging.getLogger(__name__)

Predictor = Callable[[Sequence[Mapping]], Sequence[torch.Tensor]]


class KeyPredictor:
    """Returns one entry of each slice item as its result, e.g. ``"masked_image"`` to write ``I_m`` back.

    It is how the pipeline is run without a generative model (the soft-mask preview job), and with
    ``key="image"`` it is the identity model of the round-trip tests.
    """

    def __init__(self, key: str = "masked_image") -> None:
        self.key = key

    def __call__(self, items: Sequence[Mapping]) -> list[torch.Tensor]:
        return [torch.as_tensor(item[self.key]) for item in items]


class SynthesisJob:
    """For each case: preprocess (one item per slice), predict, write; then a ``report.json``.

    Args:
        cases: datalist entries, or the path of a datalist JSON (with ``split``).
        preprocessing: transforms from an entry to a list of slice items.
        predictor: slice items -> one model-grid result per item.
        writer: puts the results back into the volume.
        output_dir: where ``report.json`` goes (the writer's outputs go to its own folder).
        details: extra provenance fields for every output (e.g. the model used).
    """

    def __init__(self, cases: Sequence[Mapping] | str | os.PathLike, preprocessing: Compose, predictor: Predictor,
                 writer: SyntheticVolumeWriter, output_dir: str | os.PathLike, split: str = "test",
                 details: Mapping[str, object] | None = None) -> None:
        self.cases = load_datalist(cases, split) if isinstance(cases, (str, os.PathLike)) else list(cases)
        self.preprocessing = preprocessing
        self.predictor = predictor
        self.writer = writer
        self.output_dir = Path(output_dir)
        self.details = dict(details or {})

    def run_case(self, case: Mapping) -> dict[str, str]:
        items = self.preprocessing(dict(case))
        items = items if isinstance(items, list) else [items]
        with torch.no_grad():
            predictions = self.predictor(items)
        return self.writer(items, predictions, self.details)

    def run(self) -> dict[str, object]:
        """Run every case; returns (and writes) the report of written outputs and failures."""
        self.output_dir.mkdir(parents=True, exist_ok=True)
        written, failed = [], []
        for number, case in enumerate(self.cases, start=1):
            case_id = str(case.get("case_id", case.get("image")))
            started = time.perf_counter()
            try:
                outputs = self.run_case(case)
            except Exception as error:  # noqa: BLE001 - report the case and go on with the others
                input_error = find_input_error(error)
                problem = str(input_error) if input_error else f"{type(error).__name__}: {error}"
                failed.append({"case_id": case_id, "error": problem, "bad_input": input_error is not None})
                logger.error("[%d/%d] %s failed: %s", number, len(self.cases), case_id, problem)
                continue
            written.append({"case_id": case_id, **outputs})
            logger.info("[%d/%d] %s -> %s (%.1f s)", number, len(self.cases), case_id, outputs["volume"],
                        time.perf_counter() - started)
        report = {"written": written, "failed": failed, "num_cases": len(self.cases)}
        write_json_atomically(self.output_dir / "report.json", report)
        logger.info("%d of %d cases written, %d failed; report: %s", len(written), len(self.cases), len(failed),
                    self.output_dir / "report.json")
        return report
