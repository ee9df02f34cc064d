"""Balancing a datalist with synthetic lesions: enough synthetic cases that every disease class of the
``training`` list has as many cases as a target class (by default ``normal``).

The plan is deterministic (same datalist and seed, same requests and case ids), each synthetic case comes from
one real normal case (its image and its soft-mask source: vertebra labels, box or point) and a text taken from
a real case of the class (:func:`bundle.balancing.synthesis_requests.lesion_requests`), and the cases are written by the
inference job of ``configs/inference.json`` (:class:`bundle.engines.synthesis_job.SynthesisJob`), which resumes: a case
whose provenance record an earlier run finished is kept, half-written files are removed. The balanced
datalist is written last, atomically, and lists only cases whose outputs exist, so an interrupted run leaves
either no datalist or a complete one from before, and re-running finishes the missing cases.

Layout of the output folder::

    OUT/datalist.json              real + synthetic training cases (synthetic: true/false), real test cases
    OUT/synthesis_requests.json    the planned synthetic cases (a datalist whose "test" list the job reads)
    OUT/synthetic/                 <case>_synthetic.nii.gz / .json (provenance) / .png, report.json
"""

from __future__ import annotations

import logging
import math
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path

from monai.bundle import ConfigParser

from bundle.balancing.synthesis_requests import lesion_requests
from bundle.data.class_balance import class_counts
from bundle.data.datalist import FILE_KEYS, load_datalist
from bundle.data.splits import seeded_shuffle
from bundle.utils.bundle_files import BUNDLE_ROOT
from bundle.utils.files import read_json_object, remove_leftovers, safe_case_name, write_json_atomically
from bundle.utils.hashing import sha256_of_path

logger = logging.getLogger(__name__)

SYNTHETIC_FOLDER = "synthetic"
REQUESTS_NAME = "synthesis_requests.json"
DATALIST_NAME = "datalist.json"
PATH_KEYS = (*FILE_KEYS, "provenance", "source_image")
# Inference-config ids that balancing sets itself; an override of one of them would break the plan.
RESERVED_OVERRIDES = (
    "datalist",
    "split",
    "output_dir",
    "image",
    "mask",
    "mask_labels",
    "box",
    "point",
    "text",
    "cases",
    "dataset",
    "seed",
    "bundle_root",
    "models_dir",
)


def synthesis_counts(
    counts: Mapping[str, int],
    target: str = "normal",
    normal_label: str = "normal",
    classes: Sequence[str] | None = None,
) -> dict[str, int]:
    """How many synthetic cases each disease class needs to reach the ``target`` class's count.

    ``classes`` defaults to every label of ``counts`` except ``normal_label`` (normal cases are the sources,
    never synthesised). A class already at or above the target needs 0.
    """
    if counts.get(target, 0) <= 0:
        raise ValueError(f"target class {target!r} has no cases (classes: {dict(counts)})")
    classes = [c for c in counts if c != normal_label] if classes is None else list(classes)
    if normal_label in classes:
        raise ValueError(f"{normal_label!r} is the source class of the synthetic lesions; it cannot be balanced")
    return {c: max(0, counts[target] - counts.get(c, 0)) for c in classes}


def has_mask_source(entry: Mapping) -> bool:
    """Whether an entry can give a soft mask: vertebra labels with ``mask_labels``, a box, or a point."""
    return (
        entry.get("box") is not None
        or entry.get("point") is not None
        or (entry.get("vertebra_seg") is not None and bool(entry.get("mask_labels")))
    )


def balancing_requests(
    training: Sequence[Mapping],
    target: str = "normal",
    normal_label: str = "normal",
    classes: Sequence[str] | None = None,
    seed: int = 0,
) -> list[dict]:
    """The synthesis requests that balance ``training``: for each class, as many as it needs.

    The normal cases with a soft-mask source are shuffled (seeded by class) and used in turn, each one once
    before any is used twice; the texts come from the class's real cases, their level replaced by the normal
    case's (:func:`lesion_requests`). Case ids are ``<normal case>_<class>`` (``_<k>`` appended when a normal
    case serves a class more than once), unique and stable for the same input and seed.
    """
    needed = synthesis_counts(class_counts(training), target, normal_label, classes)
    normal = sorted(
        (dict(e) for e in training if e.get("label") == normal_label and has_mask_source(e)),
        key=lambda e: str(e["case_id"]),
    )
    if any(needed.values()) and not normal:
        raise ValueError(
            f"no {normal_label!r} case with a soft-mask source (vertebra_seg + mask_labels, box or "
            "point) to insert lesions into"
        )
    requests: list[dict] = []
    for label, count in needed.items():
        if count == 0:
            continue
        order = seeded_shuffle(list(normal), seed, label)
        rounds = math.ceil(count / len(order))
        made = lesion_requests(order, training, [label], seed=seed, per_class=rounds)
        # made is case-major (case 1 round 0..r-1, case 2 ...); take round-major: every case once, then again
        by_round = sorted(range(len(made)), key=lambda i: (i % rounds, i // rounds))
        requests.extend(made[i] for i in sorted(by_round[:count]))
    names = Counter(safe_case_name(r["case_id"]) for r in requests)
    clashes = sorted(name for name, n in names.items() if n > 1)
    if clashes:
        raise ValueError(f"synthetic case ids would share output names: {clashes[:5]}")
    real_ids = {str(e.get("case_id")) for e in training}
    if real_ids & {r["case_id"] for r in requests}:
        raise ValueError("a synthetic case id equals a real one; rename the real cases")
    return requests


def _relative(entry: Mapping, folder: Path) -> dict:
    """``entry`` with its file paths relative to ``folder`` (where the datalist that lists it lives)."""
    out = dict(entry)
    for key in PATH_KEYS:
        if isinstance(out.get(key), str) and out[key]:
            out[key] = os.path.relpath(Path(out[key]).absolute(), folder.absolute())
    return out


def run_synthesis(
    requests_path: Path,
    synthetic_dir: Path,
    config_file: str | Sequence[str],
    bundle_root: Path,
    seed: int,
    models_dir: str | os.PathLike | None,
    overrides: Mapping[str, object],
) -> dict:
    """Run the inference config's job on the requests (it skips cases an earlier run finished); its report."""
    reserved = sorted(set(overrides) & set(RESERVED_OVERRIDES))
    if reserved:
        raise ValueError(f"these settings are set by balancing itself: {reserved}")
    files = [config_file] if isinstance(config_file, (str, os.PathLike)) else list(config_file)
    files = [str(f if Path(f).is_absolute() else bundle_root / f) for f in files]
    parser = ConfigParser()
    parser.read_config(files if len(files) > 1 else files[0])
    unknown = sorted(key for key in overrides if key not in parser)
    if unknown:
        raise ValueError(f"not settings of {', '.join(files)}: {unknown}")
    parser.update(
        {
            "bundle_root": str(bundle_root),
            "datalist": str(requests_path),
            "split": "test",
            "output_dir": str(synthetic_dir),
            "seed": int(seed),
            **dict(overrides),
        }
    )
    if models_dir is not None:
        parser["models_dir"] = str(Path(models_dir).absolute())
    if parser.get("skip_completed") is not None:
        parser["skip_completed"] = True
    for index in range(len(parser.get("initialize") or [])):
        parser.get_parsed_content(f"initialize#{index}")
    return parser.get_parsed_content("job").run()


def balance_datalist(
    datalist: str | os.PathLike,
    output_dir: str | os.PathLike,
    target: str = "normal",
    normal_label: str = "normal",
    classes: Sequence[str] | None = None,
    seed: int = 0,
    models_dir: str | os.PathLike | None = None,
    config_file: str | Sequence[str] = "configs/inference.json",
    bundle_root: str | os.PathLike | None = None,
    overrides: Mapping[str, object] | None = None,
) -> dict:
    """Write ``output_dir/datalist.json``: ``datalist``'s training cases plus synthetic ones so every disease
    class matches ``target``'s count; its test cases unchanged. Returns the ``balancing`` summary.

    Real entries get ``synthetic: false``; synthetic ones ``synthetic: true``, ``source_case`` (the normal
    case), ``source_image``, ``text_from`` (the case the text came from), ``provenance`` (the record beside the
    volume), the source's soft-mask source (valid: same voxel grid) and the requested ``label`` /
    ``class_index`` / ``text``. File paths are relative to ``output_dir``.

    Args:
        models_dir: trained models (default: the config's, ``<bundle_root>/models``).
        config_file: the inference config(s), relative to ``bundle_root`` unless absolute.
        bundle_root: the bundle folder (default: the one this package lives in).
        overrides: further inference-config settings, e.g. ``{"num_inference_steps": 20}``.
    """
    datalist, output_dir = Path(datalist), Path(output_dir).absolute()
    bundle_root = Path(bundle_root) if bundle_root is not None else BUNDLE_ROOT
    training = load_datalist(datalist, "training")
    content = read_json_object(datalist, "the datalist", expected=" of lists")
    requests = balancing_requests(training, target, normal_label, classes, seed)
    counts = class_counts(training)
    needed = synthesis_counts(counts, target, normal_label, classes)
    logger.info("training cases per class: %s; synthetic cases needed: %s", counts, needed)

    output_dir.mkdir(parents=True, exist_ok=True)
    for path in remove_leftovers(output_dir, r"\..+\.partial.*"):
        logger.warning("removed %s, left half-written by an interrupted run", path)
    synthetic_dir = output_dir / SYNTHETIC_FOLDER
    requests_path = write_json_atomically(
        output_dir / REQUESTS_NAME,
        {
            "description": f"synthetic cases balancing {datalist} to the {target!r} class count",
            "test": [_relative(r, output_dir) for r in requests],
        },
    )
    report = (
        run_synthesis(requests_path, synthetic_dir, config_file, bundle_root, seed, models_dir, overrides or {})
        if requests
        else {"written": [], "skipped": [], "failed": []}
    )

    finished = {str(o["case_id"]): o for o in [*report.get("written", []), *report.get("skipped", [])]}
    synthetic = []
    for request in requests:
        outputs = finished.get(request["case_id"])
        if outputs is None or not Path(outputs["volume"]).exists() or not Path(outputs["provenance"]).is_file():
            continue
        synthetic.append(
            {
                **request,
                "image": outputs["volume"],
                "source_image": request["image"],
                "synthetic": True,
                "provenance": outputs["provenance"],
            }
        )
    missing = [r["case_id"] for r in requests if r["case_id"] not in {s["case_id"] for s in synthetic}]
    listed = Counter(str(s["label"]) for s in synthetic)
    summary = {
        "target": target,
        "normal_label": normal_label,
        "seed": int(seed),
        "source_datalist": str(datalist.resolve()),
        "source_datalist_sha256": sha256_of_path(datalist),
        "counts_real": counts,
        "synthetic_needed": needed,
        "synthetic_listed": {c: listed.get(c, 0) for c in needed},
        "counts_after": {c: counts.get(c, 0) + listed.get(c, 0) for c in sorted(set(counts) | set(listed))},
        "complete": not missing,
        "missing": missing,
        "failed": report.get("failed", []),
        "synthesis_report": os.path.relpath(synthetic_dir / "report.json", output_dir) if requests else None,
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    balanced = dict(content)
    balanced["description"] = (
        f"{content.get('description', datalist.name)} Balanced with synthetic lesion "
        f"cases (synthetic: true) to the {target!r} class count."
    )
    for split, entries in content.items():
        if split != "training" and isinstance(entries, list) and entries and all(isinstance(e, dict) for e in entries):
            balanced[split] = [_relative(e, output_dir) for e in load_datalist(datalist, split)]
    balanced["training"] = [{**_relative(e, output_dir), "synthetic": False} for e in training] + [
        _relative(s, output_dir) for s in synthetic
    ]
    balanced["balancing"] = summary
    write_json_atomically(output_dir / DATALIST_NAME, balanced)
    logger.info(
        "balanced datalist: %s (%d real + %d synthetic training cases%s)",
        output_dir / DATALIST_NAME,
        len(training),
        len(synthetic),
        "" if not missing else f"; {len(missing)} missing",
    )
    return summary
