"""Where the bundle's own files are (the folder holding ``bundle/``, ``configs/``, ``metadata.json``) and which
version of them runs."""

from __future__ import annotations

import os
import subprocess
from functools import lru_cache
from pathlib import Path

import bundle
from bundle.utils.files import read_json_object

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


def common_settings(bundle_root: str | os.PathLike) -> dict:
    """The settings every workflow shares (``configs/common.json`` under ``bundle_root``: orientation, soft mask,
    slices, model grid), read through ``bundle_root`` so a config finds them from any working directory (MONAI
    resolves a ``%configs/x.json#id`` macro against the working directory instead)."""
    return read_json_object(
        Path(bundle_root) / "configs" / "common.json",
        "the bundle's common settings",
        hint="set bundle_root to the bundle folder (the one holding configs/)",
    )
