"""In-mask and background PSNR / SSIM and the high-frequency distance against hand-computable cases, as the
evaluation config builds them."""

from __future__ import annotations

import math

import pytest
import torch
from ignite.engine import Engine
from monai.bundle import ConfigParser

from bundle.metrics.image_quality import (
    BackgroundPSNR,
    HighFrequencyDistance,
    background_mae,
    background_psnr,
    high_frequency_distance,
    in_mask_psnr,
    in_mask_ssim,
)
from tests.helpers.paths import CONFIGS, REPO

SIZE = 32


def textured(seed: int = 0, size: int = SIZE) -> torch.Tensor:
    """A (1, S, S) image in [0, 1] with detail at every scale."""
    return torch.rand(1, size, size, generator=torch.Generator().manual_seed(seed))


def disc_mask(size: int = SIZE, radius: float = 8.0) -> torch.Tensor:
    rows, cols = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    return (((rows - size / 2) ** 2 + (cols - size / 2) ** 2) <= radius**2).float()[None]


def evaluate_metric(name: str, batches: list) -> float:
    """One metric of configs/evaluate.json's evaluator, as the config builds it, over ``batches`` of
    ``{"pred", "label", "mask"}``."""
    parser = ConfigParser()
    parser.read_config([str(CONFIGS / "train.json"), str(CONFIGS / "evaluate.json")])
    parser.update({"bundle_root": str(REPO)})
    engine = Engine(lambda engine, batch: batch)
    parser.get_parsed_content(f"validate#image_metrics#{name}").attach(engine, name)
    return float(engine.run(batches).metrics[name])


def test_psnr_against_known_values():
    reference = torch.full((1, SIZE, SIZE), 0.5)
    mask = disc_mask()
    off_inside = reference + 0.1 * mask  # error 0.1 inside the disc only
    assert in_mask_psnr(off_inside, reference, mask) == pytest.approx(20.0, abs=1e-4)  # 10 log10(1 / 0.01)
    # MONAI's PSNR as evaluate.json configures it (data range 1), on the whole image
    psnr = evaluate_metric("val_psnr", [{"pred": reference[None] + 0.01, "label": reference[None]}])
    assert psnr == pytest.approx(40.0, abs=1e-3)


def test_ssim_against_known_values():
    # constant images 0.5 and 0.6: no variance, so SSIM is the luminance term (2 mu_x mu_y + C1) / (mu_x^2 +
    # mu_y^2 + C1) with C1 = (0.01 * data range)^2, in every window (0.98361; with data range 255 it would be
    # 0.9986). MONAI's float32 Gaussian window leaves variances of ~1e-7 against C2 = 9e-4: 2e-4 tolerance.
    first, second = torch.full((1, SIZE, SIZE), 0.5), torch.full((1, SIZE, SIZE), 0.6)
    expected = (2 * 0.5 * 0.6 + 1e-4) / (0.5**2 + 0.6**2 + 1e-4)
    ssim = evaluate_metric("val_ssim", [{"pred": second[None], "label": first[None]}])
    assert ssim == pytest.approx(expected, abs=2e-4)
    assert in_mask_ssim(second, first, disc_mask()) == pytest.approx(expected, abs=2e-4)
    image = textured()
    assert in_mask_ssim(image, image, disc_mask()) == pytest.approx(1.0, abs=1e-6)


def test_a_pure_shift_inside_the_mask_changes_in_mask_psnr_and_not_the_background():
    reference, mask = textured(), disc_mask()
    shifted = torch.roll(reference, shifts=3, dims=-1)
    inside_only = torch.where(mask > 0.05, shifted, reference)  # the lesion region moved, nothing else
    assert in_mask_psnr(inside_only, reference, mask) < 15  # random texture moved: large error
    assert in_mask_psnr(reference, reference, mask) == pytest.approx(100.0)
    assert background_psnr(inside_only, reference, mask) == pytest.approx(100.0)  # the cap: untouched
    assert background_mae(inside_only, reference, mask) == 0.0
    # the same shift of the whole image does change the background
    assert background_psnr(shifted, reference, mask) < 15 and background_mae(shifted, reference, mask) > 0.1
    metric = BackgroundPSNR(threshold=0.05)
    metric.reset()
    metric.update((inside_only[None], reference[None], mask[None]))
    assert metric.compute() == pytest.approx(100.0)


def test_high_frequency_distance_of_hand_computable_images():
    rows, cols = torch.meshgrid(
        torch.arange(SIZE, dtype=torch.float64), torch.arange(SIZE, dtype=torch.float64), indexing="ij"
    )
    flat = torch.full((1, SIZE, SIZE), 0.5, dtype=torch.float64)
    checkerboard = 0.5 + 0.5 * (-1.0) ** (rows + cols)[None]  # all its AC energy at Nyquist (rho = 0.71)
    assert high_frequency_distance(checkerboard, flat) == pytest.approx(0.5, abs=1e-9)  # RMS of +-0.5
    slow = 0.5 + 0.3 * torch.cos(2 * math.pi * cols / 16)[None]  # 1/16 cycles per pixel, below the cutoff
    assert high_frequency_distance(slow, flat) == pytest.approx(0.0, abs=1e-9)


def test_high_frequency_distance_is_zero_for_identical_images_and_grows_with_blur():
    image = textured()[None]
    blur = torch.nn.functional.avg_pool2d(image, 3, stride=1, padding=1, count_include_pad=False)
    blurrier = torch.nn.functional.avg_pool2d(image, 5, stride=1, padding=2, count_include_pad=False)
    assert high_frequency_distance(image, image) == 0.0
    assert 0 < high_frequency_distance(blur, image) < high_frequency_distance(blurrier, image)
    metric = HighFrequencyDistance()
    metric.reset()
    metric.update((torch.cat([image, blur]), torch.cat([image, image])))
    assert metric.compute() == pytest.approx(high_frequency_distance(blur, image) / 2)
