"""Import the bundle's code from the bundle the app is given (``-m``/``--model``, else ``$HOLOSCAN_MODEL_PATH``), not
from wherever an installed copy lives."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from monai.deploy.core.arg_parser import parse_args
from monai.deploy.core.runtime_env import RuntimeEnv


def put_bundle_first(argv: Sequence[str]) -> Path:
    """Put the bundle folder named by the command line ``argv`` (program first) first on ``sys.path``; return it."""
    root = Path(parse_args(list(argv)).model or RuntimeEnv().model).resolve()
    if str(root) in sys.path:
        sys.path.remove(str(root))
    sys.path.insert(0, str(root))
    return root
