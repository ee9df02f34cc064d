"""Seeded, label-stratified hold-out splits: validation held out of a training list, and the demo data's test
cases (:func:`bundle.demo.dataset.stratified_split`), by one rule (:func:`stratified_holdout`)."""

from __future__ import annotations

import math
import os
import random
from collections.abc import Callable, Mapping, Sequence

from bundle.data.datalist import load_datalist
from bundle.errors import InputError


def normalised_shares(
    values: Sequence[float] | Mapping[str, float], names: Sequence[str], what: str = "fractions"
) -> dict[str, float]:
    """``{name: share}`` summing to 1, from one non-negative number per name (a sequence in the order of ``names``,
    or a mapping by name, absent names 0) with a positive sum; ``what`` names the argument in the ``ValueError``."""
    names = list(names)
    if isinstance(values, Mapping):
        unknown = set(values) - set(names)
        if unknown:
            raise ValueError(f"{what} has unknown names {sorted(unknown)} (expected {names})")
        numbers = [values.get(name, 0.0) for name in names]
    else:
        numbers = list(values) if not isinstance(values, (str, bytes)) else [values]
        if len(numbers) != len(names):
            raise ValueError(f"{what} needs {len(names)} numbers ({', '.join(names)}), got {values!r}")
    if (
        any(isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0 for v in numbers)
        or sum(numbers) <= 0
    ):
        raise ValueError(f"{what} must be non-negative numbers with a positive sum, got {values!r}")
    total = float(sum(numbers))
    return {name: float(value) / total for name, value in zip(names, numbers, strict=True)}


def seeded_shuffle(items: list, seed: int, label: str) -> list:
    """``items`` shuffled in place (and returned) by ``random.Random(f"{seed}:{label}")``: one seeded order per
    label, so one label's order does not change with the others' counts."""
    random.Random(f"{seed}:{label}").shuffle(items)
    return items


def held_out_count(size: int, fraction: float) -> int:
    """How many of a label's ``size`` entries are held out: ``round(fraction * size)``, at least one when
    ``fraction > 0``, and at most ``size - 1`` (a label always keeps an entry on the other side; a label with a
    single entry holds none out)."""
    if size < 2 or fraction <= 0:
        return 0
    return min(max(round(fraction * size), 1), size - 1)


def stratified_holdout(
    labels: Sequence[str],
    fraction: float,
    order: Callable[[str, list[int]], Sequence[int]],
    label_order: Sequence[str] | None = None,
) -> list[bool]:
    """Whether each of the entries with ``labels`` is held out: for each label (in ``label_order``, default sorted),
    the first :func:`held_out_count` of ``order(label, indices of the label's entries)``, a seeded shuffle of
    them. ``order`` is called for every label, in that order, so a shared random generator draws the same
    numbers whatever the counts."""
    held_out = [False] * len(labels)
    for label in sorted(set(labels)) if label_order is None else label_order:
        members = [index for index, value in enumerate(labels) if value == label]
        chosen = order(label, members)
        for index in list(chosen)[: held_out_count(len(members), fraction)]:
            held_out[int(index)] = True
    return held_out


def holdout_split(
    entries: Sequence[Mapping], part: str, fraction: float = 0.15, seed: int = 0, label_key: str = "label"
) -> list[dict]:
    """A deterministic, label-stratified split of ``entries`` into ``"training"`` and ``"validation"`` parts.

    Within each label, :func:`held_out_count` entries go to validation, chosen by a seeded shuffle of their case
    ids, so the split does not depend on list order.
    """
    if part not in ("training", "validation"):
        raise ValueError(f"part must be 'training' or 'validation', got {part!r}")
    ordered = sorted(entries, key=lambda e: str(e.get("case_id")))
    ids = [str(e.get("case_id")) for e in ordered]

    flags = stratified_holdout(
        [str(e.get(label_key, "")) for e in ordered],
        fraction,
        lambda label, members: seeded_shuffle(members, seed, label),
    )
    held_out = {case_id for case_id, flag in zip(ids, flags, strict=True) if flag}
    keep_validation = part == "validation"
    return [dict(e) for e in entries if (str(e.get("case_id")) in held_out) == keep_validation]


def training_split(datalist: str | os.PathLike, part: str, fraction: float = 0.15, seed: int = 0) -> list[dict]:
    """The ``part`` (``"training"`` or ``"validation"``) of a datalist for training.

    A datalist with its own non-empty ``validation`` list (``scripts/prepare.py`` writes one, split by patient) is
    used as given; otherwise validation is held out of ``training`` with :func:`holdout_split`.
    """
    if part not in ("training", "validation"):
        raise ValueError(f"part must be 'training' or 'validation', got {part!r}")
    try:
        validation = load_datalist(datalist, "validation")
    except InputError:
        validation = []
    if validation:
        return validation if part == "validation" else load_datalist(datalist, "training")
    return holdout_split(load_datalist(datalist, "training"), part, fraction, seed)
