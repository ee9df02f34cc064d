"""Label tables of a dataset: CSV or JSON rows with normalised column names."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from bundle.errors import InputError


def read_table(path: str | os.PathLike) -> list[dict[str, object]]:
    """Rows of a CSV file (header row required) or a JSON file (a list of objects, an object with one list
    of objects such as ``{"cases": [...]}``, or an object of objects keyed by case id, which becomes
    ``case_id``). Column names are stripped and lower-cased.

    Raises:
        InputError: naming the file when it cannot be read or has no rows of the expected shape.
    """
    path = Path(path)
    try:
        if path.suffix.lower() == ".json":
            content = json.loads(path.read_text(encoding="utf-8"))
            rows = _json_rows(path, content)
        else:
            with open(path, newline="", encoding="utf-8-sig") as handle:
                reader = csv.DictReader(handle)
                if not reader.fieldnames:
                    raise InputError(path, "empty CSV file (no header row)")
                rows = [dict(row) for row in reader]
    except (OSError, UnicodeDecodeError, ValueError, csv.Error) as error:
        if isinstance(error, InputError):
            raise
        raise InputError(path, f"cannot be read as a table ({type(error).__name__}: {error})") from error
    return [{str(key).strip().lower(): value for key, value in row.items() if key is not None} for row in rows]


def _json_rows(path: Path, content: object) -> list[dict]:
    if isinstance(content, Mapping):
        lists = [value for value in content.values() if isinstance(value, list)]
        if len(lists) == 1:
            content = lists[0]
        elif content and all(isinstance(value, Mapping) for value in content.values()):
            return [{"case_id": key, **value} for key, value in content.items()]
    if not isinstance(content, list) or not all(isinstance(row, Mapping) for row in content):
        raise InputError(
            path,
            "expected a list of objects (one per case), an object holding one such list, "
            "or an object of objects keyed by case id",
        )
    return [dict(row) for row in content]


def pick_column(columns: Iterable[str], aliases: Sequence[str]) -> str | None:
    """The first of ``aliases`` that is one of ``columns``."""
    available = set(columns)
    return next((name for name in aliases if name in available), None)
