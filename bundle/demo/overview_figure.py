"""A picture of a few demo cases: one sagittal slice each with vertebra and lesion outlines and the text."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Mapping, Sequence
from io import BytesIO
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from bundle.demo.cases import AXIS_CODES
from bundle.demo.labels import LESION_CLASSES
from bundle.utils.files import write_atomically


def _load_as_phantom_axes(path: Path) -> tuple[np.ndarray, tuple[float, float, float]]:
    """A NIfTI volume reoriented to :data:`AXIS_CODES` (P, I, R), with its spacing in mm along those axes."""
    image = nib.load(path)
    transform = nib.orientations.ornt_transform(
        nib.io_orientation(image.affine), nib.orientations.axcodes2ornt(AXIS_CODES)
    )
    data = nib.orientations.apply_orientation(np.asanyarray(image.dataobj), transform)
    spacing = np.empty(3)
    spacing[transform[:, 0].astype(int)] = image.header.get_zooms()[:3]
    return data, tuple(float(v) for v in spacing)


def _pick_for_figure(entries: Sequence[Mapping[str, Any]], max_cases: int) -> list[Mapping[str, Any]]:
    """Up to ``max_cases`` entries in case order, taking the classes in turn."""
    by_class = [[e for e in entries if e["label"] == name] for name in LESION_CLASSES]
    picked: list[Mapping[str, Any]] = []
    while len(picked) < max_cases and any(by_class):
        for members in by_class:
            if members and len(picked) < max_cases:
                picked.append(members.pop(0))
    return sorted(picked, key=lambda e: e["case_id"])


def write_overview_figure(
    data_dir: str | os.PathLike, datalist: Mapping[str, Any], figure_path: str | os.PathLike, max_cases: int = 6
) -> Path:
    """PNG of up to ``max_cases`` cases (classes in turn): one sagittal slice each (the one with most lesion,
    otherwise the central one), anterior left, true mm aspect, vertebra outlines (target level yellow, others
    cyan), lesion outline red, the text as title."""
    from matplotlib.figure import Figure

    data_dir, figure_path = Path(data_dir), Path(figure_path)
    entries = _pick_for_figure(
        sorted([*datalist["training"], *datalist["test"]], key=lambda e: e["case_id"]), max_cases
    )
    columns = min(3, len(entries))
    rows = -(-len(entries) // columns)
    figure = Figure(figsize=(4.2 * columns, 6.4 * rows), layout="constrained")
    axes = np.atleast_1d(figure.subplots(rows, columns)).ravel()
    for axis, entry in zip(axes, entries, strict=False):
        image, spacing = _load_as_phantom_axes(data_dir / entry["image"])
        vertebrae, _ = _load_as_phantom_axes(data_dir / entry["vertebra_seg"])
        lesion, _ = _load_as_phantom_axes(data_dir / entry["lesion_seg"])
        k = int(np.argmax(lesion.sum(axis=(0, 1)))) if lesion.any() else image.shape[2] // 2
        x = (np.arange(image.shape[0]) + 0.5) * spacing[0]
        y = (np.arange(image.shape[1]) + 0.5) * spacing[1]
        axis.imshow(
            image[:, :, k].T,
            cmap="gray",
            vmin=0,
            vmax=float(np.percentile(image, 99.5)),
            extent=(0, x[-1] + x[0], y[-1] + y[0], 0),
            interpolation="nearest",
        )
        for value in np.unique(vertebrae[:, :, k]):
            if value:
                colour, width = ("yellow", 1.2) if value == entry["mask_labels"][0] else ("cyan", 0.6)
                axis.contour(x, y, (vertebrae[:, :, k] == value).T, levels=[0.5], colors=colour, linewidths=width)
        if lesion[:, :, k].any():
            axis.contour(x, y, lesion[:, :, k].T, levels=[0.5], colors="red", linewidths=1.2)
        title = f"{entry['case_id']} ({entry['label']}, slice {k}): {entry['text']}"
        axis.set_title(textwrap.fill(title, 52), fontsize=7.5, loc="left")
        axis.set_axis_off()
    for axis in axes[len(entries) :]:
        axis.set_axis_off()
    buffer = BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    figure_path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(figure_path, buffer.getvalue())
    return figure_path
