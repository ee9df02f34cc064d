"""Preparing downloaded datasets (``scripts/prepare.py``): a VerTumor1200-like folder or the RSNA 2024 lumbar spine
layout into a MONAI datalist split by patient (:mod:`bundle.preparation.patient_split`), with the skipped cases
and their reasons."""

from bundle.preparation.prepared import Prepared, format_summary, write_prepared
from bundle.preparation.rsna import collect_rsna
from bundle.preparation.vertumor import collect_vertumor

__all__ = ["Prepared", "collect_rsna", "collect_vertumor", "format_summary", "write_prepared"]
