"""MedDiff-FT's mask generator: a small DDPM learns lesion shapes (binary, one component, realistic fill, not copies
of its training masks, smoother than an untrained model's), sizes follow the fitted log-normal geometry, placement
stays inside the host, and every level of randomness can be frozen on its own."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from bundle.errors import InputError
from bundle.networks.meddiffft_mask_generator import (
    LEVELS,
    HierarchicalMaskSampler,
    LesionGeometry,
    LesionShapeModel,
    RealMaskSampler,
    place,
    shape_frame,
    sized_shape,
)

STEPS = 300  # optimiser steps of the shape DDPM (batch 16): about 1 min on this CPU


def blob_frames(count: int, seed: int) -> torch.Tensor:
    """Irregular filled blobs (smoothed noise above its 75th percentile, largest component) as shape frames."""
    rng = np.random.default_rng(seed)
    frames = []
    while len(frames) < count:
        field = ndimage.gaussian_filter(rng.standard_normal((24, 24)), 3.0)
        labels, found = ndimage.label(field > np.quantile(field, 0.75))
        largest = ndimage.binary_fill_holes(labels == 1 + np.argmax(np.bincount(labels.ravel())[1:])) if found else 0
        if found and largest.sum() >= 20:
            frames.append(shape_frame(torch.as_tensor(largest, dtype=torch.float32)))
    return torch.stack(frames)


def compactness(frames: torch.Tensor) -> float:
    """Median perimeter^2 / (4 pi area) of each frame's foreground (1 for a disc; ragged noise is far above)."""
    values = []
    for frame in frames[:, 0].numpy() > 0.5:
        perimeter = (frame ^ ndimage.binary_erosion(frame)).sum()
        values.append(perimeter**2 / (4 * math.pi * max(frame.sum(), 1)))
    return float(np.median(values))


@pytest.fixture(scope="module")
def training_frames():
    return blob_frames(48, seed=0)


@pytest.fixture(scope="module")
def shape_model(training_frames, one_torch_thread):
    model = LesionShapeModel(frame=16, num_train_timesteps=200, num_inference_steps=50, seed=0)
    losses = model.fit(training_frames, steps=STEPS, batch_size=16, seed=0)
    assert np.mean(losses[-20:]) < 0.5 * np.mean(losses[:20])
    return model


def test_learned_shapes_are_binary_single_filled_components_of_realistic_fill_and_novel(shape_model, training_frames):
    untrained = LesionShapeModel(frame=16, num_train_timesteps=200, num_inference_steps=50, seed=0)
    raw_untrained = untrained.sample(16, torch.Generator().manual_seed(1), clean=False)
    raw = shape_model.sample(16, torch.Generator().manual_seed(1), clean=False)
    samples = shape_model.sample(16, torch.Generator().manual_seed(1))
    assert set(torch.unique(samples).tolist()) <= {0.0, 1.0}
    assert all(ndimage.label(s[0].numpy() > 0.5)[1] == 1 for s in samples)
    # learned, not only cleaned: the raw samples are smooth blobs like the training shapes, the untrained model's are
    # ragged noise (measured: 2.2 and 9.1 against 1.2 for the training shapes)
    assert compactness(raw) < 0.5 * compactness(raw_untrained)
    fill, real_fill = samples.mean(dim=(1, 2, 3)).median(), training_frames.mean(dim=(1, 2, 3)).median()
    assert 0.5 * real_fill <= fill <= 2.0 * real_fill
    inside, real = samples[:, 0] > 0.5, training_frames[:, 0] > 0.5
    best_iou = [max(float((s & r).sum() / (s | r).sum()) for r in real) for s in inside]
    assert np.mean(np.array(best_iou) < 0.9) >= 0.5  # not copies of the training masks
    assert torch.equal(
        shape_model.sample(2, torch.Generator().manual_seed(5)), shape_model.sample(2, torch.Generator().manual_seed(5))
    )


def test_the_geometry_fit_recovers_log_normal_sizes_and_aspects():
    truth = LesionGeometry(math.log(8.0), 0.3, math.log(1.5), 0.2)
    generator = torch.Generator().manual_seed(0)
    box = torch.ones(1, 16, 16)
    draws = [truth.draw(generator) for _ in range(300)]
    masks = [sized_shape(box, diameter, aspect, 0.25) for diameter, aspect in draws]
    fitted = LesionGeometry.fit(masks, [0.25] * len(masks))
    assert fitted.log_diameter_mean == pytest.approx(truth.log_diameter_mean, abs=0.05)
    assert fitted.log_diameter_std == pytest.approx(truth.log_diameter_std, abs=0.05)
    assert fitted.log_aspect_mean == pytest.approx(truth.log_aspect_mean, abs=0.05)
    assert fitted.log_aspect_std == pytest.approx(truth.log_aspect_std, abs=0.05)


def test_placement_stays_inside_the_host_and_a_host_too_small_is_refused():
    host = torch.zeros(40, 40)
    host[8:30, 5:35] = 1.0
    host[8:14, 5:12] = 0.0  # a notch
    lesion = torch.ones(5, 7)
    positions = set()
    for seed in range(100):
        placed = place(lesion, host, torch.Generator().manual_seed(seed))
        assert placed.shape == (1, 40, 40) and placed.sum() == 35 and bool((placed[0] <= host).all())
        positions.add(tuple(torch.nonzero(placed[0])[0].tolist()))
    assert len(positions) > 30
    again = place(lesion, host, torch.Generator().manual_seed(3))
    assert torch.equal(again, place(lesion, host, torch.Generator().manual_seed(3)))
    with pytest.raises(InputError, match="case_9: no position fits a 5 x 7 px lesion"):
        place(lesion, host[:12, :12], torch.Generator().manual_seed(0), "case_9")


def test_each_level_of_randomness_can_be_frozen_on_its_own(shape_model):
    hosts = [torch.zeros(48, 48) for _ in range(3)]
    for host in hosts:
        host[6:42, 6:42] = 1.0
    geometry = LesionGeometry(math.log(6.0), 0.3, 0.0, 0.2)

    def draws(frozen):
        sampler = HierarchicalMaskSampler(shape_model, geometry, hosts, [1.0, 1.0, 1.0], seed=4, frozen=frozen)
        return [sampler.draw(index) for index in range(4)]

    free = draws(())
    assert len({d.host_index for d in free}) > 1 and len({d.sampler_seed for d in free}) == 4
    assert len({round(d.diameter_mm, 6) for d in free}) == 4
    assert all(bool((d.mask[0] <= hosts[d.host_index]).all()) and d.mask.sum() > 0 for d in free)
    host_frozen = draws(("host",))
    assert len({d.host_index for d in host_frozen}) == 1
    assert [d.diameter_mm for d in host_frozen] == [d.diameter_mm for d in free]  # the other levels are unchanged
    size_frozen = draws(("size",))
    assert len({d.diameter_mm for d in size_frozen}) == 1 and len({d.sampler_seed for d in size_frozen}) == 4
    shape_frozen = draws(("shape",))
    assert all(torch.equal(d.shape, shape_frozen[0].shape) for d in shape_frozen)
    assert not all(torch.equal(d.shape, free[0].shape) for d in free)
    everything = draws(LEVELS)
    assert all(torch.equal(d.mask, everything[0].mask) for d in everything)
    assert torch.equal(
        HierarchicalMaskSampler(shape_model, geometry, hosts, [1.0] * 3, seed=4).draw(2).mask, free[2].mask
    )
    with pytest.raises(ValueError, match="unknown levels"):
        HierarchicalMaskSampler(shape_model, geometry, hosts, [1.0] * 3, frozen=("colour",))


def disc(radius: float, size: int = 32) -> torch.Tensor:
    rows, cols = torch.meshgrid(torch.arange(size) - size / 2, torch.arange(size) - size / 2, indexing="ij")
    return ((rows**2 + cols**2) <= radius**2).float()


def test_real_masks_are_re_placed_at_their_own_physical_size_inside_the_host():
    real = [disc(3.0), torch.zeros(32, 32)]
    real[1][10:14, 8:20] = 1.0  # a 4 x 12 px bar
    host = torch.zeros(64, 64)
    host[8:56, 8:56] = 1.0
    sampler = RealMaskSampler(real, [2.0, 2.0], [host], [1.0], seed=3)  # real masks on 2 mm pixels, host on 1 mm
    areas, positions = set(), set()
    for index in range(12):
        draw = sampler.draw(index)
        mask = draw.mask[0]
        assert (mask <= host).all() and draw.tries == 1
        rows, cols = torch.nonzero(mask).T
        extent = (int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1))
        assert extent in {(8, 24), (13, 13), (12, 12), (14, 14)}  # the bar or the disc at twice the pixels
        areas.add(extent)
        positions.add((int(rows.min()), int(cols.min())))
    assert len(areas) >= 2 and len(positions) >= 6  # both real masks, re-placed at many positions
    assert sampler.draw(5).mask.equal(sampler.draw(5).mask)
    frozen = RealMaskSampler(real, [2.0, 2.0], [host], [1.0], seed=3, frozen=("shape",))
    assert len({frozen.draw(i).mask.sum().item() for i in range(6)}) == 1


def test_a_lesion_too_large_for_its_host_is_drawn_again_from_the_size_stream():
    host = torch.zeros(40, 40)
    host[10:22, 10:22] = 1.0  # a 12 x 12 px host on 1 mm pixels
    geometry = LesionGeometry(math.log(12.0), 0.6, 0.0, 0.1)  # diameters around 12 mm: often too large
    sampler = HierarchicalMaskSampler(LesionShapeModel(seed=0), geometry, [host], [1.0], seed=0)
    draws = [sampler.draw(index) for index in range(6)]
    assert all((draw.mask[0] <= host).all() and draw.mask.any() for draw in draws)
    assert any(draw.tries > 1 for draw in draws)
    retried = next(index for index, draw in enumerate(draws) if draw.tries > 1)
    once = HierarchicalMaskSampler(LesionShapeModel(seed=0), geometry, [host], [1.0], seed=0, max_tries=1)
    with pytest.raises(InputError, match="host 0"):
        once.draw(retried)
