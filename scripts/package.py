"""Write ``dist/<bundle name>.zip``: the bundle as other MONAI projects download and load it.

    python scripts/package.py                          # models/ -> dist/spine_mri_lesion_synthesis.zip
    python scripts/package.py --models_dir runs/models --output_dir dist

The zip holds one folder named after ``metadata.json``'s ``name`` with ``configs/`` (``metadata.json`` inside),
the code (``bundle/``), ``models/`` (``model.pt`` and the folders ``network_def`` reads), ``docs/`` and ``LICENSE``:
``monai.bundle.download(url="file://.../<name>.zip", bundle_dir=...)`` unpacks it, ``monai.bundle.load(<name>,
bundle_dir=..., workflow_type="inference")`` gives the network with ``model.pt``'s weights.
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import fire

from bundle.errors import InputError
from bundle.networks.medsoft_diffusion import MODEL_FILE
from bundle.utils.bundle_files import BUNDLE_ROOT
from bundle.utils.files import read_json_object

SOURCES = ("configs", "bundle", "docs", "LICENSE")
SKIPPED = ("__pycache__", ".pyc")


def bundle_files(models_dir: Path) -> Iterator[tuple[Path, str]]:
    """``(file, name in the bundle folder)`` of every file the zip holds, in a stable order."""
    for source in SOURCES:
        path = BUNDLE_ROOT / source
        files = sorted(path.rglob("*")) if path.is_dir() else [path]
        for file in files:
            if file.is_file() and not any(part.endswith(SKIPPED) for part in file.parts):
                yield file, file.relative_to(BUNDLE_ROOT).as_posix()
    for file in sorted(models_dir.rglob("*")):
        if file.is_file() and not file.name.startswith("."):
            yield file, f"models/{file.relative_to(models_dir).as_posix()}"


def main(models_dir: str = "models", output_dir: str = "dist") -> None:
    models = Path(models_dir)
    if not (models / MODEL_FILE).is_file():
        raise InputError(
            models / MODEL_FILE,
            "not found: train (stage 2 writes it) or run `python scripts/export.py --models_dir "
            f"{models_dir}` for an earlier run",
        )
    name = read_json_object(BUNDLE_ROOT / "metadata.json", "the bundle metadata")["name"]
    output = Path(output_dir) / f"{name}.zip"
    output.parent.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(prefix=f".{name}.", suffix=".zip.partial", dir=output.parent)
    os.close(handle)
    try:
        with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for file, arcname in bundle_files(models):
                archive.write(file, f"{name}/{arcname}")  # a symbolic link (configs/metadata.json) as its file
        os.replace(partial, output)
    finally:
        Path(partial).unlink(missing_ok=True)
    print(f"{output}: {output.stat().st_size / 1e6:.1f} MB")


if __name__ == "__main__":
    fire.Fire(main)
