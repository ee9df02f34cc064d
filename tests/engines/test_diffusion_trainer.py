"""The diffusion trainer base: condition dropout by named groups inside a training step, the moving average,
seeded noise and timesteps, and refused settings."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDPMScheduler
from ignite.engine import Events

from tests.helpers.conditioned_model import TwoGroupModel, TwoGroupTrainer, batches, trainer


@pytest.mark.parametrize(
    ("rates", "null_groups"), [({"a": 1.0}, {"a"}), ({"b": 1.0}, {"b"}), ({"a+b": 1.0}, {"a", "b"}), ({}, set())]
)
def test_the_dropped_group_gets_its_null_condition_in_training_and_the_other_is_kept(rates, null_groups):
    model, data = TwoGroupModel(), batches(2)
    trainer(model, data, condition_dropout=rates).run()
    assert len(model.seen) == 2
    for seen, batch in zip(model.seen, data, strict=True):
        for group in model.condition_groups:
            expected = torch.zeros_like(batch[group]) if group in null_groups else batch[group]
            assert torch.equal(seen[group], expected), group


def test_dropout_rates_hold_in_training():
    model, data = TwoGroupModel(), batches(20, size=50)
    trainer(model, data, condition_dropout={"a": 0.2, "a+b": 0.3}).run()
    dropped_a = torch.cat([(seen["a"] == 0).flatten(1).all(1) for seen in model.seen])
    dropped_b = torch.cat([(seen["b"] == 0).flatten(1).all(1) for seen in model.seen])
    assert float((dropped_a & ~dropped_b).float().mean()) == pytest.approx(0.2, abs=0.06)
    assert float((dropped_a & dropped_b).float().mean()) == pytest.approx(0.3, abs=0.06)
    assert not (dropped_b & ~dropped_a).any()


def test_the_moving_average_follows_the_weights_after_each_step():
    model = TwoGroupModel()
    weights = []
    engine = trainer(model, batches(3), ema_decay=0.75)
    engine.add_event_handler(Events.ITERATION_COMPLETED, lambda _: weights.append(model.conv.weight.detach().clone()))
    engine.run()
    expected = weights[0]  # the first update copies the weights
    for current in weights[1:]:
        expected = 0.75 * expected + 0.25 * current
    assert not torch.equal(weights[0], weights[-1])
    torch.testing.assert_close(engine.ema.module.conv.weight, expected)


def test_noise_and_timesteps_follow_the_global_seed():
    losses = []
    for _ in range(2):
        model = TwoGroupModel()
        engine = trainer(model, batches(2), condition_dropout={"a": 0.5})
        torch.manual_seed(3)
        engine.run()
        losses.append(float(engine.state.output["loss"]))
    assert losses[0] == losses[1]
    model = TwoGroupModel()
    engine = trainer(model, batches(2), condition_dropout={"a": 0.5})
    torch.manual_seed(4)
    engine.run()
    assert float(engine.state.output["loss"]) != losses[0]


def test_unknown_groups_and_models_without_conditions_are_refused():
    with pytest.raises(ValueError, match=r"groups \['text'\] the model does not have"):
        trainer(TwoGroupModel(), batches(1), condition_dropout={"text": 0.1})
    with pytest.raises(TypeError, match="not a conditioned diffusion model"):
        TwoGroupTrainer(
            noise_scheduler=DDPMScheduler(),
            device=torch.device("cpu"),
            max_epochs=1,
            train_data_loader=batches(1),
            network=torch.nn.Conv2d(1, 1, 3),
            optimizer=torch.optim.SGD(TwoGroupModel().parameters(), lr=0.1),
            loss_function=torch.nn.MSELoss(),
        )
