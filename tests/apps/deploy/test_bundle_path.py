"""The Deploy app finds the bundle it runs from the SDK's model path: ``-m``/``--model``, else
``$HOLOSCAN_MODEL_PATH``; the bundle folder or a folder holding one bundle (a packaged app's models folder)."""

from __future__ import annotations

import sys

import pytest

from apps.deploy.bundle_path import MODEL_PATH_ENV, NotABundleError, find_bundle, model_path, put_bundle_first
from tests.helpers.paths import REPO


def make_bundle(folder):
    (folder / "configs").mkdir(parents=True)
    (folder / "configs" / "inference.json").write_text("{}")
    (folder / "bundle").mkdir()
    (folder / "bundle" / "__init__.py").write_text("")
    return folder


def test_the_model_path_comes_from_the_command_line_else_the_environment(tmp_path):
    assert model_path(["app", "-i", "in", "-m", str(tmp_path)], {}) == tmp_path
    assert model_path(["app", f"--model={tmp_path}", "-o", "out"], {MODEL_PATH_ENV: "/elsewhere"}) == tmp_path
    assert model_path(["app", "-i", "in"], {MODEL_PATH_ENV: str(tmp_path)}) == tmp_path


def test_a_bundle_folder_or_a_folder_holding_one(tmp_path):
    bundle = make_bundle(tmp_path / "models" / "spine_mri_lesion_synthesis")
    assert find_bundle(bundle) == bundle and find_bundle(tmp_path / "models") == bundle
    assert find_bundle(REPO) == REPO
    make_bundle(tmp_path / "models" / "another")
    with pytest.raises(NotABundleError, match=r"models: 2 bundle subfolders \(another, spine_mri_lesion_synthesis\)"):
        find_bundle(tmp_path / "models")
    with pytest.raises(NotABundleError, match=r"missing: not a bundle folder"):
        find_bundle(tmp_path / "missing")


def test_the_bundle_goes_first_on_sys_path(tmp_path, monkeypatch):
    bundle = make_bundle(tmp_path / "b")
    monkeypatch.setattr(sys, "path", ["x", str(bundle), "y"])
    assert put_bundle_first(["app", "-m", str(tmp_path)], {}) == bundle
    assert sys.path == [str(bundle), "x", "y"]
