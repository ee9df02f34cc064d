"""The stage-2 trainer: the paper's condition dropout by groups, and one training step through the base trainer."""

from __future__ import annotations

import pytest
import torch

from bundle.engines.guided_diffusion_trainer import medsoft_condition_dropout
from bundle.networks.conditions import draw_condition_dropout
from bundle.networks.medsoft_diffusion import MedSoftDiffusion


def test_condition_dropout_rates_match_the_paper():
    dropped = draw_condition_dropout(
        200_000, medsoft_condition_dropout(), MedSoftDiffusion.condition_groups, torch.Generator().manual_seed(0)
    )
    drop_text, drop_msc = dropped["text"], dropped["msc"]
    assert float((drop_text & ~drop_msc).float().mean()) == pytest.approx(0.05, abs=0.003)
    assert float((drop_msc & ~drop_text).float().mean()) == pytest.approx(0.05, abs=0.003)
    assert float((drop_text & drop_msc).float().mean()) == pytest.approx(0.05, abs=0.003)
