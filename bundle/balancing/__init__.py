"""Balancing a training list with synthetic lesion cases (``scripts/balance.py``, ``scripts/synthesis_requests.py``):
which synthetic cases to make from which normal cases and texts, running the inference config on them, and the
balanced datalist. Tooling around the model: it runs ``configs/inference.json``."""

from bundle.balancing.balanced_datalist import balance_datalist, balancing_requests, synthesis_counts
from bundle.balancing.synthesis_requests import lesion_requests, write_demo_requests

__all__ = ["balance_datalist", "balancing_requests", "lesion_requests", "synthesis_counts", "write_demo_requests"]
