"""Running the bundle's configs in tests: a datalist file, the mask-preview job, a MONAI workflow, the command line."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

from ignite.engine import Events
from monai.bundle import ConfigParser, ConfigWorkflow

from tests.helpers.paths import CONFIGS, REPO


def write_datalist(path: Path, entries: list[dict], split: str = "test") -> Path:
    path.write_text(json.dumps({split: entries}, indent=2))
    return path


def preview_parser(**overrides) -> ConfigParser:
    """``configs/mask_preview.json`` with ``overrides`` (MONAI ids, e.g. ``{"predictor#key": "image"}``)."""
    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "mask_preview.json"))
    parser.update({"bundle_root": str(REPO), **overrides})
    return parser


def run_job(datalist: Path, output_dir: Path, **overrides) -> dict:
    """Run the mask-preview job of the config on ``datalist``; returns its report."""
    parser = preview_parser(datalist=str(datalist), output_dir=str(output_dir), **overrides)
    return parser.get_parsed_content("job").run()


TINY = {"spatial_size": 32, "batch_size": 4, "val_max_items": 2, "val_inference_steps": 2, "slices_per_case": 2}
LOGGING = str(CONFIGS / "logging.conf")
META = str(CONFIGS / "metadata.json")


def workflow(config_files, workflow_type: str, **overrides) -> ConfigWorkflow:
    files = [str(CONFIGS / name) for name in config_files]
    return ConfigWorkflow(
        config_file=files if len(files) > 1 else files[0],
        meta_file=META,
        logging_file=LOGGING,
        workflow_type=workflow_type,
        bundle_root=str(REPO),
        **overrides,
    )


TINY_VGMEDGEN = {"spatial_size": 32, "slices_per_case": 1, "batch_size": 4, "max_epochs": 1}
"""VG-MedGen's training configs at test size (stage G adds ``dit_layers`` 1)."""


def run_checked(config: str, **overrides):
    """Initialise a config's train workflow, check MONAI's properties, run it; returns its trainer (which ran at least
    one iteration to a finite loss)."""
    flow = workflow([config], "train", **overrides)
    flow.initialize()
    try:
        assert flow.check_properties() in (None, [])
        flow.run()
        trainer = flow.trainer
        assert trainer.state.iteration > 0 and math.isfinite(trainer.state.output["loss"].item())
        return trainer
    finally:
        flow.finalize()


def run_workflow(config_files, workflow_type: str, **overrides) -> ConfigWorkflow:
    flow = workflow(config_files, workflow_type, **overrides)
    flow.initialize()
    flow.run()
    flow.finalize()
    return flow


def train_counting(config_files, **overrides) -> tuple[ConfigWorkflow, int]:
    """Run a training config's workflow; returns it (finalised) and the number of iterations this run did (fewer
    than the trainer's final count when it resumed)."""
    flow = workflow(config_files, "train", **overrides)
    flow.initialize()
    done: list[int] = []
    flow.trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda engine: done.append(engine.state.iteration))
    flow.run()
    flow.finalize()
    return flow, len(done)


def bundle_run(
    *arguments: str, timeout: int = 600, processes: int | None = None, master_port: int = 29531
) -> subprocess.CompletedProcess:
    """``python -m monai.bundle run ARGUMENTS`` from the repository, asserting success; with ``processes``, under
    ``torch.distributed.run`` on that many CPU processes (one OpenMP thread each)."""
    launcher = [sys.executable]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if processes is not None:
        launcher += ["-m", "torch.distributed.run", f"--nproc_per_node={processes}", f"--master_port={master_port}"]
        env["OMP_NUM_THREADS"] = "1"
    result = subprocess.run(
        [*launcher, "-m", "monai.bundle", "run", *arguments],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=env,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result
