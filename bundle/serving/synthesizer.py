"""One serving API for hosts (MONAI Label, MONAI Deploy, a web service): the inference workflow loaded once, one
synthetic volume per request, by the same code as ``python -m monai.bundle run --config_file configs/inference.json``
(same settings and seed: the same bits)."""

from __future__ import annotations

import copy
import logging
import os
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from monai.bundle import ConfigParser

from bundle.errors import InputError, find_input_error
from bundle.utils.files import read_json_object

INFERENCE_CONFIG = "configs/inference.json"

logger = logging.getLogger(__name__)


@contextmanager
def bad_input_as_input_error() -> Iterator[None]:
    """Raise the :class:`InputError` behind an exception (MONAI's config parser and ``Compose`` wrap it in a
    ``RuntimeError``), so hosts can tell bad input from a fault of the code."""
    try:
        yield
    except Exception as error:
        bad_input = find_input_error(error)
        if bad_input is None or bad_input is error:
            raise
        raise bad_input from error


@dataclass(frozen=True)
class Synthesis:
    """What one request wrote: the synthetic volume (a NIfTI file, a DICOM series folder, ...), its provenance
    record (JSON), a PNG preview and the review gallery's thumbnail strip; and the warnings on the result (each
    ``code``, ``message``, ``measured``, ``threshold``: :class:`bundle.metrics.synthesis_checks.SynthesisChecks`),
    empty when it is not doubtful."""

    volume: Path
    provenance: Path
    preview: Path
    thumbnail: Path | None = None
    warnings: list[dict] = field(default_factory=list)

    @property
    def record(self) -> dict:
        """The provenance record: source, text, seed, mask source, model and sampler settings."""
        return read_json_object(self.provenance, "the provenance record")


class Synthesizer:
    """The inference workflow of a bundle folder, its network loaded once and kept in memory.

    Each :meth:`synthesize` builds that request's job from the config (``cases``, ``preprocessing``, ``inferer``,
    ``predictor``, ``writer``, ``job``) with the loaded network in place of ``network_def``, so a request gives the
    same bits as the command line with the same settings and seed. Requests are served one at a time: a lock is held
    around each (the network, the sampler's scheduler and the output folder's clean-up are not safe to share), so
    concurrent callers wait for one another and each gets its own result.

    Logging is left to the host (no logging config is read).

    Args:
        bundle_root: the bundle folder (``configs/``, ``bundle/``, ``models/``); put on ``sys.path`` for the
            config's ``$import bundle``.
        config_file: the inference config, relative to ``bundle_root``.
        settings: config values fixed for every request, by MONAI id (``models_dir``, ``num_inference_steps``,
            ``spatial_size``, ``device``, ...).

    Raises:
        InputError: the models folder is missing or its weights do not fit, naming the file.
    """

    def __init__(self, bundle_root: str | os.PathLike, config_file: str = INFERENCE_CONFIG, **settings: object) -> None:
        self.bundle_root = Path(bundle_root).resolve()
        if str(self.bundle_root) not in sys.path:
            sys.path.insert(0, str(self.bundle_root))
        self.config = ConfigParser.load_config_files(str(self.bundle_root / config_file))
        self.settings = {"bundle_root": str(self.bundle_root), **settings}
        self._lock = threading.Lock()
        parser = self._parser({})
        with bad_input_as_input_error():
            self.network = parser.get_parsed_content("network_def")
        parser.get_parsed_content("initialize")  # the speed options, applied to the loaded network once

    def _parser(self, request: dict[str, object]) -> ConfigParser:
        parser = ConfigParser(copy.deepcopy(self.config))
        parser.update({**self.settings, **request})
        return parser

    def synthesize(
        self,
        image: str | os.PathLike,
        text: str,
        output_dir: str | os.PathLike,
        mask: str | os.PathLike | None = None,
        mask_labels: Sequence[int] | None = None,
        box: Sequence[Sequence[float]] | None = None,
        point: Sequence[float] | None = None,
        box_size_mm: Sequence[float] | float | None = None,
        coordinate_space: str = "voxel",
        seed: int = 0,
        **settings: object,
    ) -> Synthesis:
        """Insert the lesion ``text`` describes into ``image`` inside the soft mask of one source: the ``mask``
        segmentation's ``mask_labels``, a ``box`` (two corners) or a ``point`` (with a ``box_size_mm`` box around it),
        in ``coordinate_space`` (``"voxel"`` indices or ``"world"`` mm). Writes into ``output_dir``. A doubtful result
        (negligible change, change outside the mask, lesion against the text, rejected by the quality filter) is
        still returned, its warnings in :attr:`Synthesis.warnings` and each logged (``logger.warning``, with the
        measured figure and the threshold).

        ``settings`` are further config values for this request only (e.g. ``num_inference_steps``).

        Raises:
            InputError: bad input (an unreadable image, a mask that does not match it, no text, no mask source, ...),
                naming the file and the problem; nothing is written for the request.
            OutputError: ``output_dir`` cannot be written.
        """
        if image is None or not str(image).strip():
            raise InputError(None, "no image given: the request needs an image file or DICOM folder")
        request = {
            "image": str(image),
            "text": text,
            "mask": None if mask is None else str(mask),
            "mask_labels": None if mask_labels is None else [int(label) for label in mask_labels],
            "box": box,
            "point": point,
            "coordinate_space": coordinate_space,
            "seed": int(seed),
            "output_dir": str(Path(output_dir).absolute()),
            "network_def": self.network,
            **settings,
        }
        if box_size_mm is not None:
            request["box_size_mm"] = box_size_mm
        with self._lock, bad_input_as_input_error():
            job = self._parser(request).get_parsed_content("job")
            job.start()
            outputs = job.run_case(job.cases[0])
        warnings = list(outputs.get("warnings") or [])
        for found in warnings:
            logger.warning(
                "%s: %s: %s (measured %s, threshold %s)",
                outputs["volume"],
                found["code"],
                found["message"],
                found.get("measured"),
                found.get("threshold"),
            )
        thumbnail = outputs.get("thumbnail")
        return Synthesis(
            Path(outputs["volume"]),
            Path(outputs["provenance"]),
            Path(outputs["preview"]),
            None if thumbnail is None else Path(thumbnail),
            warnings,
        )
