"""What every benchmark shares: interleaved timing, the result record, the machine's description, and the
inputs (demo data and models, or stand-ins built on the spot when a fresh clone has neither).

Every ratio is ``ours_s / reference_s`` measured in the same process on the same inputs: one warm-up call
of each candidate, then ``repeats`` rounds in which each candidate runs once (the order alternates from round
to round so a drift in machine load hits both sides alike); the figure is the median of the rounds, and every
timed row also carries the spread of its rounds (min, median, max). A row measured otherwise (e.g. runs in
separate processes) says how in ``measured``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
NO_GPU = "not measured: no GPU"
INTERLEAVED = "interleaved rounds in one process"
logger = logging.getLogger("benchmarks")


@dataclasses.dataclass
class Record:
    """One row of ``results.json`` and of a table in ``docs/performance.md``.

    ``ratio`` is ``ours_s / reference_s`` (lower is faster) unless ``notes`` says otherwise; ``met`` is
    ``None`` where there is no target, or where the figure was not measured (``notes`` says why). Each
    ``*_spread`` is ``[min, median, max]`` over the ``repeats`` rounds (``ratio_spread``: of the round-by-round
    ratios); a measured ``ours_s`` or ``reference_s`` without its spread is refused by the report
    (:func:`benchmarks.report.require_spread`). ``measured`` says how the two sides were timed.
    """

    name: str
    item: int
    ours_s: float | None
    reference_s: float | None
    ratio: float | None
    reference: str
    target: str
    met: bool | None
    shape: str = ""
    notes: str = ""
    repeats: int | None = None
    value: float | None = None
    unit: str = ""
    extra: dict = dataclasses.field(default_factory=dict)
    ours_spread_s: list[float] | None = None
    reference_spread_s: list[float] | None = None
    ratio_spread: list[float] | None = None
    measured: str = ""

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def not_measured(name: str, item: int, reference: str, target: str, why: str, shape: str = "", **extra) -> Record:
    """A row whose figure could not be taken here (``why``: e.g. :data:`NO_GPU`)."""
    return Record(
        name=name,
        item=item,
        ours_s=None,
        reference_s=None,
        ratio=None,
        reference=reference,
        target=target,
        met=None,
        shape=shape,
        notes=why,
        extra=dict(extra),
    )


def synchronise(device: torch.device | str | None = None) -> None:
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def interleaved(
    candidates: Mapping[str, Callable[[], object]],
    repeats: int,
    warmup: int = 1,
    device: torch.device | str | None = None,
    warmups: Mapping[str, Callable[[], object]] | None = None,
) -> dict[str, list[float]]:
    """Seconds per call of each candidate: ``warmup`` untimed calls each (``warmups`` replaces the calls
    used for that, e.g. with fewer steps), then ``repeats`` rounds of one timed call each, alternating the
    order."""
    for _ in range(warmup):
        for name, call in candidates.items():
            (warmups or {}).get(name, call)()
    synchronise(device)
    times: dict[str, list[float]] = {name: [] for name in candidates}
    names = list(candidates)
    for round_number in range(repeats):
        for name in names if round_number % 2 == 0 else names[::-1]:
            synchronise(device)
            started = time.perf_counter()
            candidates[name]()
            synchronise(device)
            times[name].append(time.perf_counter() - started)
    return times


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def spread(values: Sequence[float]) -> list[float]:
    """``[min, median, max]`` of the rounds (one round: the same number three times)."""
    if not values:
        raise ValueError("a spread needs at least one round")
    return [float(min(values)), median(values), float(max(values))]


def compare(
    name: str,
    item: int,
    ours: Sequence[float],
    reference_times: Sequence[float],
    reference: str,
    target: str,
    max_ratio: float | None,
    shape: str = "",
    notes: str = "",
    measured: str = INTERLEAVED,
    **extra,
) -> Record:
    """A timed row: medians of ``ours`` and ``reference_times``, their ratio, whether it is within
    ``max_ratio`` (``None``: no target), and the spread of the rounds (the ratio's from round-by-round pairs,
    which :func:`interleaved` gives)."""
    ours_s, reference_s = median(ours), median(reference_times)
    ratio = ours_s / reference_s
    pairs = [o / r for o, r in zip(ours, reference_times, strict=True)] if len(ours) == len(reference_times) else []
    return Record(
        name=name,
        item=item,
        ours_s=ours_s,
        reference_s=reference_s,
        ratio=ratio,
        reference=reference,
        target=target,
        met=None if max_ratio is None else bool(ratio <= max_ratio),
        shape=shape,
        notes=notes,
        repeats=len(ours),
        extra={"ours_all_s": list(ours), "reference_all_s": list(reference_times), **extra},
        ours_spread_s=spread(ours),
        reference_spread_s=spread(reference_times),
        ratio_spread=spread(pairs) if pairs else None,
        measured=measured,
    )


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(threads: int) -> dict[str, object]:
    """Where the figures were taken."""
    import diffusers
    import monai

    info: dict[str, object] = {
        "cpu": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "torch_threads": threads,
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "monai": monai.__version__,
        "platform": platform.platform(),
        "load_average_at_start": [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "device": "cpu",
    }
    if torch.cuda.is_available():
        info["device"] = torch.cuda.get_device_name(0)
        info["gpu_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
        info["cuda"] = torch.version.cuda
    return info


class Context:
    """The inputs of a benchmark run, built on first use and shared by the benchmarks.

    Demo data: ``demo/data`` when it holds ``datalist.json`` and ``requests.json`` (from ``make demo``);
    otherwise a phantom data set generated into the work folder. Models: ``models/`` when it holds a trained
    demo checkpoint; otherwise a freshly initialised tiny model written in the same layout (timings do not
    depend on the weights; the quality rows then say they need the trained checkpoint).

    ``--quick`` uses a subset of the demo cases (``quick_cases`` training cases, one request).
    """

    MODEL_FILES = ("msc.safetensors", "msc_adapter.safetensors", "scheduler_config.json", "unet/config.json", "clip")

    def __init__(self, quick: bool, work_dir: Path, threads: int, device: torch.device) -> None:
        self.quick, self.work_dir, self.threads, self.device = quick, Path(work_dir), threads, device
        self._cache: dict[str, object] = {}

    # -- data -----------------------------------------------------------------------------------------------
    @property
    def demo_data_present(self) -> bool:
        return all((REPO / "demo" / "data" / name).is_file() for name in ("datalist.json", "requests.json"))

    @property
    def trained(self) -> bool:
        """Whether ``models/`` holds the trained demo checkpoint (else a fresh model stands in)."""
        return all((REPO / "models" / name).exists() for name in self.MODEL_FILES)

    def data(self) -> dict[str, Path]:
        """``{"dir", "datalist", "requests", "source"}``: the data every benchmark uses."""
        if "data" not in self._cache:
            self._cache["data"] = self._make_data()
        return self._cache["data"]  # type: ignore[return-value]

    def _make_data(self) -> dict[str, object]:
        from bundle.balancing.synthesis_requests import write_demo_requests
        from bundle.demo.dataset import generate_dataset

        if self.demo_data_present:
            source_dir, source = REPO / "demo" / "data", "demo/data (from make demo)"
        else:
            source_dir = self.work_dir / "phantom"
            cases = 12 if self.quick else 24
            logger.info("no demo/data: generating %d phantom cases into %s", cases, source_dir)
            generate_dataset(source_dir, num_cases=cases, seed=0)
            write_demo_requests(source_dir / "datalist.json", source_dir / "requests.json")
            source = f"{cases} phantom cases generated for this run (scripts/demo_data.py generator, seed 0)"
        datalist = json.loads((source_dir / "datalist.json").read_text())
        requests = json.loads((source_dir / "requests.json").read_text())
        training, test = datalist["training"], requests["test"]
        if self.quick:
            training, test = training[:14], test[:1]
            source += f"; --quick subset: {len(training)} training cases, {len(test)} request"
        out_dir = self.work_dir / "data"
        out_dir.mkdir(parents=True, exist_ok=True)

        def absolute(entry: Mapping) -> dict:
            return {
                k: str(source_dir / v) if k in ("image", "vertebra_seg", "lesion_seg") and v else v
                for k, v in entry.items()
            }

        (out_dir / "datalist.json").write_text(
            json.dumps(
                {
                    **datalist,
                    "training": [absolute(e) for e in training],
                    "test": [absolute(e) for e in datalist["test"]],
                }
            )
        )
        (out_dir / "requests.json").write_text(json.dumps({**requests, "test": [absolute(e) for e in test]}))
        (out_dir / "requests_all.json").write_text(
            json.dumps({**requests, "test": [absolute(e) for e in requests["test"]]})
        )
        return {
            "dir": out_dir,
            "datalist": out_dir / "datalist.json",
            "requests": out_dir / "requests.json",
            "source": source,
            "training_cases": len(training),
            "requests_cases": len(test),
        }

    # -- models ---------------------------------------------------------------------------------------------
    def models_dir(self) -> Path:
        """``models/`` if trained, else a fresh tiny model folder in the same layout."""
        if self.trained:
            return REPO / "models"
        if "models" not in self._cache:
            self._cache["models"] = self._fresh_models()
        return self._cache["models"]  # type: ignore[return-value]

    def _fresh_models(self) -> Path:
        from diffusers import DDPMScheduler

        from bundle.networks.medical_clip import MedicalClipEncoder
        from bundle.networks.medsoft_diffusion import CLIP_FOLDER, CONTROLLER_FILE, save_trained, tiny_model

        folder = self.work_dir / "fresh_models"
        model = tiny_model(spatial_size=48, clip_encoder=MedicalClipEncoder.tiny(seed=0), seed=0)
        model.clip_encoder.save_local_dir(folder / CLIP_FOLDER)
        model.controller.save(folder / CONTROLLER_FILE)
        save_trained(model, folder)
        DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", clip_sample=False).save_config(
            folder
        )
        return folder

    def models_note(self) -> str:
        return (
            "the trained demo checkpoint (models/)"
            if self.trained
            else "a freshly initialised tiny model (no models/ here: run `make demo` for the trained checkpoint)"
        )

    def model(self):
        """The demo model (trained or fresh), in eval mode on the benchmark device."""
        from bundle.networks.medsoft_diffusion import load_trained

        return load_trained(self.models_dir()).to(self.device).eval()

    def noise_scheduler(self):
        from diffusers import DDPMScheduler

        return DDPMScheduler.from_pretrained(self.models_dir(), local_files_only=True)

    def parser(self, config_files: Sequence[str], **overrides):
        """A MONAI ``ConfigParser`` of the bundle's configs with this run's data and models."""
        from monai.bundle import ConfigParser

        parser = ConfigParser()
        parser.read_config([str(CONFIGS / name) for name in config_files])
        parser.update({"bundle_root": str(REPO), **overrides})
        return parser

    def validation_slices(self, max_items: int) -> list[dict]:
        """Held-out demo slices with lesions (``train.json``'s validation set), preprocessed once."""
        key = f"validation_{max_items}"
        if key not in self._cache:
            data = self.data()
            parser = self.parser(
                ["train.json"],
                dataset_dir=str(data["dir"]),
                datalist=str(data["datalist"]),
                stage1_dir=str(self.models_dir()),
                models_dir=str(self.work_dir / "unused_models"),
                output_dir=str(self.work_dir / "unused_runs"),
                val_max_items=max_items,
            )
            dataset = parser.get_parsed_content("validate#dataset")
            self._cache[key] = [dataset[i] for i in range(len(dataset))]
        return self._cache[key]  # type: ignore[return-value]


def run_command(
    command: Sequence[str], log_path: Path, env: Mapping[str, str] | None = None, timeout: float = 1800
) -> dict[str, object]:
    """Run ``command`` in the repository under a fresh parent that reports the children's peak RSS.

    Returns ``{"returncode", "wall_s", "peak_rss_mib", "log"}``; stdout and stderr go to ``log_path``.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    result_path = log_path.with_suffix(".rusage.json")
    wrapper = [sys.executable, "-m", "benchmarks.peak_rss", str(result_path), "--", *command]
    started = time.perf_counter()
    with open(log_path, "w") as log:
        completed = subprocess.run(
            wrapper,
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            timeout=timeout,
            env={**os.environ, **(env or {})},
            check=False,
        )
    wall = time.perf_counter() - started
    usage = json.loads(result_path.read_text()) if result_path.is_file() else {}
    return {
        "returncode": completed.returncode,
        "wall_s": wall,
        "peak_rss_mib": usage.get("peak_rss_mib"),
        "log": str(log_path),
    }


def tail(path: str | Path, characters: int = 1500) -> str:
    try:
        return Path(path).read_text(errors="replace")[-characters:]
    except OSError:
        return ""


def thread_env(threads: int) -> dict[str, str]:
    return {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}


def fresh_dir(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def temporary_work_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="medsoft_bench_"))
