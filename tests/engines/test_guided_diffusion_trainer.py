"""The stage-2 trainer's condition dropout."""

from __future__ import annotations

import pytest
import torch

from bundle.engines.guided_diffusion_trainer import condition_dropout


def test_condition_dropout_rates_match_the_paper():
    drop_text, drop_msc = condition_dropout(200_000, generator=torch.Generator().manual_seed(0))
    assert float((drop_text & ~drop_msc).float().mean()) == pytest.approx(0.05, abs=0.003)
    assert float((drop_msc & ~drop_text).float().mean()) == pytest.approx(0.05, abs=0.003)
    assert float((drop_text & drop_msc).float().mean()) == pytest.approx(0.05, abs=0.003)
