"""Item 7: multi-process (DDP) stage-2 training with ``configs/multi_gpu_train.json`` under ``torchrun``: 1 against
2 processes on the CPU (gloo), one thread per process, the same data and per-process batch.

Throughput comes from rank 0's per-iteration log lines (StatsHandler timestamps): within each epoch, from the
first to the second-to-last iteration (the first carries the warm-up, the last may be a short batch), so the
start-up, the per-rank preprocessing and the epoch-end export are not counted.
"""

from __future__ import annotations

import re
import socket
import sys
from datetime import datetime
from pathlib import Path

from benchmarks.common import CONFIGS, Context, Record, fresh_dir, run_command, spread, tail, thread_env

LINE = re.compile(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}).*?Epoch: (\d+)/\d+, Iter: (\d+)/(\d+)")
REFERENCE = "the same torchrun + multi_gpu_train.json training with 1 process (gloo, 1 thread per process)"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def iteration_rate(log_text: str) -> tuple[float, int]:
    """Iterations per second over the steady part of each epoch, and how many intervals were measured."""
    epochs: dict[int, list[tuple[int, float]]] = {}
    for stamp, epoch, iteration, length in LINE.findall(log_text):
        moment = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()
        if int(iteration) < int(length):  # the last iteration may be a short batch
            epochs.setdefault(int(epoch), []).append((int(iteration), moment))
    iterations, seconds = 0, 0.0
    for points in epochs.values():
        points.sort()
        if len(points) >= 2:
            iterations += points[-1][0] - points[0][0]
            seconds += points[-1][1] - points[0][1]
    if iterations == 0 or seconds <= 0:
        raise ValueError("too few iteration log lines to measure the throughput")
    return iterations / seconds, iterations


def torchrun_command(processes: int, ctx: Context, root: Path, batch_size: int, epochs: int) -> list[str]:
    data = ctx.data()
    configs = f"['{CONFIGS / 'train.json'}','{CONFIGS / 'multi_gpu_train.json'}']"
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc_per_node={processes}",
        f"--master_port={free_port()}",
        "-m",
        "monai.bundle",
        "run",
        "--config_file",
        configs,
        "--dataset_dir",
        str(data["dir"]),
        "--datalist",
        str(data["datalist"]),
        "--stage1_dir",
        str(ctx.models_dir()),
        "--models_dir",
        str(root / f"models_{processes}"),
        "--output_dir",
        str(root / f"runs_{processes}"),
        "--max_epochs",
        str(epochs),
        "--val_interval",
        "1000",
        "--batch_size",
        str(batch_size),
    ]


def run(ctx: Context) -> list[Record]:
    root = fresh_dir(ctx.work_dir / "scale_out")
    batch_size, epochs = (4, 2) if ctx.quick else (8, 2)
    rates, notes, walls = {}, {}, {}
    for processes in (1, 2):
        command = torchrun_command(processes, ctx, root, batch_size, epochs)
        result = run_command(command, root / f"torchrun_{processes}.log", env=thread_env(1))
        walls[processes] = result["wall_s"]
        if result["returncode"] != 0:
            notes[processes] = f"{processes}-process run failed (exit {result['returncode']}): {tail(result['log'])}"
            continue
        try:
            rate, intervals = iteration_rate(Path(result["log"]).read_text(errors="replace"))
        except ValueError as error:
            notes[processes] = f"{processes}-process run: {error}"
            continue
        rates[processes] = (rate * batch_size * processes, intervals, result["peak_rss_mib"])
    data = ctx.data()
    shape = (
        f"configs/train.json + multi_gpu_train.json, tiny model, per-process batch {batch_size}, {epochs} "
        f"epochs, DistributedSampler, gloo on the CPU, OMP_NUM_THREADS=1 per process; data: {data['source']}"
    )
    if len(rates) < 2:
        return [
            Record(
                name="DDP training: 2 vs 1 processes (CPU, gloo)",
                item=7,
                ours_s=None,
                reference_s=None,
                ratio=None,
                reference=REFERENCE,
                target="report (scaling; multi-node launch documented)",
                met=None,
                shape=shape,
                notes="; ".join(notes.values()),
            )
        ]
    one, two = rates[1], rates[2]
    return [
        Record(
            name="DDP training: 2 vs 1 processes (CPU, gloo; separate runs)",
            item=7,
            ours_s=1 / two[0],
            reference_s=1 / one[0],
            ratio=(1 / two[0]) / (1 / one[0]),
            reference=REFERENCE,
            target="report (scaling; multi-node launch documented)",
            met=None,
            shape=shape,
            ours_spread_s=spread([1 / two[0]]),
            reference_spread_s=spread([1 / one[0]]),
            repeats=1,
            measured="NOT in one process: two torchrun launches (1 process, then 2), one run each, over the "
            f"steady iterations of each epoch ({one[1]} and {two[1]} iteration intervals on rank 0)",
            notes=(
                f"seconds per sample; throughput {one[0]:.2f} samples/s with 1 process, {two[0]:.2f} with 2 "
                f"(speed-up {two[0] / one[0]:.2f}x on {ctx_cores()} cores shared with other work); "
                f"wall time incl. start-up {walls[1]:.0f} s / {walls[2]:.0f} s"
            ),
            value=two[0] / one[0],
            unit="x speed-up (2 processes)",
            extra={
                "samples_per_s_1": one[0],
                "samples_per_s_2": two[0],
                "intervals_1": one[1],
                "intervals_2": two[1],
                "peak_rss_mib_1": one[2],
                "peak_rss_mib_2": two[2],
                "wall_s_1": walls[1],
                "wall_s_2": walls[2],
            },
        )
    ]


def ctx_cores() -> int:
    import os

    return os.cpu_count() or 1
