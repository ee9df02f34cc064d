"""Measures as ignite metrics for MONAI evaluators: image quality inside and outside the soft mask, FID / KID on an
offline feature extractor, feature similarity (stage 1), the downstream classifier's case-level scores, the
feature-space quality filter of synthetic cases, the warnings on doubtful synthetic cases, the synthetic lesions'
text adherence, and the measured lesion attributes VG-MedGen's captions are made from."""

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
from bundle.metrics.lesion_attributes import MeasuredAttributes, measure_attributes
from bundle.metrics.quality_filter import FeatureSpaceFilter, QualityCheck
from bundle.metrics.synthesis_checks import SynthesisChecks
from bundle.metrics.text_adherence import TextAdherence

__all__ = [
    "BackgroundMAE",
    "BackgroundPSNR",
    "FeatureSpaceFilter",
    "FrechetDistance",
    "HighFrequencyDistance",
    "InMaskPSNR",
    "InMaskSSIM",
    "KernelInceptionDistance",
    "MeasuredAttributes",
    "MeanCosineSimilarity",
    "QualityCheck",
    "SynthesisChecks",
    "TextAdherence",
    "classification_metrics",
    "feature_extractor",
    "high_frequency_distance",
    "measure_attributes",
]
