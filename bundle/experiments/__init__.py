"""Experiments that measure what the synthetic data does: the downstream classifier experiment
(``scripts/downstream.py``) and the class effect of the lesion texts (``scripts/class_effect.py``), on the shared
runner (:mod:`bundle.experiments.runner`: resume, seeded runs, mean and spread, verdicts)."""

from bundle.experiments.class_effect import write_effect_report
from bundle.experiments.downstream import run_experiment
from bundle.experiments.runner import Comparison, ExperimentError, Steps, mean_std, seeded_runs, summarise

__all__ = [
    "Comparison",
    "ExperimentError",
    "Steps",
    "mean_std",
    "run_experiment",
    "seeded_runs",
    "summarise",
    "write_effect_report",
]
