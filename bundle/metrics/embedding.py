"""How well predicted features match their targets: stage 1's e_MSC against e_r."""

from __future__ import annotations

import torch
from ignite.metrics import Metric


class MeanCosineSimilarity(Metric):
    """Mean cosine similarity of ``(pred, target)`` feature rows: how well e_MSC matches e_r in stage 1."""

    def reset(self) -> None:
        self._sum, self._count = 0.0, 0

    def update(self, output) -> None:
        prediction, target = output
        similarity = torch.nn.functional.cosine_similarity(prediction.detach(), target.detach(), dim=-1)
        self._sum += float(similarity.sum())
        self._count += similarity.numel()

    def compute(self) -> float:
        if self._count == 0:
            raise RuntimeError("MeanCosineSimilarity has no features to measure")
        return self._sum / self._count
