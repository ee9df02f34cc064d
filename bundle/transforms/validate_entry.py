"""Checking a datalist entry before anything is loaded: its files exist, it has a lesion text and a soft-mask
source, and each field has the form it needs."""

from __future__ import annotations

import json
import math
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import get_args

from monai.transforms import Transform

from bundle.data.datalist import FILE_KEYS
from bundle.errors import InputError
from bundle.transforms.soft_mask import CoordinateSpace

MAX_TEXT_LENGTH = 1000  # characters; far beyond what CLIP's 77 or BiomedCLIP's 256 tokens hold


MASK_SOURCE_FIELDS = ("coordinate_space", "box", "point", "box_size_mm", "mask_labels")


def _finite_numbers(value: object, count: int | None = None) -> bool:
    """``value`` is a list of ``count`` (any number when ``None``) finite real numbers (booleans are not numbers)."""
    return (
        isinstance(value, (list, tuple))
        and (count is None or len(value) == count)
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)
    )


def entry_field_problem(
    key: str, value: object, file_keys: Sequence[str] = FILE_KEYS, text_key: str = "text"
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

    def __init__(
        self,
        file_keys: Sequence[str] = ("image", "vertebra_seg"),
        text_key: str = "text",
        require_text: bool = True,
        seg_key: str = "vertebra_seg",
        max_text_length: int | None = MAX_TEXT_LENGTH,
    ) -> None:
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
            raise InputError(
                case,
                f"lesion text of {len(text):,} characters is longer than the limit of "
                f"{self.max_text_length:,} (max_text_length); the text encoders read only its "
                "first 77 to 256 tokens, so describe the lesion in one or two sentences",
            )
        has_source = (
            d.get("box") is not None
            or d.get("point") is not None
            or (d.get(self.seg_key) is not None and bool(d.get("mask_labels")))
        )
        if not has_source:
            raise InputError(case, f"no soft-mask source: give 'box', 'point', or '{self.seg_key}' with 'mask_labels'")
        d["input_files"] = [str(Path(str(d[k])).resolve()) for k in self.file_keys if d.get(k) is not None]
        return d
