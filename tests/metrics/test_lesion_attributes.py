"""The attribute measure against hand-built vertebrae whose lesion's size, margin, place, signal and whose body's
wedge are known."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
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


PHANTOM_SPACING = (3.75, 1.04, 1.24)  # the demo phantom's sagittal series: thick slices, 1.0 x 1.3 mm pixels


def striated_case(stripes: str, tilt_deg: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A vertebral body tilted by ``tilt_deg`` in the sagittal plane with a bright lesion (+30 %, sharp edge) drawn as
    the demo phantom draws a haemangioma (``bundle/demo/rendering.py``): ``stripes="vertical"``: thin lines of
    normal signal running along the body's own superior-inferior axis, 3 mm apart at 45 degrees to the slice
    plane (4.2 mm in-plane, shifting from slice to slice), 75 % deep, ``(0.5 + 0.5 cos)^6`` profile;
    ``"horizontal"``: the same lines along the body's anterior-posterior axis; ``"none"``. The phantom's noise
    level: multiplicative marrow texture 0.12 (half 0.8 mm, half 4 mm), then a 0.5-pixel blur and white noise of
    6 % of the marrow signal."""
    rng = np.random.default_rng(seed)
    shape = (7, 64, 56)
    x, a, s = np.meshgrid(*(np.arange(n) * d for n, d in zip(shape, PHANTOM_SPACING, strict=True)), indexing="ij")
    x, a, s = x - 3 * PHANTOM_SPACING[0], a - 33.0, s - 35.0
    tilt = np.deg2rad(tilt_deg)
    p, q = a * np.cos(tilt) + s * np.sin(tilt), -a * np.sin(tilt) + s * np.cos(tilt)
    vertebra = (np.abs(p) <= 21) & (np.abs(q) <= 15)
    rho = np.sqrt((x / 8.0) ** 2 + ((p - 5.0) / 7.5) ** 2 + ((q + 2.0) / 7.5) ** 2)
    weight = expit((1 - rho) * 7.5 / 0.35)
    angle = np.pi / 4
    across = {"vertical": p, "horizontal": q, "none": p}[stripes] * np.cos(angle) + x * np.sin(angle)
    lines = (0.5 + 0.5 * np.cos(2 * np.pi * across / 3.0)) ** 6 * (0.75 if stripes != "none" else 0.0)
    texture = sum(
        ndimage.gaussian_filter(rng.standard_normal(shape), [0.01, *(sigma / d for d in PHANTOM_SPACING[1:])])
        for sigma in (0.8, 4.0)
    )
    texture = 0.12 * texture / texture.std()
    image = np.where(vertebra, 0.7 * (1 + texture) * (1 + 0.3 * weight * (1 - lines)), 0.0)
    image = ndimage.gaussian_filter(image, (0, 0.5, 0.5)) + 0.042 * rng.standard_normal(shape)
    return np.where(vertebra, image, 0.0), vertebra, (weight >= 0.5) & vertebra


SEEDS = range(8)


@pytest.mark.parametrize("tilt_deg", [0.0, 12.0])
def test_vertical_striations_at_the_phantoms_orientation_and_noise_are_found(tilt_deg):
    # Lines along the body's own SI axis are striations whatever the body's tilt. The former measure (image column
    # means against row means) found 6 of the 8 upright lesions and none of the 8 tilted by 12 degrees.
    ratios = [measure_attributes(*striated_case("vertical", tilt_deg, seed), PHANTOM_SPACING) for seed in SEEDS]
    assert sum(found.striations for found in ratios) >= 7, [found.stripe_ratio for found in ratios]


@pytest.mark.parametrize("stripes", ["none", "horizontal"])
def test_no_striations_without_lines_across_the_body(stripes):
    ratios = [measure_attributes(*striated_case(stripes, 12.0, seed), PHANTOM_SPACING) for seed in SEEDS]
    assert all(found.signal == "hyperintense" for found in ratios)
    assert sum(found.striations for found in ratios) <= 1, [found.stripe_ratio for found in ratios]
