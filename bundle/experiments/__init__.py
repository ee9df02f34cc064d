"""Experiments that measure what the synthetic data does: the downstream classifier experiment
(``scripts/downstream.py``) and the class effect of the lesion texts (``scripts/class_effect.py``)."""

from bundle.experiments.class_effect import write_effect_report
from bundle.experiments.downstream import run_experiment

__all__ = ["run_experiment", "write_effect_report"]
