"""Ignite handlers the workflows add to MONAI's: exporting trained weights to ``models/`` as safetensors,
resuming from the newest checkpoint, and a picture of validation samples."""

from __future__ import annotations

import logging
import os
import pickle
import pickletools
import re
import shutil
import tempfile
import zipfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint, DiskSaver
from monai.handlers import CheckpointLoader

from bundle.networks.medical_clip import MedicalClipEncoder
from bundle.errors import InputError
from bundle.utils.files import make_readable, remove_leftovers
from bundle.networks.semantic_controller import MedicalSemanticController
from bundle.networks.medsoft_diffusion import CLIP_FOLDER, CONTROLLER_FILE, MedSoftDiffusion, save_trained

logger = logging.getLogger(__name__)


EXPORT_STAGING_PREFIX = ".export."
# ignite's DiskSaver writes each checkpoint to tempfile.NamedTemporaryFile(dir=...) first, then renames it
IGNITE_TEMPORARY_NAME = r"tmp[A-Za-z0-9_]{8}"


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
    """Calls :meth:`export` after every epoch, so an interrupted run still leaves usable weights."""

    def __init__(self, models_dir: str | os.PathLike) -> None:
        self.models_dir = Path(models_dir)

    def attach(self, engine: Engine) -> None:
        for path in remove_leftovers(self.models_dir, re.escape(EXPORT_STAGING_PREFIX) + ".*"):
            logger.warning("removed %s, left half-written by an interrupted export", path)
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
_UNSUPPORTED_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def _pickle_globals(path: Path) -> list[str]:
    """The ``module.name`` globals the first pickle in ``path`` imports, read from its opcodes (never executed)."""
    strings: list[object] = []
    memo: dict[object, object] = {}
    found: list[str] = []
    try:
        with open(path, "rb") as handle:
            for opcode, argument, _ in pickletools.genops(handle):
                if opcode.name in ("GLOBAL", "INST"):
                    found.append(str(argument).replace(" ", "."))
                elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                    found.append(f"{strings[-2]}.{strings[-1]}")
                elif "UNICODE" in opcode.name or "STRING" in opcode.name:
                    strings.append(argument)
                elif opcode.name == "MEMOIZE" and strings:
                    memo[len(memo)] = strings[-1]
                elif opcode.name in ("PUT", "BINPUT", "LONG_BINPUT") and strings:
                    memo[argument] = strings[-1]
                elif opcode.name in ("GET", "BINGET", "LONG_BINGET") and argument in memo:
                    strings.append(memo[argument])
    except (ValueError, EOFError, OSError, UnicodeDecodeError) as error:  # damaged: report what was read
        logger.debug("%s: pickle opcodes unreadable after %d globals (%s)", path, len(found), error)
    return list(dict.fromkeys(found))


def refuse_pickled_code(path: str | os.PathLike) -> None:
    """Raise :class:`InputError` naming ``path`` when unpickling the torch checkpoint would import or call anything
    beyond tensors and plain containers (e.g. ``os.system``), without unpickling it: a checkpoint can carry code.

    Zip checkpoints (``torch.save`` since 1.6) are scanned with ``get_unsafe_globals_in_checkpoint``; older or
    plain pickles are read with torch's weights-only unpickler, which refuses such globals instead of calling
    them.
    """
    path = Path(path)
    try:
        if zipfile.is_zipfile(path):
            unsafe = list(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
        else:
            torch.load(path, map_location="cpu", weights_only=True)
            unsafe = []
    except pickle.UnpicklingError as error:  # name the globals from the opcodes: torch's message may not
        unsafe = ([name for name in _pickle_globals(path) if not name.startswith(("torch.", "collections."))]
                  or _UNSUPPORTED_GLOBAL.findall(str(error)) or ["objects a weights-only load does not allow"])
    except Exception as error:  # truncated, or not a checkpoint at all
        raise InputError(path, f"not a readable PyTorch checkpoint ({type(error).__name__}: {error})") from error
    if unsafe:
        raise InputError(path, f"refused: loading this checkpoint would call {', '.join(unsafe[:5])}, i.e. run code "
                               "rather than read weights; this bundle's training never writes that, so delete it "
                               "(or move it out of the checkpoint folder) unless you know where it comes from")


def newest_checkpoint(checkpoint_dir: str | os.PathLike) -> Path | None:
    """The ``*epoch=N.pt`` file with the largest N written by :class:`ResumableCheckpoints`, if any."""
    folder = Path(checkpoint_dir)
    found = [(int(m.group(1)), p) for p in folder.glob("*.pt") if (m := CHECKPOINT_PATTERN.search(p.name))]
    return max(found)[1] if found else None


class ResumableCheckpoints:
    """Makes training resumable: loads the newest epoch checkpoint of ``checkpoint_dir`` (if any) before the run,
    and saves one after every epoch, keeping the newest only.

    Uses MONAI's ``CheckpointLoader`` (which loads with ``weights_only=True``) and ignite's atomic ``Checkpoint``;
    the trainer itself is added to ``objects`` at attach time, so its epoch and iteration are restored too. A
    checkpoint that would run code when unpickled is refused before anything is loaded
    (:func:`refuse_pickled_code`), and one of another architecture with an :class:`InputError` naming it.
    """

    def __init__(self, checkpoint_dir: str | os.PathLike, objects: Mapping[str, object],
                 map_location: str | None = "cpu") -> None:
        self.checkpoint_dir, self.objects, self.map_location = Path(checkpoint_dir), dict(objects), map_location

    def attach(self, engine: Engine) -> None:
        objects = {**self.objects, "trainer": engine}
        for path in remove_leftovers(self.checkpoint_dir, IGNITE_TEMPORARY_NAME):
            logger.warning("removed %s, a checkpoint left half-written by an interrupted run", path)
        path = newest_checkpoint(self.checkpoint_dir)
        if path is None:
            logger.info("no checkpoint in %s: training from the start", self.checkpoint_dir)
        else:
            logger.info("resuming from %s", path)
            refuse_pickled_code(path)
            loader = CheckpointLoader(load_path=str(path), load_dict=objects, map_location=self.map_location)
            engine.add_event_handler(Events.STARTED, self._resume, loader, path)
        # ignite's own Checkpoint with an atomic DiskSaver: MONAI's CheckpointSaver writes in place (atomic=False),
        # so a run killed while saving would leave a truncated newest checkpoint that the next run cannot load
        saver = Checkpoint(objects, DiskSaver(str(self.checkpoint_dir), require_empty=False, atomic=True),
                           n_saved=1, filename_pattern="checkpoint_epoch={global_step}.{ext}",
                           global_step_transform=lambda trainer, _: trainer.state.epoch)
        engine.add_event_handler(Events.EPOCH_COMPLETED, saver)

    @staticmethod
    def _resume(engine: Engine, loader: CheckpointLoader, path: Path) -> None:
        """Run MONAI's loader; a checkpoint of another model or trainer is refused by name, not by a traceback."""
        try:
            loader(engine)
        except (RuntimeError, KeyError, ValueError, pickle.UnpicklingError) as error:
            lines = [line.strip() for line in str(error).splitlines() if line.strip()]
            first = " ".join(lines[:2])[:300] or type(error).__name__  # e.g. "... for Linear: size mismatch for ..."
            raise InputError(path, f"does not fit this model or trainer ({first}); it belongs to another "
                                   "architecture or configuration: move it away to train from the start") from error


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
