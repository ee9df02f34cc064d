"""configs/segment.json: a 2-D lesion segmenter learns, and real and real+synthetic training lists get the same
optimiser-step budget."""

from __future__ import annotations

import json

import pytest
import torch
from monai.metrics import DiceMetric

from bundle.data.datalist import load_datalist
from bundle.demo.dataset import generate_dataset
from tests.helpers.workflows import workflow

STEPS = {"max_epochs": 6, "samples_per_epoch": 40, "batch_size": 8, "spatial_size": 32, "slices_per_case": 3}


def train_dice(network, dataset) -> float:
    """Mean lesion Dice of ``network`` over the training slices that hold lesion pixels."""
    metric = DiceMetric(include_background=False)
    network.eval()
    with torch.no_grad():
        for item in dataset.items:
            if item["label"].any():
                prediction = network(item["image"][None]).argmax(1, keepdim=True)
                metric(
                    torch.cat([prediction == 0, prediction == 1], 1).float(),
                    torch.cat([item["label"][None] == 0, item["label"][None] == 1], 1).float(),
                )
    network.train()
    return float(metric.aggregate())


@pytest.fixture(scope="module")
def real_and_synthetic(demo_data, tmp_path_factory):
    """The demo datalist, and one whose training list adds phantom cases of another seed marked synthetic (the
    workflow only reads the flag; where synthetic cases come from is the balancing step's business)."""
    extra = tmp_path_factory.mktemp("extra")
    generate_dataset(extra, num_cases=4, seed=11, test_fraction=0.0)
    real = json.loads((demo_data / "datalist.json").read_text())
    added = [
        {**entry, "case_id": f"synthetic_{entry['case_id']}", "synthetic": True}
        for entry in load_datalist(extra / "datalist.json", "training")
    ]
    both = {
        **real,
        "training": [*load_datalist(demo_data / "datalist.json", "training"), *added],
        "test": load_datalist(demo_data / "datalist.json", "test"),
    }
    path = extra / "real_and_synthetic.json"
    path.write_text(json.dumps(both))
    return demo_data / "datalist.json", path


def test_segmenter_learns_and_both_lists_get_the_same_step_budget(real_and_synthetic, tmp_path, one_torch_thread):
    steps = {}
    for name, datalist in zip(("real", "real_and_synthetic"), real_and_synthetic, strict=True):
        flow = workflow(["segment.json"], "train", datalist=str(datalist), output_dir=str(tmp_path / name), **STEPS)
        flow.initialize()
        network, dataset = flow.parser.get_parsed_content("network"), flow.parser.get_parsed_content("train#dataset")
        before = train_dice(network, dataset)
        flow.run()
        after = train_dice(network, dataset)
        trainer = flow.parser.get_parsed_content("train#trainer")
        steps[name] = (trainer.state.iteration, len(dataset), dataset.counts())
        report = json.loads((tmp_path / name / "metrics.json").read_text())
        flow.finalize()
        assert after > before + 0.1, f"{name}: training Dice {after:.3f}, untrained {before:.3f}"
        assert set(report["metrics"]) == {"test_dice", "test_hd95"}
        assert report["details"]["optimizer_steps"] == trainer.state.iteration
    assert steps["real"][0] == steps["real_and_synthetic"][0] == 6 * 5
    assert steps["real_and_synthetic"][1] > steps["real"][1]
    assert steps["real"][2]["synthetic_cases"] == 0 and steps["real_and_synthetic"][2]["synthetic_cases"] == 4
