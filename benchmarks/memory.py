"""Item 6: peak resident memory of ``make demo``'s training (stage 2) and inference, run as the demo runs them
(``python -m monai.bundle run`` with the real configs) with short settings, each under a fresh parent that
reads the peak RSS of its children; and how stage 2's peak grows with the data set (1x and 8x the demo's case
count). The GPU figures (SD 1.5 at 512 px) are in :mod:`benchmarks.gpu`.
"""

from __future__ import annotations

import json
import re
import sys

from benchmarks.common import CONFIGS, REPO, Context, Record, fresh_dir, run_command, spread, tail, thread_env

SCALE = 8
SCALE_TARGET = 1.3
SCALE_ITERATIONS = 8


def bundle_command(config_files: list[str], **arguments: object) -> list[str]:
    files = [str(CONFIGS / name) for name in config_files]
    config = files[0] if len(files) == 1 else "[" + ",".join(f"'{f}'" for f in files) + "]"
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", config]
    for key, value in arguments.items():
        command += [f"--{key}", str(value)]
    return command


def requests_subset(ctx: Context, count: int, name: str):
    """A requests datalist with the first ``count`` synthesis requests of the run's data."""
    data = ctx.data()
    requests = json.loads((data["dir"] / "requests_all.json").read_text())
    path = ctx.work_dir / f"{name}.json"
    path.write_text(json.dumps({**requests, "test": requests["test"][:count]}))
    return path, min(count, len(requests["test"]))


def run(ctx: Context) -> list[Record]:
    data = ctx.data()
    root = fresh_dir(ctx.work_dir / "memory")
    records = []
    training = bundle_command(
        ["train.json"],
        dataset_dir=data["dir"],
        datalist=data["datalist"],
        stage1_dir=ctx.models_dir(),
        models_dir=root / "models",
        output_dir=root / "train",
        max_epochs=1,
        val_interval=1,
    )
    cases = 1 if ctx.quick else 2
    requests, cases = requests_subset(ctx, cases, "memory_requests")
    inference = bundle_command(
        ["inference.json"], datalist=requests, models_dir=ctx.models_dir(), output_dir=root / "synthesis"
    )
    for name, command, settings in (
        (
            "peak RSS: stage-2 training (make demo's train.json)",
            training,
            (
                f"train.json as make demo runs it (tiny profile, 48 px, batch 8, validation of 8 slices at 20 "
                f"DDIM steps) but 1 epoch; data: {data['source']}"
            ),
        ),
        (
            "peak RSS: inference (make demo's inference.json)",
            inference,
            (
                "inference.json as make demo runs it (50 DDIM steps, batch 8, every slice the lesion reaches) on "
                f"{cases} request(s); models: {ctx.models_note()}"
            ),
        ),
    ):
        result = run_command(
            command,
            root / f"{name.split(':')[1].split('(')[0].strip().replace(' ', '_')}.log",
            env=thread_env(ctx.threads),
        )
        ok = result["returncode"] == 0
        records.append(
            Record(
                name=name,
                item=6,
                ours_s=result["wall_s"],
                reference_s=None,
                ratio=None,
                reference="none (an absolute figure); ours_s is the run's wall time",
                target="report",
                met=None,
                shape=settings,
                value=result["peak_rss_mib"] if ok else None,
                unit="MiB peak RSS",
                notes="" if ok else f"the run failed (exit {result['returncode']}): {tail(result['log'])}",
                extra={"command": " ".join(map(str, command)), "threads": ctx.threads},
                ours_spread_s=spread([result["wall_s"]]),
                repeats=1,
                measured="one run of the command in its own process (wall time includes start-up)",
            )
        )
    return records + scale_rows(ctx)


def demo_case_count() -> int:
    """``make demo``'s case count (``DEMO_CASES`` in the Makefile)."""
    return int(re.search(r"^DEMO_CASES \?= (\d+)", (REPO / "Makefile").read_text(), re.MULTILINE).group(1))


def scale_datalists(ctx: Context, base: int) -> dict[int, dict]:
    """Phantom data of ``SCALE x base`` cases (the demo's generator, seed 0) and a datalist per factor (1 and
    ``SCALE``) whose training cases are the first ``factor x base`` cases'."""
    from bundle.demo.dataset import generate_dataset

    folder = ctx.work_dir / "memory_scale_data"
    if not (folder / "datalist.json").is_file():
        generate_dataset(folder, num_cases=SCALE * base, seed=0)
    datalist = json.loads((folder / "datalist.json").read_text())
    sets = {}
    for factor in (1, SCALE):
        training = [e for e in datalist["training"] if int(e["case_id"].split("_")[-1]) < factor * base]
        path = folder / f"datalist_{factor}x.json"
        path.write_text(json.dumps({"training": training}))
        sets[factor] = {"dir": folder, "datalist": path, "cases": factor * base, "training": len(training)}
    return sets


def scale_rows(ctx: Context) -> list[Record]:
    """Peak RSS on ``SCALE x`` the demo's case count against 1x, each in a fresh process with a fresh output
    folder (so the slice cache starts empty and every case is preprocessed): stage-2 training as ``make demo``
    runs it, and stage 2's training set alone on the sd15 profile's 512 px grid, where a slice is 100 times
    larger, so a data set held in memory would show."""
    base = 12 if ctx.quick else demo_case_count()
    sets = scale_datalists(ctx, base)
    root = fresh_dir(ctx.work_dir / "memory_scale")
    cases = (
        f"1x = {base} phantom cases ({sets[1]['training']} in the training list), {SCALE}x = "
        f"{SCALE * base} ({sets[SCALE]['training']}); "
        + (
            f"--quick: 12 cases as 1x instead of the demo's {demo_case_count()}"
            if ctx.quick
            else "1x is make demo's case count"
        )
    )
    scenarios = (
        (
            "stage-2 training",
            "training",
            {"max_epochs": 1, "val_interval": 1, "train#trainer#epoch_length": SCALE_ITERATIONS},
            (
                f"configs/train.json as make demo runs it (tiny profile, 48 px, batch 8, 3 slices per case, "
                f"validation of 8 slices at 20 DDIM steps), 1 epoch of {SCALE_ITERATIONS} iterations; the data set is "
                "built before the first iteration, so more iterations would not raise the peak"
            ),
        ),
        (
            "stage-2 training set at the sd15 grid (512 px)",
            "dataset_512",
            {"spatial_size": 512, "run": "$len(@train#dataset)"},
            (
                "configs/train.json's training set only (preprocessing into the slice cache, no model), with "
                "spatial_size 512 (the sd15 profile's grid: 3 MiB of float32 per slice)"
            ),
        ),
    )
    records = []
    for title, label, overrides, shape in scenarios:
        runs = {}
        for factor, data in sets.items():
            command = bundle_command(
                ["train.json"],
                dataset_dir=data["dir"],
                datalist=data["datalist"],
                stage1_dir=ctx.models_dir(),
                models_dir=root / f"models_{label}_{factor}x",
                output_dir=root / f"{label}_{factor}x",
                **overrides,
            )
            runs[factor] = {
                **run_command(command, root / f"{label}_{factor}x.log", env=thread_env(ctx.threads)),
                "command": " ".join(map(str, command)),
            }
        small, large = runs[1], runs[SCALE]
        failed = [
            f"{factor}x (exit {run['returncode']}): {tail(run['log'])}"
            for factor, run in runs.items()
            if run["returncode"] != 0 or run["peak_rss_mib"] is None
        ]
        ratio = None if failed else large["peak_rss_mib"] / small["peak_rss_mib"]
        records.append(
            Record(
                name=f"peak RSS: {title} on {SCALE}x the demo's cases vs 1x",
                item=6,
                ours_s=None,
                reference_s=None,
                ratio=ratio,
                reference=f"the same run on 1x: {small['peak_rss_mib']:.0f} MiB peak RSS"
                if not failed
                else "the same run on 1x",
                target=f"<= {SCALE_TARGET}",
                met=None if failed else bool(ratio <= SCALE_TARGET),
                shape=f"{shape}; fresh output folder (empty slice cache); {cases}",
                value=None if failed else large["peak_rss_mib"],
                unit=f"MiB peak RSS ({SCALE}x)",
                notes=(
                    f"ratio = peak RSS of the {SCALE}x run / the 1x run's, one run each in its own process (not "
                    f"in one process: a process's peak RSS never goes down); wall time "
                    f"{small['wall_s']:.0f} s (1x) and {large['wall_s']:.0f} s ({SCALE}x)"
                )
                if not failed
                else "the run failed: " + " | ".join(failed)[:800],
                extra={
                    "peak_rss_mib": {f"{f}x": run["peak_rss_mib"] for f, run in runs.items()},
                    "wall_s": {f"{f}x": run["wall_s"] for f, run in runs.items()},
                    "commands": {f"{f}x": run["command"] for f, run in runs.items()},
                    "threads": ctx.threads,
                },
            )
        )
    return records
