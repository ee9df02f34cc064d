"""Synthesis jobs built from the mask-preview config's parts (no generative model): a one-number quality filter, a
predictor that leaves one case unchanged, the warnings and the review gallery as a test asks."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import torch

from bundle.engines.synthesis_job import KeyPredictor, SynthesisJob
from bundle.metrics.quality_filter import FeatureSpaceFilter, QualityCheck


class MeanIntensity(torch.nn.Module):
    """A one-number feature space: a slice's mean intensity."""

    description = "mean intensity"

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images.mean(dim=(1, 2, 3))[:, None]


class StillOrMasked:
    """The job's predictor: the input unchanged for case ``still`` (a negligible change), ``I_m`` for the others."""

    def __call__(self, items):
        key = "image" if items[0].get("case_id") == "still" else "masked_image"
        return KeyPredictor(key)(items)


def mean_intensity_check(thresholds: Mapping[str, float]) -> QualityCheck:
    """A quality filter on :class:`MeanIntensity` with reference 0 for each class of ``thresholds`` and k = 1: a
    case's score is its slices' mean intensity."""
    reference = {label: torch.zeros(1, 1) for label in thresholds}
    quality_filter = FeatureSpaceFilter(reference, thresholds, k=1, quantile=0.95, feature_space="mean intensity")
    return QualityCheck(quality_filter, MeanIntensity())


def job_from_preview(preview: SynthesisJob, output_dir: Path, predictor: Callable, **options) -> SynthesisJob:
    """A job on the cases, preprocessing and writer of the mask-preview job ``preview``, with its own ``predictor``
    and ``options`` (``quality_check``, ``checks``, ``gallery``, ...)."""
    return SynthesisJob(
        preview.cases,
        preview.preprocessing,
        predictor,
        preview.writer,
        output_dir,
        details=preview.details,
        **options,
    )
