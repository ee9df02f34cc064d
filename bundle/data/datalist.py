"""Reading a MONAI datalist and checking each entry before anything is loaded.

Not MONAI's ``load_decathlon_datalist``: it makes only ``image`` and ``label`` absolute and guesses for every other
value (a string is joined to the datalist's folder only if that path exists), so a ``case_id`` that names a case
folder becomes a path (the outputs' names change) and a missing ``vertebra_seg`` stays relative (its error names a
path relative to nothing); and it reports a missing split or a non-object entry without naming the file's problem
as :func:`load_datalist` does. Here the file keys (:data:`FILE_KEYS`) and only they are resolved, whether or not
the file exists (``tests/data/test_datalist.py``)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from bundle.errors import InputError
from bundle.utils.files import json_kind, read_json_object

FILE_KEYS = ("image", "vertebra_seg", "lesion_seg")


def load_datalist(
    path: str | os.PathLike,
    split: str = "test",
    base_dir: str | os.PathLike | None = None,
    file_keys: Sequence[str] = FILE_KEYS,
) -> list[dict]:
    """The entries of ``split`` in a MONAI datalist JSON, with relative file paths made absolute.

    Relative paths are resolved against ``base_dir`` (default: the datalist's folder). Entries without a
    ``case_id`` get ``"<split>_<index>"``.
    """
    path = Path(path)
    content = read_json_object(
        path,
        "the datalist",
        expected=f' of lists: expected e.g. {{"{split}": [{{"image": ..., "text": ..., "point": [x, y, z]}}, ...]}}',
    )
    if split not in content or not isinstance(content[split], list):
        found = sorted(k for k, v in content.items() if isinstance(v, list))
        what = "no list" if split not in content else f"a JSON {json_kind(content[split])}, not a list,"
        raise InputError(path, f"{what} named {split!r} (lists found: {found})")
    not_objects = [(index, entry) for index, entry in enumerate(content[split]) if not isinstance(entry, dict)]
    if not_objects:
        index, entry = not_objects[0]
        raise InputError(
            path,
            f"{len(not_objects)} of the {len(content[split])} entries of {split!r} "
            f"{'is' if len(not_objects) == 1 else 'are'} not a JSON object, e.g. entry {index} is a "
            f"{json_kind(entry)} ({json.dumps(entry)[:80]}); each entry must be an object such as "
            '{"image": ..., "text": ...}',
        )
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


def inference_cases(
    datalist: str | os.PathLike | None = None,
    split: str = "test",
    image: str | None = None,
    mask: str | None = None,
    mask_labels: Sequence[int] | None = None,
    box: Sequence[Sequence[float]] | None = None,
    point: Sequence[float] | None = None,
    box_size_mm: Sequence[float] | float | None = None,
    text: str | None = None,
    coordinate_space: str = "voxel",
    case_id: str | None = None,
) -> list[dict]:
    """The cases to synthesise: one built from command-line values when ``image`` is given, else ``split`` of
    ``datalist``. The one case's soft-mask source is ``mask`` + ``mask_labels``, a ``box``, or a ``point``
    (with ``box_size_mm``), in ``coordinate_space`` (``"voxel"`` or ``"world"``)."""
    if image is None:
        if datalist is None:
            raise ValueError("give either --image (with --text and a mask source) or --datalist")
        return load_datalist(datalist, split)
    image = str(Path(image).absolute())
    entry: dict[str, object] = {
        "case_id": case_id or Path(image).name.split(".")[0],
        "image": image,
        "text": text,
        "coordinate_space": coordinate_space,
    }
    if mask is not None:
        entry.update(vertebra_seg=str(Path(mask).absolute()), mask_labels=list(mask_labels or []))
    if box is not None:
        entry["box"] = [list(corner) for corner in box]
    if point is not None:
        entry["point"] = list(point)
        if box_size_mm is not None:
            entry["box_size_mm"] = box_size_mm
    return [entry]
