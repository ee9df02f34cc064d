"""Label maps and lesion classes of the demo phantom."""

from __future__ import annotations

VERTEBRA_LABELS: dict[str, int] = {"L1": 31, "L2": 30, "L3": 29, "L4": 28, "L5": 27, "S1": 26}
"""Label values of the vertebra map (TotalSegmentator v2 numbering, as in the real CT fixture)."""


NEIGHBOUR_BONE_LABELS: dict[str, int] = {"T12": 32, "sacrum": 25}
"""Other bones in the vertebra map: the partly visible T12 and the sacrum below S1 (TotalSegmentator v2)."""


LESION_CLASSES: dict[str, int] = {"normal": 0, "benign": 1, "malignant": 2}


LESION_LEVELS: tuple[str, ...] = ("L1", "L2", "L3", "L4", "L5")
