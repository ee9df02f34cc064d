"""Training data at real-data scale: each series is read once, the slices live in a disk cache (not in memory),
cached items equal freshly preprocessed ones, and a changed setting, code-relevant attribute or file is never
served from a stale cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser

from bundle.data.datalist import load_datalist
from bundle.data.slice_cache import SETTINGS_FILE, preprocessing_fingerprint
from bundle.data.slice_dataset import SLICE_KEYS, SliceDataset
from bundle.demo.dataset import generate_dataset
from bundle.demo.labels import VERTEBRA_LABELS
from bundle.transforms.case_to_slices import case_to_slices
from bundle.transforms.model_grid import model_grid
from tests.helpers.paths import CONFIGS, REPO

LEVELS = ["L2", "L4"]


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory) -> list[dict]:
    """Two phantom series, each with one entry per vertebra level (several labelled coordinates per series,
    as in RSNA), listed interleaved: A-L2, B-L2, A-L4, B-L4."""
    folder = tmp_path_factory.mktemp("slice_cache")
    generate_dataset(folder, num_cases=2, seed=3, test_fraction=0.0)
    series = load_datalist(folder / "datalist.json", "training")
    return [
        {**case, "case_id": f"{case['case_id']}_{level}", "mask_labels": [VERTEBRA_LABELS[level]]}
        for level in LEVELS
        for case in series
    ]


def preprocessing(sigma_mm: float = 3.0):
    grid = model_grid(list(SLICE_KEYS), spatial_size=16, pixdim_mm=2.0, window_key="soft_mask", window_margin_mm=8.0)
    return case_to_slices(grid, sigma_mm=sigma_mm, max_slices=2)


def tensor_bytes(value: object, seen: set | None = None) -> int:
    """Bytes of every tensor reachable from ``value`` through attributes and containers."""
    seen = set() if seen is None else seen
    if id(value) in seen:
        return 0
    seen.add(id(value))
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, dict):
        return sum(tensor_bytes(v, seen) for v in value.values())
    if isinstance(value, (list, tuple, set)):
        return sum(tensor_bytes(v, seen) for v in value)
    if hasattr(value, "__dict__") and not isinstance(value, type):
        return tensor_bytes(vars(value), seen)
    return 0


def assert_same_items(first: SliceDataset, second: SliceDataset) -> None:
    assert len(first) == len(second)
    for index in range(len(first)):
        a, b = first[index], second[index]
        assert {k: a[k] for k in ("text", "case_id", "label")} == {k: b[k] for k in ("text", "case_id", "label")}
        for key in (*SLICE_KEYS, "pixel_mm"):
            assert type(a[key]) is torch.Tensor and a[key].dtype == torch.float32
            assert torch.equal(a[key], b[key]), (index, key)
    assert torch.equal(first.balanced_weights(), second.balanced_weights())


def test_a_series_with_several_coordinates_is_read_once(phantoms, reads):
    dataset = SliceDataset(phantoms, preprocessing())
    assert not dataset.failures and len(dataset) == 2 * len(phantoms)
    images = {entry["image"] for entry in phantoms}
    assert len(images) == 2 and all(reads[image] == 1 for image in images), dict(reads)
    assert sum(reads.values()) == 2 * len(images)  # the image and its vertebra segmentation, once each
    # each slice keeps its pixel size: the grid resizes the working window (at least 2 mm pixels here) to 16 px
    fresh = preprocessing()(phantoms[0])[0]["image"]
    expected = torch.linalg.vector_norm(fresh.affine[:-1, :2].double(), dim=0).float()
    assert torch.allclose(dataset[0]["pixel_mm"], expected) and bool((expected > 2.0).all())
    # items come one series after another, each series' entries in datalist order
    assert [dataset[i]["case_id"] for i in range(0, len(dataset), 2)] == [
        e["case_id"] for e in sorted(phantoms, key=lambda e: e["image"] != phantoms[0]["image"])
    ]


def test_cached_items_equal_fresh_ones_and_the_dataset_holds_no_slices(phantoms, reads, tmp_path):
    in_memory = SliceDataset(phantoms, preprocessing())
    cached = SliceDataset(phantoms, preprocessing(), cache_dir=tmp_path)
    reads.clear()
    reread = SliceDataset(phantoms, preprocessing(), cache_dir=tmp_path)
    assert not reads, "a second run must read the cache, not the images"
    assert_same_items(in_memory, cached)
    assert_same_items(in_memory, reread)
    assert tensor_bytes(in_memory) >= len(in_memory) * 3 * 16 * 16 * 4  # the walk finds slices where they are
    assert tensor_bytes(cached) == 0 and tensor_bytes(reread) == 0
    folders = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert len(folders) == 1 and len(list(folders[0].glob("*.safetensors"))) == len(phantoms)
    assert json.loads((folders[0] / SETTINGS_FILE).read_text())["chain"]["transforms"][3]["sigma_mm"] == 3.0


def test_a_changed_setting_or_file_is_preprocessed_again(phantoms, reads, tmp_path):
    images = sorted({entry["image"] for entry in phantoms})
    first = SliceDataset(phantoms, preprocessing(3.0), cache_dir=tmp_path)
    reads.clear()
    other = SliceDataset(phantoms, preprocessing(1.0), cache_dir=tmp_path)
    assert all(reads[image] == 1 for image in images), "a new sigma must not reuse the slices of the old one"
    assert not torch.equal(first[0]["soft_mask"], other[0]["soft_mask"])
    assert len([p for p in tmp_path.iterdir() if p.is_dir()]) == 2

    # a replaced image: its entries are preprocessed again, the other series comes from the cache
    volume = nib.load(images[0])
    data = np.asarray(volume.dataobj)
    nib.save(nib.Nifti1Image(data[::-1].copy(), volume.affine, volume.header), images[0])
    reads.clear()
    again = SliceDataset(phantoms, preprocessing(3.0), cache_dir=tmp_path)
    assert reads[images[0]] == 1 and reads[images[1]] == 0
    changed = [i for i in range(len(again)) if again[i]["case_id"].startswith(Path(images[0]).name[:8])]
    assert any(not torch.equal(again[i]["image"], first[i]["image"]) for i in changed)

    # a damaged cache file is preprocessed again, not fatal and not served
    damaged = again.cache.path(phantoms[0])  # a file the run below reads (not one left from the replaced image)
    damaged.write_bytes(b"not a safetensors file")
    reads.clear()
    SliceDataset(phantoms, preprocessing(3.0), cache_dir=tmp_path)
    assert sum(reads.values()) > 0


def test_the_fingerprint_is_the_same_in_a_fresh_process():
    """The cache folder's name must not depend on the process (hash seeds, object addresses)."""
    code = (
        "from tests.data.test_slice_cache import preprocessing; from bundle.data.slice_cache import "
        "preprocessing_fingerprint; print(preprocessing_fingerprint(preprocessing())[0])"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONHASHSEED": "123"},
        check=True,
    )
    assert result.stdout.split()[-1] == preprocessing_fingerprint(preprocessing())[0]
    assert preprocessing_fingerprint(preprocessing(2.0))[0] != preprocessing_fingerprint(preprocessing())[0]


def test_train_config_caches_under_the_output_folder_and_keeps_balanced_sampling(phantoms, tmp_path):
    datalist = tmp_path / "datalist.json"
    datalist.write_text(json.dumps({"training": phantoms}))
    parsed = []
    for _ in range(2):  # a first run and a resumed one (from the cache)
        parser = ConfigParser()
        parser.read_config(str(CONFIGS / "train.json"))
        parser.update(
            {
                "bundle_root": str(REPO),
                "datalist": str(datalist),
                "output_dir": str(tmp_path / "run"),
                "validation_fraction": 0.0,
                "spatial_size": 16,
                "slices_per_case": 2,
            }
        )
        parsed.append((parser.get_parsed_content("train#dataset"), parser.get_parsed_content("train#sampler")))
    (first, sampler), (resumed, _) = parsed
    assert first.cache.folder.parent == tmp_path / "run" / "cache" and tensor_bytes(first) == 0
    assert_same_items(first, resumed)
    assert torch.equal(sampler.weights, first.balanced_weights()) and len(sampler) == len(first)
