"""Smoke tests of the benchmark code (``python -m benchmarks``): cheap benchmark functions with one repeat and
small shapes produce well-formed records and JSON. No timing is asserted."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from benchmarks import blur, gpu, report, sampling, scale_out, unet_overhead, volume_batching
from benchmarks.__main__ import narrative
from benchmarks.common import Context, Record, compare, interleaved, not_measured
from bundle.inferers.soft_mask_inpainting import SoftMaskInpaintingInferer
from bundle.networks.medical_clip import MedicalClipEncoder
from bundle.networks.medsoft_diffusion import tiny_model

REQUIRED = {
    "name",
    "ours_s",
    "reference_s",
    "ratio",
    "reference",
    "target",
    "met",
    "ours_spread_s",
    "reference_spread_s",
    "ratio_spread",
    "measured",
}


@pytest.fixture()
def ctx(tmp_path) -> Context:
    return Context(quick=True, work_dir=tmp_path, threads=1, device=torch.device("cpu"))


def check(records: list[Record]) -> list[dict]:
    rows = json.loads(json.dumps([r.as_dict() for r in records]))
    for row in rows:
        assert REQUIRED <= set(row), row
        assert isinstance(row["name"], str) and row["name"] and isinstance(row["reference"], str)
        assert row["met"] in (True, False, None)
        if row["ours_s"] is not None and row["reference_s"] is not None:
            assert row["ratio"] == pytest.approx(row["ours_s"] / row["reference_s"])
        for side in ("ours", "reference"):
            if row[f"{side}_s"] is not None:  # every timed side has its rounds' [min, median, max]
                low, middle, high = row[f"{side}_spread_s"]
                assert low <= middle <= high and low <= row[f"{side}_s"] <= high and row["measured"]
    report.require_spread(records)
    return rows


def test_interleaved_timing_alternates_and_compare_builds_a_record():
    order = []
    times = interleaved({"a": lambda: order.append("a"), "b": lambda: order.append("b")}, repeats=3, warmup=1)
    assert order == ["a", "b", "a", "b", "b", "a", "a", "b"]  # warm-up, then alternating rounds
    assert {k: len(v) for k, v in times.items()} == {"a": 3, "b": 3}
    record = compare("x", 1, [2.0, 4.0, 3.0], [1.0, 2.0, 1.5], "ref", "<= 1.10", 1.10, "shape")
    assert record.ours_s == 3.0 and record.reference_s == 1.5 and record.ratio == 2.0 and record.met is False
    rows = check([record, not_measured("y", 8, "ref", "report", "not measured: no GPU")])
    assert rows[1]["ratio"] is None and rows[1]["met"] is None


def test_blur_benchmark_records(ctx, monkeypatch):
    monkeypatch.setattr(blur, "SHAPE", (48, 40, 12))
    rows = check(blur.run(ctx))
    assert [r["item"] for r in rows] == [4] * 5
    like, whole_job, not_like, dense, previous = rows
    assert "same crop" in like["name"] and "not like for like" in not_like["name"] and "worst" in dense["name"]
    assert whole_job["ours_spread_s"] == not_like["ours_spread_s"]  # the same rounds of ours
    assert like["reference_spread_s"] == whole_job["reference_spread_s"]  # the same rounds of scipy on the crop
    for row in (whole_job, dense):
        assert row["extra"]["max_abs_diff_vs_monai_gaussiansmooth"] < 1e-6  # the fast path is MONAI's result
        assert row["extra"]["max_abs_diff_vs_scipy"] < 0.05  # erf vs sampled kernel
    assert whole_job["extra"]["crop"] == "48x40x10"  # box 20..27, 18..21, 5..6 grown by tails 24, 24, 4 (clipped)


def test_unet_overhead_measure_on_a_small_config(ctx):
    config = {**gpu.TINY_UNET, "sample_size": 16}
    plain, guided = unet_overhead.unet_pair(config, msc_dim=24)
    assert plain.conv_in.weight.data_ptr() == guided.unet.conv_in.weight.data_ptr()  # shared base weights
    inputs = unet_overhead.make_inputs(2, 4, 16, 7, 32, 24, ctx.device)
    with torch.no_grad():
        guided.scale = 0.0  # gamma 0: the base UNet exactly
        same = guided(inputs["sample"], inputs["timestep"], inputs["text"], inputs["tokens"])
        assert torch.allclose(same, plain(inputs["sample"], inputs["timestep"], inputs["text"]).sample, atol=1e-5)
        guided.scale = 1.0
    rows = check(
        [
            unet_overhead.measure("fwd", plain, guided, inputs, backward, 1, ctx, "small", "<= 1.10", 1.10)
            for backward in (False, True)
        ]
    )
    assert all(r["repeats"] == 1 for r in rows)


def test_diffusers_reference_loop_keeps_the_background(ctx):
    clip = MedicalClipEncoder.tiny(embed_dim=32, image_size=32, vision_width=32, text_width=32, heads=2)
    model = tiny_model(spatial_size=32, clip_encoder=clip, unet_channels=(16, 32), seed=0).eval()
    image = torch.rand(1, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    mask = torch.zeros_like(image)
    mask[..., 8:20, 10:22] = 1.0
    scheduler = unet_scheduler()
    reference = sampling.diffusers_inpaint_loop(
        model, sampling.DDIMScheduler.from_config(scheduler.config), image, mask, ["a lesion"], seed=0, steps=3
    )
    ours = SoftMaskInpaintingInferer.ddim(scheduler, num_inference_steps=3)(image, model, mask, ["a lesion"], [0])
    for result in (reference, ours):
        assert result.shape == image.shape and torch.allclose(result[mask == 0], image[mask == 0], atol=1e-5)


def test_volume_batching_measures_both_sides_on_the_same_volumes(one_torch_thread):
    clip = MedicalClipEncoder.tiny(embed_dim=32, image_size=32, vision_width=32, text_width=32, heads=2)
    model = tiny_model(spatial_size=32, clip_encoder=clip, unet_channels=(16, 32), seed=0).eval()
    result = volume_batching.measure_volume_batching(
        torch.device("cpu"), model, image_size=32, steps=2, cases=2, slices=3, budget=4, precision="fp32", repeats=1
    )
    assert len(result["batched_s"]) == len(result["per_case_s"]) == 1
    (row,) = check([volume_batching.volume_batching_record(result, "tiny", "CPU")])
    assert row["ours_s"] == pytest.approx(result["batched_s"][0] / 2) and row["unit"] == "volumes/hour (together)"
    assert "2 random stand-in volumes of 3 slices" in row["shape"] and "at most 4 slices per call" in row["shape"]


def unet_scheduler():
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", clip_sample=False)


def test_gpu_script_dry_run_checks_the_shapes_on_the_cpu(ctx, capsys, monkeypatch, tmp_path):
    assert gpu.main(["--dry_run", "--tiny"]) == 0
    checked = json.loads(capsys.readouterr().out)
    assert checked["dry_run"] == "ok" and checked["sample"] == [1, 1, 16, 16] and checked["sample_finite"]
    assert checked["volume_sample"] == [2, 1, 16, 16] and checked["latents"] == [2, 4, 8, 8]
    assert "IPAdapterAttnProcessor2_0" in checked["attention_processors"]  # the MSC attention runs through SDPA
    monkeypatch.setattr(gpu, "STORED", tmp_path / "none.json")
    rows = check(gpu.run(ctx))  # no GPU here and no stored GPU run: every row says so instead of a figure
    assert all(r["notes"] == "not measured: no GPU" and r["ratio"] is None for r in rows)
    assert {r["name"] for r in rows} == {name for name, _, _ in gpu.ROWS.values()}
    assert "GPU figures are still to be measured" in narrative(gpu.run(ctx))[8]


def test_a_run_without_a_gpu_shows_the_stored_gpu_run_and_says_where_it_was_measured(ctx):
    stored = json.loads(gpu.STORED.read_text())
    rows = check(gpu.run(ctx))
    assert [r["name"] for r in rows] == [row["name"] for row in stored["rows"]]
    assert all(stored["device"] in r["measured"] and "benchmarks/results/gpu.json" in r["measured"] for r in rows)
    assert "GPU figures are still to be measured" not in narrative(gpu.run(ctx))[8]


def measured_result(**changes) -> dict:
    result = {
        "errors": {},
        "ours_s": [2.1, 1.9, 2.0],
        "reference_s": [2.0, 2.0, 2.0],
        "cast_s": [1.0, 0.9, 1.1],
        "autocast_s": [2.0, 2.0, 2.0],
        "best_eager": "bf16 weights cast once",
        "best_eager_s": [1.0, 0.9, 1.1],
        "channels_last_s": [1.2, 1.2, 1.2],
        "default_layout_s": [1.0, 0.9, 1.1],
        "inference_peak_mib": 5000.0,
        "inference_peak_model": "bf16 weights cast once",
        "volume_s": [6.0, 5.0],
        "volume_slices": 8,
        "vae_bf16": {"max_abs": 0.01, "mean_abs": 0.001, "finite": True},
        "training": {
            "plain": {"seconds_per_step": 0.5, "peak_mib": 20000.0},
            "gradient_checkpointing": {"seconds_per_step": 0.7, "peak_mib": 9000.0},
        },
        "compiled": {
            "default": {"first_call_s": 60.0, "seconds": [0.6, 0.65, 0.7]},
            "reduce-overhead": {"first_call_s": 50.0, "seconds": [0.4, 0.45, 0.6]},
        },
        "guided_unet_parameters_m": 872.6,
    }
    return {**result, **changes}


def test_gpu_rows_from_a_measurement_carry_targets_and_spreads():
    rows = {r["name"]: r for r in check(gpu.records_of(measured_result(), "NVIDIA H200"))}
    assert set(rows) == {name for name, _, _ in gpu.ROWS.values()}
    image = rows[gpu.ROWS["image"][0]]  # the fastest eager variant (weights cast once)
    assert image["ours_s"] == 1.0 and image["ours_spread_s"] == [0.9, 1.0, 1.1] and image["met"] is True
    assert "cast once" in image["notes"]
    assert rows[gpu.ROWS["cast"][0]]["ratio"] == pytest.approx(0.5)
    assert rows[gpu.ROWS["sampler"][0]]["ratio"] == pytest.approx(1.0) and rows[gpu.ROWS["sampler"][0]]["met"]
    compiled = rows[gpu.ROWS["compiled"][0]]
    assert compiled["ours_s"] == 0.65 and compiled["met"] is False and compiled["ratio"] == pytest.approx(0.65)
    graphs = rows[gpu.ROWS["compiled_graphs"][0]]
    assert graphs["ours_s"] == 0.45 and graphs["met"] is True and "reduce-overhead" in graphs["notes"]
    assert rows[gpu.ROWS["inference_memory"][0]]["met"] is True
    assert rows["SD-1.5 512 px: seconds per whole volume (8 slices batched)"]["value"] == pytest.approx(8 / 5.5)
    other = {r["name"]: r for r in check(gpu.records_of(measured_result(), "NVIDIA A10"))}
    assert other[gpu.ROWS["image"][0]]["met"] is None  # the targets are for H100/H200-class GPUs


def test_a_gpu_section_that_failed_gives_rows_that_say_why_and_keeps_the_others():
    result = measured_result(errors={"compiled_reduce-overhead": "BackendCompilerFailed: boom"})
    del result["compiled"]["reduce-overhead"]
    rows = {r["name"]: r for r in check(gpu.records_of(result, "NVIDIA H200"))}
    graphs = rows[gpu.ROWS["compiled_graphs"][0]]
    assert graphs["ours_s"] is None and graphs["notes"] == "BackendCompilerFailed: boom"
    assert rows[gpu.ROWS["compiled"][0]]["ours_s"] == 0.65


def test_iteration_rate_from_stats_handler_lines():
    log = "\n".join(
        f"2026-01-01 00:00:{10 + 2 * i:02d},000 - INFO - Epoch: 1/1, Iter: {i}/6 -- train_loss: 0.1"
        for i in range(1, 7)
    )
    rate, intervals = scale_out.iteration_rate(log)  # iterations 1..5 (6 may be a short batch), 2 s apart
    assert intervals == 4 and rate == pytest.approx(0.5)
    with pytest.raises(ValueError):
        scale_out.iteration_rate("no iterations")


def test_markdown_report_has_a_row_per_record_with_the_spread_of_its_rounds(tmp_path):
    records = [
        compare("fast thing", 1, [1.0, 3.0, 1.5], [2.0, 2.5, 3.0], "ref", "<= 1.10", 1.10, "s"),
        not_measured("gpu thing", 8, "ref", "report", "not measured: no GPU"),
    ]
    assert records[0].ratio_spread == [0.5, 0.5, 1.2]  # round by round: 1/2, 3/2.5, 1.5/3 (the row: 1.5/2.5)
    text = report.markdown(records, {"cpu": "test"}, {"mode": "quick"}, {1: "why"}, "pre", "post")
    assert "| ours: median [min - max] | reference: median [min - max] | ratio: median [min - max] |" in text
    assert "| fast thing | 1.50 [1.00 - 3.00] | 2.50 [2.00 - 3.00] | 0.6 [0.5 - 1.2] |" in text
    assert "interleaved rounds in one process, 3 round(s)" in text
    assert "gpu thing" in text and "not measured: no GPU" in text
    report.write_json(tmp_path / "results.json", records, {"cpu": "test"}, {})
    rows = json.loads((tmp_path / "results.json").read_text())
    assert rows[0]["ours_spread_s"] == [1.0, 1.5, 3.0] and rows[0]["reference_spread_s"] == [2.0, 2.5, 3.0]
    assert check([Record(**row) for row in rows])


@pytest.mark.parametrize(
    "change",
    [
        {"ours_spread_s": None},
        {"reference_spread_s": None},
        {"ours_spread_s": [1.0, 1.5]},
        {"ours_spread_s": [2.0, 1.5, 3.0]},  # not in order
        {"ours_s": 5.0},  # outside its spread
        {"measured": ""},
    ],
)
def test_report_refuses_a_timed_row_without_its_spread(tmp_path, change):
    record = dataclasses.replace(
        compare("fast thing", 1, [1.0, 3.0, 1.5], [2.0, 2.5, 3.0], "ref", "<= 1.1", 1.1), **change
    )
    with pytest.raises(ValueError, match="fast thing"):
        report.markdown([record], {}, {}, {}, "pre", "post")
    with pytest.raises(ValueError, match="fast thing"):
        report.write_json(tmp_path / "results.json", [record], {}, {})
    assert not (tmp_path / "results.json").exists()


def test_few_steps_table_judges_each_arm_against_ddim50s_lowest_seed(tmp_path):
    """An arm passes only when PSNR, SSIM and both signals' right-direction shares are each at least DDIM 50's
    lowest seed; one measure below it fails the arm and is named."""
    from benchmarks import few_steps

    quality = {
        "ddim50_s0": {"psnr": 25.0, "ssim": 0.90},
        "ddim50_s1": {"psnr": 24.0, "ssim": 0.89},
        "dpm20": {"psnr": 24.5, "ssim": 0.895},
        "unipc20": {"psnr": 23.0, "ssim": 0.95},
    }
    (tmp_path / "slice_quality.json").write_text(json.dumps(quality))
    for name, direction in (("ddim50_s0", 1.0), ("ddim50_s1", 8 / 9), ("dpm20", 1.0), ("unipc20", 1.0)):
        folder = tmp_path / "volumes" / name
        folder.mkdir(parents=True)
        signal = {"direction_ok": direction, "size_ok": 0.5}
        adherence = {"synthetic": {"by_signal": {"hyperintense": signal, "hypointense": signal}}}
        (folder / "text_adherence.json").write_text(json.dumps(adherence))
    timing = {
        "ddim50_s0": {"median_s": 5.0, "ratio_to_ddim50": 1.0},
        "dpm20": {"median_s": 2.1, "spread_s": [2.0, 2.1, 2.5], "ratio_to_ddim50": 0.42},
    }
    (tmp_path / "timing.json").write_text(json.dumps(timing))
    rows = {line.split(" | ")[0].strip("| "): line for line in few_steps.table(tmp_path).splitlines()}
    assert rows["dpm20"].endswith("| yes |") and "| 2.1 [2.0 - 2.5] | 0.42 |" in rows["dpm20"]
    assert rows["unipc20"].endswith("| no: below on psnr |")
    assert "24.00 - 25.00" in rows["DDIM 50 spread over its seeds (min - max)"]
