"""Item 6: peak resident memory of ``make demo``'s training (stage 2) and inference, run as the demo runs them
(``python -m monai.bundle run`` with the real configs) with short settings, each under a fresh parent that
reads the peak RSS of its children. The GPU figures (SD 1.5 at 512 px) are in :mod:`benchmarks.gpu`.
"""

from __future__ import annotations

import json
import sys

from benchmarks.common import CONFIGS, Context, Record, fresh_dir, run_command, tail, thread_env


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
    training = bundle_command(["train.json"], dataset_dir=data["dir"], datalist=data["datalist"],
                              stage1_dir=ctx.models_dir(), models_dir=root / "models", output_dir=root / "train",
                              max_epochs=1, val_interval=1)
    cases = 1 if ctx.quick else 2
    requests, cases = requests_subset(ctx, cases, "memory_requests")
    inference = bundle_command(["inference.json"], datalist=requests, models_dir=ctx.models_dir(),
                               output_dir=root / "synthesis")
    for name, command, settings in (
            ("peak RSS: stage-2 training (make demo's train.json)", training,
             (f"train.json as make demo runs it (tiny profile, 48 px, batch 8, validation of 8 slices at 20 "
              f"DDIM steps) but 1 epoch; data: {data['source']}")),
            ("peak RSS: inference (make demo's inference.json)", inference,
             (f"inference.json as make demo runs it (50 DDIM steps, batch 8, 3 slices per case) on {cases} "
              f"request(s); models: {ctx.models_note()}"))):
        result = run_command(command, root / f"{name.split(':')[1].split('(')[0].strip().replace(' ', '_')}.log",
                             env=thread_env(ctx.threads))
        ok = result["returncode"] == 0
        records.append(Record(
            name=name, item=6, ours_s=result["wall_s"], reference_s=None, ratio=None,
            reference="none (an absolute figure); ours_s is the run's wall time", target="report", met=None,
            shape=settings, value=result["peak_rss_mib"] if ok else None, unit="MiB peak RSS",
            notes="" if ok else f"the run failed (exit {result['returncode']}): {tail(result['log'])}",
            extra={"command": " ".join(map(str, command)), "threads": ctx.threads}))
    return records
