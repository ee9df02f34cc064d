"""Killing a run midway loses nothing: training resumes from its last checkpoint, inference skips the cases it
had finished, and no half-written file is left. The tests do the killing (SIGKILL, no chance to clean up)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from bundle.handlers.checkpoints import newest_checkpoint
from tests.helpers.paths import REPO, SCT_LEVELS, SCT_T2
from tests.helpers.workflows import TINY, bundle_run, run_job, write_datalist

TINY_ARGUMENTS = [part for key, value in TINY.items() for part in (f"--{key}", str(value))]


def start(*arguments: str, log: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "monai.bundle", "run", *arguments]
    with open(log, "w") as handle:
        return subprocess.Popen(
            command, cwd=REPO, stdout=handle, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"}
        )


def kill_when(process: subprocess.Popen, ready, timeout_s: float = 300.0, log: Path | None = None) -> None:
    """SIGKILL ``process`` as soon as ``ready()`` is true."""
    deadline = time.monotonic() + timeout_s
    try:
        while not ready():
            assert process.poll() is None, (
                f"finished before it could be killed:\n{log.read_text()[-3000:] if log else ''}"
            )
            assert time.monotonic() < deadline, "timed out waiting for the moment to kill"
            time.sleep(0.05)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()


def partial_files(folder: Path) -> list[str]:
    return sorted(
        str(p.relative_to(folder))
        for p in folder.rglob("*")
        if ".partial" in p.name or p.name.startswith((".export.", "tmp"))
    )


def test_killed_training_resumes_from_its_last_checkpoint(trained, demo_data, tmp_path):
    runs, models = tmp_path / "runs", tmp_path / "models"
    arguments = [
        "--config_file",
        "configs/train.json",
        "--dataset_dir",
        str(demo_data),
        "--stage1_dir",
        str(trained),
        "--models_dir",
        str(models),
        "--output_dir",
        str(runs),
        "--val_interval",
        "100",
        *TINY_ARGUMENTS,
    ]
    log = tmp_path / "killed.log"
    process = start(*arguments, "--max_epochs", "50", log=log)
    kill_when(
        process,
        lambda: (
            newest_checkpoint(runs / "checkpoints") is not None
            and int(re.search(r"epoch=(\d+)", newest_checkpoint(runs / "checkpoints").name).group(1)) >= 2
        ),
        log=log,
    )
    checkpoint = newest_checkpoint(runs / "checkpoints")
    killed_after = int(re.search(r"epoch=(\d+)", checkpoint.name).group(1))
    assert 2 <= killed_after < 50
    # the models exported after each epoch are complete and loadable whatever moment the kill came
    assert (models / "msc_adapter.safetensors").is_file() and (models / "unet" / "config.json").is_file()

    resumed = bundle_run(*arguments, "--max_epochs", str(killed_after + 1))
    output = resumed.stdout + resumed.stderr
    assert f"resuming from {checkpoint}" in output
    epochs_run = {int(e) for e in re.findall(r"Epoch: (\d+)/", output)}
    assert epochs_run == {killed_after + 1}, epochs_run  # nothing done twice, nothing skipped
    assert newest_checkpoint(runs / "checkpoints").name.endswith(f"epoch={killed_after + 1}.pt")
    assert partial_files(runs) == [] and partial_files(models) == []


def test_killed_inference_skips_the_finished_cases_and_leaves_no_partial_file(trained, demo_data, tmp_path):
    requests = json.loads((demo_data / "requests.json").read_text())["test"]
    assert len(requests) >= 3
    out = tmp_path / "out"
    arguments = [
        "--config_file",
        "configs/inference.json",
        "--datalist",
        str(demo_data / "requests.json"),
        "--models_dir",
        str(trained),
        "--output_dir",
        str(out),
        "--num_inference_steps",
        "10",
        "--spatial_size",
        "32",
        "--slices_per_case",
        "2",
        "--cases_per_batch",
        "2",  # cases are written a group at a time: the kill lands while the second group is sampled
    ]
    log = tmp_path / "killed.log"
    process = start(*arguments, log=log)
    kill_when(process, lambda: any(out.glob("*_synthetic.json")), log=log)
    finished_cases = sorted(p.name.removesuffix("_synthetic.json") for p in out.glob("*_synthetic.json"))
    # the finished cases' files (the kill may land while the next case of the group is being written: its temporary
    # files are not among them)
    finished = {p.name: p.stat().st_mtime_ns for case in finished_cases for p in out.glob(f"{case}_synthetic*")}
    assert 1 <= len(finished_cases) < len(requests)
    # what a kill in the middle of writing a volume leaves: the writer's temporary file
    (out / f".{requests[-1]['case_id']}_synthetic.nii.gz.k1ll3d.partial.nii.gz").write_bytes(b"\x1f\x8b half")

    bundle_run(*arguments)
    report = json.loads((out / "report.json").read_text())
    assert sorted(s["case_id"] for s in report["skipped"]) == finished_cases
    assert sorted(w["case_id"] for w in report["written"]) == sorted(
        r["case_id"] for r in requests if r["case_id"] not in finished_cases
    )
    assert not report["failed"]
    for name, mtime in finished.items():  # the finished cases were not written again
        assert (out / name).stat().st_mtime_ns == mtime, name
    assert partial_files(out) == []
    suffixes = (".json", ".nii.gz", ".png", "_thumbnail.png")
    expected = sorted(f"{r['case_id']}_synthetic{ext}" for r in requests for ext in suffixes)
    assert sorted(p.name for p in out.iterdir() if p.name not in ("report.json", "index.html")) == expected


def test_a_finished_case_is_redone_when_its_request_changed(shared_data, tmp_path):
    entry = {
        "case_id": "c3",
        "image": str(SCT_T2),
        "vertebra_seg": str(SCT_LEVELS),
        "mask_labels": [3],
        "text": "a lesion",
    }
    out = tmp_path / "out"
    overrides = {"job#skip_completed": True}
    first = run_job(write_datalist(tmp_path / "a.json", [entry]), out, **overrides)
    assert [w["case_id"] for w in first["written"]] == ["c3"]
    again = run_job(write_datalist(tmp_path / "b.json", [entry]), out, **overrides)
    assert [s["case_id"] for s in again["skipped"]] == ["c3"] and not again["written"]
    changed = run_job(write_datalist(tmp_path / "c.json", [{**entry, "text": "another lesion"}]), out, **overrides)
    assert [w["case_id"] for w in changed["written"]] == ["c3"] and not changed["skipped"]
    redone = run_job(
        write_datalist(tmp_path / "d.json", [{**entry, "text": "another lesion"}]), out, **{"job#skip_completed": False}
    )
    assert [w["case_id"] for w in redone["written"]] == ["c3"]
