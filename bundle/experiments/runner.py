"""One runner for every experiment: named steps that run once (a killed run resumes where it stopped), repeated
runs over arms and seeds where one failure does not lose the others, mean and spread over seeds, and verdicts.

A work folder holds ``experiment.json`` (the settings it was started with: :func:`claim_work_dir` refuses a run
with other settings), ``done/<step>.json`` per finished step (its seconds and details; read back instead of
running again) and ``failed/<step>.json`` per step whose last try failed (the error; tried again next time).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from bundle.utils.bundle_files import BUNDLE_ROOT, CONFIGS_DIR
from bundle.utils.files import write_json_atomically

logger = logging.getLogger(__name__)


class ExperimentError(ValueError):
    """A bad setting, a work folder that holds another run, or runs that failed: said in one line."""


def claim_work_dir(work_dir: Path, record: Mapping[str, object]) -> None:
    """Write ``record`` (the run's settings) to ``work_dir/experiment.json``, or check that the one there is the
    same: a work folder continues one run only, never mixes steps of two settings."""
    work_dir.mkdir(parents=True, exist_ok=True)
    path = work_dir / "experiment.json"
    if path.is_file():
        if json.loads(path.read_text()) != json.loads(json.dumps(record)):
            raise ExperimentError(
                f"{work_dir} holds a run with other settings ({path}); use a new --work_dir "
                "or the same settings to continue it"
            )
    else:
        write_json_atomically(path, record)


class Steps:
    """Runs named steps once: a finished step leaves ``done/<name>.json`` (its seconds and details), a failed one
    ``failed/<name>.json`` (its error) until a later try finishes it."""

    def __init__(self, work_dir: Path) -> None:
        self.folder = Path(work_dir) / "done"
        self.failed_folder = Path(work_dir) / "failed"

    def done(self, name: str) -> dict | None:
        path = self.folder / f"{name}.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def forget(self, name: str) -> None:
        """Run ``name`` again next time (its output was lost, e.g. a run killed before writing it)."""
        (self.folder / f"{name}.json").unlink(missing_ok=True)

    def run(self, name: str, action: Callable[[], object]) -> dict:
        """``action()``'s record, from ``done/`` when an earlier run finished the step; an exception is recorded in
        ``failed/<name>.json`` and raised."""
        finished = self.done(name)
        if finished is not None:
            logger.info("step %s: already done (%.0f s), skipped", name, finished["seconds"])
            return finished
        logger.info("step %s: running", name)
        start = time.monotonic()
        try:
            details = action()
        except Exception as error:  # recorded for the report, then raised unchanged
            self.failed_folder.mkdir(parents=True, exist_ok=True)
            failure = {"step": name, "error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc()}
            write_json_atomically(self.failed_folder / f"{name}.json", {**failure, "failed_utc": _now()})
            raise
        record = {
            "step": name,
            "seconds": round(time.monotonic() - start, 2),
            "details": details,
            "finished_utc": _now(),
        }
        self.folder.mkdir(parents=True, exist_ok=True)
        write_json_atomically(self.folder / f"{name}.json", record)
        (self.failed_folder / f"{name}.json").unlink(missing_ok=True)
        logger.info("step %s: done in %.1f s", name, record["seconds"])
        return record

    def seconds(self) -> dict[str, float]:
        return {p.stem: json.loads(p.read_text())["seconds"] for p in sorted(self.folder.glob("*.json"))}

    def failures(self) -> dict[str, str]:
        """``{step: error}`` of the steps whose last try failed."""
        return {p.stem: json.loads(p.read_text())["error"] for p in sorted(self.failed_folder.glob("*.json"))}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def seeded_runs(
    steps: Steps,
    arms: Sequence[str],
    seeds: Sequence[int],
    run: Callable[[str, int], object],
    result: Callable[[str, int], dict],
    finished: Callable[[str, int], bool] | None = None,
    prefix: str = "run",
) -> tuple[dict[str, dict[int, dict]], dict[str, str]]:
    """Every arm with every seed as the step ``<prefix>_<arm>_seed<seed>`` (skipped when done).

    Args:
        steps: the work folder's steps.
        run: ``run(arm, seed)`` does one run (its return value is the step's details).
        result: ``result(arm, seed)`` reads a finished run's results back (e.g. its ``metrics.json``).
        finished: ``finished(arm, seed)`` says whether a run's output is complete; a step recorded as done whose
            output is not is run again.

    Returns:
        ``({arm: {seed: result}}, {step: error})``: a run that fails is logged and listed, the others go on.
    """
    results: dict[str, dict[int, dict]] = {}
    failures: dict[str, str] = {}
    for arm in arms:
        for seed in seeds:
            name = f"{prefix}_{arm}_seed{seed}"
            if finished is not None and not finished(arm, seed):
                steps.forget(name)
            try:
                steps.run(name, lambda a=arm, s=seed: run(a, s))
            except Exception as error:  # one failed run must not lose the others
                logger.error("step %s failed: %s: %s", name, type(error).__name__, error)
                failures[name] = f"{type(error).__name__}: {error}"
                continue
            results.setdefault(arm, {})[int(seed)] = result(arm, seed)
    return results, failures


def mean_std(values: Sequence[float | None]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1; 0 for one value) of the defined values (``None`` and NaN are
    left out; none defined: NaN, NaN)."""
    defined = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    if not defined:
        return math.nan, math.nan
    mean = sum(defined) / len(defined)
    if len(defined) < 2:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in defined) / (len(defined) - 1))


def summarise(
    results: Mapping[str, Mapping[int, Mapping]], names: Sequence[str]
) -> dict[str, dict[str, tuple[float, float]]]:
    """``{arm: {name: (mean, std)}}`` over the seeds of each arm's results."""
    return {
        arm: {name: mean_std([runs[s].get(name) for s in sorted(runs)]) for name in names}
        for arm, runs in results.items()
    }


@dataclass(frozen=True)
class Comparison:
    """Arm A against arm B on one metric (higher is better), each as mean and standard deviation over seeds.

    A is *clearly* above B when the difference of the means is larger than the larger of the two standard
    deviations; a difference not larger than that is *within the seed spread*.
    """

    mean: float
    std: float
    other_mean: float
    other_std: float

    @classmethod
    def of(cls, a: tuple[float, float], b: tuple[float, float]) -> Comparison:
        return cls(float(a[0]), float(a[1]), float(b[0]), float(b[1]))

    @property
    def difference(self) -> float:
        return self.mean - self.other_mean

    @property
    def spread(self) -> float:
        return max(self.std, self.other_std)

    @property
    def above(self) -> bool:
        return self.difference > 0

    @property
    def clearly_above(self) -> bool:
        return self.difference > self.spread

    @property
    def within_spread(self) -> bool:
        return abs(self.difference) <= self.spread


def cell(mean: float, std: float) -> str:
    """``mean ± std`` with three decimals (``n/a`` when undefined), for report tables."""
    return "n/a" if math.isnan(mean) else f"{mean:.3f} ± {std:.3f}"


def run_config_workflow(config_names: Sequence[str], overrides: Mapping[str, object]):
    """Run the bundle's ``configs/<name>`` (several are merged in order) as a MONAI train workflow with
    ``overrides``; returns the finished workflow."""
    from monai.bundle import ConfigWorkflow

    files = [str(CONFIGS_DIR / name) for name in config_names]
    flow = ConfigWorkflow(
        config_file=files if len(files) > 1 else files[0],
        workflow_type="train",
        meta_file=str(CONFIGS_DIR / "metadata.json"),
        logging_file=str(CONFIGS_DIR / "logging.conf"),
        bundle_root=str(BUNDLE_ROOT),
        **overrides,
    )
    flow.initialize()
    try:
        flow.run()
    finally:
        flow.finalize()
    return flow


def preset_settings(
    presets: Mapping[str, Mapping[str, object]], common: Mapping[str, object], preset: str, overrides: Mapping
) -> dict[str, object]:
    """A preset's settings over the ``common`` ones with ``overrides`` (any known key; ``None`` keeps the preset's
    value), ``seeds`` as a list of ints and ``preset`` its name."""
    if preset not in presets:
        raise ExperimentError(f"preset must be one of {sorted(presets)}, got {preset!r}")
    settings = {**common, **presets[preset]}
    unknown = sorted(set(overrides) - set(settings))
    if unknown:
        raise ExperimentError(f"unknown settings {unknown}; known: {sorted(settings)}")
    settings.update({k: v for k, v in overrides.items() if v is not None})
    seeds = settings["seeds"]
    settings["seeds"] = [int(s) for s in (seeds if isinstance(seeds, (list, tuple)) else [seeds])]
    settings["preset"] = preset
    return settings


def number(value: object) -> str:
    """A value with three decimals for report tables (``n/a`` when undefined)."""
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{float(value):.3f}"


def machine_description() -> str:
    """The platform, cores, torch threads, device and library versions, for reports."""
    import platform

    import monai
    import torch

    device = "cuda: " + torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    return (
        f"{platform.platform()}, {os.cpu_count()} CPU cores, torch threads {torch.get_num_threads()}, device {device}; "
        f"python {platform.python_version()}, torch {torch.__version__}, monai {monai.__version__}"
    )
