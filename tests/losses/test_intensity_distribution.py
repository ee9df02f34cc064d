"""The intensity-distribution loss: its value on constructed pairs, its mask, its errors, and that it has a
gradient that moves a generated image's statistics towards the real one's (a detached version, as the authors'
release computed it, does not)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from bundle.losses import IntensityDistributionLoss
from bundle.losses.intensity_distribution import masked_moments

LOSS = IntensityDistributionLoss()


def test_equal_statistics_give_zero_and_a_known_pair_its_value():
    real = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    shuffled = real.flatten(2)[..., torch.randperm(256, generator=torch.Generator().manual_seed(1))].view_as(real)
    assert LOSS(shuffled, real).item() == pytest.approx(0.0, abs=1e-10)  # other pixels, same mean and spread
    # real: half 0.4, half 0.6 (mean 0.5, std 0.1); generated: constant 0.2 (mean 0.2, std 0)
    half = torch.cat([torch.full((1, 1, 8, 16), 0.4), torch.full((1, 1, 8, 16), 0.6)], dim=2)
    value = IntensityDistributionLoss(eps=0.0)(torch.full_like(half, 0.2), half)
    assert value.item() == pytest.approx(0.3**2 + 0.1**2, rel=1e-5)


def test_channels_add_and_reduction_none_is_per_image():
    real = torch.zeros(3, 2, 4, 4)
    generated = torch.zeros(3, 2, 4, 4)
    generated[1] += 0.5  # both channels' means off by 0.5 in image 1 only
    per_image = IntensityDistributionLoss(reduction="none", eps=0.0)(generated, real)
    assert per_image.tolist() == pytest.approx([0.0, 0.5, 0.0])


def test_the_mask_limits_the_statistics():
    real = torch.zeros(1, 1, 8, 8)
    generated = torch.zeros(1, 1, 8, 8)
    generated[..., 4:] = 1.0  # changed outside the mask only
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., :4] = 1.0
    assert LOSS(generated, real, mask).item() == pytest.approx(0.0, abs=1e-10)
    assert LOSS(generated, real).item() > 0.4
    mean, std = masked_moments(torch.arange(4.0).view(1, 1, 2, 2), torch.tensor([[[[1.0, 1.0], [0.0, 0.0]]]]))
    assert mean.item() == pytest.approx(0.5) and std.item() == pytest.approx(0.5, abs=1e-5)


def test_bad_inputs_are_refused():
    image = torch.rand(2, 1, 8, 8)
    with pytest.raises(ValueError, match="same"):
        LOSS(image, image[:, :, :4])
    with pytest.raises(ValueError, match="grid"):
        LOSS(image, image, torch.ones(2, 1, 4, 4))
    with pytest.raises(ValueError, match=r"batch items \[1\]"):
        LOSS(image, image, torch.stack([torch.ones(1, 8, 8), torch.zeros(1, 8, 8)]))
    with pytest.raises(ValueError, match="NaN"):
        LOSS(image.masked_fill(image > 0.5, float("nan")), image)
    with pytest.raises(ValueError, match="reduction"):
        IntensityDistributionLoss(reduction="sum")


def detached(generated: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """The authors' release: the generated image made (and the term computed) under ``no_grad``."""
    with torch.no_grad():
        return LOSS(generated, real)


def optimise(loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], steps: int = 60) -> torch.Tensor:
    """A tiny generator (a conv on fixed noise) trained for ``steps`` on ``anchor + loss``; the anchor is a
    zero-weighted term that keeps ``backward`` possible when ``loss`` has no graph (as the release's sum with the
    diffusion loss did). Returns the generated image's (mean, std) afterwards and checks they approach the target's
    (mean 0.7, std 0.2) from the start's."""
    torch.manual_seed(0)
    generator = torch.nn.Conv2d(1, 1, 3, padding=1)
    noise = torch.rand(4, 1, 16, 16)
    real = 0.7 + 0.2 * torch.randn(4, 1, 16, 16)
    optimiser = torch.optim.Adam(generator.parameters(), lr=0.05)
    start = LOSS(generator(noise), real).item()
    for _ in range(steps):
        optimiser.zero_grad()
        generated = generator(noise)
        (0.0 * generated.sum() + loss(generated, real)).backward()
        optimiser.step()
    end = LOSS(generator(noise), real).item()
    assert end < 0.05 * start, f"the statistics did not move towards the target: loss {start:.4f} -> {end:.4f}"
    return torch.stack(masked_moments(generator(noise).detach()), dim=-1)


def test_the_loss_has_a_gradient_that_moves_the_statistics():
    generated = torch.rand(2, 1, 8, 8, requires_grad=True)
    LOSS(generated, torch.rand(2, 1, 8, 8) + 0.5).backward()
    assert generated.grad is not None and generated.grad.abs().sum() > 0
    moments = optimise(LOSS)
    assert moments[..., 0].mean().item() == pytest.approx(0.7, abs=0.05)
    assert moments[..., 1].mean().item() == pytest.approx(0.2, abs=0.05)


def test_a_detached_loss_as_in_the_release_moves_nothing():
    assert not detached(torch.rand(1, 1, 4, 4), torch.rand(1, 1, 4, 4)).requires_grad
    with pytest.raises(AssertionError, match="did not move"):
        optimise(detached)
