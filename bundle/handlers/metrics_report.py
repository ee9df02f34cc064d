"""An evaluator handler that writes the epoch's metrics to a JSON report (and its details to TensorBoard)."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path

from ignite.engine import Engine, Events

from bundle.utils.bundle_files import code_version
from bundle.utils.files import write_json_atomically


def _json_value(value: object) -> object:
    """Numbers as they are (non-finite ones as strings, which JSON has no literal for), tensors as lists."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, Mapping):
        return {str(k): _json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    return str(value)


class MetricsReport:
    """At the end of each evaluation epoch, write ``engine.state.metrics`` and ``details`` (e.g. which feature
    extractor FID / KID used) to ``output_dir/filename``; with ``log_dir``, also put ``details`` into
    TensorBoard as text (the scalars go there through MONAI's ``TensorBoardStatsHandler``).

    Args:
        output_dir: folder of the report (created if needed).
        details: JSON-safe facts every report must carry next to the numbers.
        filename: the report's name.
        log_dir: TensorBoard folder for the details, or ``None``.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        details: Mapping[str, object] | None = None,
        filename: str = "metrics.json",
        log_dir: str | os.PathLike | None = None,
    ) -> None:
        self.path = Path(output_dir) / filename
        self.details = dict(details or {})
        self.log_dir = log_dir

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        report = {
            "metrics": _json_value(dict(engine.state.metrics)),
            "details": _json_value(self.details),
            "epoch": int(engine.state.epoch),
            "num_iterations": int(engine.state.iteration),
            "code_version": code_version(),
            "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        write_json_atomically(self.path, report)
        if self.log_dir is not None:
            from torch.utils.tensorboard import SummaryWriter

            with SummaryWriter(log_dir=str(self.log_dir)) as writer:
                for key, value in self.details.items():
                    writer.add_text(f"evaluation/{key}", str(value), global_step=int(engine.state.epoch))
