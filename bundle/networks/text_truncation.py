"""A warning, once per text, when a text encoder's tokenizer cuts a lesion text short."""

from __future__ import annotations

import logging

_logger = logging.getLogger(__name__)


_WARNED_TEXTS: set[str] = set()


def warn_truncated_text(text: str, limit: int, encoder: str) -> None:
    """Log (once per text) that ``text`` fills all ``limit`` tokens of ``encoder``, so its tail is cut off."""
    if text in _WARNED_TEXTS:
        return
    if len(_WARNED_TEXTS) > 10_000:
        _WARNED_TEXTS.clear()
    _WARNED_TEXTS.add(text)
    shown = text if len(text) <= 80 else f"{text[:77]}..."
    _logger.warning(
        "lesion text of %d characters fills all %d tokens of the %s, the rest is ignored: %r",
        len(text),
        limit,
        encoder,
        shown,
    )
