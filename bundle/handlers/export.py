"""Exporting trained weights to models/ as safetensors after every epoch, atomically."""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path

from ignite.engine import Engine, Events

from bundle.networks.medical_clip import MedicalClipEncoder
from bundle.networks.medsoft_diffusion import CLIP_FOLDER, CONTROLLER_FILE, MedSoftDiffusion, save_trained
from bundle.networks.semantic_controller import MedicalSemanticController
from bundle.networks.vgmedgen_generator import GENERATOR_FILE, VGMedGen
from bundle.utils.files import make_readable, remove_leftovers

logger = logging.getLogger(__name__)


EXPORT_STAGING_PREFIX = ".export."


def replace_outputs(target_dir: Path, write: Callable[[Path], None]) -> None:
    """Let ``write`` fill a temporary folder beside ``target_dir``, then move each file into place.

    A crash while writing leaves the previous export untouched, never a half-written file.
    """
    target_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=EXPORT_STAGING_PREFIX, dir=target_dir))
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
    """Calls :meth:`export` after every epoch, so an interrupted run still leaves usable weights; ``ema`` is the
    trainer's moving average of the weights when it keeps one (``DiffusionTrainer`` with ``ema_decay``), which the
    exporters that know it write instead of the raw weights."""

    def __init__(self, models_dir: str | os.PathLike) -> None:
        self.models_dir = Path(models_dir)
        self.ema = None

    def attach(self, engine: Engine) -> None:
        for path in remove_leftovers(self.models_dir, re.escape(EXPORT_STAGING_PREFIX) + ".*"):
            logger.warning("removed %s, left half-written by an interrupted export", path)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        self.ema = getattr(engine, "ema", None)
        if getattr(engine.state, "rank", 0) == 0:
            replace_outputs(self.models_dir, self.export)
            logger.info("epoch %d: weights exported to %s", engine.state.epoch, self.models_dir)

    @abstractmethod
    def export(self, folder: Path) -> None:
        """Write this exporter's files into ``folder``."""


class ExportSemanticController(_ExportEachEpoch):
    """Writes ``msc.safetensors`` and, for a generated (``tiny``) medical CLIP, the CLIP itself to ``clip/``."""

    def __init__(
        self,
        controller: MedicalSemanticController,
        clip_encoder: MedicalClipEncoder,
        models_dir: str | os.PathLike,
        save_clip: bool = True,
    ) -> None:
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

    def __init__(
        self, model: MedSoftDiffusion, models_dir: str | os.PathLike, noise_scheduler, save_base_unet: bool = True
    ) -> None:
        super().__init__(models_dir)
        self.model, self.noise_scheduler, self.save_base_unet = model, noise_scheduler, save_base_unet

    def export(self, folder: Path) -> None:
        unet = self.ema.module if self.ema is not None else self.model.unet
        save_trained(self.model, folder, save_base_unet=self.save_base_unet, unet=unet)
        self.noise_scheduler.save_config(folder)


class ExportVGMedGen(_ExportEachEpoch):
    """Writes what VG-MedGen's stage G trained (``vgmedgen_generator.safetensors``: the fusion and the DiT or its
    LoRA, with their settings; their moving average when the trainer keeps one) and the noise schedule
    (``scheduler_config.json``) the sampler must share."""

    def __init__(self, model: VGMedGen, models_dir: str | os.PathLike, noise_scheduler) -> None:
        super().__init__(models_dir)
        self.model, self.noise_scheduler = model, noise_scheduler

    def export(self, folder: Path) -> None:
        self.model.save_trained(folder / GENERATOR_FILE, None if self.ema is None else self.ema.module.state_dict())
        self.noise_scheduler.save_config(folder)


class ExportSavedModule(_ExportEachEpoch):
    """Writes ``module.save(models_dir / file_name)``: a network saved in one safetensors file with its settings
    (VG-MedGen's stage-V and stage-T disentanglers)."""

    def __init__(self, module, models_dir: str | os.PathLike, file_name: str) -> None:
        super().__init__(models_dir)
        self.module, self.file_name = module, file_name

    def export(self, folder: Path) -> None:
        self.module.save(folder / self.file_name)
