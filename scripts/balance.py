"""Balance a datalist with synthetic lesion cases: each disease class of the training list gets as many cases
as the target class, by inserting text-described lesions into normal cases with the trained model.

    python scripts/balance.py --datalist demo/data/datalist.json --output_dir demo/balanced [--target normal]
        [--models_dir models] [--seed 0] [--classes "[benign,malignant]"]
        [--quality_filter fit|none|FILE] [--quality_k 5] [--quality_quantile 0.95] [--calibration_fraction 0.3]
        [--max_attempts 5]
        [--config_file configs/inference.json] [--num_inference_steps 50 ... any other inference setting]

Writes OUT/datalist.json (real cases with ``synthetic: false``, synthetic ones with ``synthetic: true``,
``source_case`` and ``provenance``), OUT/synthesis_requests.json, OUT/quality_filter.safetensors and
OUT/synthetic/. By default every synthetic case is judged by a quality filter fitted on the training list's real
lesion cases (``--quality_filter none``: no filter) and only passing cases are listed; more are synthesised
until every class is full, ``--max_attempts`` runs at most. Re-running after an interruption keeps the finished
cases and completes the rest. Exit status 1 when some case could not be written and there is no filter (the
datalist then lists what exists and says what is missing); 3 when a class could not be filled with cases that
pass the filter within ``--max_attempts`` (the datalist lists the passing ones).
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import fire

from bundle.balancing.balanced_datalist import balance_datalist
from bundle.errors import InputError
from bundle.utils.bundle_files import BUNDLE_ROOT


def main(
    datalist: str,
    output_dir: str,
    target: str = "normal",
    normal_label: str = "normal",
    classes: list[str] | tuple[str, ...] | None = None,
    seed: int = 0,
    models_dir: str | None = None,
    config_file: str | list[str] = "configs/inference.json",
    quality_filter: str | None = "fit",
    quality_k: int = 5,
    quality_quantile: float = 0.95,
    calibration_fraction: float = 0.3,
    max_attempts: int = 5,
    **overrides,
) -> None:
    """Balance ``datalist``'s training list to the ``target`` class count; ``overrides`` go to the inference
    config (e.g. ``--num_inference_steps 20 --through_plane_max_slices 3``)."""
    if quality_filter is not None and str(quality_filter).lower() in ("none", "false", "off"):
        quality_filter = None
    logging.basicConfig(level=logging.INFO, format="%(asctime)s - %(name)s - %(levelname)s - %(message)s")
    try:
        summary = balance_datalist(
            datalist,
            output_dir,
            target=target,
            normal_label=normal_label,
            classes=list(classes) if classes else None,
            seed=seed,
            models_dir=models_dir,
            config_file=config_file,
            bundle_root=BUNDLE_ROOT,
            overrides=overrides,
            quality_filter=quality_filter,
            quality_k=quality_k,
            quality_quantile=quality_quantile,
            calibration_fraction=calibration_fraction,
            max_attempts=max_attempts,
        )
    except (InputError, ValueError, OSError) as error:
        raise SystemExit(f"balance.py: error: {error}") from None
    print(
        json.dumps(
            {
                k: summary[k]
                for k in ("counts_real", "synthetic_needed", "synthetic_listed", "counts_after", "complete", "attempts")
            }
            | ({"pass_rate": summary["quality"]["per_class"]} if summary["quality"] else {}),
            indent=2,
        )
    )
    print(f"datalist: {Path(output_dir) / 'datalist.json'}")
    if not summary["complete"] and summary["quality"]:
        rates = summary["quality"]["per_class"]
        short = ", ".join(
            f"{c!r} {n} short ({rates.get(c, {}).get('passed', 0)} of {rates.get(c, {}).get('judged', 0)} synthetic "
            "cases passed)"
            for c, n in summary["unfilled"].items()
        )
        print(
            f"balance.py: after {summary['attempts']} attempts some classes are not full of cases that pass the "
            f"quality filter: {short}. Raise --max_attempts or --quality_quantile, or train the model longer; "
            f"scores are in {summary['synthesis_report']}",
            file=sys.stderr,
        )
        raise SystemExit(3)
    if not summary["complete"]:
        print(
            f"balance.py: {len(summary['missing'])} synthetic cases could not be written: "
            f"{summary['missing'][:10]}; see {summary['synthesis_report']}",
            file=sys.stderr,
        )
        raise SystemExit(1)


if __name__ == "__main__":
    fire.Fire(main)
