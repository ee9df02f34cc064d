"""A lesion seen through-plane: sagittal, coronal and axial reformats of a volume and of its change.

The synthesis works on sagittal slices; whether the lesion is a 3-D object shows in the other two planes, where
neighbouring sagittal slices sit side by side. :func:`reformat_figure` draws, per row (a real phantom lesion against
its lesion-free twin, or a synthetic volume against its source), the three planes through the lesion's strongest
change, the volume above and its change below-right, each plane at its physical aspect ratio.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from scipy import ndimage  # noqa: E402

from bundle.data.datalist import load_datalist  # noqa: E402
from bundle.experiments.lesion_coherence import phantom_lesion_change  # noqa: E402
from bundle.experiments.text_adherence import canonical, save_figure  # noqa: E402
from bundle.utils.files import read_json_object, safe_case_name  # noqa: E402
from bundle.utils.lesion_text import lesion_size_mm  # noqa: E402

MARGIN_MM = 8.0
PLANES = (("sagittal", 0), ("coronal", 1), ("axial", 2))  # the axis each plane is fixed along (RAS canonical)


@dataclass
class ReformatRow:
    """One row: ``before`` / ``after`` volumes in RAS (axis 0 the sagittal slice), the vertebra's voxels and the
    voxel spacing in mm."""

    title: str
    before: np.ndarray
    after: np.ndarray
    vertebra: np.ndarray
    spacing: Sequence[float]


def lesion_centre(row: ReformatRow) -> tuple[int, int, int]:
    """The voxel of the largest in-plane-smoothed absolute change inside the vertebra (its centre if none)."""
    change = np.abs(row.after - row.before)
    sigma = [0.0, 1.0 / row.spacing[1], 1.0 / row.spacing[2]]
    smooth = ndimage.gaussian_filter(change, sigma) * row.vertebra
    if smooth.max() <= 0:
        return tuple(int(round(c)) for c in ndimage.center_of_mass(row.vertebra))
    return tuple(int(i) for i in np.unravel_index(int(np.argmax(smooth)), smooth.shape))


def _plane(volume: np.ndarray, axis: int, index: int) -> np.ndarray:
    return np.take(volume, index, axis=axis)


def reformat_figure(rows: Sequence[ReformatRow], output: str | os.PathLike, title: str = "") -> Path:
    """Per row: the after volume and its change (red brighter, blue darker; +-30 % of the vertebra's mean) in the
    sagittal, coronal and axial planes through :func:`lesion_centre`, cropped to the vertebra plus a margin."""
    figure, axes = plt.subplots(len(rows), 6, figsize=(15, 3.1 * len(rows)), squeeze=False)
    for row, line in zip(rows, axes, strict=True):
        centre = lesion_centre(row)
        box = np.nonzero(row.vertebra)
        limit = 0.3 * float(row.before[row.vertebra].mean())
        low, high = np.percentile(row.before[row.vertebra], [1, 99.5])
        low, high = min(low, 0.5 * low), high * 1.3
        for column, (name, axis) in enumerate(PLANES):
            shown = [a for a in range(3) if a != axis]
            crop = tuple(
                slice(
                    max(int(box[a].min() - MARGIN_MM / row.spacing[a]), 0),
                    int(box[a].max() + MARGIN_MM / row.spacing[a]) + 1,
                )
                for a in shown
            )
            aspect = row.spacing[shown[1]] / row.spacing[shown[0]]
            image = _plane(row.after, axis, centre[axis])[crop]
            change = _plane(row.after - row.before, axis, centre[axis])[crop]
            outline = _plane(row.vertebra, axis, centre[axis])[crop].astype(float)
            for place, (values, colormap, vmin, vmax) in enumerate(
                ((image, "gray", low, high), (change, "coolwarm", -limit, limit))
            ):
                panel = line[2 * column + place]
                panel.imshow(values.T, cmap=colormap, origin="lower", vmin=vmin, vmax=vmax, aspect=aspect)
                if outline.any():
                    panel.contour(outline.T, levels=[0.5], colors="yellow", linewidths=0.5)
                what = "change" if place else "volume"
                heading = row.title if column == 0 and place == 0 else ""
                panel.set_title(f"{heading}\n{name} {what} (index {centre[axis]})", fontsize=7, loc="left")
                panel.axis("off")
    if title:
        figure.suptitle(title, fontsize=9)
    return save_figure(figure, output)


def synthetic_row(request: Mapping, synthesis_dir: str | os.PathLike, title: str) -> ReformatRow:
    """A synthetic volume of ``request`` (a datalist entry with ``image``, ``vertebra_seg``, ``mask_labels``) in
    ``synthesis_dir`` against its source."""
    before, spacing = canonical(request["image"])
    after, _ = canonical(Path(synthesis_dir) / f"{safe_case_name(request['case_id'])}_synthetic.nii.gz")
    vertebra = np.isin(np.rint(canonical(request["vertebra_seg"])[0]), list(request["mask_labels"]))
    return ReformatRow(title, before, after, vertebra, spacing)


def real_row(datalist_path: str | os.PathLike, label: str, size_mm: float | None) -> ReformatRow:
    """The phantom's real lesion of class ``label`` whose text size is nearest ``size_mm``, against its twin."""
    datalist = read_json_object(datalist_path, "the phantom datalist")
    cases = [e for split in ("training", "test") for e in datalist.get(split, []) if e["label"] == label]
    if not cases:
        raise ValueError(f"{datalist_path}: no {label} lesion case")
    chosen = min(cases, key=lambda e: abs((lesion_size_mm(str(e.get("text", ""))) or 0.0) - (size_mm or 0.0)))
    index = int(str(chosen["case_id"]).rsplit("_", 1)[-1])
    before, after, vertebra, _, spacing, case = phantom_lesion_change(
        int(datalist["seed"]), index, label, float(datalist["difficulty"])
    )
    return ReformatRow(
        f"real {label} {chosen['case_id']} ({case.attributes.size_mm:g} mm)", before, after, vertebra, spacing
    )


def request_rows(
    requests_path: str | os.PathLike,
    case_id: str,
    runs: Mapping[str, str | os.PathLike],
    datalist: str | os.PathLike | None = None,
) -> list[ReformatRow]:
    """The rows for one request: the real phantom lesion of its class nearest its text's size (with a phantom
    ``datalist``), then its synthetic volume in each of ``runs`` (name -> synthesis folder)."""
    requests = {r["case_id"]: r for r in load_datalist(requests_path, "test")}
    if case_id not in requests:
        raise ValueError(f"{requests_path}: no request {case_id!r}")
    request = requests[case_id]
    size = lesion_size_mm(str(request["text"]))
    rows = [] if datalist is None else [real_row(datalist, str(request["label"]), size)]
    rows += [synthetic_row(request, folder, f"{name}: {case_id}, {size:g} mm text") for name, folder in runs.items()]
    return rows
