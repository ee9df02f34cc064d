"""The conditions of a conditioned diffusion model, shared by its trainer and its sampler.

A model's conditions are named groups of tensors with the batch first (MedSoft-Diffusion: ``"text"``, the text
condition C ``(B, L, D)``, and ``"msc"``, e_MSC as one token ``(B, 1, E)``). The model gives them for a batch, gives
their null values (what classifier-free guidance and condition dropout put in their place) and predicts the noise
from them: :class:`ConditionedDiffusionModel`. Condition dropout draws, per item, which groups are dropped
(:func:`draw_condition_dropout`) and puts the null conditions there (:func:`drop_conditions`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, runtime_checkable

import torch

Conditions = Mapping[str, torch.Tensor]
"""Named condition groups, each a tensor with the batch first."""

GROUP_SEPARATOR = "+"
"""Joins the groups dropped together in a dropout rate's name: ``"text+msc"``."""


@runtime_checkable
class ConditionedDiffusionModel(Protocol):
    """What the diffusion trainer and the guided sampler need of a model.

    ``condition_groups`` names the groups ``null_conditions`` gives: those condition dropout and classifier-free
    guidance can drop. A model's conditions may hold further groups that are never dropped (an inpainting model's
    mask and masked image): both branches of guidance see them as they are (:func:`guidance_null_conditions`).
    ``forward`` predicts the noise of ``latents`` ``(B, C, h, w)`` at ``timesteps`` ``(B,)``.
    """

    condition_groups: tuple[str, ...]

    def null_conditions(self, batch_size: int) -> Conditions: ...

    def __call__(self, latents: torch.Tensor, timesteps: torch.Tensor, conditions: Conditions) -> torch.Tensor: ...


def concat_conditions(*parts: Conditions) -> dict[str, torch.Tensor]:
    """The conditions of several batches as one batch, group by group (e.g. [unconditional; conditional])."""
    names = list(parts[0])
    if any(list(part) != names for part in parts[1:]):
        raise ValueError(f"conditions of different groups cannot be joined: {[list(part) for part in parts]}")
    return {name: torch.cat([part[name] for part in parts]) for name in names}


def guidance_null_conditions(null_conditions: Conditions, conditions: Conditions) -> dict[str, torch.Tensor]:
    """The unconditional branch of ``conditions``: the null condition of each group ``null_conditions`` has, the
    batch's own value of the others (groups that are never dropped, such as an inpainting mask)."""
    return {name: null_conditions.get(name, value) for name, value in conditions.items()}


def check_condition_dropout(rates: Mapping[str, float], groups: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    """The groups each way of dropping in ``rates`` drops (see :func:`draw_condition_dropout`); rates naming a group
    not in ``groups``, negative ones or ones summing to more than 1 are refused."""
    ways = {name: tuple(name.split(GROUP_SEPARATOR)) for name in rates}
    unknown = sorted({group for dropped in ways.values() for group in dropped} - set(groups))
    if unknown:
        raise ValueError(f"condition dropout names groups {unknown} the model does not have (it has {list(groups)})")
    if any(rate < 0 for rate in rates.values()) or sum(rates.values()) > 1 + 1e-9:
        raise ValueError(f"condition dropout rates must be >= 0 and sum to at most 1, got {dict(rates)}")
    return ways


def draw_condition_dropout(
    batch_size: int,
    rates: Mapping[str, float],
    groups: tuple[str, ...],
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """Which items drop which condition groups, as one boolean ``(B,)`` per group of ``groups``.

    Args:
        rates: the probability of each way of dropping, by the groups it drops joined with ``+``, e.g.
            ``{"text": 0.05, "msc": 0.05, "text+msc": 0.05}`` (MedSoft-Diffusion's): an item drops the text alone
            with 0.05, e_MSC alone with 0.05, both with 0.05, and keeps both otherwise. The ways exclude each
            other (one uniform draw per item, cut into consecutive intervals in the given order), so the rates
            must sum to at most 1.
        groups: the model's condition groups; a rate naming another group is refused.
    """
    ways = check_condition_dropout(rates, groups)
    draw = torch.rand(batch_size, generator=generator)
    dropped = {group: torch.zeros(batch_size, dtype=torch.bool) for group in groups}
    start = 0.0
    for name, rate in rates.items():
        chosen = (draw >= start) & (draw < start + rate)
        for group in ways[name]:
            dropped[group] |= chosen
        start += rate
    return dropped


def drop_conditions(
    conditions: Conditions, null_conditions: Conditions, dropped: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """``conditions`` with each group's null condition in the items ``dropped[group]`` marks (groups ``dropped``
    does not name are kept)."""
    result = dict(conditions)
    for group, items in dropped.items():
        value = conditions[group]
        where = items.to(value.device).view(-1, *([1] * (value.ndim - 1)))
        result[group] = torch.where(where, null_conditions[group], value)
    return result
