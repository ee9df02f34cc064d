"""The downstream experiment end to end: data, synthesis models, balancing, a ResNet classifier in five arms x
several seeds, and the report ``docs/downstream.md`` + ``docs/downstream.png``.

    python scripts/downstream.py [--preset default|quick|gpu] [--work_dir runs/downstream] [--docs_dir docs]
        [--datalist LIST] [--models_dir M --models_no_msc_dir M2 --models_no_smis_dir M3 [--stage1_dir S]]
        [--arms "[real,synthetic]"] [--report_name downstream] [--seeds "[0,1,2]"] [--difficulty 0.5]
        [--train_cases 60] [--test_cases 90] ... (any preset setting)

Arms: real only; real + class-balanced oversampling; real + synthetic (full method); real + synthetic without
MSC; real + synthetic without SMIS. Every step is skipped when an earlier run with the same settings finished
it, so a killed run continues where it stopped. ``--report_only`` rewrites the report from the finished runs.
See docs/downstream_experiment.md.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import fire

from bundle.experiments.downstream import (
    ARMS,
    ExperimentError,
    command_line,
    rewrite_report,
    run_experiment,
    settings_for,
)
from bundle.utils.bundle_files import BUNDLE_ROOT


def main(
    preset: str = "default",
    work_dir: str = "runs/downstream",
    docs_dir: str | None = "docs",
    datalist: str | None = None,
    models_dir: str | None = None,
    models_no_msc_dir: str | None = None,
    models_no_smis_dir: str | None = None,
    stage1_dir: str | None = None,
    arms: list[str] | tuple[str, ...] = tuple(ARMS),
    threads: int | None = None,
    report_only: bool = False,
    report_name: str = "downstream",
    **overrides,
) -> None:
    """Run (or continue) the comparison in ``work_dir`` and write the report to ``docs_dir`` (``None``: none).

    Args:
        preset: ``default`` (47 min measured on a 2-core CPU), ``quick`` (a smoke run), ``gpu`` (larger).
        datalist: use this datalist (its ``training`` and ``test`` lists) instead of generating the data.
        models_dir, models_no_msc_dir, models_no_smis_dir: reuse trained synthesis models instead of
            training them (``stage1_dir``: where their stage-1 MSC and CLIP are; default ``models_dir``).
        threads: torch CPU threads (default: torch's choice).
        report_name: the report is ``docs_dir/<report_name>.md`` and ``.png``.
        overrides: preset settings, e.g. ``--difficulty 0.6 --seeds "[0,1,2,3]" --classifier_epochs 30``.
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s - %(name)s - %(levelname)s - %(message)s")
    if threads:
        import torch

        torch.set_num_threads(int(threads))
    try:
        settings = settings_for(preset, **overrides)
    except ExperimentError as error:
        raise SystemExit(f"downstream.py: error: {error}") from None
    work = Path(work_dir) if Path(work_dir).is_absolute() else BUNDLE_ROOT / work_dir
    docs = None if docs_dir is None else (Path(docs_dir) if Path(docs_dir).is_absolute() else BUNDLE_ROOT / docs_dir)
    # a rewritten report names the command that ran the experiment, not the rewrite
    command = command_line([a for a in sys.argv[1:] if a.split("=")[0] != "--report_only"])
    models_dirs = {"full": models_dir, "no_msc": models_no_msc_dir, "no_smis": models_no_smis_dir}
    try:
        if report_only:
            if docs is None:
                raise ExperimentError("--report_only needs --docs_dir")
            print(
                "\n".join(
                    str(p)
                    for p in rewrite_report(
                        work, settings, docs, datalist, models_dirs, command, list(arms), report_name
                    )
                )
            )
            return
        run_experiment(
            work,
            settings,
            datalist=datalist,
            models_dirs=models_dirs,
            stage1_dir=stage1_dir,
            docs_dir=docs,
            command=command,
            arms=list(arms),
            report_name=report_name,
        )
    except ExperimentError as error:
        raise SystemExit(f"downstream.py: error: {error}") from None
    if docs is not None:
        print(f"report: {docs / f'{report_name}.md'}, figure: {docs / f'{report_name}.png'}")


if __name__ == "__main__":
    fire.Fire(main)
