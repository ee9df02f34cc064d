"""Balancing with the quality filter: the filter is fitted on the training list's real lesion cases, every
synthetic case is judged (provenance and report.json), only passing cases are listed, more are synthesised until
the class is full, and a class that cannot be filled ends the CLI with exit status 3 and a clear message."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

from bundle.balancing.balanced_datalist import QUALITY_FILTER_NAME, balance_datalist
from bundle.data.datalist import load_datalist
from bundle.demo.dataset import generate_dataset
from bundle.metrics.quality_filter import FeatureSpaceFilter
from tests.helpers.paths import REPO
from tests.helpers.tiny_bundle import TINY_SPATIAL_SIZE, make_tiny_models

FAST = {
    "spatial_size": TINY_SPATIAL_SIZE,
    "num_inference_steps": 2,
    "slices_per_case": 1,
    "through_plane_max_slices": 1,
}
BENIGN = {"classes": ["benign"], "quality_k": 1, "overrides": FAST}  # 3 real benign training cases, 5 needed


@pytest.fixture(scope="module")
def setting(tmp_path_factory, one_torch_thread) -> dict:
    root = tmp_path_factory.mktemp("quality_balance")
    generate_dataset(root / "data", num_cases=16, seed=1)
    models = make_tiny_models(root / "models")
    fitted = root / "fitted"
    summary = balance_datalist(
        root / "data" / "datalist.json", fitted, models_dir=models, quality_filter="fit", max_attempts=1, **BENIGN
    )
    return {"root": root, "datalist": root / "data" / "datalist.json", "models": models, "fitted": (fitted, summary)}


def judged(output: Path) -> dict[str, dict]:
    """Every synthetic case on disk: its provenance record's quality decision, by case id."""
    records = [json.loads(p.read_text()) for p in (output / "synthetic").glob("*_synthetic.json")]
    return {r["case_id"]: r["quality"] for r in records}


def with_thresholds(setting: dict, name: str, threshold: float) -> Path:
    """The fitted filter with another benign threshold, saved under ``name``."""
    fitted = FeatureSpaceFilter.load(setting["fitted"][0] / QUALITY_FILTER_NAME)
    changed = FeatureSpaceFilter(fitted.reference, {"benign": threshold}, fitted.k, 0.5, fitted.feature_space)
    return changed.save(setting["root"] / name)


def test_the_fitted_filter_judges_every_case_and_only_passing_cases_are_listed(setting):
    output, summary = setting["fitted"]
    fitted = FeatureSpaceFilter.load(output / QUALITY_FILTER_NAME)
    assert fitted.classes == ["benign"] and fitted.k == 1 and fitted.quantile == 0.95
    (calibration,) = fitted.calibration["benign"].values()  # 3 real cases: 2 reference, 1 held out
    assert fitted.thresholds["benign"] == pytest.approx(calibration) and len(fitted.reference["benign"]) == 2
    decisions = judged(output)
    assert len(decisions) == 5 and summary["attempts"] == 1
    for decision in decisions.values():
        assert decision["passed"] == (decision["score"] <= fitted.thresholds["benign"])
        assert decision["threshold"] == fitted.thresholds["benign"] and decision["feature_space"]
    report = json.loads((output / "synthetic" / "report.json").read_text())
    assert {c["case_id"]: c["quality"] for c in report["written"]} == decisions
    passed = sorted(c for c, d in decisions.items() if d["passed"])
    listed = sorted(e["case_id"] for e in load_datalist(output / "datalist.json", "training") if e["synthetic"])
    assert listed == passed
    rates = summary["quality"]["per_class"]["benign"]
    assert rates == {"judged": 5, "passed": len(passed), "pass_rate": round(len(passed) / 5, 4)}
    assert summary["complete"] == (len(passed) == 5)


def test_balancing_keeps_synthesising_until_the_class_is_full_of_passing_cases(setting):
    scores = sorted(d["score"] for d in judged(setting["fitted"][0]).values())
    strict = with_thresholds(setting, "median.safetensors", scores[2])  # 3 of the first 5 pass
    output = setting["root"] / "until_full"
    summary = balance_datalist(
        setting["datalist"], output, models_dir=setting["models"], quality_filter=strict, max_attempts=8, **BENIGN
    )
    decisions = judged(output)
    first = {c: d for c, d in decisions.items() if not re.search(r"_a\d+$", c)}
    assert sorted(d["passed"] for d in first.values()) == [False, False, True, True, True]
    assert summary["complete"] and summary["attempts"] >= 2 and not summary["unfilled"]
    synthetic = [e for e in load_datalist(output / "datalist.json", "training") if e["synthetic"]]
    assert len(synthetic) == 5 and all(decisions[e["case_id"]]["passed"] for e in synthetic)
    assert sum(bool(re.search(r"_a\d+$", e["case_id"])) for e in synthetic) == 2  # from the later attempts
    rejected = sorted(c for c, d in decisions.items() if not d["passed"])
    assert sorted(summary["quality"]["rejected"]) == rejected and len(rejected) >= 2
    assert all((output / "synthetic" / f"{c}_synthetic.nii.gz").is_file() for c in rejected)  # kept, marked
    rates = summary["quality"]["per_class"]["benign"]
    assert rates["judged"] == len(decisions) and rates["passed"] == len(decisions) - len(rejected)


def test_a_class_that_cannot_be_filled_ends_the_script_with_status_3(setting, capsys):
    spec = importlib.util.spec_from_file_location("balance_script", REPO / "scripts" / "balance.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    output = setting["root"] / "unfillable"
    with pytest.raises(SystemExit) as stopped:
        script.main(
            str(setting["datalist"]),
            str(output),
            classes=["benign"],
            models_dir=str(setting["models"]),
            quality_filter=str(with_thresholds(setting, "none_pass.safetensors", -1.0)),
            max_attempts=2,
            **FAST,
        )
    assert stopped.value.code == 3
    error = capsys.readouterr().err
    assert "after 2 attempts" in error and "'benign' 5 short (0 of 10 synthetic cases passed)" in error
    content = json.loads((output / "datalist.json").read_text())
    assert not any(e["synthetic"] for e in content["training"]) and content["balancing"]["unfilled"] == {"benign": 5}
    assert len(judged(output)) == 10 and not any(d["passed"] for d in judged(output).values())


def test_too_few_real_cases_of_a_class_is_a_clear_error(setting, tmp_path):
    with pytest.raises(ValueError, match=r"at least 2 real cases .* \{'malignant': 1\}"):
        balance_datalist(
            setting["datalist"], tmp_path / "out", models_dir=setting["models"], quality_filter="fit", overrides=FAST
        )
    assert not (tmp_path / "out" / "datalist.json").exists()
