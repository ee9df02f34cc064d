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


class FixedNoiseTrainer(TwoGroupTrainer):
    """Noise and timesteps from the batch (``noise``, ``timesteps``), so two ways of batching the same items see the
    same draws."""

    def prepare(self, model, batch):
        self.fixed = batch["noise"], batch["timesteps"]
        return super().prepare(model, batch)

    def draw_noise(self, latents):
        return self.fixed


def with_noise(data: list[dict], seed: int = 1) -> list[dict]:
    generator = torch.Generator().manual_seed(seed)
    return [
        {
            **batch,
            "noise": torch.randn(batch["image"].shape, generator=generator),
            "timesteps": torch.randint(0, 1000, (len(batch["image"]),), generator=generator),
        }
        for batch in data
    ]


def fixed_noise_trainer(model: TwoGroupModel, data, **kwargs) -> FixedNoiseTrainer:
    return FixedNoiseTrainer(
        noise_scheduler=DDPMScheduler(num_train_timesteps=1000),
        device=torch.device("cpu"),
        max_epochs=1,
        train_data_loader=data,
        network=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        loss_function=torch.nn.MSELoss(),
        **kwargs,
    )


def test_accumulating_n_batches_equals_one_step_on_their_union_and_steps_every_n_batches():
    small = with_noise(batches(4, size=2))
    union = [{key: torch.cat([a[key], b[key]]) for key in a} for a, b in zip(small[::2], small[1::2], strict=True)]
    reference = TwoGroupModel()
    fixed_noise_trainer(reference, union).run()
    model = TwoGroupModel()
    engine = fixed_noise_trainer(model, small, gradient_accumulation_steps=2)
    steps, weights = [], []
    engine.optimizer.register_step_post_hook(lambda *_: steps.append(engine.state.iteration))
    engine.add_event_handler(Events.ITERATION_COMPLETED, lambda _: weights.append(model.conv.weight.detach().clone()))
    engine.run()
    assert steps == [2, 4]
    assert torch.equal(weights[0], TwoGroupModel().conv.weight)  # no step after the first batch
    for name, value in reference.state_dict().items():
        torch.testing.assert_close(model.state_dict()[name], value, rtol=1e-5, atol=1e-6)
    plain = TwoGroupModel()
    fixed_noise_trainer(plain, small).run()  # a step per small batch: another result
    assert not torch.allclose(plain.conv.weight, reference.conv.weight, atol=1e-4)


def test_the_last_batches_of_an_epoch_step_whatever_their_count():
    model = TwoGroupModel()
    engine = trainer(model, batches(3), max_epochs=2, gradient_accumulation_steps=2)
    steps = []
    engine.optimizer.register_step_post_hook(lambda *_: steps.append(engine.state.iteration))
    engine.run()
    assert steps == [2, 3, 5, 6]


def test_clipping_bounds_the_gradient_norm_of_each_step():
    def gradient_norm(max_grad_norm):
        model = TwoGroupModel()
        torch.manual_seed(0)  # the same noise and timesteps
        trainer(model, batches(1), max_grad_norm=max_grad_norm).run()  # gradients stay after the last step
        return float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()])))

    unclipped = gradient_norm(None)
    assert unclipped > 0.05
    assert gradient_norm(0.01) == pytest.approx(0.01, rel=1e-4)
    assert gradient_norm(10 * unclipped) == pytest.approx(unclipped, rel=1e-6)  # a larger bound changes nothing


def test_bad_clipping_and_accumulation_settings_are_refused():
    with pytest.raises(ValueError, match="max_grad_norm must be positive"):
        trainer(TwoGroupModel(), batches(1), max_grad_norm=0.0)
    with pytest.raises(ValueError, match="gradient_accumulation_steps must be a whole number >= 1"):
        trainer(TwoGroupModel(), batches(1), gradient_accumulation_steps=0)
