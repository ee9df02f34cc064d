"""An installed (not editable) bundle package finds its package data: the known weight hashes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from tests.helpers.paths import REPO


def test_a_non_editable_install_carries_the_known_weight_hashes(tmp_path):
    source, target = tmp_path / "source", tmp_path / "installed"
    shutil.copytree(REPO / "bundle", source / "bundle", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", source)  # a copy: setuptools writes build/ beside the sources
    install = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target"]
    subprocess.run([*install, str(target), str(source)], check=True, capture_output=True, timeout=600)
    check = (
        "import bundle, bundle.weights.checker as checker; "
        "print(bundle.__file__); print(len(checker.load_known_hashes()))"
    )
    result = subprocess.run(
        [sys.executable, "-c", check],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(target)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    module, count = result.stdout.split()
    assert module.startswith(str(target)) and int(count) > 0
