"""What a lesion text says about the lesion's size: the first size in millimetres it names."""

from __future__ import annotations

import re

_SIZE = re.compile(r"\b(\d+(?:\.\d+)?)\s*mm\b", re.IGNORECASE)


def lesion_size_mm(text: str) -> float | None:
    """The first size in mm of a lesion text ("a well-circumscribed 13 mm hyperintense lesion" -> 13.0), or None."""
    size = _SIZE.search(text)
    return float(size.group(1)) if size else None
