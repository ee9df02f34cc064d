"""The attribute measure against hand-built vertebrae whose lesion's size, margin, place, signal and whose body's
wedge are known."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import expit

from bundle.metrics.lesion_attributes import measure_attributes

SPACING = (3.0, 1.0, 1.0)  # (X, A, S) mm
SHAPE = (9, 64, 56)
MARROW = 1000.0


def grid(spacing=SPACING):
    return np.meshgrid(*(np.arange(n) * d for n, d in zip(SHAPE, spacing, strict=True)), indexing="ij")


def body(wedge: float = 0.0) -> np.ndarray:
    """A box body A 10..54, S 10..44 (35 mm tall); ``wedge``: the top lowered linearly to ``wedge`` of the height
    at the anterior wall (A 54), none at the back (A 10)."""
    _, a, s = np.meshgrid(*(np.arange(n) for n in SHAPE), indexing="ij")
    top = 44 - wedge * 35 * np.clip((a - 10) / 44, 0, 1)
    return (a >= 10) & (a <= 54) & (s >= 10) & (s <= top)


def lesion_case(change: float, edge_mm: float, centre_as=(42.0, 33.0), radius=6.5, spacing=SPACING, seed=0):
    """(image, vertebra, lesion mask): an ellipsoid of relative ``change`` with a sigmoid edge of ``edge_mm``,
    masked where its weight is at least a half (as the phantom draws its masks), in noisy marrow."""
    x, a, s = grid(spacing)
    rho = np.sqrt(((x - 12.0) / 4.5) ** 2 + ((a - centre_as[0]) / radius) ** 2 + ((s - centre_as[1]) / radius) ** 2)
    weight = expit((1 - rho) * radius / edge_mm)
    vertebra = body()
    noise = np.random.default_rng(seed).normal(0, 0.02, SHAPE)
    image = np.where(vertebra, MARROW * (1 + change * weight + noise), 0.0)
    return image, vertebra, (weight >= 0.5) & vertebra


def test_a_sharp_bright_lesion_is_measured_in_mm():
    image, vertebra, lesion = lesion_case(0.4, edge_mm=0.3)
    found = measure_attributes(image, vertebra, lesion, SPACING)
    assert found.lesion and found.signal == "hyperintense"
    assert found.contrast == pytest.approx(0.4, abs=0.05)
    assert found.margin == "well-defined"
    assert found.size_mm == pytest.approx(13.0, abs=1.5)
    assert (found.position_ap, found.position_si) == ("anterior", "superior")
    assert found.shape == "round" and found.height_loss_percent == 0 and not found.striations


def test_size_follows_the_voxel_spacing():
    # the same voxels with pixels twice as large: a lesion twice as large in mm
    image, vertebra, lesion = lesion_case(0.4, edge_mm=0.3)
    small = measure_attributes(image, vertebra, lesion, SPACING).size_mm
    large = measure_attributes(image, vertebra, lesion, (3.0, 2.0, 2.0)).size_mm
    assert large == pytest.approx(2 * small, rel=0.05)


def test_a_blurred_dark_lesion_is_ill_defined_and_hypointense():
    image, vertebra, lesion = lesion_case(-0.35, edge_mm=2.0, centre_as=(24.0, 20.0))
    found = measure_attributes(image, vertebra, lesion, SPACING)
    assert found.signal == "hypointense" and found.margin == "ill-defined"
    assert (found.position_ap, found.position_si) == ("posterior", "inferior")


def test_no_lesion_is_a_normal_vertebra_and_a_wedge_is_height_loss():
    vertebra = body(wedge=0.3)
    image = np.where(vertebra, MARROW, 0.0)
    found = measure_attributes(image, vertebra, None, SPACING)
    assert not found.lesion and found.signal == "normal" and found.margin is None
    assert found.height_loss_percent == pytest.approx(30, abs=6)
    assert measure_attributes(np.where(body(), MARROW, 0.0), body(), None, SPACING).height_loss_percent == 0


def test_a_lesion_outside_the_vertebra_does_not_count():
    image, vertebra, lesion = lesion_case(0.4, edge_mm=0.3)
    elsewhere = np.zeros_like(lesion)
    elsewhere[:, 58:62, 20:24] = True  # beyond the body (A > 54)
    assert not measure_attributes(image, vertebra, elsewhere, SPACING).lesion


def test_bad_inputs_are_refused():
    image, vertebra, lesion = lesion_case(0.4, edge_mm=0.3)
    with pytest.raises(ValueError, match="empty"):
        measure_attributes(image, np.zeros_like(vertebra), lesion, SPACING)
    with pytest.raises(ValueError, match="shape"):
        measure_attributes(image, vertebra, lesion[:, :-1], SPACING)
    with pytest.raises(ValueError, match="NaN"):
        measure_attributes(np.where(lesion, np.nan, image), vertebra, lesion, SPACING)
    with pytest.raises(ValueError, match="spacing"):
        measure_attributes(image, vertebra, lesion, (1.0, 0.0, 1.0))
