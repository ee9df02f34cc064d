"""scripts/balance.py: the plan (counts, requests), the balanced datalist, and resuming after a SIGKILL."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from bundle.balancing.balanced_datalist import (
    balance_datalist,
    balancing_requests,
    balancing_warnings,
    synthesis_counts,
    synthesis_parser,
)
from bundle.data.class_balance import class_counts
from bundle.data.datalist import load_datalist
from bundle.data.slice_dataset import SliceDataset
from bundle.demo.dataset import generate_dataset
from bundle.io.gallery import read_gallery_cases
from bundle.preparation.preparation_checks import PreparationChecks
from bundle.transforms.case_to_slices import case_to_slices
from bundle.transforms.model_grid import model_grid
from bundle.transforms.validate_entry import ValidateEntryd
from tests.helpers.paths import REPO
from tests.helpers.tiny_bundle import TINY_SPATIAL_SIZE, make_tiny_models

FAST = {
    "spatial_size": TINY_SPATIAL_SIZE,
    "num_inference_steps": 2,
    "slices_per_case": 1,
    "through_plane_max_slices": 1,
}
ENTRY_KEYS = {"case_id", "image", "vertebra_seg", "mask_labels", "label", "class_index", "text", "synthetic"}


def entry(case_id: str, label: str, level: str = "L3", source: bool = True) -> dict:
    case = {
        "case_id": case_id,
        "label": label,
        "class_index": ["normal", "benign", "malignant"].index(label),
        "image": f"/d/{case_id}.nii.gz",
        "level": level,
        "lesion_seg": f"/d/{case_id}_lesion.nii.gz",
        "text": f"{label} finding in the {level} vertebral body",
    }
    if source:
        case.update(vertebra_seg=f"/d/{case_id}_seg.nii.gz", mask_labels=[28])
    return case


# ------------------------------------------------------------------------------------------------ the plan
def test_counts_and_synthetic_cases_needed_per_class():
    training = (
        [entry(f"n{i}", "normal") for i in range(7)]
        + [entry(f"b{i}", "benign") for i in range(3)]
        + [entry(f"m{i}", "malignant") for i in range(2)]
    )
    counts = class_counts(training)
    assert counts == {"benign": 3, "malignant": 2, "normal": 7}
    assert synthesis_counts(counts) == {"benign": 4, "malignant": 5}
    assert synthesis_counts(counts, target="benign") == {"benign": 0, "malignant": 1}
    assert synthesis_counts(counts, classes=["malignant"]) == {"malignant": 5}
    with pytest.raises(ValueError, match="no cases"):
        synthesis_counts(counts, target="fracture")
    with pytest.raises(ValueError, match="source class"):
        synthesis_counts(counts, classes=["normal", "benign"])


def test_requests_use_every_normal_case_once_before_any_twice_and_are_reproducible():
    normals = [entry(f"n{i}", "normal", level=f"L{i + 1}") for i in range(3)]
    no_source = [entry(f"x{i}", "normal", source=False) for i in range(4)]  # counted, never a source
    training = normals + no_source + [entry("b0", "benign", level="T12"), entry("m0", "malignant", level="L1")]
    requests = balancing_requests(training, seed=3)
    by_class = Counter(r["label"] for r in requests)
    assert by_class == {"benign": 6, "malignant": 6}  # 7 normal cases counted
    for label in ("benign", "malignant"):
        sources = Counter(r["source_case"] for r in requests if r["label"] == label)
        assert sources == {"n0": 2, "n1": 2, "n2": 2}  # only cases with a mask source, evenly
    assert len({r["case_id"] for r in requests}) == len(requests)
    for request in requests:
        source = next(n for n in normals if n["case_id"] == request["source_case"])
        assert request["image"] == source["image"] and request["vertebra_seg"] == source["vertebra_seg"]
        assert request["mask_labels"] == source["mask_labels"] and "lesion_seg" not in request
        assert request["text"].startswith(request["label"]) and source["level"] in request["text"]
        assert request["class_index"] == {"benign": 1, "malignant": 2}[request["label"]]
    assert balancing_requests(training, seed=3) == requests
    with pytest.raises(ValueError, match="soft-mask source"):
        balancing_requests(no_source + [entry("b0", "benign")])


def test_misspelt_or_reserved_inference_settings_are_refused_before_anything_runs(tmp_path):
    arguments = (tmp_path / "requests.json", tmp_path / "synthetic", "configs/inference.json", REPO, 0, None)
    with pytest.raises(ValueError, match="not settings of"):
        synthesis_parser(*arguments, {"num_inference_step": 2})
    with pytest.raises(ValueError, match="set by balancing itself"):
        synthesis_parser(*arguments, {"output_dir": str(tmp_path)})
    assert not (tmp_path / "synthetic").exists()


# ------------------------------------------------------------------------------------------------ end to end
def command(data: Path, output: Path, models: Path) -> list[str]:
    return [
        sys.executable,
        str(REPO / "scripts" / "balance.py"),
        "--datalist",
        str(data / "datalist.json"),
        "--output_dir",
        str(output),
        "--target",
        "normal",
        "--models_dir",
        str(models),
        "--quality_filter=none",  # the filtered path: tests/balancing/test_quality_balancing.py
        *[f"--{key}={value}" for key, value in FAST.items()],
    ]


ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module")
def balanced(tmp_path_factory) -> dict:
    """Run the CLI, SIGKILL it once the first synthetic case is finished, then run it again to the end."""
    root = tmp_path_factory.mktemp("balance")
    data, output = root / "data", root / "out"
    generate_dataset(data, num_cases=12, seed=1)
    models = make_tiny_models(root / "models")
    synthetic = output / "synthetic"
    log = root / "first_run.log"
    with open(log, "w") as stream:
        process = subprocess.Popen(
            command(data, output, models), cwd=REPO, env=ENV, stdout=stream, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 300
        while not list(synthetic.glob("*_synthetic.json")):
            assert process.poll() is None, f"the run ended before it could be killed:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, "no synthetic case within 300 s"
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL
    finished_first = {p: p.stat().st_mtime_ns for p in synthetic.glob("*_synthetic.json")}
    assert not (output / "datalist.json").exists()  # the datalist is only written at the end
    # what a kill in the middle of a write leaves behind (the writers' temporary names)
    (synthetic / ".case_999_benign_synthetic.nii.gz.k3j2h1.partial.nii.gz").write_bytes(b"half a volume")
    (output / ".datalist.json.x8y7z6.partial").write_text('{"training": [')
    second = subprocess.run(
        command(data, output, models), cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600, check=False
    )
    assert second.returncode == 0, second.stdout[-2000:] + second.stderr[-4000:]
    return {"data": data, "output": output, "models": models, "finished_first": finished_first, "stdout": second.stdout}


def test_an_interrupted_run_resumes_without_duplicates_or_half_written_cases(balanced):
    output, synthetic = balanced["output"], balanced["output"] / "synthetic"
    report = json.loads((synthetic / "report.json").read_text())
    kept = {p.name.removesuffix("_synthetic.json") for p in balanced["finished_first"]}
    assert kept and {c["case_id"] for c in report["skipped"]} == kept  # not redone
    assert all(p.stat().st_mtime_ns == t for p, t in balanced["finished_first"].items())
    done = [c["case_id"] for c in report["written"]] + [c["case_id"] for c in report["skipped"]]
    assert len(done) == len(set(done)) == report["num_cases"] and not report["failed"]
    assert not [p for p in output.rglob("*") if "partial" in p.name]

    training = json.loads((output / "datalist.json").read_text())["training"]
    ids = [e["case_id"] for e in training]
    assert len(ids) == len(set(ids))
    listed = sorted(Path(output / e["image"]).resolve() for e in training if e["synthetic"])
    assert listed == sorted(p.resolve() for p in synthetic.glob("*_synthetic.nii.gz"))  # each case once
    assert sorted(e["case_id"] for e in training if e["synthetic"]) == sorted(done)


def test_the_review_gallery_shows_every_synthetic_case(balanced):
    synthetic = balanced["output"] / "synthetic"
    report = json.loads((synthetic / "report.json").read_text())
    rows = {c["id"]: c for c in read_gallery_cases(synthetic / "index.html")}
    assert set(rows) == {c["case_id"] for c in report["written"] + report["skipped"]}
    kept = {p.name.removesuffix("_synthetic.json") for p in balanced["finished_first"]}
    assert {i for i, c in rows.items() if c["status"] == "kept"} == kept
    assert all((synthetic / c["thumbnail"]).is_file() and (synthetic / c["volume"]).is_file() for c in rows.values())


def test_the_balanced_datalist_lists_real_and_synthetic_cases_with_provenance(balanced):
    output, data = balanced["output"], balanced["data"]
    original = json.loads((data / "datalist.json").read_text())
    content = json.loads((output / "datalist.json").read_text())
    real_training = load_datalist(data / "datalist.json", "training")
    training = load_datalist(output / "datalist.json", "training")  # relative paths resolved
    counts = class_counts(real_training)
    needed = synthesis_counts(counts)
    assert content["balancing"]["synthetic_needed"] == needed and content["balancing"]["complete"]
    assert content["balancing"]["warnings"] == balancing_warnings(original, real_training, {})  # none unfilled
    assert class_counts(training) == {label: counts["normal"] for label in counts}  # every class at the target
    assert Counter(e["label"] for e in training if e["synthetic"]) == Counter(needed)

    real = [e for e in training if not e["synthetic"]]
    assert [e["case_id"] for e in real] == [e["case_id"] for e in real_training]
    assert all(e["synthetic"] is False and Path(e["image"]).is_file() for e in real)
    normal_sources = {e["case_id"]: e for e in real_training if e["label"] == "normal"}
    for case in (e for e in training if e["synthetic"]):
        assert ENTRY_KEYS | {"source_case", "provenance", "text_from"} <= set(case)
        assert case["synthetic"] is True and Path(case["image"]).is_file()
        source = normal_sources[case["source_case"]]
        assert Path(case["vertebra_seg"]).resolve() == Path(source["vertebra_seg"]).resolve()
        assert case["mask_labels"] == source["mask_labels"]
        provenance = json.loads((output / case["provenance"]).read_text())
        assert provenance["synthetic"] is True and provenance["case_id"] == case["case_id"]
        assert provenance["text"] == case["text"] and provenance["label"] == case["label"]
        assert Path(provenance["input"]["path"]) == Path(source["image"]).resolve()
    # the test list stays real and unchanged
    assert [e["case_id"] for e in content["test"]] == [e["case_id"] for e in original["test"]]
    assert not any(e.get("synthetic") for e in content["test"])
    assert content["labels"] == original["labels"]


def test_the_balanced_datalist_loads_in_the_training_pipeline(balanced):
    training = load_datalist(balanced["output"] / "datalist.json", "training")
    for case in training:
        ValidateEntryd()(case)  # files exist, a text and a soft-mask source
    synthetic = next(e for e in training if e["synthetic"])
    source = next(e for e in training if e["case_id"] == synthetic["source_case"])
    grid = model_grid(
        keys=["image", "soft_mask", "masked_image"],
        spatial_size=TINY_SPATIAL_SIZE,
        pixdim_mm=1.0,
        window_key="soft_mask",
        window_margin_mm=16.0,
    )
    dataset = SliceDataset([source, synthetic], case_to_slices(grid, max_slices=1, lesion_guided=True))
    assert not dataset.failures and dataset.labels == ["normal", synthetic["label"]]
    written, original = nib.load(synthetic["image"]), nib.load(source["image"])
    assert np.allclose(written.affine, original.affine)  # the source's vertebra labels fit the synthetic volume
    assert (np.asarray(written.dataobj) != np.asarray(original.dataobj)).any()


def test_running_again_after_it_finished_redoes_nothing(balanced, one_torch_thread):
    output = balanced["output"]
    before = json.loads((output / "datalist.json").read_text())
    summary = balance_datalist(
        balanced["data"] / "datalist.json", output, models_dir=balanced["models"], overrides=FAST
    )
    report = json.loads((output / "synthetic" / "report.json").read_text())
    assert summary["complete"] and not report["written"] and len(report["skipped"]) == report["num_cases"]
    after = json.loads((output / "datalist.json").read_text())
    assert after["training"] == before["training"] and after["test"] == before["test"]


def test_balancing_warns_about_an_empty_test_split_a_rare_class_and_an_unfilled_class(caplog):
    training = [{"case_id": f"n{i}", "label": "normal"} for i in range(12)] + [{"case_id": "t0", "label": "tumor"}]
    content = {"training": training, "validation": training[:6], "test": [], "split": {"fractions": [0.7, 0.1, 0.2]}}
    with caplog.at_level(logging.WARNING):
        found = balancing_warnings(content, training, {"tumor": 2})
    assert [item["code"] for item in found] == ["empty_split", "few_class_cases", "unfilled_class"]
    assert found[1]["measured"] == {"class": "tumor", "count": 1}
    assert found[2]["measured"] == {"class": "tumor", "short": 2}
    assert "2 synthetic cases short" in caplog.text
    # a datalist without a test split and without recorded fractions is not expected to have one
    assert balancing_warnings({"training": training}, training[:12], {}, PreparationChecks(min_class_cases=1)) == []
