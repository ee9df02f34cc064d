"""FID and KID against hand-computable cases, and their feature extractors (named, read as tensors only)."""

from __future__ import annotations

import pytest
import torch
from ignite.engine import Engine
from monai.metrics.fid import get_fid_score

from bundle.errors import InputError
from bundle.metrics.distribution import (
    FrechetDistance,
    KernelInceptionDistance,
    TorchvisionFeatures,
    feature_extractor,
    frechet_distance,
    kernel_inception_distance,
    polynomial_mmd,
)
from bundle.networks.medical_clip import MedicalClipEncoder

SIZE = 32
# MONAI's FID calls scipy.linalg.sqrtm(..., disp=False), deprecated in SciPy 1.17
pytestmark = [
    pytest.mark.filterwarnings("ignore:The `disp` argument is deprecated"),
    pytest.mark.usefixtures("one_torch_thread"),
]


def features(n: int, d: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


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
    batches = [(images[i : i + 4], images[i : i + 4]) for i in range(0, 12, 4)]
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


# ------------------------------------------------------------------------------------------------ HFD


# ------------------------------------------------------------------------------------------------ workflow
