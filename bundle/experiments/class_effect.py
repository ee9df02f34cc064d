"""Does the synthesised lesion follow its text? The in-mask intensity change of each synthesised volume against
its source, grouped by the signal the text asks for, and a figure of one case under several texts.

A text asking for a *hyperintense* lesion should raise the mean intensity inside the soft-mask source (the
vertebra), a *hypointense* one should lower it. Changes are relative to the source's in-mask mean.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import nibabel as nib
import numpy as np

from bundle.data.datalist import load_datalist
from bundle.experiments.runner import mean_std
from bundle.utils.files import safe_case_name

SIGNAL_WORDS = ("hyperintense", "hypointense")
FOCAL_THRESHOLD = 0.15  # a voxel counts as focally brighter / darker beyond 15 % of the source's in-mask mean


def requested_signal(text: str) -> str:
    """``"hyperintense"``, ``"hypointense"`` or ``"unspecified"``: the lesion signal a text asks for."""
    found = [word for word in SIGNAL_WORDS if re.search(rf"\b{word}\b", text, flags=re.IGNORECASE)]
    return found[0] if len(found) == 1 else "unspecified"


def _canonical(path: str | os.PathLike) -> np.ndarray:
    return np.asarray(nib.as_closest_canonical(nib.load(str(path))).dataobj, dtype=np.float64)


def in_mask_change(request: Mapping, synthetic: str | os.PathLike) -> dict[str, object]:
    """Mean intensity inside the request's vertebra labels, before and after synthesis, over the sagittal
    slices the synthesis changed (the others are unchanged and would only dilute the measure)."""
    original, after = _canonical(request["image"]), _canonical(synthetic)
    mask = np.isin(_canonical(request["vertebra_seg"]), list(request["mask_labels"]))
    changed_slices = np.any(after != original, axis=(1, 2))  # RAS: axis 0 is the sagittal slice index
    if changed_slices.any():
        mask &= changed_slices[:, None, None]
    before, now = float(original[mask].mean()), float(after[mask].mean())
    relative = (after[mask] - original[mask]) / max(abs(before), 1e-6)
    return {
        "case_id": request["case_id"],
        "label": request.get("label"),
        "signal": requested_signal(request["text"]),
        "mean_before": before,
        "mean_after": now,
        "relative_change": (now - before) / max(abs(before), 1e-6),
        "brighter_fraction": float((relative > FOCAL_THRESHOLD).mean()),
        "darker_fraction": float((relative < -FOCAL_THRESHOLD).mean()),
        "changed_slices": int(changed_slices.sum()),
    }


def class_effect(
    requests_path: str | os.PathLike, synthesis_dir: str | os.PathLike, split: str = "test", suffix: str = "_synthetic"
) -> dict[str, object]:
    """Per-request in-mask changes and, by requested signal, their mean and sample standard deviation
    (:func:`bundle.experiments.runner.mean_std`), for every request that was written."""
    synthesis_dir = Path(synthesis_dir)
    rows = []
    for request in load_datalist(requests_path, split):
        synthetic = synthesis_dir / f"{safe_case_name(request['case_id'])}{suffix}.nii.gz"
        if synthetic.is_file():
            rows.append(in_mask_change(request, synthetic))
    summary = {}
    for signal in sorted({row["signal"] for row in rows}):
        group = [row for row in rows if row["signal"] == signal]
        changes = np.array([row["relative_change"] for row in group])
        brighter = np.array([row["brighter_fraction"] for row in group])
        darker = np.array([row["darker_fraction"] for row in group])
        mean, std = mean_std(changes.tolist())
        summary[signal] = {
            "count": int(changes.size),
            "mean_relative_change": mean,
            "std": std,
            "positive": int((changes > 0).sum()),
            "mean_brighter_fraction": float(brighter.mean()),
            "mean_darker_fraction": float(darker.mean()),
            "more_brighter_than_darker": int((brighter > darker).sum()),
        }
    return {"cases": rows, "by_signal": summary}


def effect_figure(
    requests_path: str | os.PathLike,
    synthesis_dir: str | os.PathLike,
    output: str | os.PathLike,
    max_cases: int = 3,
    split: str = "test",
    suffix: str = "_synthetic",
) -> Path:
    """Rows of normal source cases on the sagittal slice that changed most: the source, each synthesis of it,
    and each synthesis minus the source (red brighter, blue darker; +-30 % of the source's in-mask mean)."""
    synthesis_dir = Path(synthesis_dir)
    by_source: dict[str, list[Mapping]] = {}
    for request in load_datalist(requests_path, split):
        if (synthesis_dir / f"{safe_case_name(request['case_id'])}{suffix}.nii.gz").is_file():
            by_source.setdefault(str(request.get("source_case", request["case_id"])), []).append(request)
    sources = list(by_source.items())[:max_cases]
    if not sources:
        raise ValueError(f"no synthesised volume of {requests_path} found in {synthesis_dir}")
    columns = 1 + 2 * max(len(group) for _, group in sources)
    figure, axes = plt.subplots(len(sources), columns, figsize=(3 * columns, 3.2 * len(sources)), squeeze=False)
    for row, (source, group) in zip(axes, sources, strict=True):
        mask = np.isin(_canonical(group[0]["vertebra_seg"]), list(group[0]["mask_labels"]))
        original = _canonical(group[0]["image"])
        results = [_canonical(synthesis_dir / f"{safe_case_name(r['case_id'])}{suffix}.nii.gz") for r in group]
        x = int(np.argmax(sum(np.abs(r - original).sum(axis=(1, 2)) for r in results)))
        ys, zs = np.nonzero(mask[x]) if mask[x].any() else np.nonzero(mask.any(axis=0))
        crop = (slice(max(ys.min() - 30, 0), ys.max() + 30), slice(max(zs.min() - 30, 0), zs.max() + 30))
        low, high = np.percentile(original[x][crop], [1, 99.5])
        limit = 0.3 * float(original[mask].mean())
        panels = [("source (normal)", original[x], "gray", low, high)]
        panels += [
            (f"{r.get('label')}: {requested_signal(r['text'])}", v[x], "gray", low, high)
            for r, v in zip(group, results, strict=True)
        ]
        panels += [
            (f"{r.get('label')} - source", v[x] - original[x], "coolwarm", -limit, limit)
            for r, v in zip(group, results, strict=True)
        ]
        for axis, (title, image, colormap, vmin, vmax) in zip(row, panels, strict=False):
            axis.imshow(image[crop].T, cmap=colormap, origin="lower", vmin=vmin, vmax=vmax)
            axis.contour(mask[x][crop].T, levels=[0.5], colors="yellow", linewidths=0.5)
            axis.set_title(f"{source}\n{title}", fontsize=8)
        for axis in row:
            axis.axis("off")
    figure.tight_layout()
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output, dpi=110)
    plt.close(figure)
    return output


def write_effect_report(
    requests_path: str | os.PathLike,
    synthesis_dir: str | os.PathLike,
    output: str | os.PathLike,
    figure: str | os.PathLike | None = None,
    split: str = "test",
) -> dict[str, object]:
    """:func:`class_effect` as JSON at ``output``, and optionally :func:`effect_figure`."""
    from bundle.utils.files import write_json_atomically

    report = class_effect(requests_path, synthesis_dir, split)
    write_json_atomically(Path(output), report)
    if figure is not None:
        effect_figure(requests_path, synthesis_dir, figure, split=split)
    return report


def format_summary(report: Mapping[str, object], signals: Sequence[str] = SIGNAL_WORDS) -> str:
    """One line per requested signal: how many, the mean relative in-mask change, how many went up."""
    lines = []
    for signal in signals:
        entry = report["by_signal"].get(signal)
        if entry:
            lines.append(
                f"{signal:>13}: n={entry['count']}, mean in-mask change {100 * entry['mean_relative_change']:+.1f}% "
                f"(sd {100 * entry['std']:.1f}%); voxels > {100 * FOCAL_THRESHOLD:.0f}% brighter "
                f"{100 * entry['mean_brighter_fraction']:.1f}%, darker {100 * entry['mean_darker_fraction']:.1f}%; "
                f"{entry['more_brighter_than_darker']} of {entry['count']} cases more brighter than darker"
            )
    return "\n".join(lines)
