"""Experiments that measure what the synthetic data does: the downstream classifier experiment
(``scripts/downstream.py``) and the text adherence and through-plane coherence of synthesised lesions against the
phantom's real ones (``scripts/text_adherence.py``), on the shared runner (:mod:`bundle.experiments.runner`:
resume, seeded runs, mean and spread, verdicts)."""

from bundle.experiments.downstream import run_experiment
from bundle.experiments.runner import Comparison, ExperimentError, Steps, mean_std, seeded_runs, summarise
from bundle.experiments.text_adherence import write_adherence_report

__all__ = [
    "Comparison",
    "ExperimentError",
    "Steps",
    "mean_std",
    "run_experiment",
    "seeded_runs",
    "summarise",
    "write_adherence_report",
]
