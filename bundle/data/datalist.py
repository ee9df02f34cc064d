"""Reading a MONAI datalist and checking each entry before anything is loaded."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import get_args

from monai.transforms import Transform

from bundle.errors import InputError
from bundle.utils.files import json_kind, read_json_object
from bundle.transforms.soft_mask import CoordinateSpace

FILE_KEYS = ("image", "vertebra_seg", "lesion_seg")
MAX_TEXT_LENGTH = 1000  # characters; far beyond what CLIP's 77 or BiomedCLIP's 256 tokens hold


def load_datalist(path: str | os.PathLike, split: str = "test", base_dir: str | os.PathLike | None = None,
                  file_keys: Sequence[str] = FILE_KEYS) -> list[dict]:
    """The entries of ``split`` in a MONAI datalist JSON, with relative file paths made absolute.

    Relative paths are resolved against ``base_dir`` (default: the datalist's folder). Entries without a
    ``case_id`` get ``"<split>_<index>"``.
    """
    path = Path(path)
    content = read_json_object(path, "the datalist", expected=" of lists: expected e.g. "
                               f'{{"{split}": [{{"image": ..., "text": ..., "point": [x, y, z]}}, ...]}}')
    if split not in content or not isinstance(content[split], list):
        found = sorted(k for k, v in content.items() if isinstance(v, list))
        what = "no list" if split not in content else f"a JSON {json_kind(content[split])}, not a list,"
        raise InputError(path, f"{what} named {split!r} (lists found: {found})")
    not_objects = [(index, entry) for index, entry in enumerate(content[split]) if not isinstance(entry, dict)]
    if not_objects:
        index, entry = not_objects[0]
        raise InputError(path, f"{len(not_objects)} of the {len(content[split])} entries of {split!r} "
                               f"{'is' if len(not_objects) == 1 else 'are'} not a JSON object, e.g. entry {index} is a "
                               f"{json_kind(entry)} ({json.dumps(entry)[:80]}); each entry must be an object such as "
                               '{"image": ..., "text": ...}')
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


def holdout_split(entries: Sequence[Mapping], part: str, fraction: float = 0.15, seed: int = 0,
                  label_key: str = "label") -> list[dict]:
    """A deterministic, label-stratified split of ``entries`` into ``"training"`` and ``"validation"`` parts.

    Within each label, ``round(fraction * n)`` entries (at least one when a label has two or more) go to
    validation, chosen by a seeded shuffle of their case ids, so the split does not depend on list order.
    """
    if part not in ("training", "validation"):
        raise ValueError(f"part must be 'training' or 'validation', got {part!r}")
    import random

    by_label: dict[str, list[dict]] = {}
    for entry in sorted(entries, key=lambda e: str(e.get("case_id"))):
        by_label.setdefault(str(entry.get(label_key, "")), []).append(dict(entry))
    held_out = set()
    for label, group in sorted(by_label.items()):
        count = min(len(group) - 1, max(1 if len(group) > 1 else 0, round(fraction * len(group))))
        ids = [str(e.get("case_id")) for e in group]
        random.Random(f"{seed}:{label}").shuffle(ids)
        held_out.update(ids[:count])
    keep_validation = part == "validation"
    return [dict(e) for e in entries if (str(e.get("case_id")) in held_out) == keep_validation]


def training_split(datalist: str | os.PathLike, part: str, fraction: float = 0.15, seed: int = 0) -> list[dict]:
    """The ``part`` (``"training"`` or ``"validation"``) of a datalist for training.

    A datalist with its own non-empty ``validation`` list (``scripts/prepare.py`` writes one, split by patient) is
    used as given; otherwise validation is held out of ``training`` with :func:`holdout_split`.
    """
    if part not in ("training", "validation"):
        raise ValueError(f"part must be 'training' or 'validation', got {part!r}")
    try:
        validation = load_datalist(datalist, "validation")
    except InputError:
        validation = []
    if validation:
        return validation if part == "validation" else load_datalist(datalist, "training")
    return holdout_split(load_datalist(datalist, "training"), part, fraction, seed)


MASK_SOURCE_FIELDS = ("coordinate_space", "box", "point", "box_size_mm", "mask_labels")


def _finite_numbers(value: object, count: int | None = None) -> bool:
    """``value`` is a list of ``count`` (any number when ``None``) finite real numbers (booleans are not numbers)."""
    return (isinstance(value, (list, tuple)) and (count is None or len(value) == count)
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value))


def entry_field_problem(key: str, value: object, file_keys: Sequence[str] = FILE_KEYS, text_key: str = "text"
                        ) -> str | None:
    """What is wrong with the form of a datalist entry's field ``key`` (``None``: nothing; an absent or ``null``
    field is never wrong here). ``file_keys`` are paths, ``text_key`` the lesion text, and the mask-source fields
    (:data:`MASK_SOURCE_FIELDS`) those :class:`bundle.transforms.soft_mask.SoftMaskFromSourced` reads."""
    if value is None:
        return None
    got = f"got {json.dumps(value, default=str)[:120]}"
    if key == "case_id":
        ok = isinstance(value, (str, int)) and not isinstance(value, bool) and str(value).strip() != ""
        return None if ok else f"must be a non-empty string or an integer, {got}"
    if key in file_keys:
        return None if isinstance(value, str) and value.strip() else f"must be the path of a file or folder, {got}"
    if key == text_key:
        return None if isinstance(value, str) else f"must be a string (the lesion's description), {got}"
    if key == "coordinate_space":
        spaces = get_args(CoordinateSpace)
        return None if value in spaces else f"must be one of {list(spaces)} (voxel indices or RAS mm), {got}"
    if key == "box":
        ok = isinstance(value, (list, tuple)) and len(value) == 2 and all(_finite_numbers(c, 3) for c in value)
        return None if ok else f"must be two corners of 3 finite numbers each, [[x0, y0, z0], [x1, y1, z1]], {got}"
    if key == "point":
        return None if _finite_numbers(value, 3) else f"must be 3 finite numbers [x, y, z], {got}"
    if key == "box_size_mm":
        sizes = value if isinstance(value, (list, tuple)) else [value]
        ok = len(sizes) in (1, 3) and _finite_numbers(sizes) and all(v > 0 for v in sizes)
        return None if ok else f"must be a positive size in mm, one number or one per axis [sx, sy, sz], {got}"
    if key == "mask_labels":
        ok = _finite_numbers(value) and all(float(v).is_integer() for v in value)
        return None if ok else f"must be a list of integer label values, e.g. [30], {got}"
    return None


class ValidateEntryd(Transform):
    """Check a datalist entry before loading: its files exist, it has a lesion text and a soft-mask source, and
    each field has the form it needs (:func:`entry_field_problem`).

    Records every input file under ``"input_files"`` so writers can refuse to overwrite any of them.

    A text longer than ``max_text_length`` characters (``None``: no limit) is refused: the text encoders read
    only its first 77 (CLIP) or 256 (BiomedCLIP) tokens, so the rest would be dropped without a word.

    Raises:
        InputError: naming the case and the missing file, text or mask source, the over-long text, or the field
            of the wrong form (with the image it is about).
    """

    def __init__(self, file_keys: Sequence[str] = ("image", "vertebra_seg"), text_key: str = "text",
                 require_text: bool = True, seg_key: str = "vertebra_seg",
                 max_text_length: int | None = MAX_TEXT_LENGTH) -> None:
        self.max_text_length = max_text_length
        self.file_keys = list(file_keys)
        self.text_key = text_key
        self.require_text = require_text
        self.seg_key = seg_key

    def __call__(self, entry: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(entry)
        case = d.get("case_id", d.get("image", "<entry>"))
        if not d.get("image"):
            raise InputError(case, "entry has no 'image'")
        for key in ("case_id", *self.file_keys, self.text_key, *MASK_SOURCE_FIELDS):
            problem = entry_field_problem(key, d.get(key), self.file_keys, self.text_key)
            if problem:
                raise InputError(case, f"'{key}' {problem}" + ("" if key == "image" else f" (image {d['image']})"))
        for key in self.file_keys:
            if d.get(key) is not None and not Path(str(d[key])).exists():
                raise InputError(d[key], f"file not found (case {case}, key '{key}')")
        if self.require_text and not str(d.get(self.text_key) or "").strip():
            raise InputError(case, f"missing lesion text ('{self.text_key}' is absent or empty)")
        text = d.get(self.text_key)
        if self.max_text_length is not None and isinstance(text, str) and len(text) > self.max_text_length:
            raise InputError(case, f"lesion text of {len(text):,} characters is longer than the limit of "
                                   f"{self.max_text_length:,} (max_text_length); the text encoders read only its "
                                   "first 77 to 256 tokens, so describe the lesion in one or two sentences")
        has_source = d.get("box") is not None or d.get("point") is not None or (
            d.get(self.seg_key) is not None and bool(d.get("mask_labels")))
        if not has_source:
            raise InputError(case, f"no soft-mask source: give 'box', 'point', or '{self.seg_key}' with 'mask_labels'")
        d["input_files"] = [str(Path(str(d[k])).resolve()) for k in self.file_keys if d.get(k) is not None]
        return d



def inference_cases(datalist: str | os.PathLike | None = None, split: str = "test", image: str | None = None,
                    mask: str | None = None, mask_labels: Sequence[int] | None = None,
                    box: Sequence[Sequence[float]] | None = None, point: Sequence[float] | None = None,
                    box_size_mm: Sequence[float] | float | None = None, text: str | None = None,
                    coordinate_space: str = "voxel", case_id: str | None = None) -> list[dict]:
    """The cases to synthesise: one built from command-line values when ``image`` is given, else ``split`` of
    ``datalist``. The one case's soft-mask source is ``mask`` + ``mask_labels``, a ``box``, or a ``point``
    (with ``box_size_mm``), in ``coordinate_space`` (``"voxel"`` or ``"world"``)."""
    if image is None:
        if datalist is None:
            raise ValueError("give either --image (with --text and a mask source) or --datalist")
        return load_datalist(datalist, split)
    image = str(Path(image).absolute())
    entry: dict[str, object] = {"case_id": case_id or Path(image).name.split(".")[0], "image": image,
                                "text": text, "coordinate_space": coordinate_space}
    if mask is not None:
        entry.update(vertebra_seg=str(Path(mask).absolute()), mask_labels=list(mask_labels or []))
    if box is not None:
        entry["box"] = [list(corner) for corner in box]
    if point is not None:
        entry["point"] = list(point)
        if box_size_mm is not None:
            entry["box_size_mm"] = box_size_mm
    return [entry]
