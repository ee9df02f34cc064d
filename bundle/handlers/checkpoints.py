"""Ignite handlers the workflows add to MONAI's: exporting trained weights to ``models/`` as safetensors,
resuming from the newest checkpoint, and a picture of validation samples."""

from __future__ import annotations

import logging
import os
import pickle
import pickletools
import random
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import numpy as np
import torch
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint, DiskSaver
from monai.handlers import CheckpointLoader

from bundle.errors import InputError
from bundle.utils.files import remove_leftovers

logger = logging.getLogger(__name__)


# ignite's DiskSaver writes each checkpoint to tempfile.NamedTemporaryFile(dir=...) first, then renames it
IGNITE_TEMPORARY_NAME = r"tmp[A-Za-z0-9_]{8}"


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
        unsafe = (
            [name for name in _pickle_globals(path) if not name.startswith(("torch.", "collections."))]
            or _UNSUPPORTED_GLOBAL.findall(str(error))
            or ["objects a weights-only load does not allow"]
        )
    except (OSError, EOFError, RuntimeError, ValueError, zipfile.BadZipFile) as error:  # truncated, not a checkpoint
        raise InputError(path, f"not a readable PyTorch checkpoint ({type(error).__name__}: {error})") from error
    if unsafe:
        raise InputError(
            path,
            f"refused: loading this checkpoint would call {', '.join(unsafe[:5])}, i.e. run code "
            "rather than read weights; this bundle's training never writes that, so delete it "
            "(or move it out of the checkpoint folder) unless you know where it comes from",
        )


def newest_checkpoint(checkpoint_dir: str | os.PathLike) -> Path | None:
    """The ``*epoch=N.pt`` file with the largest N written by :class:`ResumableCheckpoints`, if any."""
    folder = Path(checkpoint_dir)
    found = [(int(m.group(1)), p) for p in folder.glob("*.pt") if (m := CHECKPOINT_PATTERN.search(p.name))]
    return max(found)[1] if found else None


class RandomStates:
    """The process's random number generators (torch's CPU and CUDA ones, numpy's and Python's global ones) as a
    checkpoint object: a run resumed from an epoch's checkpoint draws what the uninterrupted run drew after that
    epoch (data order, noise, timesteps, condition dropout), so it ends with the same weights."""

    def state_dict(self) -> dict[str, object]:
        name, keys, position, has_gauss, cached_gaussian = np.random.get_state()
        return {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": {
                "keys": torch.from_numpy(keys.astype(np.int64)),
                "position": position,
                "has_gauss": has_gauss,
                "cached_gaussian": cached_gaussian,
            },
            "python": random.getstate(),
        }

    def load_state_dict(self, state: Mapping[str, object]) -> None:
        torch.set_rng_state(state["torch"])
        if torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state["cuda"])
        saved = state["numpy"]
        keys = saved["keys"].numpy().astype(np.uint32)
        np.random.set_state(("MT19937", keys, saved["position"], saved["has_gauss"], saved["cached_gaussian"]))
        random.setstate(state["python"])


def _saved_names(path: Path) -> set[str]:
    """The top-level names of a checkpoint (a zip checkpoint is memory-mapped, not read)."""
    return set(torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path)))


class ResumableCheckpoints:
    """Makes training resumable: loads the newest epoch checkpoint of ``checkpoint_dir`` (if any) before the run,
    and saves one after every epoch, keeping the newest only.

    Uses MONAI's ``CheckpointLoader`` (which loads with ``weights_only=True``) and ignite's atomic ``Checkpoint``.
    When the run starts, the trainer itself is added to ``objects``, so its epoch and iteration are restored too, and
    so is its moving average of the weights when it keeps one (``ema``: ``DiffusionTrainer`` with ``ema_decay``), so
    a resumed run continues the average instead of restarting it, and the random generators (:class:`RandomStates`),
    so it draws what the uninterrupted run drew; a checkpoint written before they were saved resumes without them.
    Give ``objects`` whatever else keeps state across epochs (e.g. a learning-rate scheduler, a mask source with its
    own generator: anything with ``state_dict`` and ``load_state_dict``). A checkpoint that would run code when
    unpickled is refused before anything is loaded (:func:`refuse_pickled_code`), and one of another architecture
    with an :class:`InputError` naming it.
    """

    def __init__(
        self, checkpoint_dir: str | os.PathLike, objects: Mapping[str, object], map_location: str | None = "cpu"
    ) -> None:
        self.checkpoint_dir, self.objects, self.map_location = Path(checkpoint_dir), dict(objects), map_location
        self.saver: Checkpoint | None = None

    def attach(self, engine: Engine) -> None:
        for path in remove_leftovers(self.checkpoint_dir, IGNITE_TEMPORARY_NAME):
            logger.warning("removed %s, a checkpoint left half-written by an interrupted run", path)
        path = newest_checkpoint(self.checkpoint_dir)
        if path is None:
            logger.info("no checkpoint in %s: training from the start", self.checkpoint_dir)
        else:
            logger.info("resuming from %s", path)
            refuse_pickled_code(path)
        engine.add_event_handler(Events.STARTED, self._start, path)

    def _start(self, engine: Engine, path: Path | None) -> None:
        """When the run starts, the trainer is complete (a ``DiffusionTrainer`` makes its moving average after its
        handlers are attached) and every other handler is registered: load the checkpoint, then register the saver
        last, so that a checkpoint holds the state the next epoch starts from (e.g. the random generators after the
        epoch's validation, whose data loader draws a seed)."""
        objects = {**self.objects, "trainer": engine, "random_states": RandomStates()}
        if getattr(engine, "ema", None) is not None:
            objects["ema"] = engine.ema
        if path is not None:
            saved = _saved_names(path)
            loaded = {name: part for name, part in objects.items() if name in saved or name != "random_states"}
            self._resume(engine, CheckpointLoader(str(path), loaded, map_location=self.map_location), path)
        if self.saver is not None:
            return  # a second run of the same engine: its saver is in place
        # ignite's own Checkpoint with an atomic DiskSaver: MONAI's CheckpointSaver writes in place (atomic=False),
        # so a run killed while saving would leave a truncated newest checkpoint that the next run cannot load
        self.saver = Checkpoint(
            objects,
            DiskSaver(str(self.checkpoint_dir), require_empty=False, atomic=True),
            n_saved=1,
            filename_pattern="checkpoint_epoch={global_step}.{ext}",
            global_step_transform=lambda trainer, _: trainer.state.epoch,
        )
        if path is not None and path.name.startswith("checkpoint_"):  # ours: replaced by the next save, as in one run
            self.saver.load_state_dict({"_saved": [(int(CHECKPOINT_PATTERN.search(path.name).group(1)), path.name)]})
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.saver)

    @staticmethod
    def _resume(engine: Engine, loader: CheckpointLoader, path: Path) -> None:
        """Run MONAI's loader; a checkpoint of another model or trainer is refused by name, not by a traceback."""
        try:
            loader(engine)
        except (RuntimeError, KeyError, ValueError, pickle.UnpicklingError) as error:
            lines = [line.strip() for line in str(error).splitlines() if line.strip()]
            first = " ".join(lines[:2])[:300] or type(error).__name__  # e.g. "... for Linear: size mismatch for ..."
            raise InputError(
                path,
                f"does not fit this model or trainer ({first}); it belongs to another "
                "architecture or configuration: move it away to train from the start",
            ) from error
