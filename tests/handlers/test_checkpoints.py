"""Resumable checkpoints: a resumed run continues from where the interrupted one stopped, its moving average of
the weights and the random generators included."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bundle.handlers.checkpoints import ResumableCheckpoints, newest_checkpoint
from tests.helpers.conditioned_model import TwoGroupModel, batches, trainer

EPOCHS = 3


def train(checkpoint_dir: Path, max_epochs: int, ema_decay: float | None = 0.5):
    """Train a fresh model for ``max_epochs`` (resuming from ``checkpoint_dir``) after seeding once, as the configs'
    ``set_determinism`` does: noise and timesteps come from torch's global generator."""
    torch.manual_seed(0)
    model = TwoGroupModel()
    engine = trainer(model, batches(2), max_epochs=max_epochs, ema_decay=ema_decay)
    ResumableCheckpoints(checkpoint_dir, {"network": model, "optimizer": engine.optimizer}).attach(engine)
    engine.run()
    return model, engine


def test_a_resumed_run_ends_with_the_moving_average_of_an_uninterrupted_one(tmp_path):
    model, engine = train(tmp_path / "whole", EPOCHS)
    train(tmp_path / "split", 1)
    resumed_model, resumed = train(tmp_path / "split", EPOCHS)
    assert resumed.state.epoch == EPOCHS and resumed.state.iteration == engine.state.iteration
    torch.testing.assert_close(resumed_model.state_dict(), model.state_dict(), rtol=0, atol=0)
    assert int(resumed.ema.n_averaged) == int(engine.ema.n_averaged) == 2 * EPOCHS
    averaged = engine.ema.module.state_dict()
    assert not torch.equal(averaged["conv.weight"], model.conv.weight)  # the average is not the last weights
    torch.testing.assert_close(resumed.ema.module.state_dict(), averaged, rtol=0, atol=0)
    assert [path.name for path in (tmp_path / "split").iterdir()] == [f"checkpoint_epoch={EPOCHS}.pt"]


@pytest.mark.parametrize("ema_decay", [None, 0.5])
def test_the_checkpoint_holds_the_moving_average_only_when_there_is_one(tmp_path, ema_decay):
    train(tmp_path, 1, ema_decay=ema_decay)
    saved = torch.load(newest_checkpoint(tmp_path), weights_only=True)
    assert set(saved) == {"network", "optimizer", "trainer", "random_states"} | ({"ema"} if ema_decay else set())


def test_a_checkpoint_without_random_states_still_resumes(tmp_path):
    train(tmp_path, 1)
    path = newest_checkpoint(tmp_path)
    saved = torch.load(path, weights_only=True)
    del saved["random_states"]  # as written before the generators were saved
    torch.save(saved, path)
    _, resumed = train(tmp_path, 2)
    assert resumed.state.epoch == 2 and resumed.state.iteration == 4 and int(resumed.ema.n_averaged) == 4


def test_a_trainer_given_the_handler_as_the_configs_do_checkpoints_its_moving_average(tmp_path):
    """The configs pass the handler to the trainer, which attaches it before it makes its moving average."""
    model = TwoGroupModel()
    checkpoints = ResumableCheckpoints(tmp_path, {"network": model})
    trainer(model, batches(2), ema_decay=0.5, train_handlers=[checkpoints]).run()
    assert "ema" in torch.load(newest_checkpoint(tmp_path), weights_only=True)
