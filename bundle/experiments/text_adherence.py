"""Does the synthesised lesion follow its text? Per request of a synthesis output folder: the lesion in the
synthetic volume minus its normal source (:func:`bundle.metrics.lesion_measure.measure_lesion`: sign, size, place,
through-plane extent and coherence) against what the text asks (:mod:`bundle.metrics.text_adherence`), the shares
per requested signal, and a figure of one source case under several texts. Definitions: docs/text_adherence.md.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import nibabel as nib
import numpy as np

from bundle.data.datalist import load_datalist
from bundle.experiments.lesion_coherence import real_lesion_report, through_plane_summary
from bundle.metrics.lesion_measure import measure_lesion
from bundle.metrics.text_adherence import SIGNAL_WORDS, adherence, requested_facts, requested_signal, summarise
from bundle.utils.files import safe_case_name, write_json_atomically


def canonical(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """A NIfTI volume in its closest canonical orientation (RAS) as float64, and its voxel spacing (mm)."""
    image = nib.as_closest_canonical(nib.load(str(path)))
    return np.asarray(image.dataobj, dtype=np.float64), np.linalg.norm(image.affine[:3, :3], axis=0)


def _canonical(path: str | os.PathLike) -> np.ndarray:
    return canonical(path)[0]


def request_adherence(request: Mapping, synthetic: str | os.PathLike) -> dict[str, object]:
    """One request: the lesion of ``synthetic`` minus the request's source image inside its vertebra labels, what
    the text asks for, and whether the lesion follows it."""
    before, spacing = canonical(request["image"])
    after, after_spacing = canonical(synthetic)
    if after.shape != before.shape or not np.allclose(spacing, after_spacing, atol=1e-3):
        raise ValueError(f"{synthetic}: grid {after.shape} differs from its source {request['image']} {before.shape}")
    vertebra = np.isin(np.rint(_canonical(request["vertebra_seg"])), list(request["mask_labels"]))
    measure = measure_lesion(before, after, vertebra, spacing)
    facts = requested_facts(request["text"])
    return {
        "case_id": request["case_id"],
        "label": request.get("label"),
        "text": request["text"],
        **vars(facts),
        "changed_slices": np.nonzero(np.any(after != before, axis=(1, 2)))[0].tolist(),
        "thickness_mm": float(spacing[0]),
        "measure": measure.to_json(),
        "adherence": adherence(measure, facts),
    }


def synthesis_adherence(
    requests_path: str | os.PathLike, synthesis_dir: str | os.PathLike, split: str = "test", suffix: str = "_synthetic"
) -> dict[str, object]:
    """:func:`request_adherence` of every request of ``split`` that was written to ``synthesis_dir``, the shares
    per requested signal (:func:`bundle.metrics.text_adherence.summarise`) and the through-plane statistics per
    class (:func:`bundle.experiments.lesion_coherence.through_plane_summary`)."""
    synthesis_dir = Path(synthesis_dir)
    rows = []
    for request in load_datalist(requests_path, split):
        synthetic = synthesis_dir / f"{safe_case_name(request['case_id'])}{suffix}.nii.gz"
        if synthetic.is_file():
            rows.append(request_adherence(request, synthetic))
    if not rows:
        raise ValueError(f"no synthesised volume of {requests_path} ({split}) found in {synthesis_dir}")
    return {"cases": rows, "by_signal": summarise(rows), "through_plane": through_plane_summary(rows)}


def save_figure(figure: plt.Figure, output: str | os.PathLike) -> Path:
    """Lay out ``figure``, write it as a PNG at ``output`` (its folder made if needed), close it; the path."""
    figure.tight_layout()
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output, dpi=110)
    plt.close(figure)
    return output


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
    return save_figure(figure, output)


def write_adherence_report(
    output: str | os.PathLike,
    requests_path: str | os.PathLike | None = None,
    synthesis_dir: str | os.PathLike | None = None,
    figure: str | os.PathLike | None = None,
    split: str = "test",
    datalist: str | os.PathLike | None = None,
) -> dict[str, object]:
    """JSON at ``output``: ``synthetic`` (:func:`synthesis_adherence` of ``requests_path`` in ``synthesis_dir``)
    and, with a phantom ``datalist``, ``real_phantom`` (:func:`bundle.experiments.lesion_coherence.real_lesion_report`,
    the reference the synthetic lesions are compared with); optionally :func:`effect_figure`."""
    if (requests_path is None) != (synthesis_dir is None):
        raise ValueError("give both the requests and the synthesis folder, or neither")
    if requests_path is None and datalist is None:
        raise ValueError("nothing to measure: give requests and a synthesis folder, a phantom datalist, or both")
    report: dict[str, object] = {}
    if requests_path is not None:
        report["synthetic"] = synthesis_adherence(requests_path, synthesis_dir, split)
    if datalist is not None:
        report["real_phantom"] = real_lesion_report(datalist)
    write_json_atomically(Path(output), report)
    if figure is not None and requests_path is not None:
        effect_figure(requests_path, synthesis_dir, figure, split=split)
    return report


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.0f}%"


def _spread(entry: Mapping | None, digits: int = 2) -> str:
    if not entry:
        return "n/a"
    return (
        f"{entry['mean']:.{digits}f} (sd {entry['sd']:.{digits}f}, {entry['min']:.{digits}f}-{entry['max']:.{digits}f})"
    )


def format_summary(report: Mapping[str, object], signals: Sequence[str] = SIGNAL_WORDS) -> str:
    """Per part of :func:`write_adherence_report` (synthetic, real phantom): one line per requested signal (how
    many, the shares in the right direction, within the size tolerance and at the right place, the median size
    ratio) and one per class with the through-plane statistics (mean, sd, range)."""
    lines = []
    for part in ("synthetic", "real_phantom"):
        if part not in report:
            continue
        lines.append(f"{part.replace('_', ' ')} lesions:")
        for signal in signals:
            entry = report[part]["by_signal"].get(signal)
            if entry:
                ratio = entry["median_size_ratio"]
                lines.append(
                    f"  {signal:>13}: n={entry['count']}, right direction {_percent(entry['direction_ok'])}, size "
                    f"within +-30% {_percent(entry['size_ok'])} (median measured/text "
                    f"{'n/a' if ratio is None else f'{ratio:.2f}'}), AP word {_percent(entry['ap_ok'])}, SI word "
                    f"{_percent(entry['si_ok'])}"
                )
        for label, entry in report[part]["through_plane"].items():
            lines.append(
                f"  {label:>13}: through-plane slices {_spread(entry['slices'], 1)}, extent / text size "
                f"{_spread(entry['extent_over_text_size'])}, neighbour correlation "
                f"{_spread(entry['neighbour_correlation'])} ({entry['found']} of {entry['count']} found)"
            )
    return "\n".join(lines)
