"""Helpers every part of the bundle uses: files (atomic writes, JSON objects, safe case names, clean-up after
an interrupted run), hashing, mixed precision, and where the bundle's own files are."""

from bundle.utils.bundle_files import BUNDLE_ROOT, CONFIGS_DIR, code_version, common_settings
from bundle.utils.files import (
    check_folder_writable,
    json_kind,
    make_readable,
    move_into_place,
    read_json_object,
    remove_leftovers,
    remove_path,
    safe_case_name,
    size_of_path,
    write_atomically,
    write_json_atomically,
)
from bundle.utils.hashing import file_identity, sha256_file, sha256_of_path
from bundle.utils.precision import PRECISIONS, autocast, autocast_dtype

__all__ = [
    "BUNDLE_ROOT",
    "CONFIGS_DIR",
    "PRECISIONS",
    "autocast",
    "autocast_dtype",
    "check_folder_writable",
    "code_version",
    "common_settings",
    "file_identity",
    "json_kind",
    "make_readable",
    "move_into_place",
    "read_json_object",
    "remove_leftovers",
    "remove_path",
    "safe_case_name",
    "sha256_file",
    "sha256_of_path",
    "size_of_path",
    "write_atomically",
    "write_json_atomically",
]
