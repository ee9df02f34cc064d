"""Warnings a person should read while a model trains, each logged with what to try and kept in
:attr:`TrainingWarnings.warnings` as ``{"code", "message", "measured", "threshold"}``
(:func:`bundle.metrics.synthesis_checks.warning`):

* **non-finite loss** (``nonfinite_loss``): the first NaN or infinite loss of an epoch, naming its iteration;
* **loss not falling** (``loss_not_falling``): after ``loss_epochs`` epochs, the mean loss of epoch ``loss_epochs``
  is not at least ``min_relative_drop`` below the mean loss of the first epoch (non-finite losses left out);
* **validation metric getting worse** (``metric_worsening``): the validator's key metric (or ``metric_name``) got
  worse than at the evaluation before ``patience`` evaluations in a row ("worse" by the validator's
  ``metric_cmp_fn``, higher is better without one); warned once per such run.

The training itself is not changed.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

from ignite.engine import Engine, Events

from bundle.metrics.synthesis_checks import warning

logger = logging.getLogger(__name__)


def _loss_of(output: object) -> float:
    """The loss of a trainer's iteration output: ``output["loss"]`` (first item of a decollated list)."""
    if isinstance(output, list | tuple):
        output = output[0]
    value = output["loss"] if isinstance(output, dict) else output
    return float(value.item() if hasattr(value, "item") else value)


class TrainingWarnings:
    """Watch a trainer's loss and a validator's key metric; warn as the module docstring says.

    Args:
        validator: the evaluator run by the trainer's ValidationHandler (None: the metric is not watched).
        loss_epochs: compare the mean loss of this epoch with the first epoch's (at least 2).
        min_relative_drop: the smallest relative fall of the mean loss over ``loss_epochs`` epochs that passes
            silently (0.01: 1 %).
        patience: warn when the validation metric got worse this many evaluations in a row.
        metric_name: the metric to watch (default: the validator's key metric).
        loss_transform: the loss (a number) from the trainer's ``state.output``.
    """

    def __init__(
        self,
        validator: Engine | None = None,
        loss_epochs: int = 5,
        min_relative_drop: float = 0.01,
        patience: int = 3,
        metric_name: str | None = None,
        loss_transform: Callable[[object], float] = _loss_of,
    ) -> None:
        if loss_epochs < 2 or patience < 1:
            raise ValueError(f"loss_epochs must be >= 2 and patience >= 1, got {loss_epochs} and {patience}")
        self.validator, self.loss_epochs, self.min_relative_drop = validator, loss_epochs, min_relative_drop
        self.patience, self.metric_name, self.loss_transform = patience, metric_name, loss_transform
        self.warnings: list[dict[str, object]] = []
        self._epoch_losses: list[float] = []
        self._first_mean: float | None = None
        self._metrics: list[float] = []
        self._epochs: list[int] = []
        self.trainer_epoch = 0
        self._nonfinite_warned = False
        self._worse_in_a_row = 0

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self._epoch_started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration_completed)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._epoch_completed)
        if self.validator is not None:
            self.validator.add_event_handler(Events.EPOCH_COMPLETED, self._validated)

    def _warn(self, code: str, message: str, measured: object, threshold: object) -> None:
        self.warnings.append(warning(code, message, measured, threshold))
        logger.warning(message)

    def _epoch_started(self, engine: Engine) -> None:
        self.trainer_epoch = engine.state.epoch
        self._epoch_losses = []
        self._nonfinite_warned = False

    def _iteration_completed(self, engine: Engine) -> None:
        loss = self.loss_transform(engine.state.output)
        if math.isfinite(loss):
            self._epoch_losses.append(loss)
        elif not self._nonfinite_warned:
            self._nonfinite_warned = True
            self._warn(
                "nonfinite_loss",
                f"the loss is {loss} at iteration {engine.state.iteration} (epoch {engine.state.epoch}): try a "
                "lower learning_rate or precision fp32, and check the inputs for NaN",
                {"iteration": engine.state.iteration, "loss": str(loss)},
                "finite",
            )

    def _epoch_completed(self, engine: Engine) -> None:
        if not self._epoch_losses:
            return
        mean = sum(self._epoch_losses) / len(self._epoch_losses)
        if self._first_mean is None:
            self._first_mean = mean
        if engine.state.epoch != self.loss_epochs:
            return
        drop = (self._first_mean - mean) / abs(self._first_mean) if self._first_mean else 0.0
        if drop < self.min_relative_drop:
            self._warn(
                "loss_not_falling",
                f"the mean loss of epoch {engine.state.epoch} ({mean:.4g}) is {drop:.1%} below the first epoch's "
                f"({self._first_mean:.4g}), less than {self.min_relative_drop:.1%}: try another learning_rate, "
                "check the data (labels, masks) and that the weights are not frozen",
                round(drop, 6),
                self.min_relative_drop,
            )

    def _validated(self, validator: Engine) -> None:
        name = self.metric_name or getattr(validator.state, "key_metric_name", None)
        value = validator.state.metrics.get(name) if name else None
        if value is None or not math.isfinite(float(value)):
            return
        value = float(value)
        if self._metrics and value != self._metrics[-1]:
            better = getattr(validator, "metric_cmp_fn", lambda current, previous: current > previous)
            self._worse_in_a_row = 0 if better(value, self._metrics[-1]) else self._worse_in_a_row + 1
        else:
            self._worse_in_a_row = 0
        self._metrics.append(value)
        self._epochs.append(self.trainer_epoch)
        if self._worse_in_a_row == self.patience:
            best_epoch = self._epochs[len(self._metrics) - self.patience - 1]
            self._warn(
                "metric_worsening",
                f"validation {name} got worse {self.patience} evaluations in a row (now {value:.4g}, "
                f"{[round(v, 4) for v in self._metrics[-self.patience - 1 :]]}): the model may be over-fitting; "
                f"try fewer epochs (max_epochs {best_epoch}, where it was last better) or a lower learning_rate",
                {"metric": name, "values": self._metrics[-self.patience - 1 :]},
                self.patience,
            )
