"""Fixtures of the preparation tests: the preparation script imported, and tiny RSNA and VerTumor-like folders."""

from __future__ import annotations

import importlib.util

import pytest

from tests.helpers.dataset_layouts import write_rsna_layout, write_vertumor_layout
from tests.helpers.paths import REPO


@pytest.fixture(scope="module")
def prepare_script():
    """scripts/prepare.py imported, to call its commands in-process (a subprocess costs a torch import)."""
    spec = importlib.util.spec_from_file_location("prepare_script", REPO / "scripts" / "prepare.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def rsna(tmp_path_factory):
    root = tmp_path_factory.mktemp("rsna") / "rsna-2024"
    root.mkdir()
    return root, write_rsna_layout(root)


@pytest.fixture(scope="module")
def vertumor(tmp_path_factory):
    root = tmp_path_factory.mktemp("vertumor") / "vertumor"
    return root, write_vertumor_layout(root)
