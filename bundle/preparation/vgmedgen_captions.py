"""VG-MedGen's attribute captions: each case's target vertebra described by anatomy and style attributes in one
constrained template, and how faithful measured captions are to a phantom's ground truth.

The paper asks a vision-language model "Describe the [Class] image using features: [Attribute List]" over two
orthogonal groups, *anatomy* and *style*. Here the attribute list is fixed and each caption is the answer in one
template (:func:`caption_from_attributes`)::

    anatomy: "<size> mm <shape> lesion with <margin> margins in the <location> <level> vertebral body, <height>"
    style:   "<strength> <signal> to the surrounding marrow (<contrast> %), <texture>[, with coarse vertical
              trabecular striations]"
    text:    "<Class> <level> vertebra. Anatomy: <anatomy>. Style: <style>."

A normal vertebra: anatomy "<level> vertebral body <height>, no focal lesion", style "<texture> marrow signal".

Where the attributes come from (:data:`CAPTION_SOURCES`):

- ``"measured"``: from the image and its masks (:func:`bundle.metrics.lesion_attributes.measure_attributes` on the
  target vertebra ``vertebra_seg == mask_labels`` and the entry's ``lesion_seg``), in mm from the voxel spacing;
- ``"attributes"``: the datalist's own ground-truth ``attributes`` (the phantom writes them; an "ideal captioner");
- ``"file"``: captions made offline by any vision-language model, a CSV with columns ``case_id`` and ``caption``
  (:func:`read_caption_csv`); such a caption is used as the whole text (no anatomy/style split is invented);
- ``"class"``: the class label only, "<Class> vertebra." (the paper's ablation without attribute captioning,
  :func:`class_caption`).

The captioned unit is the case's target vertebra: every working-window crop of the case
(:func:`bundle.transforms.case_to_slices.slice_transform`, the classifier's crop) carries the case's ``text``.
Given that crop's preprocessing, each captioned entry also carries its working window's extent
(:func:`working_window_mm`, ``crop_window_mm``), from which the generation job gives the crops generated from the
caption the source window's pixel size at its own grid size.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data.utils import affine_to_spacing
from monai.transforms import Orientation

from bundle.data.datalist import FILE_KEYS, load_datalist
from bundle.demo.lesion_text import LOCATION_WORDS, deformity_phrase, signal_strength_word
from bundle.errors import InputError, describe_failure
from bundle.metrics.lesion_attributes import measure_attributes
from bundle.transforms.loading import LoadVolume, match_image_grid, voxel_spacing_mm
from bundle.utils.files import read_json_object, relative_paths, write_json_atomically

CAPTION_SOURCES = ("measured", "attributes", "file", "class")
SIZE_TOLERANCE_MM = 3.0
HEIGHT_LOSS_TOLERANCE = 10


@dataclass(frozen=True)
class Caption:
    """One case's caption: the anatomy and style sentences (empty for a caption from a file) and the text."""

    anatomy_text: str
    style_text: str
    text: str


def class_caption(label: str) -> str:
    """The class-label-only caption of the "without attribute captioning" ablation, e.g. "Malignant vertebra."."""
    return f"{label.strip().capitalize()} vertebra."


def load_vertebra(entry: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray]:
    """``(image, vertebra, lesion or None, spacing)`` of an entry, arrays ``(X, A, S)`` in RAS order.

    ``vertebra`` is ``vertebra_seg`` at the entry's ``mask_labels``; ``lesion`` is ``lesion_seg`` > 0 when the
    entry has one. Masks on another voxel order of the same grid are reordered; any other mismatch is an error.

    Raises:
        InputError: naming the entry or the file, for a missing field, an unreadable file, a mask on another grid
            or labels that are not in the segmentation.
    """
    case = entry.get("case_id", "<entry>")
    for key in ("image", "vertebra_seg", "mask_labels"):
        if entry.get(key) in (None, "", []):
            raise InputError(case, f"needs {key!r} to measure its attributes")
    loader = LoadVolume()
    image = loader(entry["image"])
    segmentation = match_image_grid(image, loader(entry["vertebra_seg"]))
    labels = [int(v) for v in np.atleast_1d(entry["mask_labels"])]
    vertebra = torch.isin(segmentation.round().long(), torch.tensor(labels)).float()
    if not vertebra.any():
        raise InputError(entry["vertebra_seg"], f"has no voxel with the labels {labels} of case {case}")
    lesion = match_image_grid(image, loader(entry["lesion_seg"])) if entry.get("lesion_seg") else None
    orient = Orientation(axcodes="RAS", labels=None)
    image = orient(image)
    spacing = voxel_spacing_mm(image.affine)
    arrays = [np.asarray(orient(v)[0]) for v in (vertebra, lesion) if v is not None]
    return np.asarray(image[0]), arrays[0] > 0, (arrays[1] > 0 if lesion is not None else None), spacing


def measured_attributes(entry: Mapping[str, Any]) -> dict[str, Any]:
    """The measured attributes of an entry's target vertebra (JSON form)."""
    image, vertebra, lesion, spacing = load_vertebra(entry)
    try:
        return measure_attributes(image, vertebra, lesion, spacing).to_json()
    except ValueError as error:
        raise InputError(entry.get("case_id", entry["image"]), str(error)) from error


def working_window_mm(entry: Mapping[str, Any], preprocessing: Callable[[dict], Sequence[Mapping]]) -> list[float]:
    """The extent (rows, columns in mm) of the entry's working window: its first slice item's model grid (pixel
    size times size; with :func:`bundle.transforms.case_to_slices.slice_transform` the slice with the largest
    target-vertebra area).

    Raises:
        InputError: naming the case, when the preprocessing fails on it or gives no slice.
    """
    case = entry.get("case_id", "<entry>")
    try:
        items = preprocessing(dict(entry))
    except (InputError, RuntimeError) as error:  # MONAI's Compose wraps a transform's error in a RuntimeError
        raise InputError(case, f"no working window: {describe_failure(error)}") from error
    if not items:
        raise InputError(case, "no working window: the preprocessing gives no slice")
    window = items[0]["image"]
    pixel_mm = affine_to_spacing(window.affine, r=2).tolist()
    return [float(p * n) for p, n in zip(pixel_mm, window.shape[1:], strict=True)]


def caption_from_attributes(attributes: Mapping[str, Any], lesion_class: str, level: str | None) -> Caption:
    """The template of the module docstring filled from one attribute record (measured or ground truth).

    A record with a lesion needs ``size_mm``, ``signal``, ``contrast``, ``margin``, ``position_ap``,
    ``position_si``; ``shape``, ``texture``, ``striations``, ``height_loss_percent`` and ``posterior_bulge`` are
    used where present. A record without a lesion (``lesion`` false, or ``signal`` ``"normal"``) describes a
    normal vertebra.
    """
    level = level or "lumbar"
    height = deformity_phrase(int(attributes.get("height_loss_percent", 0)), bool(attributes.get("posterior_bulge")))
    texture = attributes.get("texture")
    has_lesion = attributes.get("lesion", attributes.get("signal") not in (None, "normal"))
    if not has_lesion:
        anatomy = f"{level} vertebral body{height}, no focal lesion"
        style = f"{texture or 'normal'} marrow signal"
    else:
        shape = f"{attributes['shape']} " if attributes.get("shape") else ""
        location = LOCATION_WORDS[(attributes["position_ap"], attributes["position_si"])]
        anatomy = (
            f"{round(float(attributes['size_mm']))} mm {shape}lesion with {attributes['margin']} margins in the "
            f"{location} {level} vertebral body{height}"
        )
        contrast = float(attributes["contrast"])
        style = (
            f"{signal_strength_word(contrast)}{attributes['signal']} to the surrounding marrow "
            f"({round(100 * contrast)} %)"
            + (f", {texture}" if texture else "")
            + (", with coarse vertical trabecular striations" if attributes.get("striations") else "")
        )
    text = f"{lesion_class.capitalize()} {level} vertebra. Anatomy: {anatomy}. Style: {style}."
    return Caption(anatomy, style, text)


def read_caption_csv(path: str | os.PathLike) -> dict[str, str]:
    """``{case_id: caption}`` from a CSV with a header naming ``case_id`` and ``caption`` (other columns ignored).

    Raises:
        InputError: naming the file, when it is missing or unreadable, lacks either column, has a row without a
            case id or with an empty caption (its line number), or lists a case twice.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "caption file not found (a CSV with columns case_id, caption)")
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            missing = {"case_id", "caption"} - set(reader.fieldnames or [])
            if missing:
                raise InputError(path, f"no column {sorted(missing)} in the header {reader.fieldnames}")
            captions: dict[str, str] = {}
            for row in reader:
                case, caption = (row.get("case_id") or "").strip(), (row.get("caption") or "").strip()
                if not case or not caption:
                    raise InputError(path, f"line {reader.line_num}: empty {'case_id' if not case else 'caption'}")
                if case in captions:
                    raise InputError(path, f"line {reader.line_num}: case {case!r} is listed twice")
                captions[case] = caption
    except (UnicodeDecodeError, csv.Error) as error:
        raise InputError(path, f"cannot be read as a UTF-8 CSV ({error})") from error
    return captions


def caption_entries(
    entries: Sequence[Mapping[str, Any]],
    source: str = "measured",
    captions_csv: str | os.PathLike | None = None,
    window: Callable[[dict], Sequence[Mapping]] | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """Each entry with its caption: ``text`` (the caption), ``anatomy_text``, ``style_text``, ``caption_source``,
    ``caption_attributes`` (the attributes it was made from; none for a file) and the entry's former text as
    ``source_text``; given ``window``, also ``crop_window_mm`` (:func:`working_window_mm`).

    Args:
        entries: datalist entries (``case_id``, ``label``; ``level`` is used when present; ``source="measured"``
            needs ``image``, ``vertebra_seg``, ``mask_labels`` and reads ``lesion_seg`` when present;
            ``"attributes"`` needs ``attributes``).
        source: one of :data:`CAPTION_SOURCES`.
        captions_csv: the CSV for ``source="file"`` (:func:`read_caption_csv`).
        window: the working window's preprocessing (e.g. the classifier's
            :func:`bundle.transforms.case_to_slices.slice_transform`), or None: no ``crop_window_mm``.

    Returns:
        The captioned entries, and ``[{"case_id", "error"}]`` for the entries that could not be captioned (one
        bad case does not lose the others).

    Raises:
        ValueError: for an unknown source, or ``"file"`` without a CSV.
        InputError: for a bad CSV (the whole file is refused).
    """
    if source not in CAPTION_SOURCES:
        raise ValueError(f"caption source must be one of {CAPTION_SOURCES}, got {source!r}")
    if source == "file" and captions_csv is None:
        raise ValueError("caption source 'file' needs captions_csv (a CSV with columns case_id, caption)")
    from_file = read_caption_csv(captions_csv) if source == "file" else {}
    captioned, failures = [], []
    for entry in entries:
        case = str(entry.get("case_id"))
        try:
            if source == "file":
                if case not in from_file:
                    raise InputError(captions_csv, f"has no caption for case {case!r}")
                attributes, caption = None, Caption("", "", from_file[case])
            elif source == "class":
                if not str(entry.get("label") or "").strip():
                    raise InputError(case, "has no class 'label' to caption from")
                attributes, caption = None, Caption("", "", class_caption(str(entry["label"])))
            else:
                if source == "attributes" and not isinstance(entry.get("attributes"), Mapping):
                    raise InputError(case, "has no ground-truth 'attributes' object to caption from")
                attributes = measured_attributes(entry) if source == "measured" else dict(entry["attributes"])
                caption = caption_from_attributes(attributes, str(entry.get("label", "")), entry.get("level"))
            result = {
                **entry,
                "source_text": entry.get("text"),
                "text": caption.text,
                "anatomy_text": caption.anatomy_text,
                "style_text": caption.style_text,
                "caption_source": source,
                "caption_attributes": attributes,
            }
            if window is not None:
                result["crop_window_mm"] = working_window_mm(result, window)
        except (InputError, KeyError) as error:
            failures.append({"case_id": case, "error": str(error)})
            continue
        captioned.append(result)
    return captioned, failures


def caption_fidelity(captioned: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Agreement of measured attributes (``caption_attributes``) with the ground truth (``attributes``).

    Over the cases with a ground-truth lesion: signal word, margin, position (both words), striations, size
    within :data:`SIZE_TOLERANCE_MM` (also per ground-truth class, ``size_<class>``); over all cases: height loss
    found exactly when there is some and, where there is, within :data:`HEIGHT_LOSS_TOLERANCE` percentage points;
    lesion found exactly when there is one. Returns ``{name: {"agree": n, "of": m, "fraction": n / m}}``, the
    fraction a constant answer would reach on the two yes/no attributes (``<name>_majority``: the more frequent
    ground-truth value), per-case ``size_errors_mm`` (measured - ground truth) and their median per class
    (``median_size_error_mm``).
    """
    checks: dict[str, list[bool]] = {
        k: [] for k in ("lesion", "signal", "margin", "position", "size", "striations", "height_loss")
    }
    truths: dict[str, list[bool]] = {"margin": [], "striations": []}
    size_errors: list[float] = []
    errors_by_class: dict[str, list[float]] = {}
    for entry in captioned:
        truth, measured = entry.get("attributes"), entry.get("caption_attributes")
        if not isinstance(truth, Mapping) or not isinstance(measured, Mapping):
            continue
        true_lesion = truth.get("lesion_class") not in (None, "normal")
        checks["lesion"].append(bool(measured["lesion"]) == true_lesion)
        true_loss, loss = int(truth.get("height_loss_percent", 0)), int(measured["height_loss_percent"])
        checks["height_loss"].append(
            (loss > 0) == (true_loss > 0) and abs(loss - true_loss) <= (HEIGHT_LOSS_TOLERANCE if true_loss else 0)
        )
        if not (true_lesion and measured["lesion"]):
            continue
        checks["signal"].append(measured["signal"] == truth["signal"])
        checks["margin"].append(measured["margin"] == truth["margin"])
        truths["margin"].append(truth["margin"] == "well-defined")
        checks["position"].append(
            (measured["position_ap"], measured["position_si"]) == (truth["position_ap"], truth["position_si"])
        )
        checks["striations"].append(bool(measured["striations"]) == bool(truth["striations"]))
        truths["striations"].append(bool(truth["striations"]))
        size_errors.append(float(measured["size_mm"]) - float(truth["size_mm"]))
        errors_by_class.setdefault(str(truth["lesion_class"]), []).append(size_errors[-1])
        checks["size"].append(abs(size_errors[-1]) <= SIZE_TOLERANCE_MM)
        checks.setdefault(f"size_{truth['lesion_class']}", []).append(checks["size"][-1])
    for name, values in truths.items():
        checks[f"{name}_majority"] = [v == (2 * sum(values) >= len(values)) for v in values]
    report: dict[str, Any] = {
        name: {"agree": sum(v), "of": len(v), "fraction": sum(v) / len(v) if v else None} for name, v in checks.items()
    }
    report["size_errors_mm"] = size_errors
    report["median_size_error_mm"] = {c: float(np.median(v)) for c, v in sorted(errors_by_class.items())}
    return report


def caption_datalist(
    datalist: str | os.PathLike,
    output: str | os.PathLike,
    source: str = "measured",
    captions_csv: str | os.PathLike | None = None,
    splits: Sequence[str] = ("training", "test"),
    window: Callable[[dict], Sequence[Mapping]] | None = None,
) -> dict[str, Any]:
    """Caption every entry of ``splits`` of a datalist (:func:`caption_entries`, with ``window``) and write the
    captioned datalist to ``output`` (atomically; the input is never overwritten; file paths relative to ``output``'s
    folder, so it reads back from any working folder). Returns the report: per split the failures and, where
    entries carry ground-truth ``attributes`` and the source is ``"measured"``, :func:`caption_fidelity`, and that
    over all the splits together as ``"fidelity"``."""
    if Path(output).resolve() == Path(datalist).resolve():
        raise ValueError(f"{output}: the captioned datalist must not overwrite its input")
    content = read_json_object(datalist, "the datalist")
    report: dict[str, Any] = {"datalist": str(datalist), "source": source, "splits": {}}
    everything = []
    for split in splits:
        captioned, failures = caption_entries(load_datalist(datalist, split), source, captions_csv, window)
        content[split] = [relative_paths(entry, Path(output).parent, FILE_KEYS) for entry in captioned]
        everything += captioned
        part: dict[str, Any] = {"captioned": len(captioned), "failures": failures}
        if source == "measured" and any(isinstance(e.get("attributes"), Mapping) for e in captioned):
            part["fidelity"] = caption_fidelity(captioned)
        report["splits"][split] = part
    if "fidelity" in part:
        report["fidelity"] = caption_fidelity(everything)
    write_json_atomically(output, content)
    return report
