"""MedDiff-FT's guiding mask schedule: it shrinks monotonically from the lesion dilated by a radius proportional to
the lesion's size (in mm) to the lesion itself, and never leaves the host structure."""

from __future__ import annotations

import math

import pytest
import torch

from bundle.inferers.guide_mask import GuideMaskSchedule, equivalent_diameter_mm
from bundle.transforms.morphology import DilateMaskMM


def square(size: int, lower: int, upper: int) -> torch.Tensor:
    """A ``(1, 1, size, size)`` mask with ones on ``[lower, upper)`` along both axes."""
    mask = torch.zeros(1, 1, size, size)
    mask[..., lower:upper, lower:upper] = 1.0
    return mask


def area(mask: torch.Tensor) -> int:
    return int((mask > 0).sum())


def test_the_guide_shrinks_monotonically_from_the_dilated_lesion_to_the_lesion_inside_the_host():
    lesion = square(48, 20, 28)
    host = torch.zeros_like(lesion)
    host[..., 10:40, 14:44] = 1.0  # cuts the dilated lesion on one side
    lesion[..., 20:28, 12:14] = 1.0  # and the lesion itself sticks out of the host
    schedule = GuideMaskSchedule("shrink", dilation_fraction=0.5, shrink_until=0.5)
    guides = schedule(lesion, host, 1.0, num_steps=9)
    assert len(guides) == 9
    for earlier, later in zip(guides, guides[1:], strict=False):
        assert bool((later <= earlier).all())  # nested: a guide never grows
    assert all(bool((g <= host).all()) for g in guides)
    r_max = 0.5 * equivalent_diameter_mm(lesion[0], [1.0, 1.0])
    assert r_max > 4
    torch.testing.assert_close(guides[0], DilateMaskMM(r_max, spacing_mm=[1.0, 1.0])(lesion[0])[None] * host)
    assert torch.equal(guides[-1], lesion * host) and torch.equal(guides[4], lesion * host)  # from half-way on
    areas = [area(g) for g in guides]
    assert areas[0] > areas[2] > areas[4] == areas[-1] and area(guides[-1]) < area(lesion)


def test_the_ring_is_proportional_to_the_lesion_and_the_same_in_mm_at_two_pixel_sizes():
    schedule = GuideMaskSchedule("shrink", dilation_fraction=0.5, shrink_until=1.0)
    host = torch.ones(1, 1, 96, 96)
    small, large = square(96, 44, 52), square(96, 40, 56)  # 8 and 16 px sides
    assert schedule.max_radius_mm(large[0], [1.0, 1.0]) == pytest.approx(
        2 * schedule.max_radius_mm(small[0], [1.0, 1.0])
    )
    first_small, first_large = schedule(small, host, 1.0, 5)[0], schedule(large, host, 1.0, 5)[0]
    ring = [
        math.sqrt(area(first)) - math.sqrt(area(lesion))
        for first, lesion in ((first_small, small), (first_large, large))
    ]
    assert ring[1] == pytest.approx(2 * ring[0], abs=2)  # whole pixels: 2 * floor(r) per side
    # the small lesion's 8 mm square at 1 mm and at 0.5 mm pixels, with r_max = 4.25 mm (4 and 8.5 pixels): the
    # same 16 mm square at both (a radius in pixels would give 8 + 2 * 4.25 px = 8.25 mm at 0.5 mm)
    schedule = GuideMaskSchedule("shrink", dilation_fraction=4.25 / equivalent_diameter_mm(small[0], [1.0, 1.0]))
    coarse, fine = schedule(small, host, 1.0, 5)[0], schedule(square(96, 40, 56), host, 0.5, 5)[0]
    assert area(coarse) * 1.0 == area(fine) * 0.25 == 16 * 16


def test_static_is_the_lesion_at_every_step():
    lesion, host = square(32, 10, 20), square(32, 8, 30)
    guides = GuideMaskSchedule("static")(lesion, host, 1.0, 4)
    assert all(torch.equal(g, lesion) for g in guides)


def test_a_lesion_outside_its_host_and_bad_settings_are_refused():
    lesion = torch.cat([square(32, 10, 20), square(32, 2, 6)])
    host = torch.cat([square(32, 8, 30), square(32, 10, 30)])
    with pytest.raises(ValueError, match="image 1: the lesion mask has no pixel inside the host mask"):
        GuideMaskSchedule()(lesion, host, 1.0, 4)
    with pytest.raises(ValueError, match="2 pixel sizes for 2 images|3 pixel sizes"):
        GuideMaskSchedule()(lesion[:1].expand(2, -1, -1, -1), host[:1].expand(2, -1, -1, -1), [1.0, 1.0, 1.0], 4)
    with pytest.raises(ValueError, match="guide mode"):
        GuideMaskSchedule("grow")
    with pytest.raises(ValueError, match="shrink_until"):
        GuideMaskSchedule(shrink_until=0.0)
