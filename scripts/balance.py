"""Balance a datalist with synthetic lesion cases: each disease class of the training list gets as many cases
as the target class, by inserting text-described lesions into normal cases with the trained model.

    python scripts/balance.py --datalist demo/data/datalist.json --output_dir demo/balanced [--target normal]
        [--models_dir models] [--seed 0] [--classes "[benign,malignant]"]
        [--config_file configs/inference.json] [--num_inference_steps 50 ... any other inference setting]

Writes OUT/datalist.json (real cases with ``synthetic: false``, synthetic ones with ``synthetic: true``,
``source_case`` and ``provenance``), OUT/synthesis_requests.json and OUT/synthetic/. Re-running after an
interruption keeps the finished cases and completes the rest. Exit status 1 when some case could not be
written (the datalist then lists what exists and says what is missing).
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
    **overrides,
) -> None:
    """Balance ``datalist``'s training list to the ``target`` class count; ``overrides`` go to the inference
    config (e.g. ``--num_inference_steps 20 --slices_per_case 3``)."""
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
        )
    except (InputError, ValueError, OSError) as error:
        raise SystemExit(f"balance.py: error: {error}") from None
    print(
        json.dumps(
            {
                k: summary[k]
                for k in ("counts_real", "synthetic_needed", "synthetic_listed", "counts_after", "complete")
            },
            indent=2,
        )
    )
    print(f"datalist: {Path(output_dir) / 'datalist.json'}")
    if not summary["complete"]:
        print(
            f"balance.py: {len(summary['missing'])} synthetic cases could not be written: "
            f"{summary['missing'][:10]}; see {summary['synthesis_report']}",
            file=sys.stderr,
        )
        raise SystemExit(1)


if __name__ == "__main__":
    fire.Fire(main)
