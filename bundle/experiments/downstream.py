"""The downstream experiment: does adding synthetic lesion cases help a classifier more than oversampling?

Steps (:func:`run_experiment`, driven by ``scripts/downstream.py``), each skipped when an earlier run finished
it (``WORK/done/<step>.json``, :mod:`bundle.experiments.runner`), so a killed run continues where it stopped:

1. data: an imbalanced training set (``train_cases``, the phantom's default fractions 60 / 25 / 15 %) and a
   separate class-balanced test set (``test_cases``), both generated at ``difficulty`` with different seeds;
   or a given ``--datalist``. The test cases are real (generated), never synthesised, never used for
   training, balancing or any choice of settings.
2. synthesis models: stage 1 (MSC) and stage 2 for the full method, without MSC (gamma = 0) and without SMIS
   (hard mask, unmasked loss), all on the training list with the same settings; or given models folders.
3. balancing (:func:`bundle.balancing.balanced_datalist.balance_datalist`, what ``scripts/balance.py`` runs): each
   disease class of the training list filled up to the normal count with synthetic cases of each of the three models.
4. classification (``configs/classify.json``): five arms x ``seeds``; every arm trains for the same number
   of optimiser steps (``classifier_epochs`` x ``samples_per_epoch`` / ``batch_size``) and is tested on the
   same real test list. A classifier run that fails is listed and the others go on; the experiment then ends
   with an error naming it (after the report of the finished runs).
5. report: ``docs/downstream.md`` (mean +- std over seeds, per-seed rows, the command, machine, time,
   settings) and ``docs/downstream.png``.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path

from bundle.experiments.runner import (
    Comparison,
    ExperimentError,
    Steps,
    cell,
    claim_work_dir,
    machine_description,
    number,
    preset_settings,
    run_config_workflow,
    seeded_runs,
    summarise,
)
from bundle.metrics.classification import METRIC_NAMES
from bundle.utils.bundle_files import BUNDLE_ROOT
from bundle.utils.files import write_json_atomically

logger = logging.getLogger(__name__)

CLASSES = ("normal", "benign", "malignant")

ARMS: dict[str, dict[str, str | None]] = {
    "real": {"title": "real only", "model": None, "sampling": "natural"},
    "oversampling": {"title": "real + class-balanced oversampling", "model": None, "sampling": "balanced"},
    "synthetic": {"title": "real + synthetic (full method)", "model": "full", "sampling": "natural"},
    "synthetic_no_msc": {"title": "real + synthetic, without MSC", "model": "no_msc", "sampling": "natural"},
    "synthetic_no_smis": {"title": "real + synthetic, without SMIS", "model": "no_smis", "sampling": "natural"},
}
"""The compared arms: the training list each uses (the real one, or the one balanced with a model's synthetic
cases) and how its slices are drawn."""

MODELS: dict[str, dict[str, object]] = {
    "full": {"configs": ["train.json"], "folder": "models", "inference": {}},
    "no_msc": {
        "configs": ["train.json", "ablation_no_msc.json"],
        "folder": "models_no_msc",
        "inference": {"msc_scale": 0.0},
    },
    "no_smis": {
        "configs": ["train.json", "ablation_no_smis.json"],
        "folder": "models_no_smis",
        "inference": {"soft_mask_sigma_mm": 0.0},
    },
}
"""The synthesis models: their training configs, folder under ``WORK``, and the inference settings that go with
them (no MSC samples with gamma 0, no SMIS with a hard mask, as each was trained)."""

METRIC_TITLES = {
    "auc": "AUC (macro OvR)",
    "accuracy": "accuracy",
    "precision": "precision (macro)",
    "recall": "recall (macro)",
    "f1": "F1 (macro)",
}

PRESETS: dict[str, dict[str, object]] = {
    # the pipeline end to end in about a minute: tests and smoke runs; the numbers mean nothing
    "quick": {
        "train_cases": 12,
        "test_cases": 6,
        "difficulty": 0.3,
        "msc_epochs": 1,
        "synthesis_epochs": 1,
        "synthesis_spatial_size": 32,
        "synthesis_slices": 1,
        "synthesis_batch_size": 4,
        "inference_steps": 2,
        "slices_per_case": 2,
        "classifier_epochs": 1,
        "samples_per_epoch": 8,
        "batch_size": 4,
        "classifier_spatial_size": 32,
        "resnet": "resnet10",
        "seeds": [0],
    },
    # sized for about 45 minutes on a 2-core CPU (measured: 47.4 min, docs/downstream_experiment.md)
    "default": {
        "train_cases": 60,
        "test_cases": 90,
        "difficulty": 0.3,
        "msc_epochs": 20,
        "synthesis_epochs": 20,
        "synthesis_spatial_size": 48,
        "synthesis_slices": 2,
        "synthesis_batch_size": 8,
        "inference_steps": 20,
        "slices_per_case": 4,
        "classifier_epochs": 20,
        "samples_per_epoch": 96,
        "batch_size": 8,
        "classifier_spatial_size": 48,
        "resnet": "resnet10",
        "seeds": [0, 1, 2],
    },
    # a GPU: more cases, longer training, the full sampler, a larger classifier, 5 seeds
    "gpu": {
        "train_cases": 200,
        "test_cases": 300,
        "difficulty": 0.3,
        "msc_epochs": 40,
        "synthesis_epochs": 200,
        "synthesis_spatial_size": 64,
        "synthesis_slices": 3,
        "synthesis_batch_size": 32,
        "inference_steps": 50,
        "slices_per_case": 4,
        "classifier_epochs": 60,
        "samples_per_epoch": 512,
        "batch_size": 32,
        "classifier_spatial_size": 64,
        "resnet": "resnet18",
        "seeds": [0, 1, 2, 3, 4],
    },
}
COMMON = {"data_seed": 1, "balance_seed": 0, "learning_rate": 0.001}


def settings_for(preset: str = "default", **overrides) -> dict[str, object]:
    """A preset's settings with ``overrides`` (any key of the preset or :data:`COMMON`)."""
    return preset_settings(PRESETS, COMMON, preset, overrides)


def make_data(data_dir: Path, settings: Mapping) -> Path:
    """The imbalanced training set and a separate balanced test set, in one datalist (paths relative)."""
    from bundle.data.datalist import load_datalist
    from bundle.demo.dataset import DEFAULT_CLASS_FRACTIONS, generate_dataset

    seed, difficulty = int(settings["data_seed"]), float(settings["difficulty"])
    train = generate_dataset(
        data_dir / "train", int(settings["train_cases"]), seed, difficulty=difficulty, test_fraction=0.0
    )
    test_seed = seed + 1000
    generate_dataset(
        data_dir / "test",
        int(settings["test_cases"]),
        test_seed,
        difficulty=difficulty,
        test_fraction=0.0,
        class_fractions=[1, 1, 1],
    )

    def entries(folder: str) -> list[dict]:
        loaded = load_datalist(data_dir / folder / "datalist.json", "training")
        for entry in loaded:
            entry["case_id"] = f"{folder}_{entry['case_id']}"
            for key in ("image", "vertebra_seg", "lesion_seg"):
                entry[key] = os.path.relpath(entry[key], data_dir)
        return loaded

    datalist = {key: value for key, value in train.items() if not isinstance(value, list)}
    datalist.update(
        {
            "description": (
                f"Downstream experiment data: {settings['train_cases']} imbalanced training cases "
                f"(phantom seed {seed}) and {settings['test_cases']} class-balanced test cases (seed "
                f"{test_seed}), difficulty {difficulty}; generated, never synthesised."
            ),
            "seed": seed,
            "test_seed": test_seed,
            "test_class_fractions": [1 / 3] * 3,
            "class_fractions": dict(DEFAULT_CLASS_FRACTIONS),
            "training": entries("train"),
            "test": entries("test"),
        }
    )
    return write_json_atomically(data_dir / "datalist.json", datalist)


def train_stage1(datalist: Path, models_dir: Path, runs_dir: Path, settings: Mapping) -> dict:
    overrides = {
        "datalist": str(datalist),
        "models_dir": str(models_dir),
        "output_dir": str(runs_dir / "msc"),
        "max_epochs": int(settings["msc_epochs"]),
        "val_interval": int(settings["msc_epochs"]),
        "spatial_size": int(settings["synthesis_spatial_size"]),
        "slices_per_case": int(settings["synthesis_slices"]),
    }
    run_config_workflow(["train_msc.json"], overrides)
    return {"config": ["configs/train_msc.json"], "overrides": overrides}


def train_stage2(
    model: str, datalist: Path, models_dir: Path, stage1_dir: Path, runs_dir: Path, settings: Mapping
) -> dict:
    overrides = {
        "datalist": str(datalist),
        "models_dir": str(models_dir),
        "stage1_dir": str(stage1_dir),
        "output_dir": str(runs_dir / model),
        "max_epochs": int(settings["synthesis_epochs"]),
        "val_interval": int(settings["synthesis_epochs"]),
        "spatial_size": int(settings["synthesis_spatial_size"]),
        "slices_per_case": int(settings["synthesis_slices"]),
        "batch_size": int(settings["synthesis_batch_size"]),
        "val_inference_steps": int(settings["inference_steps"]),
    }
    configs = list(MODELS[model]["configs"])
    run_config_workflow(configs, overrides)
    return {"config": [f"configs/{name}" for name in configs], "overrides": overrides}


def balance(
    model: str, datalist: Path, output_dir: Path, models_dir: Path, stage1_dir: Path, settings: Mapping
) -> dict:
    from bundle.balancing.balanced_datalist import balance_datalist

    overrides = {
        "num_inference_steps": int(settings["inference_steps"]),
        "slices_per_case": int(settings["slices_per_case"]),
        "spatial_size": int(settings["synthesis_spatial_size"]),
        "stage1_dir": str(stage1_dir),
        **MODELS[model]["inference"],
    }
    summary = balance_datalist(
        datalist,
        output_dir,
        target="normal",
        seed=int(settings["balance_seed"]),
        models_dir=models_dir,
        bundle_root=BUNDLE_ROOT,
        overrides=overrides,
    )
    if not summary["complete"]:
        raise RuntimeError(
            f"balancing with the {model} model left {len(summary['missing'])} cases unwritten; "
            f"see {output_dir / summary['synthesis_report']}; run again to retry them"
        )
    return {
        "overrides": overrides,
        "counts_real": summary["counts_real"],
        "counts_after": summary["counts_after"],
        "synthetic_listed": summary["synthetic_listed"],
    }


def classify(arm: str, seed: int, datalist: Path, output_dir: Path, cache_dir: Path, settings: Mapping) -> dict:
    overrides = classify_overrides(arm, seed, datalist, output_dir, cache_dir, settings)
    run_config_workflow(["classify.json"], overrides)
    metrics = json.loads((output_dir / "metrics.json").read_text())
    return {"overrides": overrides, **{name: metrics[name] for name in METRIC_NAMES}}


def classify_overrides(
    arm: str, seed: int, datalist: Path, output_dir: Path, cache_dir: Path, settings: Mapping
) -> dict[str, object]:
    return {
        "datalist": str(datalist),
        "output_dir": str(output_dir),
        "cache_dir": str(cache_dir),
        "seed": int(seed),
        "sampling": ARMS[arm]["sampling"],
        "max_epochs": int(settings["classifier_epochs"]),
        "samples_per_epoch": int(settings["samples_per_epoch"]),
        "batch_size": int(settings["batch_size"]),
        "learning_rate": float(settings["learning_rate"]),
        "spatial_size": int(settings["classifier_spatial_size"]),
        "slices_per_case": int(settings["slices_per_case"]),
        "resnet": str(settings["resnet"]),
    }


def finished_run(metrics_path: Path, epochs: int) -> bool:
    """Whether ``metrics_path`` is the test report of a finished classifier run (written after its last
    epoch; a run stopped earlier is redone)."""
    try:
        return json.loads(metrics_path.read_text()).get("epoch") == epochs
    except (OSError, ValueError):
        return False


def run_experiment(
    work_dir: str | os.PathLike,
    settings: Mapping,
    datalist: str | os.PathLike | None = None,
    models_dirs: Mapping[str, str | os.PathLike | None] | None = None,
    stage1_dir: str | os.PathLike | None = None,
    docs_dir: str | os.PathLike | None = None,
    command: str = "",
    arms: Sequence[str] = tuple(ARMS),
    report_name: str = "downstream",
) -> dict:
    """Every step of the comparison (each skipped when done), then the report ``docs_dir/<report_name>.md``;
    returns the results. ``arms`` may differ between runs in one ``work_dir``: each step depends only on the
    settings, so a later run with more arms reuses the steps an earlier one finished."""
    work_dir = Path(work_dir).absolute()
    work_dir.mkdir(parents=True, exist_ok=True)
    unknown = sorted(set(arms) - set(ARMS))
    if unknown:
        raise ExperimentError(f"unknown arms {unknown}; known: {list(ARMS)}")
    given, folders = model_folders(work_dir, models_dirs)
    record = {
        "settings": dict(settings),
        "datalist": str(Path(datalist).absolute()) if datalist else None,
        "models_dirs": given,
        "stage1_dir": str(Path(stage1_dir).absolute()) if stage1_dir else None,
    }
    claim_work_dir(work_dir, record)
    steps = Steps(work_dir)

    if datalist is None:
        datalist = work_dir / "data" / "datalist.json"
        steps.run("data", lambda: {"datalist": str(make_data(work_dir / "data", settings))})
    datalist = Path(datalist).absolute()

    needed = {ARMS[arm]["model"] for arm in arms} - {None}
    stage1 = Path(stage1_dir).absolute() if stage1_dir else folders["full"]
    runs = work_dir / "runs"
    if needed - set(given) and not stage1_dir and "full" not in given:
        steps.run("stage1", lambda: train_stage1(datalist, stage1, runs, settings))
    for model in sorted(needed - set(given)):
        steps.run(f"stage2_{model}", lambda m=model: train_stage2(m, datalist, folders[m], stage1, runs, settings))
    balanced = {}
    for model in sorted(needed):
        balanced[model] = work_dir / "balanced" / model
        steps.run(f"balance_{model}", lambda m=model: balance(m, datalist, balanced[m], folders[m], stage1, settings))

    def output(arm: str, seed: int) -> Path:
        return work_dir / "classify" / arm / f"seed_{seed}"

    def arm_datalist(arm: str) -> Path:
        model = ARMS[arm]["model"]
        return datalist if model is None else balanced[model] / "datalist.json"

    results, failures = seeded_runs(
        steps,
        arms,
        settings["seeds"],
        run=lambda a, s: classify(a, s, arm_datalist(a), output(a, s), work_dir / "cache", settings),
        result=lambda a, s: json.loads((output(a, s) / "metrics.json").read_text()),
        finished=lambda a, s: finished_run(output(a, s) / "metrics.json", int(settings["classifier_epochs"])),
        prefix="classify",
    )
    if docs_dir is not None and results:
        context = report_context(work_dir, settings, datalist, folders, given, command, steps.seconds())
        write_report(results, Path(docs_dir), context, report_name)
    if failures:
        raise ExperimentError(
            f"{len(failures)} classifier run(s) failed ({'; '.join(f'{k}: {v}' for k, v in failures.items())}); "
            f"the others are kept: run the same command again to retry them (errors in {steps.failed_folder})"
        )
    return results


def model_folders(
    work_dir: Path, models_dirs: Mapping[str, str | os.PathLike | None] | None
) -> tuple[dict[str, str], dict[str, Path]]:
    """The given models folders (absolute) and every model's folder: given, or the one trained in ``work_dir``."""
    given = {k: str(Path(v).absolute()) for k, v in (models_dirs or {}).items() if v}
    return given, {m: Path(given[m]) if m in given else work_dir / str(MODELS[m]["folder"]) for m in MODELS}


# ------------------------------------------------------------------------------------------------ report
def rewrite_report(
    work_dir: str | os.PathLike,
    settings: Mapping,
    docs_dir: str | os.PathLike,
    datalist: str | os.PathLike | None = None,
    models_dirs: Mapping[str, str | os.PathLike | None] | None = None,
    command: str = "",
    arms: Sequence[str] = tuple(ARMS),
    report_name: str = "downstream",
) -> tuple[Path, Path]:
    """The report of the classifier runs ``work_dir`` finished (what :func:`run_experiment` writes at its end)."""
    work_dir = Path(work_dir).absolute()
    results = collect_results(work_dir, arms, settings["seeds"])
    if not results:
        raise ExperimentError(f"no finished classifier runs under {work_dir / 'classify'}")
    given, folders = model_folders(work_dir, models_dirs)
    context = report_context(
        work_dir,
        settings,
        Path(datalist or work_dir / "data" / "datalist.json").absolute(),
        folders,
        given,
        command,
        Steps(work_dir).seconds(),
    )
    return write_report(results, Path(docs_dir), context, report_name)


def collect_results(work_dir: str | os.PathLike, arms: Sequence[str], seeds: Sequence[int]) -> dict:
    """``{arm: {seed: metrics.json content}}`` of finished runs under ``work_dir/classify``."""
    results: dict[str, dict[int, dict]] = {}
    for arm in arms:
        for seed in seeds:
            path = Path(work_dir) / "classify" / arm / f"seed_{seed}" / "metrics.json"
            if path.is_file():
                results.setdefault(arm, {})[int(seed)] = json.loads(path.read_text())
    return results


def verdicts(summary: Mapping[str, Mapping[str, tuple[float, float]]]) -> list[str]:
    """The paper's claims checked on macro F1: the full method *clearly* above real only and oversampling (the
    difference of the means larger than the larger of the two standard deviations), each ablation below it
    (marked *within the seed spread* when the difference is not larger than that)."""
    lines = []
    if "synthetic" not in summary:
        return ["The full method was not run; no comparison."]
    full, full_sd = summary["synthetic"]["f1"]
    outcomes = []
    for other, clearly in (
        ("real", True),
        ("oversampling", True),
        ("synthetic_no_msc", False),
        ("synthetic_no_smis", False),
    ):
        if other not in summary:
            continue
        value, sd = summary[other]["f1"]
        comparison = Comparison.of((full, full_sd), (value, sd))
        if clearly:
            holds = comparison.clearly_above
            claim = f"Full method clearly above {ARMS[other]['title']}"
        else:
            holds = comparison.above
            title = str(ARMS[other]["title"])
            claim = f"{title[0].upper()}{title[1:]} below the full method"
        outcomes.append(holds)
        spread = "; within the seed spread" if not clearly and comparison.within_spread else ""
        lines.append(
            f"- {claim}: **{'yes' if holds else 'no'}** (macro F1 {full:.3f} ± {full_sd:.3f} for the "
            f"full method vs {value:.3f} ± {sd:.3f}, difference {comparison.difference:+.3f}{spread})."
        )
    if not outcomes:
        return ["Only the full method was run; no comparison."]
    overall = (
        "The measured numbers **show** the paper's result on this data."
        if all(outcomes)
        else "The measured numbers **do not show** the paper's result on this data (see the lines above "
        "for which part fails)."
    )
    return [*lines, "", overall]


def report_context(
    work_dir: Path,
    settings: Mapping,
    datalist: Path,
    folders: Mapping[str, Path],
    given: Mapping[str, str],
    command: str,
    seconds: Mapping[str, float],
) -> dict:
    return {
        "command": command,
        "work_dir": str(work_dir),
        "datalist": str(datalist),
        "settings": dict(settings),
        "models": {m: f"`{f}` ({'given' if m in given else 'trained here'})" for m, f in folders.items()},
        "machine": machine_description(),
        "seconds": dict(seconds),
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _stage_times(seconds: Mapping[str, float]) -> list[str]:
    groups: dict[str, float] = {}
    for name, value in seconds.items():
        group = (
            "classifier runs"
            if name.startswith("classify_")
            else "synthesis models (stage 1 + 2)"
            if name.startswith("stage")
            else "balancing (synthesis)"
            if name.startswith("balance_")
            else name
        )
        groups[group] = groups.get(group, 0.0) + float(value)
    order = ["data", "synthesis models (stage 1 + 2)", "balancing (synthesis)", "classifier runs"]
    ranked = sorted(groups.items(), key=lambda kv: (order.index(kv[0]) if kv[0] in order else len(order), kv[0]))
    lines = [f"| {group} | {value / 60:.1f} |" for group, value in ranked]
    total = sum(groups.values())
    return ["| stage | minutes |", "| --- | ---: |", *lines, f"| **total** | **{total / 60:.1f}** |"]


def write_report(
    results: Mapping[str, Mapping[int, Mapping]], docs_dir: Path, context: Mapping, name: str = "downstream"
) -> tuple[Path, Path]:
    """``docs_dir/<name>.md`` (tables, verdicts, command, machine, time, settings) and ``<name>.png``."""
    docs_dir.mkdir(parents=True, exist_ok=True)
    summary = summarise(results, METRIC_NAMES)
    figure = plot_results(summary, docs_dir / f"{name}.png")
    arms = [arm for arm in ARMS if arm in results] + [arm for arm in results if arm not in ARMS]
    seeds = sorted({seed for runs in results.values() for seed in runs})
    title = {arm: ARMS.get(arm, {}).get("title", arm) for arm in arms}
    first = next(iter(next(iter(results.values())).values())) if results else {}
    lines = [
        "# Downstream experiment: real vs oversampled vs synthetic-balanced training data",
        "",
        (
            f"*Written by `scripts/downstream.py` on {context.get('created_utc', '')}; do not edit by hand — rerun "
            "the command below. Design and arms: [downstream_experiment.md](downstream_experiment.md).*"
        ),
        "",
        "```bash",
        context.get("command", ""),
        "```",
        "",
        (
            f"Test set: {first.get('test_cases', '?')} real cases ({_counts(first.get('test_counts', {}))}), "
            f"never synthesised; {len(seeds)} classifier seed(s) per arm ({', '.join(map(str, seeds))}). Metrics are "
            "case-level (mean softmax over a case's slices); precision, recall and F1 are macro averages; AUC is the "
            "macro one-vs-rest ROC AUC. Mean ± sample standard deviation over the seeds."
        ),
        "",
        "## Results",
        "",
        "| arm | training cases (real + synthetic) | " + " | ".join(METRIC_TITLES[m] for m in METRIC_NAMES) + " |",
        "| --- | --- | " + " | ".join("---:" for _ in METRIC_NAMES) + " |",
    ]
    for arm in arms:
        runs = results[arm]
        counts = next(iter(runs.values())).get("training_counts", {})
        lines.append(
            f"| {title[arm]} | {_training_counts(counts)} | "
            + " | ".join(cell(*summary[arm][m]) for m in METRIC_NAMES)
            + " |"
        )
    lines += [
        "",
        f"![downstream results]({figure.name})",
        "",
        "## Verdict (macro F1)",
        "",
        *verdicts(summary),
        "",
        "## Every run",
        "",
        "| arm | seed | " + " | ".join(METRIC_TITLES[m] for m in METRIC_NAMES) + " |",
        "| --- | ---: | " + " | ".join("---:" for _ in METRIC_NAMES) + " |",
    ]
    for arm in arms:
        for seed in sorted(results[arm]):
            run = results[arm][seed]
            lines.append(f"| {title[arm]} | {seed} | " + " | ".join(number(run.get(m)) for m in METRIC_NAMES) + " |")
    lines += [
        "",
        "## Machine and time",
        "",
        f"Machine: {context.get('machine', '?')}.",
        "",
        *_stage_times(context.get("seconds", {})),
        "",
        "Times are those of the run that finished each step (a resumed run reuses finished steps).",
        "",
        "## Settings",
        "",
        "```json",
        json.dumps(context.get("settings", {}), indent=2, sort_keys=True),
        "```",
        "",
        f"Datalist: `{context.get('datalist', '')}`; work folder: `{context.get('work_dir', '')}`.",
        "",
        "Synthesis models:",
        "",
    ]
    lines += [f"- {model}: {folder}" for model, folder in context.get("models", {}).items()]
    lines.append("")
    path = docs_dir / f"{name}.md"
    path.write_text("\n".join(lines))
    return path, figure


def _counts(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{name} {counts[name]}" for name in CLASSES if name in counts) or "?"


def _training_counts(counts: Mapping[str, Mapping[str, int]]) -> str:
    parts = []
    for name in [c for c in CLASSES if c in counts] + [c for c in counts if c not in CLASSES]:
        real, synthetic = counts[name].get("real", 0), counts[name].get("synthetic", 0)
        parts.append(f"{name} {real}" + (f" + {synthetic}" if synthetic else ""))
    return ", ".join(parts)


def plot_results(summary: Mapping[str, Mapping[str, tuple[float, float]]], path: Path) -> Path:
    """Grouped bars: one group per metric, one bar per arm, error bars one standard deviation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    arms = [arm for arm in ARMS if arm in summary] + [arm for arm in summary if arm not in ARMS]
    width = 0.8 / max(len(arms), 1)
    positions = np.arange(len(METRIC_NAMES))
    figure, axes = plt.subplots(figsize=(10, 4.8))
    for index, arm in enumerate(arms):
        means = [summary[arm][m][0] for m in METRIC_NAMES]
        stds = [summary[arm][m][1] for m in METRIC_NAMES]
        axes.bar(
            positions + (index - (len(arms) - 1) / 2) * width,
            np.nan_to_num(means),
            width,
            yerr=np.nan_to_num(stds),
            capsize=3,
            label=ARMS.get(arm, {}).get("title", arm),
        )
    axes.set_xticks(positions, [METRIC_TITLES[m] for m in METRIC_NAMES])
    axes.set_ylim(0, 1.05)
    axes.set_ylabel("test value (mean ± std over seeds)")
    axes.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=3, frameon=False)
    axes.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def command_line(arguments: Sequence[str]) -> str:
    """The command as typed: ``python scripts/downstream.py`` and the arguments, shell-quoted."""
    return " ".join(["python scripts/downstream.py", *(shlex.quote(a) for a in arguments)])
