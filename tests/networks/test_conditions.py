"""The conditions interface: dropout by named groups (the dropped group takes its null condition, the others are
kept; the rates hold over many draws), joining conditions for guidance, and MedSoft-Diffusion as one case."""

from __future__ import annotations

import pytest
import torch

from bundle.networks.conditions import (
    ConditionedDiffusionModel,
    concat_conditions,
    draw_condition_dropout,
    drop_conditions,
)
from bundle.networks.medical_clip import MedicalClipEncoder
from bundle.networks.medsoft_diffusion import tiny_model
from tests.helpers.conditioned_model import TwoGroupModel


def test_each_way_of_dropping_keeps_its_rate_over_many_draws():
    rates = {"a": 0.1, "b+c": 0.2, "c": 0.3}
    dropped = draw_condition_dropout(200_000, rates, ("a", "b", "c"), torch.Generator().manual_seed(0))
    a, b, c = dropped["a"], dropped["b"], dropped["c"]
    assert float((a & ~b & ~c).float().mean()) == pytest.approx(0.1, abs=0.003)
    assert float((b & c & ~a).float().mean()) == pytest.approx(0.2, abs=0.003)
    assert float((c & ~b & ~a).float().mean()) == pytest.approx(0.3, abs=0.003)
    assert not (b & ~c).any()  # b is only ever dropped together with c
    assert not (a & c).any()  # the ways exclude each other
    assert float((~a & ~b & ~c).float().mean()) == pytest.approx(0.4, abs=0.003)


def test_no_rates_drop_nothing_and_bad_rates_are_refused():
    dropped = draw_condition_dropout(100, {}, ("a", "b"))
    assert set(dropped) == {"a", "b"} and not any(items.any() for items in dropped.values())
    with pytest.raises(ValueError, match=r"groups \['msc'\] the model does not have"):
        draw_condition_dropout(4, {"text+msc": 0.1}, ("text", "image"))
    with pytest.raises(ValueError, match="sum to at most 1"):
        draw_condition_dropout(4, {"a": 0.6, "b": 0.6}, ("a", "b"))
    with pytest.raises(ValueError, match=">= 0"):
        draw_condition_dropout(4, {"a": -0.1}, ("a", "b"))


def test_a_dropped_group_takes_its_null_condition_and_the_others_are_kept():
    model = TwoGroupModel()
    conditions = model.conditions(4, torch.Generator().manual_seed(1))
    null = model.null_conditions(4)
    dropped = {"a": torch.tensor([True, False, True, False])}
    result = drop_conditions(conditions, null, dropped)
    assert torch.equal(result["a"][[0, 2]], null["a"][[0, 2]])
    assert torch.equal(result["a"][[1, 3]], conditions["a"][[1, 3]])
    assert torch.equal(result["b"], conditions["b"])  # a group the draw does not name is kept
    assert not torch.equal(conditions["a"][0], null["a"][0])  # the inputs themselves are left as they were


def test_conditions_join_group_by_group_in_order():
    model = TwoGroupModel()
    first, second = model.conditions(2, torch.Generator().manual_seed(2)), model.null_conditions(3)
    joined = concat_conditions(second, first)
    assert list(joined) == ["a", "b"] and joined["a"].shape == (5, 2, 4)
    assert torch.equal(joined["b"][:3], second["b"]) and torch.equal(joined["b"][3:], first["b"])
    with pytest.raises(ValueError, match="different groups"):
        concat_conditions(first, {"a": first["a"]})


def test_medsoft_diffusion_is_a_conditioned_model_with_text_and_msc_groups():
    clip = MedicalClipEncoder.tiny(embed_dim=32, image_size=32, vision_width=32, text_width=32, heads=2)
    model = tiny_model(spatial_size=32, clip_encoder=clip, unet_channels=(16, 32), seed=0).eval()
    assert isinstance(model, ConditionedDiffusionModel) and isinstance(TwoGroupModel(), ConditionedDiffusionModel)
    conditions = model.conditions(["a lesion in L2", "a lesion in L4"], torch.rand(2, 1, 32, 32))
    null = model.null_conditions(2)
    assert list(conditions) == list(null) == list(model.condition_groups) == ["text", "msc"]
    assert conditions["msc"].shape == null["msc"].shape == (2, 1, 32) and not null["msc"].any()
    assert conditions["text"].shape == null["text"].shape
    latents = torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        full = model(latents, torch.tensor([10, 500]), conditions)
        no_msc = model(
            latents,
            torch.tensor([10, 500]),
            drop_conditions(conditions, null, {"msc": torch.ones(2, dtype=torch.bool)}),
        )
    assert full.shape == latents.shape and (full - no_msc).abs().max() > 1e-4  # each group reaches the UNet
