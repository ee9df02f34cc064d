"""SHA-256 of files and folders, and the identity of a file (path, size, modification time) for caches."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

HASH_CHUNK_BYTES = 8 << 20


def _digest_file(
    digest: hashlib._Hash,
    path: str | os.PathLike,
    chunk_size: int = HASH_CHUNK_BYTES,
    progress: Callable[[int, int], None] | None = None,
) -> None:
    """Feed ``path`` into ``digest`` in chunks (never whole into memory); ``progress(done, total)`` after each."""
    total = os.path.getsize(path)
    done = 0
    with open(path, "rb") as stream:
        while chunk := stream.read(chunk_size):
            digest.update(chunk)
            done += len(chunk)
            if progress is not None:
                progress(done, total)


def sha256_file(
    path: str | os.PathLike, chunk_size: int = HASH_CHUNK_BYTES, progress: Callable[[int, int], None] | None = None
) -> str:
    """SHA-256 of a file, read in chunks; ``progress(done, total)`` after each."""
    digest = hashlib.sha256()
    _digest_file(digest, path, chunk_size, progress)
    return digest.hexdigest()


def sha256_of_path(path: str | os.PathLike) -> str:
    """SHA-256 of a file, or of a folder (its files' relative names and contents, in sorted order)."""
    path = Path(path)
    if not path.is_dir():
        return sha256_file(path)
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(path)).encode())
        _digest_file(digest, file)
    return digest.hexdigest()


def file_identity(path: str | os.PathLike) -> list:
    """``[resolved path, size, modification time in ns]`` of a file; for a folder (a DICOM series) its
    resolved path, file count and a hash of its files' relative names, sizes and modification times."""
    path = Path(path).resolve()
    if not path.is_dir():
        stat = path.stat()
        return [str(path), stat.st_size, stat.st_mtime_ns]
    listing = hashlib.sha256()
    count = 0
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        stat = file.stat()
        listing.update(f"{file.relative_to(path)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        count += 1
    return [str(path), count, listing.hexdigest()]
