"""Radiology-style descriptions built from the lesion attributes."""

from __future__ import annotations

import numpy as np
import pytest

from bundle.demo.lesion_text import describe_case


def test_text_facts_do_not_depend_on_the_phrasing_rng():
    attributes = {
        "lesion_class": "malignant",
        "level": "L2",
        "position_ap": "posterior",
        "position_si": "mid",
        "size_mm": 22,
        "signal": "hypointense",
        "contrast": 0.3,
        "margin": "ill-defined",
        "striations": False,
        "height_loss_percent": 25,
        "posterior_bulge": True,
        "diagnosis": "metastasis",
    }
    texts = {describe_case(attributes, np.random.default_rng(seed)) for seed in range(30)}
    assert len(texts) > 1
    for text in texts:
        assert "22 mm" in text and "L2" in text and "25% anterior height loss" in text and "posterior" in text
        assert "hypointense" in text and "metasta" in text
    with pytest.raises(ValueError, match="lesion class"):
        describe_case({**attributes, "lesion_class": "fracture"}, np.random.default_rng(0))
