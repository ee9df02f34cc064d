"""Synthesis requests: which normal case gets which lesion text.

A request is a datalist entry of a normal case (its image and soft-mask source) with the text of a lesion
class taken from a real case of that class, the vertebral level in the text replaced by the normal case's
own level. ``label`` becomes the requested class; ``source_case`` and ``text_from`` record the origin.
"""

from __future__ import annotations

import os
import random
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from bundle.data.datalist import FILE_KEYS, load_datalist
from bundle.utils.files import relative_paths, write_json_atomically

LEVEL_PATTERN = re.compile(r"\b(?:[CTL]\d{1,2}|S1)\b(?!-weighted)")


def lesion_requests(
    normal_cases: Sequence[Mapping],
    text_donors: Sequence[Mapping],
    classes: Sequence[str],
    seed: int = 0,
    per_class: int = 1,
) -> list[dict]:
    """``per_class`` requests per normal case and class, each with a donor text of that class (seeded choice)."""
    rng = random.Random(seed)
    requests = []
    for case in normal_cases:
        for label in classes:
            donors = [d for d in text_donors if d.get("label") == label and str(d.get("text", "")).strip()]
            if not donors:
                raise ValueError(f"no case of class {label!r} with a text to take a description from")
            for number in range(per_class):
                donor = rng.choice(donors)
                text = str(donor["text"])
                if case.get("level") and donor.get("level"):
                    text = LEVEL_PATTERN.sub(str(case["level"]), text)
                suffix = f"_{number}" if per_class > 1 else ""
                requests.append(
                    {
                        **{k: v for k, v in case.items() if k not in ("lesion_seg", "attributes")},
                        "case_id": f"{case['case_id']}_{label}{suffix}",
                        "label": label,
                        "text": text,
                        "class_index": donor.get("class_index"),
                        "source_case": case["case_id"],
                        "text_from": donor.get("case_id"),
                    }
                )
    return requests


def write_demo_requests(
    datalist: str | os.PathLike,
    output: str | os.PathLike,
    split: str = "test",
    classes: Sequence[str] = ("benign", "malignant"),
    seed: int = 0,
) -> Path:
    """Requests for every normal case of ``split``, texts from the ``training`` cases, as a datalist whose
    ``test`` list a synthesis run reads (file paths relative to ``output``'s folder)."""
    output = Path(output)
    normal = [c for c in load_datalist(datalist, split) if c.get("label") == "normal"]
    donors = load_datalist(datalist, "training")
    requests = [relative_paths(r, output.parent, FILE_KEYS) for r in lesion_requests(normal, donors, classes, seed)]
    content = {
        "description": f"lesion synthesis requests for the normal {split} cases of {datalist}",
        "classes": list(classes),
        "test": requests,
    }
    return write_json_atomically(output, content)
