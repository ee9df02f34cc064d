"""Where the bundle's own files are (the folder holding ``bundle/``, ``configs/``, ``metadata.json``) and which
version of them runs."""

from __future__ import annotations

import subprocess
from functools import lru_cache
from pathlib import Path

import bundle

BUNDLE_ROOT = Path(bundle.__file__).resolve().parents[1]
"""The bundle folder: ``configs/``, ``metadata.json`` and the ``bundle`` package."""
CONFIGS_DIR = BUNDLE_ROOT / "configs"


@lru_cache(maxsize=1)
def code_version() -> dict[str, str]:
    """The bundle's version (``metadata.json``'s, see :data:`bundle.__version__`) and, when run from a git
    checkout, its commit."""
    version = {"bundle": bundle.__version__}
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(bundle.__file__).parent,
            check=True,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        version["git_commit"] = commit
    except (OSError, subprocess.SubprocessError):
        version["git_commit"] = "unknown"
    return version
