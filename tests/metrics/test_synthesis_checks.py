"""The synthesis warnings: a negligible change, a change beyond the soft mask, a lesion against its text and a
rejected case are each marked with the measured figure and the threshold; a normal result is not."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from bundle.metrics.synthesis_checks import SynthesisChecks

SIZE = 48


def case(text: str = "a 12 mm hyperintense lesion in the central L3 vertebral body", slices: int = 5) -> list[dict]:
    """Model-grid slice items of a box 'vertebra' (marrow 0.5, background 0.2), its soft mask blurred beyond it."""
    hard = np.zeros((SIZE, SIZE))
    hard[12:36, 10:38] = 1.0
    soft = np.clip(ndimage.gaussian_filter(hard, 2.0) * 1.2, 0, 1)
    image = np.where(hard > 0, 0.5, 0.2) + 0.01 * np.random.default_rng(0).standard_normal((SIZE, SIZE))
    return [
        {
            "image": torch.tensor(image[None], dtype=torch.float32),
            "soft_mask": torch.tensor(soft[None], dtype=torch.float32),
            "text": text,
            "placement": {"slice_index": 10 + k},
        }
        for k in range(slices)
    ]


def lesion(item: dict, contrast: float) -> torch.Tensor:
    """The slice with a round lesion of ``contrast`` (fraction of the intensity range) in the box's middle."""
    rows, columns = np.mgrid[:SIZE, :SIZE]
    disc = torch.tensor(((rows - 24) ** 2 + (columns - 24) ** 2 <= 36)[None], dtype=torch.float32)
    return item["image"] + contrast * disc


def warnings_of(items, predictions, quality=None) -> list[dict]:
    return SynthesisChecks()(items, predictions, quality)[1]


def codes(found: list[dict]) -> list[str]:
    return [w["code"] for w in found]


def test_a_normal_lesion_gives_no_warning():
    items = case()
    measured, found = SynthesisChecks()(items, [lesion(i, 0.3) for i in items])
    assert found == [] and measured["largest_change"] == pytest.approx(0.3, rel=1e-3)
    assert measured["direction"] == {"signal": "hyperintense", "direction": 1, "direction_ok": True}
    assert measured["outside_change"] == 0.0 and measured["negligible_slices"] == []


def test_a_tiny_change_warns_per_case_and_per_slice_with_the_figure_and_the_threshold():
    items = case(slices=15)  # the real case: 3 of 15 slices changed by 0.2 % of the intensity range
    predictions = [lesion(i, 0.002 if k < 3 else 0.0) for k, i in enumerate(items)]
    found = {w["code"]: w for w in warnings_of(items, predictions)}
    assert {"negligible_change", "negligible_slices"} <= set(found)
    assert found["negligible_change"]["measured"] == pytest.approx(0.002, rel=1e-3)
    assert found["negligible_change"]["threshold"] == 0.01
    assert found["negligible_slices"]["measured"] == 1.0 and found["negligible_slices"]["threshold"] == 0.5
    assert "0.20%" in found["negligible_change"]["message"] and "1.00%" in found["negligible_change"]["message"]


def test_some_unchanged_slices_warn_only_beyond_the_allowed_share():
    items = case(slices=4)
    two_unchanged = [lesion(i, 0.3 if k < 2 else 0.0) for k, i in enumerate(items)]
    three_unchanged = [lesion(i, 0.3 if k < 1 else 0.0) for k, i in enumerate(items)]
    assert codes(warnings_of(items, two_unchanged)) == []
    found = warnings_of(items, three_unchanged)
    assert codes(found) == ["negligible_slices"] and found[0]["measured"] == 0.75
    assert "[11, 12, 13]" in found[0]["message"]


def test_a_change_outside_the_soft_mask_warns():
    items = case()
    predictions = [lesion(i, 0.3) for i in items]
    predictions[2] = predictions[2].clone()
    predictions[2][0, 2:6, 2:6] += 0.1  # a corner far beyond the blurred mask
    found = warnings_of(items, predictions)
    assert codes(found) == ["change_outside_mask"]
    assert found[0]["measured"] == pytest.approx(0.1, rel=1e-3) and found[0]["threshold"] == 0.05


def test_a_lesion_against_the_text_warns_and_one_along_it_or_without_a_signal_does_not():
    items = case("a 12 mm hyperintense lesion in the central L3 vertebral body")
    darker = [lesion(i, -0.3) for i in items]
    found = warnings_of(items, darker)
    assert codes(found) == ["against_text"] and found[0]["measured"] == -1 and found[0]["threshold"] == 1
    assert "hyperintense" in found[0]["message"] and "darker" in found[0]["message"]
    hypointense = case("a 12 mm hypointense lesion in the central L3 vertebral body")
    assert warnings_of(hypointense, darker) == []
    assert warnings_of(case("a lesion"), darker) == []


def test_a_rejected_case_warns_with_its_score_and_threshold():
    items = case()
    predictions = [lesion(i, 0.3) for i in items]
    rejected = {"score": 0.4, "threshold": 0.25, "passed": False}
    found = warnings_of(items, predictions, rejected)
    assert codes(found) == ["quality_filter_rejected"] and (found[0]["measured"], found[0]["threshold"]) == (0.4, 0.25)
    assert warnings_of(items, predictions, {**rejected, "score": 0.1, "passed": True}) == []
