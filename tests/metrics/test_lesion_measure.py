"""The lesion measure against hand-built change volumes whose lesion's sign, size, place and extent are known."""

from __future__ import annotations

import numpy as np
import pytest

from bundle.metrics.lesion_measure import measure_lesion, neighbour_correlation

SPACING = (3.0, 1.0, 1.0)  # (X, A, S) mm: 3-mm sagittal slices, 1-mm pixels
MARROW = 1000.0


def vertebra() -> np.ndarray:
    """A box body: 9 slices (27 mm), A 10..54 (45 mm deep), S 10..44 (35 mm tall); centre A 32, S 27 mm."""
    mask = np.zeros((9, 64, 56), bool)
    mask[:, 10:55, 10:45] = True
    return mask


def ellipsoid(centre_xas_mm, radii_xas_mm, shape=(9, 64, 56)) -> np.ndarray:
    x, a, s = np.meshgrid(*(np.arange(n) * d for n, d in zip(shape, SPACING, strict=True)), indexing="ij")
    (cx, ca, cs), (rx, ra, rs) = centre_xas_mm, radii_xas_mm
    return ((x - cx) / rx) ** 2 + ((a - ca) / ra) ** 2 + ((s - cs) / rs) ** 2 <= 1


def case(change: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    before = np.where(vertebra(), MARROW, 0.0)
    return before, before * (1 + change)


def test_a_known_ellipsoid_gives_its_sign_size_place_and_extent():
    # centre: slice 4 (12 mm), A 42 (10 mm anterior of the middle, beyond 20 % of the 22.5-mm half depth),
    # S 33 (6 mm above the middle, 18 % of the 34-mm height: superior); in-plane diameter 13 mm; through-plane
    # semi-axis 4.5 mm: slices 3, 4, 5 (|dx| <= 3 mm), 9 mm.
    lesion = ellipsoid((12.0, 42.0, 33.0), (4.5, 6.5, 6.5))
    before, after = case(0.4 * lesion)
    measure = measure_lesion(before, after, vertebra(), SPACING)
    assert measure.direction == 1
    assert measure.size_mm == pytest.approx(13.0, abs=1.0)
    assert (measure.position_ap, measure.position_si) == ("anterior", "superior")
    assert measure.slices == [3, 4, 5]
    assert measure.extent_mm == pytest.approx(9.0)
    assert measure.mean_change == pytest.approx(0.4, abs=0.05)


def test_a_dark_posterior_inferior_lesion():
    # A 22 (10 mm posterior), S 20 (7 mm below the middle): posterior, inferior; diameter 9 mm in-plane.
    before, after = case(-0.3 * ellipsoid((12.0, 22.0, 20.0), (3.0, 4.5, 4.5)))
    measure = measure_lesion(before, after, vertebra(), SPACING)
    assert measure.direction == -1
    assert measure.size_mm == pytest.approx(9.0, abs=1.0)
    assert (measure.position_ap, measure.position_si) == ("posterior", "inferior")
    assert measure.slices == [4]


def test_noise_only_is_no_lesion():
    rng = np.random.default_rng(0)
    before, after = case(rng.normal(0.0, 0.03, vertebra().shape))
    measure = measure_lesion(before, after, vertebra(), SPACING)
    assert measure.direction == 0 and measure.size_mm == 0 and measure.slices == []


def test_a_lesion_through_plane_identical_on_its_slices_correlates_half_with_its_edges():
    # a cylinder on slices 3-5: the pairs (3, 4) and (4, 5) correlate 1, the unchanged neighbours (2, 3) and
    # (5, 6) count 0: mean 0.5
    disc = ellipsoid((12.0, 32.0, 27.0), (3.0, 6.0, 6.0))[4]
    cylinder = np.zeros(vertebra().shape, bool)
    cylinder[3:6] = disc
    before, after = case(0.4 * cylinder)
    measure = measure_lesion(before, after, vertebra(), SPACING)
    assert measure.slices == [3, 4, 5]
    assert measure.neighbour_correlation == pytest.approx(0.5, abs=1e-6)
    assert (measure.position_ap, measure.position_si) == ("central", "mid")


def test_neighbour_correlation_of_identical_and_of_independent_slices():
    rng = np.random.default_rng(1)
    mask = vertebra()
    identical = np.broadcast_to(rng.normal(size=mask.shape[1:]), mask.shape)
    assert neighbour_correlation(identical, mask) == pytest.approx(1.0)
    independent = rng.normal(size=mask.shape)
    assert abs(neighbour_correlation(independent, mask)) < 0.05
    assert neighbour_correlation(independent, mask, slices=[]) is None


def test_bad_inputs_are_named():
    before, after = case(np.zeros(vertebra().shape))
    with pytest.raises(ValueError, match="empty"):
        measure_lesion(before, after, np.zeros_like(vertebra()), SPACING)
    with pytest.raises(ValueError, match="differ"):
        measure_lesion(before[:-1], after, vertebra(), SPACING)
    with pytest.raises(ValueError, match="spacing"):
        measure_lesion(before, after, vertebra(), (1.0, 1.0))
