"""Item 8: end-to-end inference throughput on the demo requests (load, preprocess, sample at the default 50 DDIM
steps, write the volume, provenance and preview), with and without ``torch.compile`` of the UNet.

The ``inference.json`` job runs in this process case by case; the first case of each variant is a warm-up
(for the compiled one it is where the compilation happens, reported as ``compile_s``), then the timed cases
alternate between the variants.
"""

from __future__ import annotations

import time

from benchmarks.common import Context, Record, median, spread
from benchmarks.memory import requests_subset


def make_job(ctx: Context, requests, output_dir, compile_unet: bool):
    parser = ctx.parser(
        ["inference.json"],
        datalist=str(requests),
        models_dir=str(ctx.models_dir()),
        output_dir=str(output_dir),
        skip_completed=False,
        compile=compile_unet,
        device=f"$torch.device('{ctx.device}')",
    )
    job = parser.get_parsed_content("job")
    counter = {"slices": 0}
    predict = job.predictor

    def counting(items):
        counter["slices"] += len(items)
        return predict(items)

    job.predictor = counting
    job.start()
    return job, counter, int(parser.get_parsed_content("num_inference_steps"))


def timed_case(job, counter, number: int, case) -> tuple[float, int, str | None]:
    before, failed = counter["slices"], len(job.failed)
    started = time.perf_counter()
    job.process(number, case)
    seconds = time.perf_counter() - started
    error = job.failed[-1]["error"] if len(job.failed) > failed else None
    return seconds, counter["slices"] - before, error


def run(ctx: Context) -> list[Record]:
    timed_cases = 1 if ctx.quick else 3
    warmup_cases = 0 if ctx.quick else 1  # --quick: the one case is timed cold (a few % of one-time costs)
    requests, _ = requests_subset(ctx, timed_cases + warmup_cases, "throughput_requests")
    variants = {"eager": False} if ctx.quick else {"eager": False, "compiled": True}
    jobs = {name: make_job(ctx, requests, ctx.work_dir / "throughput" / name, flag) for name, flag in variants.items()}
    cases = next(iter(jobs.values()))[0].cases
    steps = next(iter(jobs.values()))[2]
    warmup, errors = {name: float("nan") for name in jobs}, {name: None for name in jobs}
    for name, (job, counter, _) in jobs.items():
        for case in cases[:warmup_cases]:
            warmup[name], _, errors[name] = timed_case(job, counter, 1, case)
    seconds: dict[str, list[float]] = {name: [] for name in jobs}
    slices: dict[str, int] = {name: 0 for name in jobs}
    for index, case in enumerate(cases[warmup_cases:], start=warmup_cases + 1):
        order = list(jobs) if index % 2 == 0 else list(jobs)[::-1]
        for name in order:
            if errors[name]:
                continue
            job, counter, _ = jobs[name]
            took, made, error = timed_case(job, counter, index, case)
            if error:
                errors[name] = error
                continue
            seconds[name].append(took)
            slices[name] += made
    shape = (
        f"{len(cases) - warmup_cases} timed demo request(s) after {warmup_cases} warm-up case(s), "
        f"inference.json defaults ({steps} DDIM "
        "steps, guidance 7.5, batch 8, 48 px, every slice the lesion reaches, outward from the centre), "
        f"{ctx.threads} CPU thread(s); "
        f"models: {ctx.models_note()}"
    )
    records = []
    eager = seconds["eager"]
    if not eager:
        return [
            Record(
                name="end-to-end inference (eager)",
                item=8,
                ours_s=None,
                reference_s=None,
                ratio=None,
                reference="none",
                target="report",
                met=None,
                shape=shape,
                notes=f"inference failed: {errors['eager']}",
            )
        ]
    per_volume = median(eager)
    records.append(
        Record(
            name="end-to-end inference (eager)",
            item=8,
            ours_s=per_volume,
            reference_s=None,
            ratio=None,
            reference="none (absolute throughput); ours_s is seconds per volume",
            target="report",
            met=None,
            shape=shape,
            value=3600 / per_volume,
            unit="volumes/hour",
            repeats=len(eager),
            ours_spread_s=spread(eager),
            measured="cases one after the other in one process"
            + (", alternating with the compiled job's" if "compiled" in jobs else ""),
            notes=f"{slices['eager'] / sum(eager):.3f} slices/s; "
            + (f"warm-up case {warmup['eager']:.1f} s" if warmup_cases else "--quick: one case, timed cold"),
            extra={
                "slices_per_s": slices["eager"] / sum(eager),
                "seconds_per_volume_all": eager,
                "warmup_s": warmup["eager"],
            },
        )
    )
    if "compiled" not in jobs:
        records.append(
            Record(
                name="end-to-end inference with torch.compile vs eager",
                item=8,
                ours_s=None,
                reference_s=per_volume,
                reference_spread_s=spread(eager),
                repeats=len(eager),
                measured="the eager cases only (the compiled side was not timed)",
                ratio=None,
                reference="the same job without torch.compile",
                target="report (an option)",
                met=None,
                shape=shape,
                notes="measured in the full run only: compiling the UNet takes minutes per input shape "
                "on this CPU (inductor, C++ code generation)",
            )
        )
        return records
    compiled = seconds["compiled"]
    if not compiled:
        records.append(
            Record(
                name="end-to-end inference with torch.compile vs eager",
                item=8,
                ours_s=None,
                reference_s=per_volume,
                reference_spread_s=spread(eager),
                repeats=len(eager),
                measured="the eager cases only (the compiled side was not timed)",
                ratio=None,
                reference="the same job without torch.compile",
                target="report (an option)",
                met=None,
                shape=shape,
                notes=f"torch.compile failed here: {str(errors['compiled'])[:600]}",
            )
        )
        return records
    compiled_s = median(compiled)
    records.append(
        Record(
            name="end-to-end inference with torch.compile vs eager",
            item=8,
            ours_s=compiled_s,
            reference_s=per_volume,
            ratio=compiled_s / per_volume,
            reference="the same job without torch.compile (eager)",
            target="report (an option: inference.json `compile`)",
            met=None,
            shape=shape,
            value=3600 / compiled_s,
            unit="volumes/hour (compiled)",
            repeats=len(compiled),
            ours_spread_s=spread(compiled),
            reference_spread_s=spread(eager),
            ratio_spread=spread([c / e for c, e in zip(compiled, eager, strict=True)])
            if len(compiled) == len(eager)
            else None,
            measured="cases interleaved between the compiled and the eager job in one process",
            notes=(
                f"first case incl. compilation {warmup['compiled']:.0f} s (eager first case "
                f"{warmup['eager']:.1f} s; the compilation time depends on the machine's load and on inductor's "
                f"on-disk cache of earlier compilations); {slices['compiled'] / sum(compiled):.3f} slices/s "
                "compiled"
            ),
            extra={
                "compile_s": warmup["compiled"] - warmup["eager"],
                "seconds_per_volume_all": compiled,
                "slices_per_s": slices["compiled"] / sum(compiled),
            },
        )
    )
    for job, _, _ in jobs.values():
        job.finish()
    return records
