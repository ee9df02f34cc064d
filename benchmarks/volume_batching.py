"""Item 8: whole volumes per hour with the slices of several cases in one sampler call (cross-case batching,
``cases_per_batch`` in ``inference.json``) against today's per-case batching (``cases_per_batch`` 1: one case's
slices per call), on the same requests.

- The tiny demo model on the CPU, end to end: ``inference.json``'s job (preprocess, sample, write volume,
  provenance and preview) over the same requests, the two settings in interleaved rounds.
- The slice predictor alone (:func:`measure_volume_batching`: no preprocessing or writing) on stand-in volumes,
  with the tiny demo model and with the SD-1.5 shape (random weights, :func:`benchmarks.gpu.build`; on a CPU with
  a small image and few steps, on a GPU at 512 px and 50 steps).
"""

from __future__ import annotations

import torch

from benchmarks.common import Context, Record, compare, fresh_dir, interleaved, median
from benchmarks.memory import requests_subset
from bundle.engines.synthesis_job import DiffusionPredictor
from bundle.inferers.soft_mask_inpainting import SoftMaskInpaintingInferer

CASES_PER_BATCH = 8
TARGET = ">= 1.5x volumes per hour (ratio <= 0.667)"


def job_rounds(ctx: Context, requests, cases_per_batch: int):
    """A call that runs ``inference.json``'s job over ``requests`` into a fresh folder, and the job."""
    parser = ctx.parser(
        ["inference.json"],
        datalist=str(requests),
        models_dir=str(ctx.models_dir()),
        output_dir=str(ctx.work_dir / "volume_batching" / str(cases_per_batch)),
        skip_completed=False,
        cases_per_batch=cases_per_batch,
        device=f"$torch.device('{ctx.device}')",
    )
    job = parser.get_parsed_content("job")

    def run_all() -> None:
        fresh_dir(job.output_dir)
        report = job.run()
        if report["failed"]:
            raise RuntimeError(f"inference failed: {report['failed'][0]['error']}")

    return run_all, job, parser


def run(ctx: Context) -> list[Record]:
    cases = 8 if ctx.quick else 16
    repeats = 2 if ctx.quick else 5
    requests, cases = requests_subset(ctx, cases, "volume_batching_requests")
    batched, job, parser = job_rounds(ctx, requests, CASES_PER_BATCH)
    per_case, _, _ = job_rounds(ctx, requests, 1)
    slices = [len(job.prepare_case(case)) for case in job.cases]
    times = interleaved({"batched": batched, "per_case": per_case}, repeats=repeats, device=ctx.device)
    budget = int(parser.get_parsed_content("batch_size"))
    steps = int(parser.get_parsed_content("num_inference_steps"))
    strength = parser.get_parsed_content("through_plane_strength")
    shape = (
        f"{cases} demo requests ({sum(slices)} slices, {min(slices)}-{max(slices)} per volume), inference.json "
        f"defaults ({steps} DDIM steps, guidance 7.5, coherent through-plane at strength {strength}, 48 px), "
        f"{ctx.threads} CPU thread(s); models: {ctx.models_note()}"
    )
    per_volume = [t / cases for t in times["batched"]]
    reference_per_volume = [t / cases for t in times["per_case"]]
    record = compare(
        f"whole volumes: {CASES_PER_BATCH} cases per sampler call vs case by case (tiny, CPU, end to end)",
        8,
        per_volume,
        reference_per_volume,
        f"the same job and requests with cases_per_batch 1 (each call holds one case's slices; batch_size {budget})",
        TARGET,
        1 / 1.5,
        shape=shape,
        notes=(
            f"seconds per volume; {3600 / median(per_volume):.0f} volumes/hour batched against "
            f"{3600 / median(reference_per_volume):.0f} case by case; at most {budget} slices per call "
            "(batch_size, the memory budget)"
        ),
    )
    record.value, record.unit = 3600 / median(per_volume), "volumes/hour (batched)"
    tiny = measure_volume_batching(
        ctx.device,
        ctx.model(),
        image_size=48,
        steps=10 if ctx.quick else steps,
        budget=budget,
        strength=strength,
        precision="fp32",
        repeats=repeats,
    )
    return [record, volume_batching_record(tiny, "tiny demo model", "CPU"), sd15_record(ctx)]


def stand_in_volumes(cases: int, slices: int, image_size: int) -> list[list[dict]]:
    """Slice items of ``cases`` random volumes of ``slices`` slices each, a square soft mask on every slice, on a
    shared grid (the coherent mode's centre slice in the middle)."""
    generator = torch.Generator().manual_seed(0)
    mask = torch.zeros(1, image_size, image_size)
    mask[:, image_size // 4 : image_size // 2, image_size // 4 : image_size // 2] = 1.0
    return [
        [
            {
                "image": torch.rand(1, image_size, image_size, generator=generator),
                "soft_mask": mask,
                "text": "a lesion",
                "case_id": f"case{c}",
                "placement": {"slice_index": s},
                "through_plane": {"centre_slice": slices // 2},
            }
            for s in range(slices)
        ]
        for c in range(cases)
    ]


def measure_volume_batching(
    device: torch.device,
    model: torch.nn.Module,
    image_size: int = 512,
    steps: int = 50,
    cases: int = 4,
    slices: int = 5,
    budget: int = 8,
    strength: float = 0.2,
    precision: str | None = "bf16",
    repeats: int = 3,
) -> dict[str, object]:
    """Seconds for ``cases`` whole volumes of ``slices`` slices, coherent through-plane, sampled by the slice
    predictor with all cases' slices sharing calls of at most ``budget`` slices (``batched_s``) and case by case
    (``per_case_s``), interleaved rounds. ``model``: e.g. :func:`benchmarks.gpu.build` (SD 1.5's shape, random
    weights); the lead's GPU script can call this with its model at 512 px and 50 steps."""
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler(
        num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False
    )  # SD 1.5's schedule
    inferer = SoftMaskInpaintingInferer(scheduler, steps, 7.5, precision=precision)
    predictor = DiffusionPredictor(model, inferer, batch_size=budget, device=device, through_plane_strength=strength)
    volumes = stand_in_volumes(cases, slices, image_size)
    times = interleaved(
        {
            "batched": lambda: predictor.predict_cases(volumes),
            "per_case": lambda: [predictor(items) for items in volumes],
        },
        repeats=repeats,
        device=device,
    )
    return {
        "batched_s": times["batched"],
        "per_case_s": times["per_case"],
        "cases": cases,
        "slices": slices,
        "budget": budget,
        "image_size": image_size,
        "steps": steps,
        "strength": strength,
        "precision": precision,
    }


def volume_batching_record(result: dict[str, object], model: str, where: str) -> Record:
    """The row of :func:`measure_volume_batching`'s figures (seconds per volume)."""
    cases = int(result["cases"])
    per_volume = [t / cases for t in result["batched_s"]]
    reference = [t / cases for t in result["per_case_s"]]
    record = compare(
        f"whole volumes, {model} ({result['image_size']} px, {result['steps']} steps): cases together vs case by "
        f"case, the sampler alone ({where})",
        8,
        per_volume,
        reference,
        "the same predictor case by case (each call holds one case's slices)",
        "report",
        None,
        shape=(
            f"{model}, {cases} random stand-in volumes of "
            f"{result['slices']} slices, {result['image_size']} px, {result['steps']} DDIM steps, CFG, coherent "
            f"through-plane at strength {result['strength']}, at most {result['budget']} slices per call, "
            f"precision {result['precision']}; the slice predictor alone (no preprocessing or writing)"
        ),
        notes=f"seconds per volume; {3600 / median(per_volume):.0f} volumes/hour together against "
        f"{3600 / median(reference):.0f} case by case",
    )
    record.value, record.unit = 3600 / median(per_volume), "volumes/hour (together)"
    return record


def sd15_record(ctx: Context) -> Record:
    """The SD-1.5-shape row on this run's device: 512 px and 50 steps on a GPU; on a CPU 64 px and 4 steps."""
    from benchmarks.gpu import build

    on_gpu = ctx.device.type == "cuda"
    model = build(ctx.device).eval()
    result = measure_volume_batching(
        ctx.device,
        model,
        image_size=512 if on_gpu else 64,
        steps=50 if on_gpu else 4,
        cases=4,
        slices=5,
        precision="bf16" if on_gpu else "fp32",
        repeats=3 if on_gpu or not ctx.quick else 2,
    )
    model_name = "SD-1.5 shape (SD 1.5 UNet + VAE configs, random weights, fixed random conditions)"
    return volume_batching_record(result, model_name, "GPU" if on_gpu else "CPU, small image and steps")
