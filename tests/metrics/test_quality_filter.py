"""The feature-space quality filter: k-NN distances and thresholds against hand-computed numbers, the file round
trip, and on the phantom: unseen real lesion slices pass, noise and heavily blurred copies (8-pixel sigma) do not."""

from __future__ import annotations

import math

import pytest
import torch
from monai.transforms import GaussianSmooth

from bundle.data.datalist import load_datalist
from bundle.demo.dataset import generate_dataset
from bundle.errors import InputError
from bundle.metrics.distribution import feature_extractor
from bundle.metrics.quality_filter import (
    FeatureSpaceFilter,
    QualityCheck,
    calibration_split,
    case_features,
    knn_distance,
)
from bundle.networks.medical_clip import MedicalClipEncoder
from bundle.transforms.case_to_slices import case_to_slices, slice_grid

# class "a": reference slices (0,0), (3,0), (0,4); held-out cases h1, h2, h3
REFERENCE = {"a1": torch.tensor([[0.0, 0.0], [3.0, 0.0]]), "a2": torch.tensor([[0.0, 4.0]])}
HELD = {
    "h1": torch.tensor([[0.0, 0.0], [3.0, 4.0]]),
    "h2": torch.tensor([[6.0, 0.0]]),
    "h3": torch.tensor([[0.0, 1.0]]),
}


def hand_filter(quantile: float) -> FeatureSpaceFilter:
    return FeatureSpaceFilter.fit(
        {"a": {**REFERENCE, **HELD}}, k=2, quantile=quantile, feature_space="toy", held_out={"a": list(HELD)}
    )


def test_knn_distance_is_the_mean_distance_to_the_k_nearest_reference_rows():
    reference = torch.cat(list(REFERENCE.values()))
    # (0,0): distances 0, 3, 4 -> (0+3)/2; (3,4): 4, 5, 3 -> (3+4)/2; (6,0): 6, 3, sqrt(52) -> (3+6)/2
    got = knn_distance(torch.tensor([[0.0, 0.0], [3.0, 4.0], [6.0, 0.0]]), reference, k=2)
    assert got.tolist() == pytest.approx([1.5, 3.5, 4.5])
    assert knn_distance(torch.tensor([[0.0, 1.0]]), reference, k=1).tolist() == pytest.approx([1.0])
    with pytest.raises(ValueError, match="k must be"):
        knn_distance(reference, reference, k=4)


def test_threshold_is_the_quantile_of_the_held_out_case_scores():
    # case scores: h1 = mean(1.5, 3.5) = 2.5, h2 = 4.5, h3 = mean(1, sqrt(10))... k=2 -> (1 + 3)/2 = 2
    median, upper = hand_filter(0.5), hand_filter(0.75)
    assert median.calibration["a"] == pytest.approx({"h1": 2.5, "h2": 4.5, "h3": 2.0})
    assert median.thresholds["a"] == pytest.approx(2.5)
    assert upper.thresholds["a"] == pytest.approx(3.5)  # sorted 2, 2.5, 4.5: position 1.5 -> 2.5 + 0.5 * 2
    assert len(median.reference["a"]) == 3  # only the reference cases' slices
    # (3,3): distances 3 to (3,0), sqrt(10) to (0,4) -> (3 + 3.1623) / 2 = 3.0811
    synthetic = torch.tensor([[3.0, 3.0]])
    expected = (3 + math.sqrt(10)) / 2
    assert median.score("a", synthetic) == pytest.approx(expected)
    assert median.judge("a", synthetic)["passed"] is False
    decision = upper.judge("a", synthetic)
    assert decision == {
        "score": pytest.approx(expected),
        "threshold": pytest.approx(3.5),
        "passed": True,
        "k": 2,
        "quantile": 0.75,
        "feature_space": "toy",
    }


def test_the_split_is_seeded_by_class_and_too_few_cases_are_refused():
    ids = [f"c{i}" for i in range(10)]
    kept, held = calibration_split(ids, 0.3, seed=0, label="benign")
    assert len(held) == 3 and sorted(kept + held) == ids
    assert calibration_split(list(reversed(ids)), 0.3, seed=0, label="benign") == (kept, held)
    assert calibration_split(ids, 0.3, seed=1, label="benign") != (kept, held)
    assert [len(part) for part in calibration_split(["x", "y"], 0.9, 0, "a")] == [1, 1]  # one always kept
    with pytest.raises(ValueError, match="'malignant' has 1 real case"):
        calibration_split(["only"], 0.3, 0, "malignant")
    with pytest.raises(ValueError, match="fewer than k = 5"):
        FeatureSpaceFilter.fit({"a": {**REFERENCE, **HELD}}, k=5, held_out={"a": list(HELD)})


def test_save_and_load_round_trip(tmp_path):
    fitted = hand_filter(0.75)
    path = fitted.save(tmp_path / "filter.safetensors")
    loaded = FeatureSpaceFilter.load(path)
    assert loaded.thresholds == fitted.thresholds and loaded.k == 2 and loaded.quantile == 0.75
    assert loaded.feature_space == "toy" and loaded.calibration == fitted.calibration
    assert torch.equal(loaded.reference["a"], fitted.reference["a"])
    assert loaded.fingerprint() == fitted.fingerprint() != hand_filter(0.5).fingerprint()
    (tmp_path / "bad.safetensors").write_bytes(b"not a filter")
    with pytest.raises(InputError, match="bad.safetensors: not a quality-filter file"):
        FeatureSpaceFilter.load(tmp_path / "bad.safetensors")
    with pytest.raises(InputError, match="not found"):
        FeatureSpaceFilter.load(tmp_path / "missing.safetensors")


def test_a_check_refuses_another_feature_space_and_unknown_classes():
    extractor = feature_extractor(clip_encoder=MedicalClipEncoder.tiny(seed=0))
    with pytest.raises(ValueError, match="another feature space"):
        QualityCheck(hand_filter(0.5), extractor)
    toy = QualityCheck(hand_filter(0.5), FirstTwoPixels())
    # images are clamped to [0, 1]: (3, 3) is seen as (1, 1), distances sqrt(2) to (0,0) and sqrt(5) to (3,0)
    decision = toy(label="a", images=[torch.tensor([[[3.0, 3.0]]])])
    assert decision["score"] == pytest.approx((math.sqrt(2) + math.sqrt(5)) / 2) and decision["passed"] is True
    with pytest.raises(ValueError, match="label is 'fracture'"):
        toy("fracture", [torch.zeros(1, 1, 2)])


class FirstTwoPixels(torch.nn.Module):
    """Features of the toy space: an image's first two pixels."""

    description = "toy"

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images.flatten(1)[:, :2]


# ------------------------------------------------------------------------------------------------ the phantom
@pytest.fixture(scope="module")
def phantom(tmp_path_factory, one_torch_thread) -> dict:
    """A filter fitted on the phantom's training lesion cases; the test split's lesion cases are unseen."""
    data = tmp_path_factory.mktemp("phantom")
    generate_dataset(data, num_cases=40, seed=1)
    preprocessing = case_to_slices(slice_grid(48, 1.0, window_margin_mm=16.0), max_slices=3)
    extractor = feature_extractor(clip_encoder=MedicalClipEncoder.tiny(seed=0))
    lesion = [e for e in load_datalist(data / "datalist.json", "training") if e["label"] != "normal"]
    fitted = FeatureSpaceFilter.fit(
        case_features(lesion, preprocessing, extractor), k=3, quantile=0.95, feature_space=extractor.description
    )
    unseen = [e for e in load_datalist(data / "datalist.json", "test") if e["label"] != "normal"]
    images = {e["case_id"]: (e["label"], [torch.as_tensor(i["image"]) for i in preprocessing(dict(e))]) for e in unseen}
    return {"check": QualityCheck(fitted, extractor), "unseen": images}


def scores(phantom: dict, change) -> list[dict]:
    torch.manual_seed(0)
    return [phantom["check"](label, [change(s) for s in slices]) for label, slices in phantom["unseen"].values()]


def test_unseen_real_lesion_cases_pass_and_noise_and_blurred_copies_fail(phantom):
    real = scores(phantom, lambda s: s)
    noise = scores(phantom, torch.rand_like)
    blurred = scores(phantom, lambda s: torch.as_tensor(GaussianSmooth(8.0)(s)))
    print("real", [round(r["score"], 4) for r in real], "thresholds", phantom["check"].filter.thresholds)
    print("noise", [round(r["score"], 4) for r in noise], "blurred", [round(r["score"], 4) for r in blurred])
    assert len(real) >= 4 and all(r["passed"] for r in real)
    assert not any(r["passed"] for r in noise)
    assert not any(r["passed"] for r in blurred)
    assert min(r["score"] for r in blurred) > max(r["score"] for r in real)
