"""The synthesis request of one app run: the lesion text and where to put it, read from a JSON file
(``$SYNTHESIS_REQUEST_FILE``) or from JSON text in ``$SYNTHESIS_REQUEST`` (the App SDK's command line takes only
its own options, ``-i -o -m -w -l``).

A request is a JSON object::

    {"text": "a 10 mm hypointense lesion in the L1 vertebral body",
     "box": [[x0, y0, z0], [x1, y1, z1]],          # or
     "point": [x, y, z], "box_size_mm": 30,        # or
     "segmentation": "seg.nii.gz", "mask_labels": [21],
     "seed": 0,
     "settings": {"num_inference_steps": 50},
     "provenance_sr": true}

Box and point are in DICOM patient coordinates (LPS millimetres, the frame of ``ImagePositionPatient``), the
segmentation is a label map file of the selected series (relative paths are read from the request file's folder),
``settings`` are further values of ``configs/inference.json`` by id (``models_dir``, ``num_inference_steps``,
``spatial_size``, ...), ``provenance_sr`` (default true) whether the provenance is also written as a DICOM SR.
Exactly one mask source is given.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bundle.errors import InputError

REQUEST_ENV = "SYNTHESIS_REQUEST"
REQUEST_FILE_ENV = "SYNTHESIS_REQUEST_FILE"
MASK_SOURCES = ("box", "point", "segmentation")
KNOWN_KEYS = frozenset(("text", "seed", "settings", "provenance_sr", "box_size_mm", "mask_labels", *MASK_SOURCES))
# DICOM patient coordinates are LPS, the bundle's world coordinates RAS: x and y change sign
LPS_TO_RAS = (-1.0, -1.0, 1.0)


@dataclass(frozen=True)
class SynthesisRequest:
    """A validated request; ``box`` and ``point`` already in the bundle's world frame (RAS mm)."""

    text: str
    source: str
    box: list[list[float]] | None = None
    point: list[float] | None = None
    box_size_mm: float | list[float] | None = None
    segmentation: Path | None = None
    mask_labels: list[int] | None = None
    seed: int = 0
    settings: dict[str, object] = field(default_factory=dict)
    provenance_sr: bool = True

    def synthesize_arguments(self) -> dict[str, object]:
        """The keyword arguments of :meth:`bundle.serving.Synthesizer.synthesize` for this request."""
        arguments: dict[str, object] = {"text": self.text, "seed": self.seed, "coordinate_space": "world"}
        if self.box is not None:
            arguments["box"] = self.box
        elif self.point is not None:
            arguments["point"] = self.point
            if self.box_size_mm is not None:
                arguments["box_size_mm"] = self.box_size_mm
        else:
            arguments["mask"], arguments["mask_labels"] = self.segmentation, self.mask_labels
        return arguments


def lps_to_ras(point: Sequence[float]) -> list[float]:
    """A DICOM patient (LPS mm) position in the bundle's world frame (RAS mm)."""
    return [sign * float(value) for sign, value in zip(LPS_TO_RAS, point, strict=True)]


def _point(value: object, source: str, what: str) -> list[float]:
    if (
        not isinstance(value, Sequence)
        or isinstance(value, str)
        or len(value) != 3
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)
    ):
        raise InputError(source, f"{what} must be 3 finite numbers (x, y, z in patient mm), got {value!r}")
    return [float(v) for v in value]


def _box_size(value: object, source: str) -> float | list[float]:
    sizes = value if isinstance(value, Sequence) and not isinstance(value, str) else [value]
    if len(sizes) not in (1, 3) or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0 for v in sizes
    ):
        raise InputError(source, f"box_size_mm must be a positive number or 3 of them, got {value!r}")
    return float(sizes[0]) if len(sizes) == 1 else [float(v) for v in sizes]


def _labels(value: object, source: str) -> list[int]:
    if (
        not isinstance(value, Sequence)
        or isinstance(value, str)
        or not value
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        raise InputError(source, f"a segmentation needs mask_labels, a non-empty list of integers, got {value!r}")
    return list(value)


def _mask_source(content: Mapping, source: str, base_dir: Path) -> dict[str, object]:
    """The one mask source of a request, box and point in RAS mm."""
    given = [key for key in MASK_SOURCES if content.get(key) is not None]
    if len(given) != 1:
        raise InputError(source, f"give exactly one mask source of {list(MASK_SOURCES)}, got {given or 'none'}")
    if given == ["box"]:
        box = content["box"]
        if not isinstance(box, Sequence) or isinstance(box, str) or len(box) != 2:
            raise InputError(source, f"box must be two corners [[x0, y0, z0], [x1, y1, z1]] in patient mm, got {box!r}")
        return {"box": [lps_to_ras(_point(corner, source, "a box corner")) for corner in box]}
    if given == ["point"]:
        point = {"point": lps_to_ras(_point(content["point"], source, "point"))}
        if content.get("box_size_mm") is not None:
            point["box_size_mm"] = _box_size(content["box_size_mm"], source)
        return point
    segmentation = content["segmentation"]
    if not isinstance(segmentation, str) or not segmentation.strip():
        raise InputError(source, f"segmentation must be a file path, got {segmentation!r}")
    return {
        "segmentation": (base_dir / segmentation).absolute(),
        "mask_labels": _labels(content.get("mask_labels"), source),
    }


def _options(content: Mapping, source: str) -> dict[str, object]:
    """A request's seed, config settings and SR switch."""
    seed = content.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise InputError(source, f"seed must be a non-negative integer, got {seed!r}")
    settings = content.get("settings", {})
    if not isinstance(settings, Mapping):
        raise InputError(source, f"settings must be a JSON object of inference config values, got {settings!r}")
    provenance_sr = content.get("provenance_sr", True)
    if not isinstance(provenance_sr, bool):
        raise InputError(source, f"provenance_sr must be true or false, got {provenance_sr!r}")
    return {"seed": seed, "settings": dict(settings), "provenance_sr": provenance_sr}


def parse_request(content: object, source: str, base_dir: Path) -> SynthesisRequest:
    """Validate a request object (see the module docstring); ``source`` names it in errors, ``base_dir`` anchors a
    relative segmentation path.

    Raises:
        InputError: a missing or blank text, no or several mask sources, a malformed box, point or label list, an
            unknown key.
    """
    if not isinstance(content, Mapping):
        raise InputError(source, f"the request must be a JSON object, got {type(content).__name__}")
    unknown = sorted(set(content) - KNOWN_KEYS)
    if unknown:
        raise InputError(source, f"unknown request keys {unknown}; known: {sorted(KNOWN_KEYS)}")
    text = content.get("text")
    if not isinstance(text, str) or not text.strip():
        raise InputError(source, "no text: the request needs 'text', the lesion to insert (e.g. 'a 10 mm lesion')")
    return SynthesisRequest(
        text=text.strip(), source=source, **_mask_source(content, source, base_dir), **_options(content, source)
    )


def load_request(environ: Mapping[str, str] = os.environ) -> SynthesisRequest:
    """The request from ``$SYNTHESIS_REQUEST_FILE`` (a JSON file) or ``$SYNTHESIS_REQUEST`` (JSON text); exactly
    one of them is set.

    Raises:
        InputError: neither or both set, an unreadable file, invalid JSON or an invalid request, naming the file or
            the variable.
    """
    path, text = environ.get(REQUEST_FILE_ENV), environ.get(REQUEST_ENV)
    if bool(path) == bool(text):
        raise InputError(
            f"${REQUEST_FILE_ENV} / ${REQUEST_ENV}",
            "set exactly one: the request JSON file or the request as JSON text" + (", not both" if path else ""),
        )
    if path:
        source, base_dir = str(Path(path).absolute()), Path(path).absolute().parent
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as error:
            raise InputError(source, f"cannot read the synthesis request ({error})") from error
    else:
        source, base_dir = f"${REQUEST_ENV}", Path.cwd()
    try:
        content = json.loads(text)
    except ValueError as error:
        raise InputError(source, f"the synthesis request is not valid JSON ({error})") from error
    return parse_request(content, source, base_dir)
