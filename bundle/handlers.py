"""Ignite handlers the workflows add to MONAI's: exporting trained weights to ``models/`` as safetensors,
resuming from the newest checkpoint, and a picture of validation samples."""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
from ignite.engine import Engine, Events
from monai.handlers import CheckpointLoader, CheckpointSaver

from bundle.clip_encoders import MedicalClipEncoder
from bundle.provenance import make_readable
from bundle.semantic_controller import MedicalSemanticController
from bundle.synthesis_model import CLIP_FOLDER, CONTROLLER_FILE, MedSoftDiffusion, save_trained

logger = logging.getLogger(__name__)


def replace_outputs(target_dir: Path, write: Callable[[Path], None]) -> None:
    """Let ``write`` fill a temporary folder beside ``target_dir``, then move each file into place.

    A crash while writing leaves the previous export untouched, never a half-written file.
    """
    target_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".export.", dir=target_dir))
    try:
        write(staging)
        for path in sorted(staging.rglob("*")):
            if path.is_file():
                destination = target_dir / path.relative_to(staging)
                destination.parent.mkdir(parents=True, exist_ok=True)
                make_readable(path)
                os.replace(path, destination)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


class _ExportEachEpoch(ABC):
    """Calls :meth:`export` after every epoch, so an interrupted run still leaves usable weights."""

    def __init__(self, models_dir: str | os.PathLike) -> None:
        self.models_dir = Path(models_dir)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        if getattr(engine.state, "rank", 0) == 0:
            replace_outputs(self.models_dir, self.export)
            logger.info("epoch %d: weights exported to %s", engine.state.epoch, self.models_dir)

    @abstractmethod
    def export(self, folder: Path) -> None:
        """Write this exporter's files into ``folder``."""


class ExportSemanticController(_ExportEachEpoch):
    """Writes ``msc.safetensors`` and, for a generated (``tiny``) medical CLIP, the CLIP itself to ``clip/``."""

    def __init__(self, controller: MedicalSemanticController, clip_encoder: MedicalClipEncoder,
                 models_dir: str | os.PathLike, save_clip: bool = True) -> None:
        super().__init__(models_dir)
        self.controller, self.clip_encoder, self.save_clip = controller, clip_encoder, save_clip

    def export(self, folder: Path) -> None:
        self.controller.save(folder / CONTROLLER_FILE)
        if self.save_clip:
            self.clip_encoder.save_local_dir(folder / CLIP_FOLDER)


class ExportGuidedUNet(_ExportEachEpoch):
    """Writes the guided UNet (its EMA copy when the trainer keeps one): ``unet/`` and ``msc_adapter.safetensors``,
    and the noise schedule (``scheduler_config.json``) the sampler must share with training.

    ``save_base_unet=False`` when the base UNet is a frozen pretrained one (SD 1.5 with adapter training).
    """

    def __init__(self, model: MedSoftDiffusion, models_dir: str | os.PathLike, noise_scheduler,
                 save_base_unet: bool = True) -> None:
        super().__init__(models_dir)
        self.model, self.noise_scheduler, self.save_base_unet = model, noise_scheduler, save_base_unet
        self._ema = None

    def __call__(self, engine: Engine) -> None:
        self._ema = getattr(engine, "ema", None)
        super().__call__(engine)

    def export(self, folder: Path) -> None:
        unet = self._ema.module if self._ema is not None else self.model.unet
        save_trained(self.model, folder, save_base_unet=self.save_base_unet, unet=unet)
        self.noise_scheduler.save_config(folder)


CHECKPOINT_PATTERN = re.compile(r"epoch=(\d+)\.pt$")


def newest_checkpoint(checkpoint_dir: str | os.PathLike) -> Path | None:
    """The ``*epoch=N.pt`` file with the largest N written by MONAI's ``CheckpointSaver``, if any."""
    folder = Path(checkpoint_dir)
    found = [(int(m.group(1)), p) for p in folder.glob("*.pt") if (m := CHECKPOINT_PATTERN.search(p.name))]
    return max(found)[1] if found else None


class ResumableCheckpoints:
    """Makes training resumable: loads the newest epoch checkpoint of ``checkpoint_dir`` (if any) before the run,
    and saves one after every epoch, keeping the newest only.

    Uses MONAI's ``CheckpointLoader`` (which loads with ``weights_only=True``) and ``CheckpointSaver``; the trainer
    itself is added to ``objects`` at attach time, so its epoch and iteration are restored too.
    """

    def __init__(self, checkpoint_dir: str | os.PathLike, objects: Mapping[str, object],
                 map_location: str | None = "cpu") -> None:
        self.checkpoint_dir, self.objects, self.map_location = Path(checkpoint_dir), dict(objects), map_location

    def attach(self, engine: Engine) -> None:
        objects = {**self.objects, "trainer": engine}
        path = newest_checkpoint(self.checkpoint_dir)
        if path is None:
            logger.info("no checkpoint in %s: training from the start", self.checkpoint_dir)
        else:
            logger.info("resuming from %s", path)
            CheckpointLoader(load_path=str(path), load_dict=objects, map_location=self.map_location).attach(engine)
        CheckpointSaver(save_dir=str(self.checkpoint_dir), save_dict=objects, save_interval=1, n_saved=1,
                        epoch_level=True).attach(engine)


class SampleGridWriter:
    """After each evaluation, a PNG of masked input / synthesis / original for the first ``max_rows`` items
    (``samples_epoch_<epoch>.png`` in ``output_dir``), and the same grid in TensorBoard when a writer is given."""

    def __init__(self, output_dir: str | os.PathLike, max_rows: int = 4, summary_writer=None,
                 tag: str = "validation_samples") -> None:
        self.output_dir, self.max_rows, self.summary_writer, self.tag = Path(output_dir), max_rows, summary_writer, tag

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._keep_first)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def _keep_first(self, engine: Engine) -> None:
        if engine.state.iteration == 1 or not hasattr(self, "_rows"):
            self._rows = []
        output = engine.state.output
        for i in range(output["pred"].shape[0]):
            if len(self._rows) < self.max_rows:
                self._rows.append([output[k][i, 0].detach().cpu() for k in ("masked", "pred", "label")])

    def __call__(self, engine: Engine) -> None:
        rows = getattr(self, "_rows", [])
        if not rows:
            return
        epoch = getattr(engine.state, "epoch", 0)
        figure, axes = plt.subplots(len(rows), 3, figsize=(6, 2 * len(rows)), squeeze=False)
        for row, images in zip(axes, rows):
            for axis, image, title in zip(row, images, ("masked input", "synthesised", "original")):
                axis.imshow(image.numpy(), cmap="gray", vmin=0, vmax=1)
                axis.set_title(title, fontsize=8)
                axis.axis("off")
        figure.tight_layout()
        self.output_dir.mkdir(parents=True, exist_ok=True)
        path = self.output_dir / f"samples_epoch_{epoch:04d}.png"
        figure.savefig(path, dpi=100)
        plt.close(figure)
        if self.summary_writer is not None:
            grid = torch.cat([torch.cat(images, dim=1) for images in rows], dim=0)
            self.summary_writer.add_image(self.tag, grid[None], epoch)
        logger.info("validation samples: %s", path)
