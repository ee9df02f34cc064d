"""What a MONAI Label request asks of the bundle's serving API: the server's settings from ``--conf``, the arguments
of :meth:`bundle.serving.Synthesizer.synthesize` from a request, the file sent back. Plain Python (no MONAI Label
import), so it is tested in the bundle's own environment."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

from bundle.errors import InputError

REQUEST = "request"  # the source an InputError names for a request's own fields
DATASTORE_LABEL = "datastore_label"  # the request key the app puts the file of the ``mask_tag`` label under
DEFAULT_MASK_LABELS = [1]  # a label painted in Slicer/OHIF has the value 1


def server_settings(conf: Mapping[str, str], config_ids: Iterable[str]) -> dict[str, object]:
    """The bundle settings among the ``--conf KEY VALUE`` pairs of ``monailabel start_server``: the keys that are
    IDs of the inference config (``models_dir``, ``num_inference_steps``, ``spatial_size``, ``device``, ...), each
    value read as JSON when it is JSON (``2`` -> 2) and as the string otherwise. Other keys (``bundle_root``,
    ``server_mode``, ...) are MONAI Label's or the app's."""
    ids = set(config_ids) - {"bundle_root"}
    return {key: _json_or_string(value) for key, value in conf.items() if key in ids}


def _json_or_string(value: str) -> object:
    try:
        return json.loads(value)
    except (TypeError, ValueError):
        return value


def _given(value: object) -> bool:
    """Whether a request field is set: clients send a task's unset config fields as ``""``, ``null`` or ``[]``."""
    return value is not None and not (isinstance(value, (str, list, tuple)) and len(value) == 0)


def _numbers(value: object, what: str, kind: type = float) -> list:
    """``value`` (a number, a list of numbers, or a string of them, comma-separated or JSON) as a list of ``kind``."""
    parsed = value
    if isinstance(value, str):
        text = value.strip()
        parsed = _json_or_string(text) if text.startswith("[") else text.split(",")
    values = list(parsed) if isinstance(parsed, (list, tuple)) else [parsed]
    try:
        numbers = [kind(v) for v in values]
        exact = all(float(n) == float(v) for n, v in zip(numbers, values, strict=True))
    except (TypeError, ValueError):
        exact = False
    if not exact:
        raise InputError(REQUEST, f"{what} must be {'whole numbers' if kind is int else 'numbers'}, got {value!r}")
    return numbers


def vertebra_source(request: Mapping[str, object]) -> dict[str, object]:
    """The soft-mask source of a request as :meth:`Synthesizer.synthesize` arguments, from exactly one of:

    - ``label``: a segmentation uploaded with the request, with ``mask_labels`` (default ``[1]``);
    - ``datastore_label``: the study's datastore label the request names by ``mask_tag`` (the app resolves the tag),
      with ``mask_labels`` (default ``[1]``);
    - ``box``: two voxel corners ``[[x0, y0, z0], [x1, y1, z1]]``;
    - ``foreground``: clicked points ``[[x, y, z], ...]`` (the last one, the latest click, is used), a box of
      ``box_size_mm`` (the bundle's default when not given) around it.

    Raises:
        InputError: none or several of them.
    """
    given = [key for key in ("label", DATASTORE_LABEL, "box", "foreground") if _given(request.get(key))]
    if not given:
        raise InputError(
            REQUEST,
            "no vertebra given: upload a label, name a datastore label with mask_tag, give a box or click a "
            "foreground point",
        )
    if len(given) > 1:
        raise InputError(REQUEST, f"give one vertebra source, got {len(given)}: {', '.join(given)}")
    source = given[0]
    if source in ("label", DATASTORE_LABEL):
        labels = request.get("mask_labels")
        return {
            "mask": str(request[source]),
            "mask_labels": _numbers(labels, "mask_labels", int) if _given(labels) else DEFAULT_MASK_LABELS,
        }
    if source == "box":
        return {"box": request["box"]}
    points = request["foreground"]
    arguments: dict[str, object] = {"point": points[-1] if isinstance(points[0], (list, tuple)) else points}
    if _given(request.get("box_size_mm")):
        size = _numbers(request["box_size_mm"], "box_size_mm")
        arguments["box_size_mm"] = size[0] if len(size) == 1 else size
    return arguments


def synthesis_arguments(request: Mapping[str, object]) -> dict[str, object]:
    """The arguments of :meth:`Synthesizer.synthesize` (all but ``output_dir``) for a MONAI Label infer request:
    the study image (``image``, the datastore's file), the lesion ``text``, the vertebra (:func:`vertebra_source`),
    ``coordinate_space`` (``"voxel"``, default, or ``"world"``) and ``seed`` (default 0).

    A missing or empty text is passed on: the serving API refuses it with the bundle's own message.

    Raises:
        InputError: no vertebra or several, or a field that is not a number where one is expected.
    """
    seed = request.get("seed")
    return {
        "image": request.get("image"),
        "text": request.get("text"),
        **vertebra_source(request),
        "coordinate_space": request.get("coordinate_space") or "voxel",
        "seed": _numbers(seed, "seed", int)[0] if _given(seed) else 0,
    }


def result_file(volume: Path) -> Path:
    """Move the synthetic ``volume`` to a new temporary file that MONAI Label sends back (and then deletes), named
    after it (``t2_synthetic_<random>.nii.gz``); a DICOM series folder is sent as one zip file."""
    name = volume.name.split(".", 1)
    suffix = "." + name[1] if len(name) > 1 else ".zip"
    handle, path = tempfile.mkstemp(prefix=name[0] + "_", suffix=suffix)
    os.close(handle)
    if volume.is_dir():
        shutil.make_archive(path[: -len(".zip")], "zip", volume)
    else:
        shutil.move(volume, path)
    return Path(path)
