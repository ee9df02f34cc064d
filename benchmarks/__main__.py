"""``python -m benchmarks [--quick] [--out DIR] [--only NAME,...] [--threads N]`` (or ``make bench``).

Writes ``DIR/results.json`` (one object per figure: ``name``, ``ours_s``, ``reference_s``, ``ratio``,
``reference``, ``target``, ``met``, ...) and ``DIR/machine.json``; the full run (no ``--quick``, no ``--only``)
also regenerates ``docs/performance.md``. Never run as a unit test: ``tests/benchmarks/test_benchmarks.py`` only checks
the records' structure with one repeat.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
import traceback
from pathlib import Path

import torch

from benchmarks import (
    blur,
    gpu,
    memory,
    sampling,
    scale_out,
    throughput,
    training,
    unet_overhead,
    volume_batching,
)
from benchmarks.common import NO_GPU, REPO, Context, Record, machine, temporary_work_dir
from benchmarks.report import markdown, write_json

BENCHMARKS = {
    "unet_overhead": unet_overhead.run,
    "sampling": sampling.run,
    "blur": blur.run,
    "training": training.run,
    "memory": memory.run,
    "scale_out": scale_out.run,
    "throughput": throughput.run,
    "volume_batching": volume_batching.run,
    "gpu": gpu.run,
}
ITEM_OF = {
    "unet_overhead": 1,
    "sampling": 2,
    "blur": 4,
    "training": 5,
    "memory": 6,
    "scale_out": 7,
    "throughput": 8,
    "volume_batching": 8,
    "gpu": 8,
}

PREAMBLE = """Written by `python -m benchmarks` (`make bench`: the full run; the command that wrote this file is in
the settings table below); `python -m benchmarks --quick --out DIR` is the short version (fewer rounds, smaller
shapes where a row says so). Every figure in this file comes from that one run, except where a row's *measured*
line names a stored GPU run (`benchmarks/results/gpu.json`, on a machine without a GPU). A ratio is
**ours_s / reference_s** on the same inputs, lower is faster; unless a row's *measured* line says otherwise,
both sides ran in one process: one warm-up call of each, then rounds in which each side runs once (the order
alternates), and the table gives the median of the rounds with their spread **[min - max]** (the ratio's
spread is that of the round-by-round ratios). The machine is shared with other work, so absolute seconds
move between runs; the ratios are what the targets are about. CPU benchmarks run with the thread count below
(one by default, so that the cores' other jobs and oversubscribed OpenMP threads do not decide the ratios).

Fast paths in the bundle (each is an option where it is not free; their measured effect is in the items named):

- **Soft-mask blur** (`bundle/transforms/soft_mask.py`, `GaussianBlurMM`): one read of the mask finds its non-zero
  voxels; only their box grown by the kernel's tail is blurred, one axis at a time as blocks of products with
  the banded (Toeplitz) matrix of MONAI's own kernel, into an output that starts as zero pages: the same result
  as MONAI's `GaussianSmooth` on the full volume up to float rounding (item 4), instead of torch conv passes
  over every voxel (kept in the table as "previous blur").
- **Mixed precision** (`bundle/networks/speed_options.py`): `precision` in `train.json` / `inference.json` (`"auto"`:
  bf16 autocast on a GPU that has it, float32 on a CPU; `"fp16"` trains with loss scaling); the trainer and the
  sampler (`SoftMaskInpaintingInferer(precision=...)`) wrap the UNet call in `torch.autocast`.
- **SDPA**: every attention (self, text cross-attention and the MSC attention of `IPAdapterAttnProcessor2_0`)
  already runs through `torch.nn.functional.scaled_dot_product_attention`, which picks the flash /
  memory-efficient kernels on a GPU.
- **Batched guidance**: the unconditional and conditional branches are one UNet call per step (item 2).
- **channels-last** (`channels_last` in the configs), **gradient checkpointing** (`gradient_checkpointing` in
  `train.json`, for SD 1.5 at 512 px) and **torch.compile** (`compile` in `inference.json`): options, off by
  default; their measured effect is in items 5 and 8 (the full run).
- **Data**: `SliceDataset` preprocesses every slice once into a disk cache (`cache_dir`, `<output_dir>/cache`:
  a folder per preprocessing fingerprint, a file per entry) and reads one small file per item, so a training
  step waits only for that read and collation (item 5) and memory does not grow with the data set (item 6);
  a series with several labelled coordinates is read once."""

MULTI_NODE = """Launch: `configs/multi_gpu_train.json` overrides `train.json` for DDP (NCCL on GPUs, gloo on a CPU; each
rank takes its slice of the data through `DistributedSampler`; rank 0 alone writes checkpoints and exports).
One machine with 8 GPUs:

```bash
torchrun --standalone --nproc_per_node=8 -m monai.bundle run \\
    --config_file "['configs/train.json','configs/multi_gpu_train.json']" --dataset_dir demo/data
```

Several machines (here 2 x 8 GPUs): run the same command on every node with a rendezvous endpoint that all of
them can reach (the first node's address), either the static form

```bash
# on node 0 (address 10.0.0.1) and node 1, NODE_RANK=0 and 1
torchrun --nnodes=2 --node_rank=$NODE_RANK --nproc_per_node=8 --master_addr=10.0.0.1 --master_port=29500 \\
    -m monai.bundle run --config_file "['configs/train.json','configs/multi_gpu_train.json']" --dataset_dir /data
```

or the elastic rendezvous (no node ranks; tolerates a node joining late):

```bash
torchrun --nnodes=2 --nproc_per_node=8 --rdzv_backend=c10d --rdzv_endpoint=10.0.0.1:29500 --rdzv_id=medsoft \\
    -m monai.bundle run --config_file "['configs/train.json','configs/multi_gpu_train.json']" --dataset_dir /data
```

Every node needs the same data path, `models/` (stage 1) and code; `batch_size` is per process, so the
global batch is `batch_size x processes` (scale the learning rate with it if needed). Set `NCCL_SOCKET_IFNAME`
to the interface the nodes share when they have several."""

CLOSING = """## Reproduce

```bash
make bench                                        # full run: results in runs/benchmarks, this file regenerated
.venv/bin/python -m benchmarks --quick --out /tmp/bench_quick   # the short run (its duration: settings above)
.venv/bin/python -m benchmarks --only blur,sampling --out /tmp/b  # some areas only (no docs)
.venv/bin/python -m benchmarks.gpu                # the SD-1.5 GPU figures alone, on one GPU
.venv/bin/python -m benchmarks.gpu --dry_run      # the same code on a CPU: a shape check, no figures
```

Without `demo/data` and `models/` (a fresh clone) the benchmarks generate phantom data and a freshly
initialised tiny model; the item-3 quality rows then say they need the trained checkpoint (`make demo`)."""


def narrative(records: list[Record]) -> dict[int, str]:
    inference = json.loads((REPO / "configs" / "inference.json").read_text())
    default_sampler = {"ddim": "DDIM", "dpmsolver++": "DPM-Solver++ (2M)", "unipc": "UniPC"}.get(
        inference.get("sampler"), str(inference.get("sampler"))
    )
    default_steps = inference.get("num_inference_steps")
    rows = [r for r in records if r.item == 3 and "quality_holds" in r.extra]
    solvers = [r for r in rows if r.name.startswith("DPM")]
    if solvers:
        held = [r for r in solvers if r.extra["quality_holds"]]
        figures = "; ".join(
            f"{r.name}: time x{r.ratio:.2f}, in-mask PSNR {r.extra['delta_psnr_db']:+.2f} dB, "
            f"SSIM {r.extra['delta_ssim']:+.3f}"
            for r in rows
        )
        floor = rows[0].extra
        noise = (
            f"DDIM 50 with other seeds moves them by {floor['floor_psnr_db']:.2f} dB / {floor['floor_ssim']:.3f}"
            if floor.get("ddim50_other_seeds")
            else "no noise-floor run (--quick)"
        )
        if held:
            decision = (
                f"Quality holds for {', '.join(r.name for r in held)} ({figures}; {noise}). The default "
                f"in `configs/inference.json` is {default_sampler} with {default_steps} steps."
            )
        else:
            decision = (
                f"**Decision: the default stays {default_sampler} with {default_steps} steps** "
                f"(`configs/inference.json`): no faster solver keeps the in-mask quality ({figures}; "
                f"{noise}; rule: |dPSNR| and |dSSIM| within that seed-to-seed difference or 0.5 dB / 0.01, "
                f"on held-out demo slices against the originals)."
            )
            control = next((r for r in rows if r.name.startswith("DDIM 20")), None)
            dpm20 = next((r for r in solvers if "20" in r.name), None)
            if control and dpm20 and abs(control.extra["delta_psnr_db"] - dpm20.extra["delta_psnr_db"]) < 1.0:
                decision += (
                    " DDIM at 20 steps loses about as much as DPM-Solver++ at 20, so the loss comes from "
                    "the step count of this sampler, not from the solver: the known background is "
                    "re-noised and blended in at every step, and with fewer steps the synthesised region "
                    "has fewer of them to settle against it."
                )
    else:
        decision = (
            f"Quality was not measured in this run (no trained checkpoint in models/), so the default stays "
            f"{default_sampler} with {default_steps} steps."
        )
    item3 = f"{decision} FD-CLIP is a Frechet distance on the demo's own medical-CLIP image features, not FID."
    batching = next((r for r in records if r.name.startswith("whole volumes:") and r.ratio), None)
    cases_per_batch = inference.get("cases_per_batch", 1)
    volumes = (
        " Whole volumes: with `cases_per_batch` above 1 the job prepares that many cases and samples their slices "
        "together (`bundle/engines/slice_batching.py`, `CrossCaseBatcher`): the centre slices of all of them in one "
        "call, then each ring outward of all of them, each call at most `batch_size` slices (the memory budget); "
        "every case keeps its own seeds, so its volume is the one it gets alone (up to float rounding; "
        "tests/engines/test_slice_batching.py), its files are still written on their own, and if a shared call fails "
        "each case is sampled alone, so a failing case loses only itself. `inference.json`'s default is "
        f"`cases_per_batch` {cases_per_batch}."
    )
    if batching is not None:
        volumes += (
            f" On this CPU (tiny model, end to end) cases together gave x{1 / batching.ratio:.2f} the volumes per hour "
            f"of case by case (target >= 1.5x: {'met' if batching.met else 'not met'})."
        )
    return {
        1: "Same weights, config and batch; the guided UNet also projects the MSC tokens and runs a second "
        "attention over them in each of the cross-attention layers.",
        3: item3,
        7: MULTI_NODE,
        8: "End to end: `inference.json`'s job in this process (load, preprocess, sample, write volume, "
        "provenance and preview). The SD-1.5 rows need a GPU (`python -m benchmarks.gpu` measures them alone, "
        "`--dry_run` checks the same code's shapes on a CPU)"
        + (
            ": **the GPU figures are still to be measured** (this run had no GPU)."
            if all(r.notes == NO_GPU for r in records if r.name.startswith("SD-1.5 512 px"))
            else "; without a GPU here, they are the rows of the stored GPU run (`benchmarks/results/gpu.json`, "
            "written by `python -m benchmarks.gpu --store`), each saying where and when it was measured. "
            "Eager sampling on the GPU is bound by the host launching the UNet's kernels one by one (diffusers' "
            "own loop takes as long); `torch.compile` with CUDA graphs (`speed_options.compile_options: "
            '{"mode": "reduce-overhead"}`) removes most of that.'
            if any("benchmarks/results/gpu.json" in r.measured for r in records)
            else "."
        )
        + volumes,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer repeats and smaller shapes (< 10 min on 2 cores)")
    parser.add_argument("--out", default=str(REPO / "runs" / "benchmarks"), help="where results.json goes")
    parser.add_argument("--only", default="", help=f"comma-separated subset of {', '.join(BENCHMARKS)}")
    parser.add_argument("--threads", type=int, default=1, help="torch / OpenMP threads on the CPU (default 1)")
    parser.add_argument(
        "--docs", default=None, help="write the Markdown report here (default: docs/performance.md on a full run)"
    )
    parser.add_argument("--keep-work", action="store_true", help="keep the temporary work folder")
    parser.add_argument(
        "--render",
        metavar="DIR",
        default=None,
        help="only re-render the Markdown report (--docs, default docs/performance.md) from the "
        "results.json and machine.json of an earlier run in DIR; nothing is measured",
    )
    args = parser.parse_args(argv)
    if args.render:
        results = Path(args.render)
        records = [Record(**row) for row in json.loads((results / "results.json").read_text())]
        saved = json.loads((results / "machine.json").read_text())
        docs = Path(args.docs or REPO / "docs" / "performance.md")
        docs.write_text(markdown(records, saved["machine"], saved["settings"], narrative(records), PREAMBLE, CLOSING))
        print(f"report: {docs}")
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    log = logging.getLogger("benchmarks")
    selected = [name.strip() for name in args.only.split(",") if name.strip()] or list(BENCHMARKS)
    unknown = sorted(set(selected) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; choose from {list(BENCHMARKS)}")
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = temporary_work_dir()
    ctx = Context(quick=args.quick, work_dir=work, threads=args.threads, device=device)
    info = machine(args.threads)
    settings: dict[str, object] = {
        "command": "python -m benchmarks " + " ".join(sys.argv[1:] if argv is None else argv),
        "mode": "quick" if args.quick else "full",
        "benchmarks": ", ".join(selected),
        "demo data": "demo/data" if ctx.demo_data_present else "generated phantom data",
        "models": ctx.models_note(),
    }
    records: list[Record] = []
    failed = []
    started_all = time.perf_counter()
    for name in selected:
        log.info("benchmark %s ...", name)
        started = time.perf_counter()
        try:
            records += BENCHMARKS[name](ctx)
        except Exception as error:  # one broken area must not lose the others' figures
            failed.append(name)
            log.error("benchmark %s failed:\n%s", name, traceback.format_exc())
            records.append(
                Record(
                    name=f"{name}: failed",
                    item=ITEM_OF[name],
                    ours_s=None,
                    reference_s=None,
                    ratio=None,
                    reference="-",
                    target="-",
                    met=None,
                    notes=f"{type(error).__name__}: {error}"[:800],
                )
            )
        settings[f"duration {name} (s)"] = round(time.perf_counter() - started, 1)
        log.info("benchmark %s done in %.0f s", name, time.perf_counter() - started)
        write_json(out / "results.json", records, info, settings)
    settings["total duration (s)"] = round(time.perf_counter() - started_all, 1)
    settings["data source"] = ctx.data()["source"] if "data" in ctx._cache else "-"
    write_json(out / "results.json", records, info, settings)
    docs = args.docs or (str(REPO / "docs" / "performance.md") if not args.quick and not args.only else None)
    if docs:
        Path(docs).write_text(markdown(records, info, settings, narrative(records), PREAMBLE, CLOSING))
        log.info("report: %s", docs)
    log.info("results: %s (%d figures, %.0f s)", out / "results.json", len(records), time.perf_counter() - started_all)
    if not args.keep_work:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
