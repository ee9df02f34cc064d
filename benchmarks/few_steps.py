"""Item 3 on the trained demo model: 20-step samplers against DDIM 50 and its seed-to-seed spread.

    python -m benchmarks.few_steps --out DIR [--arms ddim50_s0,dpm20,...] [--part slices|volumes|table]

Not part of ``make bench`` (about an hour at one thread on the demo: 18 requests per arm). Per arm:

- ``slices``: in-mask PSNR / SSIM against the original held-out demo slices (the measure of
  :func:`benchmarks.sampling.quality`: 16 validation slices of ``train.json``, one seed per slice), written to
  ``DIR/slice_quality.json``;
- ``volumes``: ``configs/inference.json`` on the demo's 18 requests (the default 3-D mode) and
  ``scripts/text_adherence.py`` on its outputs (does each lesion go the way its text says: hyper- / hypointense,
  size), under ``DIR/volumes/<arm>``;
- ``timing``: seconds per call of each arm's sampler on the same 4 held-out slices, interleaved rounds in one
  process, and the ratio to DDIM 50 (``DIR/timing.json``);
- ``table``: the Markdown table of both, with DDIM 50's spread over its seeds (min - max) and whether each
  20-step arm meets the rule: in-mask PSNR, SSIM and the right-direction share of both signals each at least
  DDIM 50's lowest seed (within the spread or above it), to ``DIR/few_steps.md``.

DDIM 50's seeds: ``ddim50_s0`` .. ``ddim50_s2`` (slices: seeds 0, 10000, 20000; volumes: ``seed`` 0, 1, 2).
The 20-step arms use seed 0 and differ in the sampler (:func:`bundle.inferers.samplers.sampling_scheduler`), the
timestep spacing and the blend's noise (:class:`bundle.inferers.soft_mask_inpainting.SoftMaskBlend`).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from benchmarks.common import REPO, Context, interleaved, median, spread, thread_env

ARMS = {  # name: (sampler, timestep spacing (None: the training one), steps, blend, seed index, eta)
    "ddim50_s0": ("ddim", None, 50, "fresh", 0, 0.0),
    "ddim50_s1": ("ddim", None, 50, "fresh", 1, 0.0),
    "ddim50_s2": ("ddim", None, 50, "fresh", 2, 0.0),
    "ddim20": ("ddim", None, 20, "fresh", 0, 0.0),
    "ddim20_trailing": ("ddim", "trailing", 20, "fresh", 0, 0.0),
    "dpm20": ("dpmsolver++", None, 20, "fresh", 0, 0.0),
    "dpm20_fixed": ("dpmsolver++", None, 20, "fixed", 0, 0.0),
    "dpm20_trailing": ("dpmsolver++", "trailing", 20, "fresh", 0, 0.0),
    "dpm20_trailing_fixed": ("dpmsolver++", "trailing", 20, "fixed", 0, 0.0),
    "ddim20_x0": ("ddim", None, 20, "x0", 0, 0.0),
    "ddim20_x0_s1": ("ddim", None, 20, "x0", 1, 0.0),
    "ddim20_x0_s2": ("ddim", None, 20, "x0", 2, 0.0),
    "ddim20_eta1": ("ddim", None, 20, "fresh", 0, 1.0),
    "unipc20": ("unipc", None, 20, "fresh", 0, 0.0),
    "unipc20_fixed": ("unipc", None, 20, "fixed", 0, 0.0),
}
SLICE_SEED_STRIDE = 10_000
GUIDANCE = 7.5


def blend_options(blend: str) -> dict[str, object]:
    """The inferer's blend settings of an arm's blend: "fresh" / "fixed" (``blend_noise``), "x0" (fresh noise and
    ``blend_x0``, :class:`bundle.inferers.soft_mask_inpainting.PredictedX0Blend`)."""
    return {"blend_noise": "fixed" if blend == "fixed" else "fresh", "blend_x0": blend == "x0"}


def slice_quality(arms: list[str], out: Path, threads: int) -> None:
    from benchmarks.sampling import sample_all
    from bundle.inferers.samplers import sampling_scheduler
    from bundle.inferers.soft_mask_inpainting import SoftMaskInpaintingInferer
    from bundle.metrics.image_quality import in_mask_psnr, in_mask_ssim

    torch.set_num_threads(threads)
    path = out / "slice_quality.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    ctx = Context(quick=False, work_dir=out / "context", threads=threads, device=torch.device("cpu"))
    if not ctx.trained:
        raise SystemExit("needs the trained demo checkpoint in models/ (make demo)")
    model, training = ctx.model(), ctx.noise_scheduler()
    slices = ctx.validation_slices(16)
    originals = torch.stack([item["image"] for item in slices])
    masks = torch.stack([item["soft_mask"] for item in slices])
    for name in arms:
        sampler, spacing, steps, blend, seed, eta = ARMS[name]
        inferer = SoftMaskInpaintingInferer(
            sampling_scheduler(training, sampler, spacing),
            num_inference_steps=steps,
            guidance_scale=GUIDANCE,
            eta=eta,
            **blend_options(blend),
        )
        started = time.perf_counter()
        synthetic = sample_all(model, inferer, slices, seed * SLICE_SEED_STRIDE, ctx.device)
        wall = time.perf_counter() - started
        psnr = [float(in_mask_psnr(s, o, m)) for s, o, m in zip(synthetic, originals, masks, strict=True)]
        ssim = [float(in_mask_ssim(s, o, m)) for s, o, m in zip(synthetic, originals, masks, strict=True)]
        results[name] = {"psnr": statistics.mean(psnr), "ssim": statistics.mean(ssim), "wall_s": wall}
        path.write_text(json.dumps(results, indent=1))
        print(name, results[name], flush=True)


def timing(arms: list[str], out: Path, threads: int, batch: int = 4, repeats: int = 5) -> None:
    """Seconds per call of each arm's sampler on the same ``batch`` held-out slices, interleaved rounds in one
    process (:func:`benchmarks.common.interleaved`), to ``DIR/timing.json``: median, [min, max] and the median of
    the round-by-round ratios to DDIM 50."""
    from bundle.inferers.samplers import sampling_scheduler
    from bundle.inferers.soft_mask_inpainting import SoftMaskInpaintingInferer

    torch.set_num_threads(threads)
    ctx = Context(quick=False, work_dir=out / "context", threads=threads, device=torch.device("cpu"))
    model, training = ctx.model(), ctx.noise_scheduler()
    items = ctx.validation_slices(16)[:batch]
    image, mask = torch.stack([i["image"] for i in items]), torch.stack([i["soft_mask"] for i in items])
    texts, seeds = [str(i["text"]) for i in items], list(range(batch))
    calls = {}
    for name in dict.fromkeys(["ddim50_s0", *arms]):
        sampler, spacing, steps, blend, _, eta = ARMS[name]
        inferer = SoftMaskInpaintingInferer(
            sampling_scheduler(training, sampler, spacing), num_inference_steps=steps, eta=eta, **blend_options(blend)
        )
        calls[name] = lambda inferer=inferer: inferer(image, model, mask, texts, seeds)
    times = interleaved(calls, repeats=repeats)
    reference = times["ddim50_s0"]
    results = {
        name: {
            "median_s": median(values),
            "spread_s": spread(values),
            "ratio_to_ddim50": median([v / r for v, r in zip(values, reference, strict=True)]),
            "slices": batch,
            "rounds": repeats,
        }
        for name, values in times.items()
    }
    (out / "timing.json").write_text(json.dumps(results, indent=1))
    print(json.dumps(results, indent=1), flush=True)


def volumes(arms: list[str], out: Path, threads: int) -> None:
    demo = REPO / "demo" / "data"
    for name in arms:
        sampler, spacing, steps, blend, seed, eta = ARMS[name]
        folder = out / "volumes" / name
        folder.mkdir(parents=True, exist_ok=True)
        options = {"seed": seed, "num_inference_steps": steps, "sampler": sampler, "eta": eta, **blend_options(blend)}
        if spacing is not None:
            options["timestep_spacing"] = spacing
        command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/inference.json"]
        command += ["--datalist", str(demo / "requests.json"), "--output_dir", str(folder / "synthesis")]
        command += [argument for key, value in options.items() for argument in (f"--{key}", str(value))]
        env = {**thread_env(threads), "PYTHONPATH": str(REPO)}
        with open(folder / "inference.log", "w") as log:
            subprocess.run(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env, check=True)
        adherence = [sys.executable, "scripts/text_adherence.py", "--requests", str(demo / "requests.json")]
        adherence += ["--synthesis_dir", str(folder / "synthesis"), "--datalist", str(demo / "datalist.json")]
        adherence += ["--output", str(folder / "text_adherence.json")]
        with open(folder / "text_adherence.log", "w") as log:
            subprocess.run(adherence, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env, check=True)
        print(name, "done", flush=True)


def arm_row(name: str, out: Path) -> dict[str, float | None]:
    """One arm's figures, where measured: PSNR / SSIM (slices), seconds and ratio to DDIM 50 (timing), adherence
    (volumes)."""
    slices = json.loads((out / "slice_quality.json").read_text()).get(name, {})
    timed = json.loads((out / "timing.json").read_text()).get(name, {}) if (out / "timing.json").is_file() else {}
    row = {"psnr": slices.get("psnr"), "ssim": slices.get("ssim")}
    row["ratio"], row["time"] = timed.get("ratio_to_ddim50"), "-"
    if "spread_s" in timed:
        fastest, middle, slowest = timed["spread_s"]
        row["time"] = f"{middle:.1f} [{fastest:.1f} - {slowest:.1f}]"
    row.update({f"{signal}_{measure}": None for signal in ("hyper", "hypo") for measure in ("direction", "size")})
    adherence = out / "volumes" / name / "text_adherence.json"
    if adherence.is_file():
        by_signal = json.loads(adherence.read_text())["synthetic"]["by_signal"]
        for signal, key in (("hyper", "hyperintense"), ("hypo", "hypointense")):
            row[f"{signal}_direction"] = 100 * by_signal[key]["direction_ok"]
            row[f"{signal}_size"] = 100 * by_signal[key]["size_ok"]
    return row


def table(out: Path) -> str:
    """The Markdown table of every arm measured under ``out``, DDIM 50's spread and the verdicts."""
    measured = [name for name in ARMS if arm_row(name, out)["psnr"] is not None or (out / "volumes" / name).is_dir()]
    rows = {name: arm_row(name, out) for name in measured}
    seeds = [rows[name] for name in measured if name.startswith("ddim50")]
    keys = ["psnr", "ssim", "hyper_direction", "hypo_direction", "hyper_size", "hypo_size"]
    spread = {
        key: (min(v), max(v)) for key in keys if len(v := [row[key] for row in seeds if row[key] is not None]) >= 2
    }
    lines = [
        "| arm | sampler | spacing | blend | steps | s per 4 slices [min - max] | time vs DDIM 50 "
        "| in-mask PSNR (dB) | in-mask SSIM "
        "| hyper right direction % | hypo right direction % | hyper size +-30% | hypo size +-30% "
        "| within DDIM-50 spread |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def cell(value, digits):
        return "-" if value is None else f"{value:.{digits}f}"

    for name in measured:
        sampler, spacing, steps, blend, _, eta = ARMS[name]
        row = rows[name]
        if name.startswith("ddim50"):
            verdict = "(reference seed)"
        else:
            low = [key for key in keys[:4] if key in spread and row[key] is not None and row[key] < spread[key][0]]
            complete = all(row[key] is not None for key in keys[:4])
            verdict = "no: below on " + ", ".join(low) if low else ("yes" if complete else "incomplete")
        lines.append(
            f"| {name} | {sampler}{f' (eta {eta:g})' if eta else ''} | {spacing or 'leading (training)'} "
            f"| {blend} | {steps} "
            f"| {row['time']} | {cell(row['ratio'], 2)} | {cell(row['psnr'], 2)} | {cell(row['ssim'], 3)} "
            f"| {cell(row['hyper_direction'], 0)} | {cell(row['hypo_direction'], 0)} "
            f"| {cell(row['hyper_size'], 0)} | {cell(row['hypo_size'], 0)} | {verdict} |"
        )
    digits = {"psnr": 2, "ssim": 3}
    bounds = [
        f"{spread[k][0]:.{digits.get(k, 0)}f} - {spread[k][1]:.{digits.get(k, 0)}f}" if k in spread else "-"
        for k in keys
    ]
    lines.append(f"| DDIM 50 spread over its seeds (min - max) | ddim | | fresh | 50 | | | {' | '.join(bounds)} | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.few_steps", description=__doc__)
    parser.add_argument("--out", required=True)
    # DDIM on trailing spacing is refused now (the cosine schedule's first step); its measured row stays in the table
    parser.add_argument("--arms", default=",".join(a for a in ARMS if a != "ddim20_trailing"))
    parser.add_argument("--part", default="all", choices=("all", "slices", "timing", "volumes", "table"))
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    out, arms = Path(args.out), [a for a in args.arms.split(",") if a]
    out.mkdir(parents=True, exist_ok=True)
    if args.part in ("all", "slices"):
        slice_quality(arms, out, args.threads)
    if args.part in ("all", "timing"):
        timing([a for a in arms if not a.startswith("ddim50")], out, args.threads)
    if args.part in ("all", "volumes"):
        volumes(arms, out, args.threads)
    text = table(out)
    (out / "few_steps.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
