"""Import the bundle's code from the bundle the app is given, not from wherever an installed copy lives.

The bundle is the App SDK's model path: ``-m``/``--model``, else ``$HOLOSCAN_MODEL_PATH``, else ``models`` (the SDK's
own order and default, ``monai.deploy.core.runtime_env``): the bundle folder itself or, as in a packaged app's
``/opt/holoscan/models``, a folder holding it as its one bundle subfolder. It is read here without the SDK, whose
import (Holoscan, torch) takes seconds, so that a bad request is refused before that.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

MODEL_PATH_ENV = "HOLOSCAN_MODEL_PATH"
BUNDLE_MARKERS = ("configs/inference.json", "bundle/__init__.py")


class NotABundleError(ValueError):
    """The model path is not a bundle folder (the message starts with the path)."""


def model_path(argv: Sequence[str], environ: Mapping[str, str] = os.environ) -> Path:
    """The model path the command line ``argv`` (program first) or the environment names."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("-m", "--model")
    known, _ = parser.parse_known_args(list(argv[1:]))
    return Path(known.model or environ.get(MODEL_PATH_ENV) or "models").resolve()


def is_bundle(folder: Path) -> bool:
    return all((folder / marker).is_file() for marker in BUNDLE_MARKERS)


def find_bundle(path: Path) -> Path:
    """``path`` if it is a bundle folder, else its one bundle subfolder.

    Raises:
        NotABundleError: neither, or several bundle subfolders.
    """
    if is_bundle(path):
        return path
    found = sorted(p for p in path.iterdir() if p.is_dir() and is_bundle(p)) if path.is_dir() else []
    if len(found) == 1:
        return found[0]
    problem = f"{len(found)} bundle subfolders ({', '.join(p.name for p in found)})" if found else "not a bundle folder"
    raise NotABundleError(
        f"{path}: {problem}; -m names the bundle (a folder with {' and '.join(BUNDLE_MARKERS)}) or a folder holding "
        "one bundle"
    )


def put_bundle_first(argv: Sequence[str], environ: Mapping[str, str] = os.environ) -> Path:
    """Put the bundle of ``argv`` or the environment first on ``sys.path``; return it."""
    root = find_bundle(model_path(argv, environ))
    if str(root) in sys.path:
        sys.path.remove(str(root))
    sys.path.insert(0, str(root))
    return root
