"""Linear probes: a vector that carries an attribute predicts it on held-out items, one that does not, does not."""

from __future__ import annotations

import math

import pytest
import torch

from bundle.metrics.linear_probe import cv_alpha, mean_r2, probe_r2, probe_table, ridge_fit


def disentangled_toy(n: int, seed: int):
    """Anatomy vectors encode ``size`` (and noise), style vectors encode ``signal`` (and noise), independently."""
    generator = torch.Generator().manual_seed(seed)
    size = torch.rand(n, generator=generator) * 20
    signal = torch.randn(n, generator=generator)
    mix_a = torch.randn(1, 6, generator=generator)
    mix_s = torch.randn(1, 6, generator=generator)
    anatomy = size[:, None] * mix_a + 0.1 * torch.randn(n, 6, generator=generator)
    style = signal[:, None] * mix_s + 0.1 * torch.randn(n, 6, generator=generator)
    return anatomy, style, size, signal


def test_each_vector_predicts_its_own_attribute_and_not_the_other():
    anatomy, style, size, signal = disentangled_toy(300, 0)  # one mixing; 200 to fit, 100 held out
    table = probe_table(
        {"anatomy": (anatomy[:200], anatomy[200:]), "style": (style[:200], style[200:])},
        {"size": (size[:200], size[200:]), "signal": (signal[:200], signal[200:])},
    )
    assert table["anatomy"]["size"] > 0.95
    assert table["style"]["signal"] > 0.95
    assert table["anatomy"]["signal"] < 0.1
    assert table["style"]["size"] < 0.1
    assert mean_r2(table["anatomy"], ["size"]) > mean_r2(table["anatomy"], ["signal"])


def test_random_features_score_about_zero_or_below_on_held_out_items():
    generator = torch.Generator().manual_seed(3)
    features, targets = torch.randn(120, 8, generator=generator), torch.randn(120, generator=generator)
    assert probe_r2(features[:80], targets[:80], features[80:], targets[80:]) < 0.15


def test_ridge_recovers_a_linear_map_and_standardises_a_constant_feature():
    generator = torch.Generator().manual_seed(4)
    features = torch.cat([torch.randn(50, 3, generator=generator), torch.ones(50, 1)], dim=1)
    targets = 2 * features[:, 0] - features[:, 2] + 5
    assert probe_r2(features, targets, features, targets, alpha=1e-6) == pytest.approx(1.0, abs=1e-6)
    _, scale, _, bias = ridge_fit(features, targets)
    assert float(scale[3]) == 1.0 and float(bias) == pytest.approx(float(targets.mean()))


def test_constant_test_targets_and_bad_shapes():
    assert math.isnan(probe_r2(torch.randn(10, 2), torch.randn(10), torch.randn(5, 2), torch.ones(5)))
    with pytest.raises(ValueError, match="N >= 2"):
        ridge_fit(torch.randn(5, 2), torch.randn(4))
    assert math.isnan(mean_r2({"a": float("nan")}, ["a", "b"]))


def test_cross_validation_picks_a_small_penalty_for_signal_and_a_large_one_for_noise():
    generator = torch.Generator().manual_seed(5)
    features = torch.randn(60, 6, generator=generator)
    assert cv_alpha(features, features[:, 0] + 0.01 * torch.randn(60, generator=generator)) <= 1.0
    assert cv_alpha(features, torch.randn(60, generator=generator)) >= 100.0
    # a probe on noise features is shrunk to about the mean: R^2 near 0 rather than far below
    many = torch.randn(40, 30, generator=generator)
    noise = torch.randn(40, generator=generator)
    assert probe_r2(many[:25], noise[:25], many[25:], noise[25:]) > probe_r2(
        many[:25], noise[:25], many[25:], noise[25:], alpha=0.01
    )
