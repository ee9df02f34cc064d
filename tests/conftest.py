"""Shared fixtures: the real scans in ../shared/data, a small generated dataset and a tiny trained model on it
(session-wide, since training it is the slow part). Helpers the tests import are in ``tests/helpers``."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import torch

from bundle.balancing.synthesis_requests import write_demo_requests
from bundle.demo.dataset import generate_dataset
from bundle.transforms.loading import LoadVolume
from tests.helpers.paths import SHARED_DATA
from tests.helpers.tiny_weights import write_tiny_clinical_bert, write_tiny_pixart
from tests.helpers.workflows import TINY, TINY_VGMEDGEN, run_checked, run_workflow


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real fixtures not found at {SHARED_DATA} (the shared/ folder beside the checkout)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory) -> Path:
    out_dir = tmp_path_factory.mktemp("workflows") / "data"
    generate_dataset(out_dir, num_cases=10, seed=5)
    write_demo_requests(out_dir / "datalist.json", out_dir / "requests.json")
    return out_dir


@pytest.fixture(scope="session")
def trained(demo_data, tmp_path_factory) -> Path:
    """Stage 1 then stage 2 for two epochs each; returns the models folder."""
    root = tmp_path_factory.mktemp("trained")
    models, runs = root / "models", root / "runs"
    run_workflow(
        ["train_msc.json"],
        "train",
        dataset_dir=str(demo_data),
        models_dir=str(models),
        output_dir=str(runs / "msc"),
        max_epochs=2,
        val_interval=1,
        **TINY,
    )
    assert (models / "msc.safetensors").is_file() and (models / "clip" / "open_clip_config.json").is_file()
    flow = run_workflow(
        ["train.json"],
        "train",
        dataset_dir=str(demo_data),
        models_dir=str(models),
        output_dir=str(runs / "train"),
        max_epochs=2,
        val_interval=2,
        **TINY,
    )
    trainer = flow.parser.get_parsed_content("train#trainer")
    assert trainer.state.epoch == 2  # that it learned: tests/test_learning.py
    return models


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models on a shared machine: one intra-op thread is far faster than several contending for the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture()
def reads(monkeypatch) -> Counter:
    """The number of times each file is read from disk (LoadVolume, the bundle's only volume reader)."""
    counts: Counter = Counter()
    original = LoadVolume.__call__

    def counting(self, path):
        counts[str(path)] += 1
        return original(self, path)

    monkeypatch.setattr(LoadVolume, "__call__", counting)
    return counts


@pytest.fixture(scope="session")
def vgmedgen_models(demo_data, tmp_path_factory) -> Path:
    """VG-MedGen's stages V, T and G in order, one tiny epoch each (32 x 32 crops, a one-layer DiT); returns their
    models folder."""
    root = tmp_path_factory.mktemp("vgmedgen")
    common = {"dataset_dir": str(demo_data), "models_dir": str(root / "models"), **TINY_VGMEDGEN}
    visual = run_checked("vgmedgen_train_visual.json", output_dir=str(root / "runs_v"), **common)
    assert {"rec", "kl", "dice", "reg"} <= set(visual.state.output)  # every term reaches the handlers
    text = run_checked("vgmedgen_train_text.json", output_dir=str(root / "runs_t"), **common)
    assert {"anatomy", "style", "rec"} <= set(text.state.output)
    run_checked("vgmedgen_train.json", output_dir=str(root / "runs_g"), dit_layers=1, **common)
    return root / "models"


@pytest.fixture(scope="session")
def vgmedgen_pretrained(tmp_path_factory) -> Path:
    """VG-MedGen's full-profile folders at toy sizes, saved with ``save_pretrained`` in the published layouts:
    ``PixArt-XL-2-512x512/`` (transformer/, vae/, scheduler/; no T5) and ``Bio_ClinicalBERT/``."""
    root = tmp_path_factory.mktemp("vgmedgen_pretrained")
    write_tiny_pixart(root / "PixArt-XL-2-512x512")
    write_tiny_clinical_bert(root / "Bio_ClinicalBERT")
    return root
