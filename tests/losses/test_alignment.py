"""Stage 1's alignment loss."""

from __future__ import annotations

import pytest
import torch

from bundle.losses.alignment import alignment_loss


def test_alignment_loss_is_the_squared_distance():
    e_msc, target = torch.tensor([[1.0, 2.0], [0.0, 0.0]]), torch.tensor([[1.0, 0.0], [3.0, 4.0]])
    assert float(alignment_loss(e_msc, target)) == pytest.approx((4.0 + 25.0) / 2)
