"""Ignite handlers the workflows add to MONAI's: resumable checkpoints, exporting trained weights, a picture of
validation samples, the evaluation report, the downstream classifier's report, warnings while training."""

from bundle.handlers.checkpoints import ResumableCheckpoints, newest_checkpoint, refuse_pickled_code
from bundle.handlers.classification_report import CaseClassificationReport, run_details
from bundle.handlers.export import ExportGuidedUNet, ExportSemanticController, ExportVGMedGen
from bundle.handlers.metrics_report import MetricsReport
from bundle.handlers.sample_grid import SampleGridWriter
from bundle.handlers.training_warnings import TrainingWarnings

__all__ = [
    "CaseClassificationReport",
    "ExportGuidedUNet",
    "ExportSemanticController",
    "ExportVGMedGen",
    "MetricsReport",
    "ResumableCheckpoints",
    "SampleGridWriter",
    "TrainingWarnings",
    "newest_checkpoint",
    "refuse_pickled_code",
    "run_details",
]
