"""The evaluation metrics against hand-computable cases, and configs/evaluate.json reporting them to JSON and
TensorBoard with the feature extractor named."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from ignite.engine import Engine
from monai.bundle import ConfigParser, ConfigWorkflow
from monai.metrics.fid import get_fid_score

from bundle.networks.medical_clip import MedicalClipEncoder
from bundle.metrics.distribution import (
    FrechetDistance,
    KernelInceptionDistance,
    TorchvisionFeatures,
    feature_extractor,
    frechet_distance,
    kernel_inception_distance,
    polynomial_mmd,
)
from bundle.errors import InputError
from bundle.metrics.image_quality import BackgroundPSNR, HighFrequencyDistance, background_mae, background_psnr, high_frequency_distance, in_mask_psnr, in_mask_ssim
from bundle.demo.dataset import generate_dataset
from tests.conftest import CONFIGS, REPO
from tests.tiny_bundle import TINY_SPATIAL_SIZE, make_tiny_models

SIZE = 32
# MONAI's FID calls scipy.linalg.sqrtm(..., disp=False), deprecated in SciPy 1.17
pytestmark = [pytest.mark.filterwarnings("ignore:The `disp` argument is deprecated"),
              pytest.mark.usefixtures("one_torch_thread")]


def features(n: int, d: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def textured(seed: int = 0, size: int = SIZE) -> torch.Tensor:
    """A (1, S, S) image in [0, 1] with detail at every scale."""
    return torch.rand(1, size, size, generator=torch.Generator().manual_seed(seed))


def disc_mask(size: int = SIZE, radius: float = 8.0) -> torch.Tensor:
    rows, cols = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    return (((rows - size / 2) ** 2 + (cols - size / 2) ** 2) <= radius**2).float()[None]


def run_workflow(config_files: list[str], **overrides) -> None:
    files = [str(CONFIGS / name) for name in config_files]
    flow = ConfigWorkflow(config_file=files, meta_file=str(CONFIGS / "metadata.json"), workflow_type="train",
                          logging_file=str(CONFIGS / "logging.conf"), bundle_root=str(REPO), **overrides)
    flow.initialize()
    assert flow.check_properties() in (None, [])  # MONAI's bundle property check
    flow.run()
    flow.finalize()


def evaluate_metric(name: str, batches: list) -> float:
    """One metric of configs/evaluate.json's evaluator, as the config builds it, over ``batches`` of
    ``{"pred", "label", "mask"}``."""
    parser = ConfigParser()
    parser.read_config([str(CONFIGS / "train.json"), str(CONFIGS / "evaluate.json")])
    parser.update({"bundle_root": str(REPO)})
    engine = Engine(lambda engine, batch: batch)
    parser.get_parsed_content(f"validate#additional_metrics#{name}").attach(engine, name)
    return float(engine.run(batches).metrics[name])


# ------------------------------------------------------------------------------------------------ FID / KID
def test_fid_of_hand_computable_sets():
    # two independent dimensions, each with values {0, 2} twice: mean 1, unbiased variance 4/3, no covariance
    a = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0], [2.0, 2.0]])
    assert frechet_distance(a, a + torch.tensor([3.0, 4.0])) == pytest.approx(25.0, abs=1e-6)  # |shift|^2
    # scaling by 2: means (1,1)->(2,2) gives 2; each std sqrt(4/3) -> 2 sqrt(4/3) gives (sqrt(4/3))^2 per dim
    assert frechet_distance(a, 2 * a) == pytest.approx(2.0 + 2 * 4.0 / 3.0, abs=1e-6)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)


def test_fid_is_zero_for_identical_sets_agrees_with_monai_and_grows_with_a_shift():
    real, other = features(300), features(300, seed=1)
    assert abs(frechet_distance(real, real)) < 1e-8
    assert frechet_distance(real, other) == pytest.approx(float(get_fid_score(other, real)), rel=1e-9)
    small, large = frechet_distance(real, real + 0.25), frechet_distance(real, real + 0.5)
    assert 0 < small < large
    assert large == pytest.approx(16 * 0.5**2, rel=1e-6)  # a pure shift only moves the mean


def test_kid_of_a_hand_computable_pair_of_sets():
    # k(x, y) = (x y + 1)^3 for d = 1: within X {0, 1}: k = 1; within Y {1, 2}: 27; across: 1, 1, 8, 27
    x, y = torch.tensor([[0.0], [1.0]]), torch.tensor([[1.0], [2.0]])
    assert polynomial_mmd(x, y) == pytest.approx(1.0 + 27.0 - 2 * 37.0 / 4)
    mean, std = kernel_inception_distance(x, y)
    assert mean == pytest.approx(9.5) and std == 0.0


def test_kid_is_about_zero_for_identical_sets_and_grows_with_a_shift():
    real = features(400)
    identical, _ = kernel_inception_distance(real, real)
    small, _ = kernel_inception_distance(real, real + 0.25)
    large, _ = kernel_inception_distance(real, real + 0.5)
    assert abs(identical) < 0.05 * large and 0 < small < large
    # subsets of a larger set: an average over draws, with a spread
    mean, std = kernel_inception_distance(real, features(400, seed=2), subsets=20, subset_size=100)
    assert abs(mean) < 0.05 * large and std > 0


def test_fid_and_kid_metrics_collect_the_epoch_and_report_the_kid_spread():
    images = torch.rand(12, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    batches = [(images[i:i + 4], images[i:i + 4]) for i in range(0, 12, 4)]
    extractor = feature_extractor(clip_encoder=MedicalClipEncoder.tiny(seed=0))
    engine = Engine(lambda engine, batch: batch)
    FrechetDistance(extractor).attach(engine, "fid")
    KernelInceptionDistance(extractor, subsets=5, subset_size=6).attach(engine, "kid")
    same = dict(engine.run(batches).metrics)
    assert abs(same["fid"]) < 1e-5 and abs(same["kid"]) < 1e-3 and same["kid_std"] >= 0
    darker = dict(engine.run([(pred * 0.5, label) for pred, label in batches]).metrics)
    assert darker["fid"] > 100 * max(abs(same["fid"]), 1e-6) and darker["kid"] > same["kid"]


def test_the_clip_feature_extractor_says_it_is_not_published_fid(tmp_path):
    clip = MedicalClipEncoder.tiny(seed=0)
    clip.save_local_dir(tmp_path / "clip")
    extractor = feature_extractor(clip_dir=tmp_path / "clip")
    assert "tiny random-initialised medical CLIP" in extractor.description
    assert str((tmp_path / "clip").resolve()) in extractor.description
    assert "not comparable to published FID" in extractor.description
    assert extractor(torch.rand(3, 1, SIZE, SIZE)).shape == (3, clip.embed_dim)


def test_a_local_inception_weight_file_is_loaded_as_tensors_only(tmp_path):
    import torchvision

    network = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False)
    weights = tmp_path / "inception_v3.pth"
    torch.save(network.state_dict(), weights)
    extractor = feature_extractor(weights=weights, architecture="inception_v3")
    assert isinstance(extractor, TorchvisionFeatures)
    assert "InceptionV3" in extractor.description and str(weights.resolve()) in extractor.description
    assert extractor(torch.rand(2, 1, SIZE, SIZE)).shape == (2, 2048)

    class Payload:  # pickled code: must never be run by loading weights
        def __reduce__(self):
            return (print, ("unpickled",))

    unsafe = tmp_path / "unsafe.pth"
    torch.save({"conv.weight": torch.zeros(1), "payload": Payload()}, unsafe)
    with pytest.raises(InputError, match="tensors only"):
        feature_extractor(weights=unsafe)
    wrong = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(1)}, wrong)
    with pytest.raises(InputError, match="not a torchvision inception_v3 state dict"):
        feature_extractor(weights=wrong)


# ------------------------------------------------------------------------------------------------ PSNR / SSIM
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


# ------------------------------------------------------------------------------------------------ HFD
def test_high_frequency_distance_of_hand_computable_images():
    rows, cols = torch.meshgrid(torch.arange(SIZE, dtype=torch.float64), torch.arange(SIZE, dtype=torch.float64),
                                indexing="ij")
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


# ------------------------------------------------------------------------------------------------ workflow
def test_evaluate_config_reports_every_metric_to_json_and_tensorboard(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    data = tmp_path / "data"
    generate_dataset(data, num_cases=8, seed=5)
    models = make_tiny_models(tmp_path / "models")
    output = tmp_path / "eval"
    run_workflow(["train.json", "evaluate.json"], dataset_dir=str(data), models_dir=str(models),
                 output_dir=str(output), spatial_size=TINY_SPATIAL_SIZE, slices_per_case=1, kid_subsets=10,
                 **{"validate#inferer#num_inference_steps": 2})
    report = json.loads((output / "metrics.json").read_text())
    names = {"val_in_mask_psnr", "val_in_mask_ssim", "val_psnr", "val_ssim", "val_background_psnr",
             "val_background_mae", "val_hf_distance", "val_fid", "val_kid", "val_kid_std"}
    assert names <= set(report["metrics"])
    assert all(isinstance(report["metrics"][n], float) for n in names)
    assert report["metrics"]["val_background_psnr"] > report["metrics"]["val_in_mask_psnr"]  # only M_b changes
    described = report["details"]["feature_extractor"]
    assert "tiny random-initialised medical CLIP" in described and "not comparable to published FID" in described
    assert Path(report["details"]["models_dir"]) == models.resolve()

    events = EventAccumulator(str(output), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"val_fid", "val_kid", "val_hf_distance", "val_background_psnr", "val_psnr"} <= scalars
    texts = [tag for tag in events.Tags()["tensors"] if "feature_extractor" in tag]
    assert texts, events.Tags()
    text = events.Tensors(texts[0])[0].tensor_proto.string_val[0].decode()
    assert text == described
