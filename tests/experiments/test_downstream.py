"""The downstream experiment: configs/classify.json on a plain and on a balanced datalist, the report writer, and
scripts/downstream.py end to end with its smallest preset (and resuming it)."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from bundle.data.datalist import load_datalist
from bundle.experiments.downstream import (
    ARMS,
    ExperimentError,
    settings_for,
    verdicts,
    write_report,
)
from bundle.metrics.classification import (
    METRIC_NAMES,
)
from tests.helpers.paths import CONFIGS, REPO
from tests.helpers.workflows import bundle_run, run_workflow

CLASSES = ["normal", "benign", "malignant"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
TINY_CLASSIFIER = {
    "max_epochs": 1,
    "batch_size": 4,
    "spatial_size": 32,
    "slices_per_case": 2,
    "resnet": "resnet10",
    "samples_per_epoch": 8,
}


# ------------------------------------------------------------------------------------------------ metrics


# ------------------------------------------------------------------------------------------------ data


# ------------------------------------------------------------------------------------------------ the workflow
def check_metrics(path: Path, datalist: Path) -> dict:
    metrics = json.loads(path.read_text())
    test = load_datalist(datalist, "test")
    training = load_datalist(datalist, "training")
    for name in METRIC_NAMES:
        assert metrics[name] is None or 0.0 <= metrics[name] <= 1.0, name
    assert metrics["test_cases"] == len(test) == len(metrics["predictions"])
    assert metrics["test_counts"] == dict(Counter(e["label"] for e in test)) | {
        c: 0 for c in CLASSES if c not in {e["label"] for e in test}
    }
    for label in CLASSES:
        counts = metrics["training_counts"][label]
        assert counts["real"] == sum(e["label"] == label and not e.get("synthetic") for e in training)
        assert counts["synthetic"] == sum(e["label"] == label and bool(e.get("synthetic")) for e in training)
    assert sum(map(sum, metrics["confusion_matrix"])) == len(test)
    assert metrics["details"]["datalist_sha256"] and metrics["epoch"] == 1
    return metrics


def test_classify_config_on_a_plain_demo_datalist(demo_data, tmp_path):
    flow = run_workflow(
        ["classify.json"], "train", dataset_dir=str(demo_data), output_dir=str(tmp_path), **TINY_CLASSIFIER
    )
    assert flow.check_properties() in (None, [])
    trainer = flow.parser.get_parsed_content("train#trainer")
    assert trainer.state.epoch == 1 and trainer.state.iteration == 2  # 8 cases a epoch, 4 a batch
    metrics = check_metrics(tmp_path / "metrics.json", demo_data / "datalist.json")
    assert metrics["training_counts"]["normal"]["synthetic"] == 0
    evaluator = flow.parser.get_parsed_content("validate#evaluator")
    assert evaluator.state.metrics["test_f1"] == pytest.approx(metrics["f1"])


# ------------------------------------------------------------------------------------------------ report
def results_with_f1(f1: dict[str, list[float]]) -> dict:
    results = {}
    for arm, values in f1.items():
        for seed, value in enumerate(values):
            results.setdefault(arm, {})[seed] = {
                "auc": 0.7,
                "accuracy": 0.6,
                "precision": 0.5,
                "recall": 0.55,
                "f1": value,
                "test_cases": 9,
                "test_counts": {"normal": 3, "benign": 3, "malignant": 3},
                "training_counts": {
                    "normal": {"real": 6, "synthetic": 0},
                    "benign": {"real": 2, "synthetic": 4 if arm.startswith("synthetic") else 0},
                    "malignant": {"real": 1, "synthetic": 5 if arm.startswith("synthetic") else 0},
                },
            }
    return results


def test_report_lists_every_arm_and_seed_with_mean_and_std(tmp_path):
    f1 = {
        "real": [0.40, 0.42, 0.44],
        "oversampling": [0.45, 0.46, 0.47],
        "synthetic": [0.5, 0.6, 0.7],
        "synthetic_no_msc": [0.50, 0.52, 0.54],
        "synthetic_no_smis": [0.48, 0.50, 0.52],
    }
    context = {
        "command": "python scripts/downstream.py --preset default",
        "machine": "test machine",
        "seconds": {"data": 60.0, "stage2_full": 120.0, "classify_real_seed0": 30.0},
        "settings": {"x": 1},
    }
    markdown, figure = write_report(results_with_f1(f1), tmp_path, context)
    text = markdown.read_text()
    assert figure.is_file() and figure.stat().st_size > 1000
    for arm, values in f1.items():
        title = ARMS[arm]["title"]
        assert sum(line.startswith(f"| {title} | ") for line in text.splitlines()) == 1 + len(values)
        for seed, value in enumerate(values):
            assert f"| {title} | {seed} | 0.700 | 0.600 | 0.500 | 0.550 | {value:.3f} |" in text
    assert "| real + synthetic (full method) | normal 6, benign 2 + 4, malignant 1 + 5 |" in text
    assert "0.600 ± 0.100" in text  # the full method's F1 over its three seeds
    assert "python scripts/downstream.py --preset default" in text and "test machine" in text
    assert "| **total** | **3.5** |" in text
    # 0.6 - 0.42 = 0.18 > 0.1; 0.6 - 0.46 = 0.14 > 0.1; both ablations below
    assert "**show** the paper's result" in text and "**no**" not in text


def test_verdict_says_plainly_when_the_claim_fails():
    summary = {
        "real": {"f1": (0.50, 0.05)},
        "oversampling": {"f1": (0.55, 0.02)},
        "synthetic": {"f1": (0.58, 0.04)},
        "synthetic_no_msc": {"f1": (0.60, 0.01)},
        "synthetic_no_smis": {"f1": (0.40, 0.01)},
    }
    lines = verdicts(summary)
    assert lines[0].startswith("- Full method clearly above real only: **yes**")
    assert lines[1].startswith("- Full method clearly above real + class-balanced oversampling: **no**")  # 0.03 < 0.04
    assert lines[2].startswith("- Real + synthetic, without MSC below the full method: **no**")
    assert lines[3].startswith("- Real + synthetic, without SMIS below the full method: **yes**")
    assert lines[2].endswith("within the seed spread).")  # |0.58 - 0.60| <= 0.04
    assert "spread" not in lines[3] and "spread" not in lines[0]  # 0.18 > 0.04; a "clearly" claim has its own test
    assert "**do not show**" in lines[-1]


def test_verdict_without_a_second_arm_claims_nothing():
    assert verdicts({"synthetic": {"f1": (0.6, 0.04)}}) == ["Only the full method was run; no comparison."]
    assert verdicts({"real": {"f1": (0.6, 0.04)}}) == ["The full method was not run; no comparison."]


def test_presets_and_overrides():
    settings = settings_for("default", difficulty=0.4, seeds=[3, 4, 5, 6])
    assert settings["difficulty"] == 0.4 and settings["seeds"] == [3, 4, 5, 6] and len(settings["seeds"]) >= 3
    assert len(settings_for("default")["seeds"]) >= 3
    with pytest.raises(ExperimentError, match="unknown settings"):
        settings_for("default", difficulty_level=0.4)
    with pytest.raises(ExperimentError, match="preset must be"):
        settings_for("huge")


# ------------------------------------------------------------------------------------------------ end to end
def downstream(*arguments: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "downstream.py"), *arguments],
        cwd=REPO,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if check:
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result


@pytest.fixture(scope="module")
def experiment(tmp_path_factory) -> dict:
    """scripts/downstream.py --preset quick: data, three synthesis models, balancing, five arms, the report."""
    root = tmp_path_factory.mktemp("downstream")
    arguments = [
        "--preset",
        "quick",
        "--work_dir",
        str(root / "work"),
        "--docs_dir",
        str(root / "docs"),
        "--threads",
        "1",
        "--seeds",
        "[0,1]",
    ]
    first = downstream(*arguments)
    return {"root": root, "work": root / "work", "docs": root / "docs", "arguments": arguments, "first": first}


def test_downstream_runs_every_step_and_reports_every_arm_and_seed(experiment):
    work, docs = experiment["work"], experiment["docs"]
    steps = {path.stem for path in (work / "done").glob("*.json")}
    assert {
        "data",
        "stage1",
        "stage2_full",
        "stage2_no_msc",
        "stage2_no_smis",
        "balance_full",
        "balance_no_msc",
        "balance_no_smis",
    } <= steps
    datalist = work / "data" / "datalist.json"
    test_ids = {e["case_id"] for e in load_datalist(datalist, "test")}
    for arm, spec in ARMS.items():
        for seed in (0, 1):
            assert f"classify_{arm}_seed{seed}" in steps
            metrics = json.loads((work / "classify" / arm / f"seed_{seed}" / "metrics.json").read_text())
            assert {p["case_id"] for p in metrics["predictions"]} == test_ids  # the same real test cases
            synthetic = sum(c["synthetic"] for c in metrics["training_counts"].values())
            assert (synthetic > 0) == (spec["model"] is not None)
            assert metrics["details"]["sampling"] == spec["sampling"]
    text = (docs / "downstream.md").read_text()
    for spec in ARMS.values():
        assert sum(line.startswith(f"| {spec['title']} | ") for line in text.splitlines()) == 3  # mean + 2 seeds
    assert shlex.join(experiment["arguments"]) in text and (docs / "downstream.png").is_file()
    # each model samples as it was trained: no MSC with gamma 0, no SMIS with a hard mask
    records = {}
    for model in ("full", "no_msc", "no_smis"):
        folder = work / "balanced" / model
        case = json.loads((folder / "synthesis_requests.json").read_text())["test"][0]["case_id"]
        records[model] = json.loads((folder / "synthetic" / f"{case}_synthetic.json").read_text())
        assert records[model]["models_dir"] == str(work / ("models" if model == "full" else f"models_{model}"))
    assert [records[m]["msc_scale"] for m in ("full", "no_msc", "no_smis")] == [1.0, 0.0, 1.0]
    assert [records[m]["mask_source"]["sigma_mm"] for m in ("full", "no_msc", "no_smis")] == [3.0, 3.0, 0.0]


def test_balance_output_datalist_loads_in_classify_unchanged(experiment, tmp_path):
    balanced = experiment["work"] / "balanced" / "full" / "datalist.json"
    content = json.loads(balanced.read_text())
    assert any(e.get("synthetic") for e in content["training"])
    bundle_run(
        "--config_file",
        str(CONFIGS / "classify.json"),
        "--datalist",
        str(balanced),
        "--output_dir",
        str(tmp_path),
        *[f"--{k}={v}" for k, v in TINY_CLASSIFIER.items()],
    )
    metrics = check_metrics(tmp_path / "metrics.json", balanced)
    after = content["balancing"]["counts_after"]
    assert {c: n["real"] + n["synthetic"] for c, n in metrics["training_counts"].items()} == after
    assert metrics["training_counts"]["normal"]["synthetic"] == 0
    assert metrics["training_counts"]["malignant"]["synthetic"] > 0


def test_downstream_resumes_without_redoing_and_refuses_other_settings(experiment):
    work = experiment["work"]
    before = {path.name: path.stat().st_mtime_ns for path in (work / "done").glob("*.json")}
    metrics = work / "classify" / "real" / "seed_1" / "metrics.json"
    metrics.unlink()  # as if the run had been killed before its test
    again = downstream(*experiment["arguments"])
    after = {path.name: path.stat().st_mtime_ns for path in (work / "done").glob("*.json")}
    assert metrics.is_file()
    assert {name for name in before if after[name] != before[name]} == {"classify_real_seed1.json"}
    assert "already done" in again.stderr
    subset = downstream(*experiment["arguments"], "--arms", "[real,synthetic]", "--report_name", "two_arms")
    assert "running" not in subset.stderr  # fewer arms reuse every finished step
    report = (experiment["docs"] / "two_arms.md").read_text()
    assert "| real only | 0 |" in report and "without MSC" not in report
    downstream(*experiment["arguments"], "--report_only", "--report_name", "rewritten")
    rewritten, original = (experiment["docs"] / name for name in ("rewritten.md", "downstream.md"))
    assert "--report_only" not in rewritten.read_text()

    def results(path):
        return path.read_text().split("## Results")[1].split("## Machine")[0].replace("rewritten.png", "downstream.png")

    assert results(rewritten) == results(original)
    refused = downstream(*experiment["arguments"], "--difficulty", "0.9", check=False)
    assert refused.returncode != 0 and "holds a run with other settings" in refused.stderr
