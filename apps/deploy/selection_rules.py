"""Which series of the input the app synthesizes into: the App SDK's selection rules (a sagittal MR series, else a
CT series) and their priority across studies."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Protocol, TypeVar

# Spine MRI is read on sagittal series; CT is accepted too. The earlier rule wins.
SELECTIONS = (
    {"name": "sagittal MR", "conditions": {"Modality": "(?i)^MR$", "ImageOrientationPatient": "Sagittal"}},
    {"name": "CT", "conditions": {"Modality": "(?i)^CT$"}},
)
SELECTION_RULES = json.dumps({"selections": list(SELECTIONS)})


class Selected(Protocol):
    selection_name: str


S = TypeVar("S", bound=Selected)


def by_priority(selected: Sequence[S]) -> list[S]:
    """``selected`` (the SDK's ``SelectedSeries`` of every study) ordered by their rules; within a rule, as given."""
    order = [selection["name"] for selection in SELECTIONS]
    return sorted(selected, key=lambda series: order.index(series.selection_name))
