"""Training warnings on a tiny ignite trainer and validator: a flat loss, NaN, a worsening validation metric."""

from __future__ import annotations

import logging

import pytest
import torch
from ignite.engine import Engine, Events

from bundle.handlers.training_warnings import TrainingWarnings


def run(
    losses_per_epoch: list[list[float]], metrics: list[float] | None = None, lower_is_better: bool = False, **options
) -> TrainingWarnings:
    """A trainer whose iteration outputs ``{"loss": tensor}`` from ``losses_per_epoch``, validated after each epoch
    by a validator that reports the next of ``metrics`` as its key metric ``val_score``."""
    epochs = iter(losses_per_epoch)
    losses = iter(())

    def step(engine, batch):
        return {"loss": torch.tensor(next(losses))}

    trainer = Engine(step)

    @trainer.on(Events.EPOCH_STARTED)
    def next_epoch(engine):
        nonlocal losses
        losses = iter(next(epochs))

    validator = Engine(lambda engine, batch: None)
    validator.state.key_metric_name = "val_score"
    if lower_is_better:
        validator.metric_cmp_fn = lambda current, previous: current < previous
    values = iter(metrics or [])

    @validator.on(Events.EPOCH_COMPLETED)
    def compute(engine):
        engine.state.metrics["val_score"] = next(values)

    handler = TrainingWarnings(validator if metrics else None, **options)
    handler.attach(trainer)
    if metrics:
        trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda engine: validator.run([0]))
    trainer.run(range(len(losses_per_epoch[0])), max_epochs=len(losses_per_epoch))
    return handler


def codes(handler: TrainingWarnings) -> list[str]:
    return [item["code"] for item in handler.warnings]


def test_a_falling_loss_gives_no_warning():
    assert codes(run([[1.0, 0.9], [0.8, 0.7], [0.5, 0.4]], loss_epochs=3)) == []


def test_a_flat_loss_warns_after_the_first_epochs(caplog):
    with caplog.at_level(logging.WARNING):
        handler = run([[1.0, 0.9], [1.0, 0.95], [0.96, 0.95], [0.1, 0.1]], loss_epochs=3)
    assert codes(handler) == ["loss_not_falling"]
    assert handler.warnings[0]["measured"] == pytest.approx(-0.005263, abs=1e-5)
    assert handler.warnings[0]["threshold"] == 0.01
    assert "learning_rate" in caplog.text


def test_a_nan_loss_warns_naming_the_iteration(caplog):
    with caplog.at_level(logging.WARNING):
        handler = run([[1.0, 0.9], [0.5, float("nan"), float("nan")]])
    assert codes(handler) == ["nonfinite_loss"]
    assert handler.warnings[0]["measured"]["iteration"] == 4
    assert "iteration 4" in caplog.text and "fp32" in caplog.text


def test_a_worsening_metric_warns_after_patience_evaluations():
    losses = [[1.0 - 0.1 * epoch] for epoch in range(6)]
    handler = run(losses, [0.5, 0.6, 0.55, 0.5, 0.45, 0.4], patience=3, loss_epochs=6)
    assert codes(handler) == ["metric_worsening"]
    assert handler.warnings[0]["measured"]["values"] == [0.6, 0.55, 0.5, 0.45]
    assert "max_epochs 2" in handler.warnings[0]["message"]
    # two worse evaluations, then a better one: no warning with patience 3
    assert codes(run(losses, [0.5, 0.4, 0.3, 0.6, 0.5, 0.7], patience=3, loss_epochs=6)) == []


def test_a_metric_where_lower_is_better_follows_the_validators_comparison():
    losses = [[1.0 - 0.1 * epoch] for epoch in range(4)]
    assert codes(run(losses, [0.5, 0.4, 0.3, 0.2], lower_is_better=True, patience=3, loss_epochs=4)) == []
    assert codes(run(losses, [0.2, 0.3, 0.4, 0.5], lower_is_better=True, patience=3, loss_epochs=4)) == [
        "metric_worsening"
    ]
