"""MedDiff-FT's segmentation experiment (issue 16, "Evidence"): do image-mask pairs made from K real lesion cases make
a segmenter (``configs/segment.json``) better than those K cases alone?

Steps (:func:`run_experiment`, driven by ``python -m bundle.experiments.meddiffft_segmentation``), each skipped when an
earlier run finished it (``WORK/done/<step>.json``, :mod:`bundle.experiments.runner`):

1. synthesis models, once (synthesis seed ``synthesis_seed``): the stand-in foundation on the training split's normal
   slices, the fine-tuning on the first K lesion cases of the training split, and the fine-tuning from a random UNet
   (the "no foundation" ablation); the bundle's own configs with the preset's epochs.
2. pairs, one folder per pair arm (:data:`PAIR_ARMS`): ``configs/meddiffft_pairs.json`` with the ablation override of
   the arm, and the copy-paste baseline (``configs/meddiffft_copy_paste.json``). The hosts, the real masks, the shape
   model and each model's quality filter are built once and shared by the arms (the same draws in every arm).
3. component checks M2-M5 (:mod:`bundle.metrics.meddiffft_checks`) on the training split only.
4. segmentation: every arm of :data:`ARMS` x ``seeds``, the same optimiser-step budget (``seg_epochs`` x
   ``seg_samples_per_epoch`` / ``seg_batch_size``), tested on the datalist's test list, which nothing else reads:
   Dice and HD95 on the test slices that hold a lesion, the false-positive rate on the slices of the normal test cases.
5. report: the section between :data:`BEGIN` and :data:`END` of ``docs/meddiffft.md`` (rewritten, never edited by
   hand).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shlex
import sys
import time
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
    seeded_runs,
    summarise,
)
from bundle.utils.bundle_files import BUNDLE_ROOT, CONFIGS_DIR
from bundle.utils.files import write_json_atomically

logger = logging.getLogger(__name__)

PAIR_ARMS: dict[str, dict[str, object]] = {
    "meddiffft": {"configs": [], "model": "full"},
    "static_guide": {"configs": ["meddiffft_ablation_static_guide.json"], "model": "full"},
    "real_masks": {"configs": ["meddiffft_ablation_real_masks.json"], "model": "full"},
    "no_filter": {"configs": ["meddiffft_ablation_no_filter.json"], "model": "full"},
    "no_erosion": {"configs": ["meddiffft_ablation_no_erosion.json"], "model": "full"},
    "no_foundation": {"configs": ["meddiffft_ablation_no_foundation.json"], "model": "no_foundation"},
    "copy_paste": {"configs": ["meddiffft_copy_paste.json"], "model": None},
}
"""The pair jobs: ``configs/meddiffft_pairs.json`` plus these overrides, painted by which fine-tuned model (copy-paste
needs none)."""

ARMS: dict[str, dict[str, object]] = {
    "k_real": {"title": "K real lesion cases", "lesions": "k", "pairs": None, "augment": False},
    "augmentation": {"title": "K real + standard augmentation", "lesions": "k", "pairs": None, "augment": True},
    "copy_paste": {"title": "K real + copy-paste of real lesions", "lesions": "k", "pairs": "copy_paste"},
    "meddiffft": {"title": "K real + MedDiff-FT pairs (full)", "lesions": "k", "pairs": "meddiffft"},
    "static_guide": {"title": "ablation: static guide", "lesions": "k", "pairs": "static_guide"},
    "real_masks": {"title": "ablation: real masks re-placed", "lesions": "k", "pairs": "real_masks"},
    "no_filter": {"title": "ablation: no quality filter", "lesions": "k", "pairs": "no_filter"},
    "no_erosion": {"title": "ablation: no erosion", "lesions": "k", "pairs": "no_erosion"},
    "no_foundation": {"title": "ablation: no stand-in foundation", "lesions": "k", "pairs": "no_foundation"},
    "all_real": {"title": "all real lesion cases (upper reference)", "lesions": "all", "pairs": None},
}
"""The segmentation arms: which real lesion cases (the first K of the training split, or all of them) join the
training split's normal cases, which pair folder's synthetic cases are added, and whether the training slices are
augmented (``configs/segment_augmentation.json``)."""

PRESETS: dict[str, dict[str, object]] = {
    # fewer epochs, pairs and sampler steps than the demo: the run measured in docs/meddiffft.md
    "quick": {
        "pretrain_epochs": 6,
        "finetune_epochs": 20,
        "num_pairs": 32,
        "sample_steps": 10,
        "shape_steps": 150,
        "seg_epochs": 25,
        "seg_samples_per_epoch": 320,
        "seg_batch_size": 8,
        "check_samples": 100,
        "check_pairs": 12,
        "seeds": [0, 1, 2],
    },
    # the demo's synthesis settings (make meddiffft-demo) with more pairs and a longer segmenter training; estimated
    # from the demo's stage times and the quick run at about 80 min on a quiet 2-core CPU (not run in this version)
    "default": {
        "pretrain_epochs": 10,
        "finetune_epochs": 30,
        "num_pairs": 64,
        "sample_steps": 50,
        "shape_steps": 300,
        "seg_epochs": 50,
        "seg_samples_per_epoch": 320,
        "seg_batch_size": 8,
        "check_samples": 200,
        "check_pairs": 16,
        "seeds": [0, 1, 2],
    },
}
COMMON = {"real_lesion_cases": 8, "synthesis_seed": 0, "validation_fraction": 0.15}

BEGIN = "<!-- meddiffft-experiment:begin (written by python -m bundle.experiments.meddiffft_segmentation) -->"
END = "<!-- meddiffft-experiment:end -->"
CHECKS = ("check_m2", "check_m3", "check_m4", "check_m5")
METRICS = ("dice", "hd95_mm", "fp_rate", "detected")
METRIC_TITLES = {
    "dice": "Dice (lesion slices)",
    "hd95_mm": "HD95 mm (lesion slices found)",
    "fp_rate": "FP rate (normal slices)",
    "detected": "lesion slices found",
}


def settings_for(preset: str = "quick", **overrides) -> dict[str, object]:
    """A preset's settings with ``overrides`` (any key of the preset or :data:`COMMON`; ``None`` keeps the preset's)."""
    settings = preset_settings(PRESETS, COMMON, preset, overrides)
    if len(settings["seeds"]) < 2:
        raise ExperimentError("the verdict needs a seed spread: give at least 2 seeds")
    return settings


# ------------------------------------------------------------------------------------------------ configs
def parse_config(files: Sequence[str], overrides: Mapping[str, object]):
    """A ``monai.bundle.ConfigParser`` of the bundle's config ``files`` (read in order) with ``overrides`` (ids as in
    ``monai.bundle run``; a value may be a built object, which the config then uses as it is)."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(CONFIGS_DIR / name) for name in files])
    parser.update({"bundle_root": str(BUNDLE_ROOT), **overrides})
    return parser


def run_config(parser) -> None:
    """What ``monai.bundle run`` does with a parsed config: its ``initialize`` then its ``run`` expressions."""
    parser.get_parsed_content("initialize")
    parser.get_parsed_content("run")


def segmentation_budget(settings: Mapping) -> dict[str, int]:
    """The segment config's training settings of every arm (one optimiser-step budget for all)."""
    return {
        "max_epochs": int(settings["seg_epochs"]),
        "samples_per_epoch": int(settings["seg_samples_per_epoch"]),
        "batch_size": int(settings["seg_batch_size"]),
    }


def optimizer_steps(settings: Mapping) -> int:
    budget = segmentation_budget(settings)
    return budget["max_epochs"] * math.ceil(budget["samples_per_epoch"] / budget["batch_size"])


# ------------------------------------------------------------------------------------------------ data of the arms
def split_cases(datalist: str | os.PathLike, settings: Mapping) -> dict[str, list[dict]]:
    """The training split the pair job uses (the same call), cut into ``normal``, the ``k`` first lesion cases and
    ``all`` its lesion cases; and the ``test`` list (read for the segmenter's test only)."""
    from bundle.data.classification_slices import load_test
    from bundle.data.splits import training_split

    split = training_split(
        str(datalist), "training", float(settings["validation_fraction"]), int(settings["synthesis_seed"])
    )
    lesions = [e for e in split if e["label"] != "normal"]
    k = int(settings["real_lesion_cases"])
    if len(lesions) <= k:
        raise ExperimentError(f"the training split has {len(lesions)} lesion cases; K = {k} must be fewer")
    return {
        "normal": [e for e in split if e["label"] == "normal"],
        "k": lesions[:k],
        "all": lesions,
        "held_out_lesions": lesions[k:],
        "test": load_test(datalist),
    }


def synthetic_entries(pair_datalist: str | os.PathLike) -> list[dict]:
    """The written pairs (``synthetic: true`` entries) of a pair job's datalist, paths absolute."""
    from bundle.data.datalist import load_datalist

    return [e for e in load_datalist(pair_datalist, "training") if e.get("synthetic")]


def arm_datalist(arm: str, cases: Mapping[str, Sequence[Mapping]], synthetic: Sequence[Mapping]) -> dict:
    """The datalist of one arm: the normal cases, the arm's real lesion cases, then its synthetic cases; the test
    list as it is."""
    spec = ARMS[arm]
    if spec.get("pairs") is None and synthetic:
        raise ExperimentError(f"arm {arm} trains on real cases only, but synthetic cases were given")
    training = [*cases["normal"], *cases[str(spec["lesions"])], *synthetic]
    test_ids = {str(e["case_id"]) for e in cases["test"]}
    leaked = sorted(str(e.get("case_id")) for e in training if str(e.get("case_id")) in test_ids)
    leaked += sorted(str(e.get("host_case")) for e in synthetic if str(e.get("host_case")) in test_ids)
    if leaked:
        raise ExperimentError(f"arm {arm}: test cases {leaked[:5]} would be trained on")
    return {"training": [dict(e) for e in training], "test": [dict(e) for e in cases["test"]]}


# ------------------------------------------------------------------------------------------------ verdict
def verdict(full: tuple[float, float], baseline: tuple[float, float], minimum: float = 0.01) -> dict[str, object]:
    """The paper's claim on Dice: the full method's mean beats the baseline's by more than ``max(minimum, the larger
    of the two seed standard deviations)``."""
    comparison = Comparison.of(full, baseline)
    margin = max(float(minimum), comparison.spread)
    return {
        "difference": comparison.difference,
        "margin": margin,
        "met": comparison.difference > margin,
    }


# ------------------------------------------------------------------------------------------------ experiment
class Experiment:
    """One work folder's run (see the module docstring)."""

    def __init__(self, work_dir: Path, datalist: Path, settings: Mapping, command: str = "") -> None:
        self.work_dir, self.datalist, self.settings, self.command = work_dir, datalist, dict(settings), command
        self.steps = Steps(work_dir)
        self.cases = split_cases(datalist, settings)
        self.shared: dict[str, object] = {}  # built pair-job objects shared by the arms (hosts, shape model, filters)
        self.models = {
            "foundation": work_dir / "models" / "meddiffft_foundation",
            "full": work_dir / "models" / "meddiffft",
            "no_foundation": work_dir / "models" / "meddiffft_no_foundation",
        }

    # ---- synthesis models
    def train_models(self) -> None:
        common = {"datalist": str(self.datalist), "seed": int(self.settings["synthesis_seed"])}
        stages = {
            "pretrain": (["meddiffft_pretrain.json"], "foundation", self.settings["pretrain_epochs"]),
            "finetune": (["meddiffft_pretrain.json", "meddiffft_finetune.json"], "full", None),
            "finetune_no_foundation": (
                ["meddiffft_pretrain.json", "meddiffft_finetune.json", "meddiffft_ablation_no_foundation.json"],
                "no_foundation",
                None,
            ),
        }
        for name, (files, model, epochs) in stages.items():
            overrides = {
                **common,
                "model_dir": str(self.models[model]),
                "output_dir": str(self.work_dir / "runs" / name),
                "cache_dir": str(self.work_dir / "cache" / name),
                "max_epochs": int(epochs or self.settings["finetune_epochs"]),
            }
            if name != "pretrain":
                overrides.update(
                    foundation_dir=str(self.models["foundation"]),
                    real_lesion_cases=int(self.settings["real_lesion_cases"]),
                )
            self.steps.run(name, lambda f=files, o=overrides: self._train(f, o))

    @staticmethod
    def _train(files: Sequence[str], overrides: Mapping) -> dict:
        parser = parse_config(files, overrides)
        run_config(parser)
        trainer = parser.get_parsed_content("train#trainer")
        return {"iterations": int(trainer.state.iteration), "model_dir": overrides["model_dir"]}

    # ---- pairs
    def pairs_dir(self, arm: str) -> Path:
        return self.work_dir / "pairs" / arm

    def pair_parser(self, arm: str):
        spec = PAIR_ARMS[arm]
        overrides: dict[str, object] = {
            "datalist": str(self.datalist),
            "base_datalist": str(self.datalist),
            "pairs_dir": str(self.pairs_dir(arm)),
            "seed": int(self.settings["synthesis_seed"]),
            "validation_fraction": float(self.settings["validation_fraction"]),
            "real_lesion_cases": int(self.settings["real_lesion_cases"]),
            "num_pairs": int(self.settings["num_pairs"]),
            "num_inference_steps": int(self.settings["sample_steps"]),
            "shape_steps": int(self.settings["shape_steps"]),
            "gallery": None,
        }
        if spec["model"] is not None:
            overrides["model_dir"] = str(self.models[str(spec["model"])])
        for key in ("hosts", "real_masks", "shape_model"):
            if key in self.shared:
                overrides[key] = self.shared[key]
        if f"quality_filter:{spec['model']}" in self.shared:
            overrides["quality_filter"] = self.shared[f"quality_filter:{spec['model']}"]
        return parse_config(["meddiffft_pairs.json", *spec["configs"]], overrides)

    def harvest(self, parser, arm: str) -> None:
        """Keep the objects this arm built for the next arms (the same for each)."""
        resolved = parser.ref_resolver.resolved_content
        spec = PAIR_ARMS[arm]
        for key in ("hosts", "shape_model"):
            if key in resolved and key not in self.shared:
                self.shared[key] = resolved[key]
        if "real_masks" in resolved and "real_masks" not in self.shared and arm != "copy_paste":
            self.shared["real_masks"] = resolved["real_masks"]
        if spec["model"] is not None and "quality_filter" in resolved:
            self.shared.setdefault(f"quality_filter:{spec['model']}", resolved["quality_filter"])

    def make_pairs(self, arm: str) -> dict:
        parser = self.pair_parser(arm)
        run_config(parser)
        self.harvest(parser, arm)
        datalist = self.pairs_dir(arm) / "datalist.json"
        content = json.loads(datalist.read_text())
        report = json.loads((self.pairs_dir(arm) / "report.json").read_text())
        return {
            "written": len(synthetic_entries(datalist)),
            "requested": int(self.settings["num_pairs"]),
            "dropped": len(content.get("pairs", {}).get("dropped", [])),
            "rejected": len(report.get("rejected", [])),
            "failed": len(report.get("failed", [])),
        }

    # ---- component checks
    def checks(self) -> None:
        from bundle.metrics import meddiffft_checks as checks

        def parsed(*keys: str) -> list:
            parser = self.pair_parser("meddiffft")
            values = [parser.get_parsed_content(key) for key in keys]
            self.harvest(parser, "meddiffft")
            return values

        def m2() -> dict:
            sampler, real_masks = parsed("mask_sampler", "real_masks")
            return checks.mask_generator_check(sampler, real_masks[0], int(self.settings["check_samples"]))

        def m3() -> dict:
            pairs, predictor, schedule = parsed("pairs", "predictor", "guide_schedule")
            count = int(self.settings["check_pairs"])
            items = [item for request in pairs.requests[:count] for item in checks.pair_items(pairs, request)]
            return checks.guide_check(items, predictor(items), schedule, int(self.settings["sample_steps"]))

        def m5() -> dict:
            (erosion_mm,) = parsed("erosion_mm")
            return self.erosion_figures(float(erosion_mm))

        def m4() -> dict:
            from bundle.engines.meddiffft_pairs import real_lesion_slices

            check, preprocessing = parsed("quality_check", "lesion_preprocessing")
            images = real_lesion_slices(self.cases["held_out_lesions"], preprocessing)[0]
            return checks.filter_check(check, images, int(self.settings["synthesis_seed"]))

        for name, check in (("check_m2", m2), ("check_m3", m3), ("check_m4", m4), ("check_m5", m5)):
            self.steps.run(name, check)

    def erosion_figures(self, erosion_mm: float) -> dict:
        """M5 on the written pairs: each pair of the full arm (its label eroded by ``erosion_mm``) against the same
        pair of the no-erosion arm (the same draw and seed: its label as drawn), the change the full arm's volume
        makes to its host; and the same with the drawn label eroded by one native pixel within its slice."""
        import nibabel as nib
        import torch

        from bundle.metrics import meddiffft_checks as checks

        def pairs(arm: str) -> dict[str, dict]:
            entries = synthetic_entries(self.pairs_dir(arm) / "datalist.json")
            return {str(e["case_id"]): e for e in entries}

        full, drawn = pairs("meddiffft"), pairs("no_erosion")
        hosts = {str(e["case_id"]): e for e in self.cases["normal"]}
        written, one_pixel = [], []
        for case_id in sorted(set(full) & set(drawn)):
            volume = nib.load(full[case_id]["image"])
            host = nib.load(hosts[str(full[case_id]["host_case"])]["image"]).get_fdata()
            change = torch.as_tensor(abs(volume.get_fdata() - host))
            label = torch.as_tensor(nib.load(drawn[case_id]["lesion_seg"]).get_fdata())
            zooms = [float(z) for z in volume.header.get_zooms()[:3]]
            written.append((change, label, torch.as_tensor(nib.load(full[case_id]["lesion_seg"]).get_fdata())))
            pixel = max(sorted(zooms)[:2])
            one_pixel.append((change, label, checks.in_plane_erosion(label, zooms, pixel)))
        return {
            f"M5 (written labels, {erosion_mm:g} mm)": checks.erosion_check(written),
            "M5 (drawn labels eroded by one native pixel in-plane)": checks.erosion_check(one_pixel),
        }

    # ---- segmentation
    def segment_dir(self, arm: str, seed: int) -> Path:
        return self.work_dir / "segment" / arm / f"seed_{seed}"

    def write_arm_datalists(self) -> dict[str, Path]:
        paths = {}
        for arm, spec in ARMS.items():
            pairs = spec.get("pairs")
            synthetic = synthetic_entries(self.pairs_dir(str(pairs)) / "datalist.json") if pairs else []
            paths[arm] = self.work_dir / "datalists" / f"{arm}.json"
            paths[arm].parent.mkdir(parents=True, exist_ok=True)
            write_json_atomically(paths[arm], arm_datalist(arm, self.cases, synthetic))
        return paths

    def segment(self, arm: str, seed: int, datalist: Path) -> dict:
        import torch

        from bundle.metrics.segmentation import evaluate_segmenter

        files = ["segment.json", *(["segment_augmentation.json"] if ARMS[arm].get("augment") else [])]
        output = self.segment_dir(arm, seed)
        parser = parse_config(
            files,
            {
                "datalist": str(datalist),
                "output_dir": str(output),
                "cache_dir": str(self.work_dir / "cache" / "segment"),
                "seed": int(seed),
                "train#handlers": [],
                **segmentation_budget(self.settings),
            },
        )
        start = time.monotonic()
        run_config(parser)
        trainer = parser.get_parsed_content("train#trainer")
        network = parser.get_parsed_content("network")
        test = parser.get_parsed_content("validate#dataset")
        normal = {str(e["case_id"]) for e in self.cases["test"] if e["label"] == "normal"}
        with torch.no_grad():
            metrics = evaluate_segmenter(network, test, normal, float(parser.get_parsed_content("pixdim_mm")))
        output.mkdir(parents=True, exist_ok=True)
        record = {
            **metrics,
            "iterations": int(trainer.state.iteration),
            "training": parser.get_parsed_content("train#dataset").counts(),
            "seconds": round(time.monotonic() - start, 1),
        }
        write_json_atomically(output / "metrics.json", record)
        logger.info("segment %s seed %d: Dice %.3f, FP rate %.3f", arm, seed, record["dice"], record["fp_rate"])
        return record

    def run(self, arms: Sequence[str], docs: Path | None) -> dict:
        started = time.monotonic()
        self.train_models()
        for arm in PAIR_ARMS:
            if arm in arms or arm in ("meddiffft", "no_erosion"):  # the checks read these two
                self.steps.run(f"pairs_{arm}", lambda a=arm: self.make_pairs(a))
        self.checks()
        paths = self.steps.run("datalists", lambda: {k: str(v) for k, v in self.write_arm_datalists().items()})
        datalists = {arm: Path(p) for arm, p in paths["details"].items()}
        results, failures = seeded_runs(
            self.steps,
            arms,
            self.settings["seeds"],
            run=lambda a, s: self.segment(a, s, datalists[a]),
            result=lambda a, s: json.loads((self.segment_dir(a, s) / "metrics.json").read_text()),
            finished=lambda a, s: (self.segment_dir(a, s) / "metrics.json").is_file(),
            prefix="segment",
        )
        wall = time.monotonic() - started
        if docs is not None and results:
            write_report(docs, self.report(results, wall))
        if failures:
            raise ExperimentError(f"{len(failures)} segmentation run(s) failed: {failures}")
        return results

    def report(self, results: Mapping, wall_seconds: float) -> dict:
        return {
            "results": results,
            "pairs": {a: (self.steps.done(f"pairs_{a}") or {}).get("details") for a in PAIR_ARMS},
            "checks": {name: (self.steps.done(name) or {}).get("details") for name in CHECKS},
            "seconds": self.steps.seconds(),
            "wall_seconds": wall_seconds,
            "settings": self.settings,
            "command": self.command,
            "cases": {k: len(v) for k, v in self.cases.items()},
            "optimizer_steps": optimizer_steps(self.settings),
            "machine": machine_description(),
            "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }


def run_experiment(
    work_dir: str | os.PathLike,
    settings: Mapping,
    datalist: str | os.PathLike,
    arms: Sequence[str] = tuple(ARMS),
    docs: str | os.PathLike | None = None,
    command: str = "",
) -> dict:
    """Every step (module docstring); the report into ``docs`` (a markdown file) when given."""
    unknown = sorted(set(arms) - set(ARMS))
    if unknown:
        raise ExperimentError(f"unknown arms {unknown}; known: {list(ARMS)}")
    work_dir, datalist = Path(work_dir).absolute(), Path(datalist).absolute()
    claim_work_dir(work_dir, {"settings": dict(settings), "datalist": str(datalist)})
    experiment = Experiment(work_dir, datalist, settings, command)
    return experiment.run(arms, Path(docs) if docs else None)


# ------------------------------------------------------------------------------------------------ report
def report_lines(context: Mapping) -> list[str]:
    """The docs section (without its markers)."""
    results = context["results"]
    summary = summarise(results, METRICS)
    arms = [arm for arm in ARMS if arm in results]
    settings = context["settings"]
    lines = [
        "## Segmentation experiment (measured)",
        "",
        f"*Written by the command below on {context['created_utc']} (preset `{settings['preset']}`); do not edit by "
        "hand, rerun it.*",
        "",
        "```bash",
        context["command"],
        "```",
        "",
        f"Wall time of this invocation: {context['wall_seconds'] / 60:.1f} min; the steps' own times (below, from the "
        f"invocation that ran each: a rerun of the same work folder reuses finished steps) sum to "
        f"{sum(context['seconds'].values()) / 60:.1f} min. Machine: {context['machine']}.",
        "",
        f"Data: the training split (validation fraction {settings['validation_fraction']}, seed "
        f"{settings['synthesis_seed']}): {context['cases']['normal']} normal cases, {context['cases']['all']} lesion "
        f"cases of which the first K = {settings['real_lesion_cases']} are the real few-shot cases (the only lesion "
        "cases the synthesis sees); the test list "
        f"({context['cases']['test']} cases) is read by the segmenter's test only. Every arm trains "
        f"`configs/segment.json` for {context['optimizer_steps']} optimiser steps ({settings['seg_epochs']} epochs x "
        f"{settings['seg_samples_per_epoch']} slices, batch {settings['seg_batch_size']}); seeds "
        f"{', '.join(map(str, settings['seeds']))} are the segmenter's (the synthesis models and pairs are made once, "
        f"seed {settings['synthesis_seed']}). Dice: mean over the test slices that hold a lesion (an empty prediction "
        "counts 0); HD95 (mm): mean over those slices where the segmenter found something; FP rate: the share of the "
        "normal test cases' slices with any predicted lesion pixel. Mean ± sample standard deviation over the seeds.",
        "",
        "| arm | training cases (real + synthetic) | " + " | ".join(METRIC_TITLES[m] for m in METRICS) + " |",
        "| --- | --- | " + " | ".join("---:" for _ in METRICS) + " |",
    ]
    for arm in arms:
        counts = next(iter(results[arm].values())).get("training", {})
        real, synthetic = counts.get("real_cases", "?"), counts.get("synthetic_cases", 0)
        lines.append(
            f"| {ARMS[arm]['title']} | {real} + {synthetic} | "
            + " | ".join(cell(*summary[arm][m]) for m in METRICS)
            + " |"
        )
    lines += ["", "### Verdict", ""]
    if "meddiffft" in summary and "k_real" in summary:
        outcome = verdict(summary["meddiffft"]["dice"], summary["k_real"]["dice"])
        lines.append(
            f"The paper's claim (+1 % Dice) on the phantom: full MedDiff-FT pairs vs K real cases, Dice difference "
            f"**{outcome['difference']:+.3f}**, needed more than {outcome['margin']:.3f} (max of 0.01 and the larger "
            f"seed standard deviation): **{'met' if outcome['met'] else 'not met'}**."
        )
        for other in ("copy_paste", "augmentation", *[a for a in PAIR_ARMS if a not in ("meddiffft", "copy_paste")]):
            if other in summary:
                diff = summary["meddiffft"]["dice"][0] - summary[other]["dice"][0]
                lines.append(f"- full method minus {ARMS[other]['title']}: Dice {diff:+.3f}")
    else:
        lines.append("The full method or the K-real arm was not run: no verdict.")
    lines += [
        "",
        "### Pairs per arm",
        "",
        "| pair arm | requested | written | rejected by the filter | failed |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for arm, record in context["pairs"].items():
        if record:
            lines.append(
                f"| {arm} | {record['requested']} | {record['written']} | {record['rejected']} | {record['failed']} |"
            )
    lines += [
        "",
        "### Component checks",
        "",
        *check_lines(context["checks"]),
        "",
        "### Every run",
        "",
        "| arm | seed | " + " | ".join(METRIC_TITLES[m] for m in METRICS) + " | steps | seconds |",
        "| --- | ---: | " + " | ".join("---:" for _ in METRICS) + " | ---: | ---: |",
    ]
    for arm in arms:
        for seed, run in sorted(results[arm].items()):
            lines.append(
                f"| {arm} | {seed} | "
                + " | ".join(number(run.get(m)) for m in METRICS)
                + f" | {run.get('iterations')} | {run.get('seconds')} |"
            )
    lines += ["", "### Step times", "", "| step | seconds |", "| --- | ---: |"]
    lines += [f"| {name} | {seconds:.0f} |" for name, seconds in context["seconds"].items()]
    lines += ["", "Settings:", "", "```json", json.dumps(settings, indent=2, sort_keys=True), "```"]
    return lines


def check_lines(checks: Mapping[str, Mapping | None]) -> list[str]:
    """One line per component check: its figures and whether it passed."""
    from bundle.metrics.meddiffft_checks import describe

    lines = []
    for name in CHECKS:
        record = checks.get(name)
        if not record:
            lines.append(f"- {name}: not run")
            continue
        parts = record.items() if name == "check_m5" else [(name.split("_")[1].upper(), record)]
        lines += [f"- {describe(label, figures)}" for label, figures in parts]
    return lines


def write_report(path: Path, context: Mapping) -> Path:
    """Replace the section between :data:`BEGIN` and :data:`END` of ``path`` (appended when absent)."""
    section = "\n".join([BEGIN, *report_lines(context), END])
    text = path.read_text() if path.is_file() else ""
    if BEGIN in text and END in text:
        text = text[: text.index(BEGIN)] + section + text[text.index(END) + len(END) :]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work_dir", default="runs/meddiffft_experiment", help="work folder (resumable)")
    parser.add_argument("--datalist", default="demo/data/datalist.json", help="the phantom's datalist")
    parser.add_argument("--preset", default="quick", choices=sorted(PRESETS))
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="segmenter seeds (default: the preset's)")
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--docs", default="docs/meddiffft.md", help="the markdown file whose section is rewritten")
    parser.add_argument("--no_docs", action="store_true", help="do not write the report")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    settings = settings_for(args.preset, seeds=args.seeds)
    command = " ".join(["python -m bundle.experiments.meddiffft_segmentation", *(shlex.quote(a) for a in argv)])
    run_experiment(args.work_dir, settings, args.datalist, args.arms, None if args.no_docs else args.docs, command)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
