"""Reading a MONAI datalist and checking each entry before anything is loaded."""

from __future__ import annotations

import json
import os
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path

from monai.transforms import Transform

from bundle.errors import InputError

FILE_KEYS = ("image", "vertebra_seg", "lesion_seg")


def load_datalist(path: str | os.PathLike, split: str = "test", base_dir: str | os.PathLike | None = None,
                  file_keys: Sequence[str] = FILE_KEYS) -> list[dict]:
    """The entries of ``split`` in a MONAI datalist JSON, with relative file paths made absolute.

    Relative paths are resolved against ``base_dir`` (default: the datalist's folder). Entries without a
    ``case_id`` get ``"<split>_<index>"``.
    """
    path = Path(path)
    try:
        content = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise InputError(path, f"cannot read the datalist ({error})") from error
    if split not in content or not isinstance(content[split], list):
        raise InputError(path, f"no list named {split!r} (found: {sorted(k for k, v in content.items() if isinstance(v, list))})")
    base = Path(base_dir) if base_dir is not None else path.parent
    entries = []
    for index, entry in enumerate(content[split]):
        entry = dict(entry)
        entry.setdefault("case_id", f"{split}_{index:04d}")
        for key in file_keys:
            if isinstance(entry.get(key), str) and not os.path.isabs(entry[key]):
                entry[key] = str(base / entry[key])
        entries.append(entry)
    return entries


class ValidateEntryd(Transform):
    """Check a datalist entry before loading: its files exist, it has a lesion text and a soft-mask source.

    Records every input file under ``"input_files"`` so writers can refuse to overwrite any of them.

    Raises:
        InputError: naming the case and the missing file, text or mask source.
    """

    def __init__(self, file_keys: Sequence[str] = ("image", "vertebra_seg"), text_key: str = "text",
                 require_text: bool = True, seg_key: str = "vertebra_seg") -> None:
        self.file_keys = list(file_keys)
        self.text_key = text_key
        self.require_text = require_text
        self.seg_key = seg_key

    def __call__(self, entry: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(entry)
        case = d.get("case_id", d.get("image", "<entry>"))
        if not d.get("image"):
            raise InputError(case, "entry has no 'image'")
        for key in self.file_keys:
            if d.get(key) is not None and not Path(str(d[key])).exists():
                raise InputError(d[key], f"file not found (case {case}, key '{key}')")
        if self.require_text and not str(d.get(self.text_key) or "").strip():
            raise InputError(case, f"missing lesion text ('{self.text_key}' is absent or empty)")
        has_source = d.get("box") is not None or d.get("point") is not None or (
            d.get(self.seg_key) is not None and bool(d.get("mask_labels")))
        if not has_source:
            raise InputError(case, f"no soft-mask source: give 'box', 'point', or '{self.seg_key}' with 'mask_labels'")
        d["input_files"] = [str(Path(str(d[k])).resolve()) for k in self.file_keys if d.get(k) is not None]
        return d

