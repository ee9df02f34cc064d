"""Files the bundle writes and reads: atomic writes, cleaning up after an interrupted run, a folder that must be
writable, moving a case's outputs into place together, reading a JSON object, file-name-safe case names."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from bundle.errors import InputError, OutputError

SAFE_NAME_LENGTH = 100


def json_kind(value: object) -> str:
    """The JSON name of ``value``'s type, for messages: object, list, string, number, boolean or null."""
    kinds = ((dict, "object"), (list, "list"), (str, "string"), (bool, "boolean"), ((int, float), "number"))
    return next((name for kind, name in kinds if isinstance(value, kind)), "null")


def read_json_object(path: str | os.PathLike, what: str, expected: str = "", hint: str = "") -> dict:
    """The JSON object in ``path``, or an :class:`InputError` naming the file.

    Messages: ``"<path>: cannot read <what> (<error>)"`` when the file is missing or not JSON, and
    ``"<path>: <what> is a JSON <kind>, not an object<expected>"`` when it holds another JSON value; ``hint``
    (what to do) is appended after ``"; "`` to both.
    """
    path = Path(path)
    tail = f"; {hint}" if hint else ""
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:  # ValueError: JSON syntax and text encoding
        raise InputError(path, f"cannot read {what} ({error}){tail}") from error
    if not isinstance(content, dict):
        raise InputError(path, f"{what} is a JSON {json_kind(content)}, not an object{expected}{tail}")
    return content


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


def size_of_path(path: str | os.PathLike) -> int:
    """Bytes of a file, or of all files in a folder (0 when it does not exist)."""
    path = Path(path)
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size if path.is_file() else 0


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
        raise OutputError(
            folder, f"cannot write to this folder ({type(error).__name__}: {error.strerror or error})"
        ) from error
    if free < needed_bytes:
        raise OutputError(
            folder,
            f"not enough free space: {free / 2**20:,.1f} MiB free, about "
            f"{needed_bytes / 2**20:,.1f} MiB needed; free some space or choose another folder",
        )


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


def safe_case_name(name: str) -> str:
    """A file-name-safe version of a case id: letters, digits, ``. _ -`` only, no leading dot, bounded length.

    Case ids can come from DICOM tags (non-ASCII, slashes, ``..``); they must never steer the output path.
    An id that had to be changed (or shortened) gets ``_`` and 8 hex digits of its SHA-1, so two ids that clean
    to the same text (``a/b`` and ``a\\b``) never share an output; an already-safe id is kept as it is.
    """
    name = str(name)
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "case"
    if cleaned == name and len(cleaned) <= SAFE_NAME_LENGTH:
        return cleaned
    digest = hashlib.sha1(name.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{cleaned[: SAFE_NAME_LENGTH - len(digest) - 1]}_{digest}"


def relative_paths(entry: Mapping, folder: str | os.PathLike, keys: Sequence[str]) -> dict:
    """``entry`` with its file paths under ``keys`` relative to ``folder`` (where the datalist listing it lives)."""
    out = dict(entry)
    for key in keys:
        if isinstance(out.get(key), str) and out[key]:
            out[key] = os.path.relpath(Path(out[key]).absolute(), Path(folder).absolute())
    return out
