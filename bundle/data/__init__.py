"""Datalists, datasets and splits: reading a MONAI datalist, the DICOM files of a series, the training slices
(preprocessed once, in memory or in the slice cache), the downstream classifier's and the segmentation
workflow's items, class counts and the seeded splits."""

from bundle.data.class_balance import class_counts, inverse_frequency_weights
from bundle.data.classification_slices import ClassificationSlices, load_test, load_training, training_sampler
from bundle.data.datalist import FILE_KEYS, inference_cases, load_datalist
from bundle.data.dicom_series import DicomSeriesReader, read_dicom_header, series_instances, source_instances
from bundle.data.segmentation_slices import SegmentationSlices
from bundle.data.slice_cache import SliceCache, preprocessing_fingerprint
from bundle.data.slice_dataset import SLICE_KEYS, SliceDataset, plain_tensor
from bundle.data.splits import held_out_count, holdout_split, normalised_shares, stratified_holdout, training_split

__all__ = [
    "FILE_KEYS",
    "SLICE_KEYS",
    "ClassificationSlices",
    "DicomSeriesReader",
    "SegmentationSlices",
    "SliceCache",
    "SliceDataset",
    "class_counts",
    "held_out_count",
    "holdout_split",
    "inference_cases",
    "inverse_frequency_weights",
    "load_datalist",
    "load_test",
    "load_training",
    "normalised_shares",
    "plain_tensor",
    "preprocessing_fingerprint",
    "read_dicom_header",
    "series_instances",
    "source_instances",
    "stratified_holdout",
    "training_sampler",
    "training_split",
]
