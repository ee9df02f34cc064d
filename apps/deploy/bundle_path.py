"""Import the bundle's code from the bundle the app is given, not from wherever an installed copy lives.

The bundle is the App SDK's model path: ``-m``/``--model``, else ``$HOLOSCAN_MODEL_PATH``, else ``models`` (the SDK's
own order and default, ``monai.deploy.core.runtime_env``). It is read here without the SDK, whose import (Holoscan,
torch) takes seconds, so that a bad request is refused before that.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

MODEL_PATH_ENV = "HOLOSCAN_MODEL_PATH"
BUNDLE_MARKERS = ("configs/inference.json", "bundle/__init__.py")


class NotABundleError(ValueError):
    """The model path is not a bundle folder (the message starts with the path)."""


def bundle_root(argv: Sequence[str], environ: dict[str, str] | os._Environ = os.environ) -> Path:
    """The bundle folder the command line ``argv`` (program first) names."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("-m", "--model")
    known, _ = parser.parse_known_args(list(argv[1:]))
    return Path(known.model or environ.get(MODEL_PATH_ENV) or "models").resolve()


def put_bundle_first(argv: Sequence[str]) -> Path:
    """Put the bundle folder of ``argv`` first on ``sys.path``; return it.

    Raises:
        NotABundleError: the folder lacks the bundle's inference config or code.
    """
    root = bundle_root(argv)
    missing = [marker for marker in BUNDLE_MARKERS if not (root / marker).is_file()]
    if missing:
        raise NotABundleError(
            f"{root}: not a bundle folder (no {' or '.join(missing)}); -m names the bundle (configs/, bundle/, models/)"
        )
    if str(root) in sys.path:
        sys.path.remove(str(root))
    sys.path.insert(0, str(root))
    return root
