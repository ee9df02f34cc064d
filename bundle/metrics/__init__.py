"""Measures as ignite metrics for MONAI evaluators: image quality inside and outside the soft mask, FID / KID on an
offline feature extractor, feature similarity (stage 1), and the downstream classifier's case-level scores."""

from bundle.metrics.classification import classification_metrics
from bundle.metrics.distribution import FrechetDistance, KernelInceptionDistance, feature_extractor
from bundle.metrics.embedding import MeanCosineSimilarity
from bundle.metrics.image_quality import (
    BackgroundMAE,
    BackgroundPSNR,
    HighFrequencyDistance,
    InMaskPSNR,
    InMaskSSIM,
    high_frequency_distance,
)

__all__ = [
    "BackgroundMAE",
    "BackgroundPSNR",
    "FrechetDistance",
    "HighFrequencyDistance",
    "InMaskPSNR",
    "InMaskSSIM",
    "KernelInceptionDistance",
    "MeanCosineSimilarity",
    "classification_metrics",
    "feature_extractor",
    "high_frequency_distance",
]
