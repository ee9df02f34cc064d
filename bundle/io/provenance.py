"""The provenance record written beside every synthetic volume."""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path

from bundle.utils.bundle_files import code_version
from bundle.utils.hashing import sha256_of_path


def provenance_record(
    source: str | os.PathLike, source_format: str, output: str | os.PathLike, details: Mapping[str, object]
) -> dict[str, object]:
    """The JSON-safe provenance of one synthetic output: input path and hash, code version, time, details.

    ``details`` carries what produced the output: case id, mask source, text, seed, slices, model, and, when a
    quality filter judged the case, its decision (``quality``: score, threshold, passed) and identity
    (``quality_filter``).
    """
    return {
        "synthetic": True,
        "output": str(output),
        "input": {"path": str(Path(source).resolve()), "format": source_format, "sha256": sha256_of_path(source)},
        "code_version": code_version(),
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **details,
    }
