"""The provenance record written beside every synthetic volume, and atomic file writing."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path

import bundle
from bundle.errors import OutputError

HASH_CHUNK_BYTES = 1 << 20


def sha256_of_path(path: str | os.PathLike) -> str:
    """SHA-256 of a file, or of a folder (its files' relative names and contents, in sorted order)."""
    path = Path(path)
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode())
        with open(file, "rb") as handle:
            for chunk in iter(lambda: handle.read(HASH_CHUNK_BYTES), b""):
                digest.update(chunk)
    return digest.hexdigest()


def size_of_path(path: str | os.PathLike) -> int:
    """Bytes of a file, or of all files in a folder (0 when it does not exist)."""
    path = Path(path)
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size if path.is_file() else 0


@lru_cache(maxsize=1)
def code_version() -> dict[str, str]:
    """The bundle's version and, when run from a git checkout, its commit."""
    version = {"bundle": bundle.__version__}
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(bundle.__file__).parent, check=True,
                                capture_output=True, text=True, timeout=10).stdout.strip()
        version["git_commit"] = commit
    except (OSError, subprocess.SubprocessError):
        version["git_commit"] = "unknown"
    return version


def provenance_record(source: str | os.PathLike, source_format: str, output: str | os.PathLike,
                      details: Mapping[str, object]) -> dict[str, object]:
    """The JSON-safe provenance of one synthetic output: input path and hash, code version, time, details.

    ``details`` carries what produced the output: case id, mask source, text, seed, slices, model.
    """
    return {
        "synthetic": True,
        "output": str(output),
        "input": {"path": str(Path(source).resolve()), "format": source_format, "sha256": sha256_of_path(source)},
        "code_version": code_version(),
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **details,
    }


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def make_readable(path: str | os.PathLike) -> None:
    """Give a temporary file or folder (created private by ``tempfile``) the usual permissions."""
    os.chmod(path, (0o777 if Path(path).is_dir() else 0o666) & ~_current_umask())


def write_atomically(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to a temporary file beside ``path`` and rename it into place."""
    path = Path(path)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
        make_readable(temporary)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def write_json_atomically(path: str | os.PathLike, record: Mapping[str, object]) -> Path:
    """Atomic JSON write (sorted keys, indented)."""
    return write_atomically(path, (json.dumps(record, indent=2, sort_keys=True) + "\n").encode())


def remove_path(path: str | os.PathLike) -> None:
    """Delete a file or a folder with its contents (a link is removed, not followed); nothing if it is absent."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def remove_leftovers(folder: str | os.PathLike, name_pattern: str) -> list[Path]:
    """Delete the files and folders in ``folder`` whose whole name matches ``name_pattern`` (a regular
    expression): the temporary outputs a killed run left behind. Returns what was removed."""
    folder = Path(folder)
    removed = []
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        if re.fullmatch(name_pattern, path.name):
            remove_path(path)
            removed.append(path)
    return removed


def check_folder_writable(folder: str | os.PathLike, needed_bytes: int = 0) -> None:
    """Create ``folder`` if needed and check that a file can be written in it and that about ``needed_bytes`` are
    free there, so a job stops before its expensive steps rather than when it saves.

    Raises:
        OutputError: naming the folder, when it cannot be created or written to (permissions, a read-only file
            system, a file in the way) or has less than ``needed_bytes`` free.
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        descriptor, probe = tempfile.mkstemp(prefix=".write_test.", suffix=".partial", dir=folder)
        os.close(descriptor)
        os.unlink(probe)
        free = shutil.disk_usage(folder).free
    except OSError as error:
        raise OutputError(folder, f"cannot write to this folder ({type(error).__name__}: "
                                  f"{error.strerror or error})") from error
    if free < needed_bytes:
        raise OutputError(folder, f"not enough free space: {free / 2**20:,.1f} MiB free, about "
                                  f"{needed_bytes / 2**20:,.1f} MiB needed; free some space or choose another folder")


def move_into_place(staging: str | os.PathLike, folder: str | os.PathLike, last: str) -> list[Path]:
    """Move every entry of ``staging`` whose name does not start with ``.`` into ``folder``, replacing entries of the
    same name, the one named ``last`` last; returns the moved paths.

    With ``last`` a record that marks the set as complete, the set appears together or not at all: the earlier
    ``last`` is removed first, and if a move fails the entries already moved are removed again.
    """
    staging, folder = Path(staging), Path(folder)
    names = sorted(p.name for p in staging.iterdir() if not p.name.startswith(".") and p.name != last) + [last]
    remove_path(folder / last)
    moved: list[Path] = []
    try:
        for name in names:
            target = folder / name
            if target.is_dir() or (staging / name).is_dir():  # a rename cannot replace a folder, nor a file by one
                remove_path(target)
            os.replace(staging / name, target)
            moved.append(target)
    except BaseException:
        for target in moved:
            remove_path(target)
        raise
    return moved
