"""configs/evaluate.json reports every metric to JSON and TensorBoard with the feature extractor named."""

from __future__ import annotations

import json
from pathlib import Path

from monai.bundle import ConfigWorkflow

from bundle.demo.dataset import generate_dataset
from tests.helpers.paths import CONFIGS, REPO
from tests.helpers.tiny_bundle import TINY_SPATIAL_SIZE, make_tiny_models


def run_workflow(config_files: list[str], **overrides) -> None:
    files = [str(CONFIGS / name) for name in config_files]
    flow = ConfigWorkflow(
        config_file=files,
        meta_file=str(CONFIGS / "metadata.json"),
        workflow_type="train",
        logging_file=str(CONFIGS / "logging.conf"),
        bundle_root=str(REPO),
        **overrides,
    )
    flow.initialize()
    assert flow.check_properties() in (None, [])  # MONAI's bundle property check
    flow.run()
    flow.finalize()


def test_evaluate_config_reports_every_metric_to_json_and_tensorboard(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    data = tmp_path / "data"
    generate_dataset(data, num_cases=8, seed=5)
    models = make_tiny_models(tmp_path / "models")
    output = tmp_path / "eval"
    run_workflow(
        ["train.json", "evaluate.json"],
        dataset_dir=str(data),
        models_dir=str(models),
        output_dir=str(output),
        spatial_size=TINY_SPATIAL_SIZE,
        slices_per_case=1,
        kid_subsets=10,
        **{"validate#inferer#num_inference_steps": 2},
    )
    report = json.loads((output / "metrics.json").read_text())
    names = {
        "val_in_mask_psnr",
        "val_in_mask_ssim",
        "val_psnr",
        "val_ssim",
        "val_background_psnr",
        "val_background_mae",
        "val_hf_distance",
        "val_fid",
        "val_kid",
        "val_kid_std",
    }
    adherence = {
        "val_text_direction_hyperintense",
        "val_text_direction_hypointense",
        "val_text_size_within_30pct",
        "val_text_position_ap",
        "val_text_position_si",
        "val_text_direction_real",
        "val_text_size_within_30pct_real",
    }
    assert names | adherence <= set(report["metrics"])
    assert all(isinstance(report["metrics"][n], float) for n in names)
    # the test split holds benign and malignant texts, so each share is defined (an untrained model: any value)
    assert all(0.0 <= report["metrics"][n] <= 1.0 for n in adherence)
    assert report["metrics"]["val_background_psnr"] > report["metrics"]["val_in_mask_psnr"]  # only M_b changes
    described = report["details"]["feature_extractor"]
    assert "tiny random-initialised medical CLIP" in described and "not comparable to published FID" in described
    assert Path(report["details"]["models_dir"]) == models.resolve()

    events = EventAccumulator(str(output), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"val_fid", "val_kid", "val_hf_distance", "val_background_psnr", "val_psnr"} <= scalars
    texts = [tag for tag in events.Tags()["tensors"] if "feature_extractor" in tag]
    assert texts, events.Tags()
    text = events.Tensors(texts[0])[0].tensor_proto.string_val[0].decode()
    assert text == described
