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
import zlib
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path

from monai.bundle import ConfigParser

from bundle.balancing.synthesis_requests import lesion_requests
from bundle.data.class_balance import class_counts
from bundle.data.datalist import FILE_KEYS, load_datalist
from bundle.data.splits import seeded_shuffle
from bundle.metrics.quality_filter import FeatureSpaceFilter, case_features
from bundle.metrics.synthesis_checks import warning
from bundle.preparation.patient_split import SPLITS, normalise_fractions
from bundle.preparation.preparation_checks import PreparationChecks
from bundle.utils.bundle_files import BUNDLE_ROOT
from bundle.utils.files import (
    read_json_object,
    relative_paths,
    remove_leftovers,
    safe_case_name,
    write_json_atomically,
)
from bundle.utils.hashing import sha256_of_path

logger = logging.getLogger(__name__)

SYNTHETIC_FOLDER = "synthetic"
REQUESTS_NAME = "synthesis_requests.json"
QUALITY_FILTER_NAME = "quality_filter.safetensors"
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
    "quality_filter",
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
    normal = normal_sources(training, normal_label)
    if any(needed.values()) and not normal:
        raise ValueError(
            f"no {normal_label!r} case with a soft-mask source (vertebra_seg + mask_labels, box or "
            "point) to insert lesions into"
        )
    requests = [r for label, count in needed.items() for r in class_requests(normal, training, label, count, seed)]
    check_case_ids(requests, training)
    return requests


def normal_sources(training: Sequence[Mapping], normal_label: str = "normal") -> list[dict]:
    """The training list's normal cases that can give a soft mask, sorted by case id."""
    return sorted(
        (dict(e) for e in training if e.get("label") == normal_label and has_mask_source(e)),
        key=lambda e: str(e["case_id"]),
    )


def class_requests(
    normal: Sequence[Mapping], training: Sequence[Mapping], label: str, count: int, seed: int = 0, attempt: int = 0
) -> list[dict]:
    """``count`` requests of class ``label``: the normal cases shuffled (seeded by class and ``attempt``), each used
    once before any is used twice, texts from the class's real cases (:func:`lesion_requests`). Attempt 0 gives
    the ids ``<normal case>_<class>[_<k>]``; a later attempt (more cases after the quality filter rejected some)
    appends ``_a<attempt>`` and draws other texts, so its cases get their own ids and seeds."""
    if count <= 0:
        return []
    key = label if attempt == 0 else f"{label}:attempt{attempt}"
    order = seeded_shuffle([dict(n) for n in normal], seed, key)
    rounds = math.ceil(count / len(order))
    text_seed = seed if attempt == 0 else zlib.crc32(f"{seed}:{key}".encode())
    made = lesion_requests(order, training, [label], seed=text_seed, per_class=rounds)
    # made is case-major (case 1 round 0..r-1, case 2 ...); take round-major: every case once, then again
    by_round = sorted(range(len(made)), key=lambda i: (i % rounds, i // rounds))
    chosen = [made[i] for i in sorted(by_round[:count])]
    if attempt:
        chosen = [{**r, "case_id": f"{r['case_id']}_a{attempt}"} for r in chosen]
    return chosen


def check_case_ids(requests: Sequence[Mapping], training: Sequence[Mapping]) -> None:
    """Refuse synthetic case ids that would share output names, or equal a real case's id."""
    names = Counter(safe_case_name(r["case_id"]) for r in requests)
    clashes = sorted(name for name, n in names.items() if n > 1)
    if clashes:
        raise ValueError(f"synthetic case ids would share output names: {clashes[:5]}")
    real_ids = {str(e.get("case_id")) for e in training}
    if real_ids & {r["case_id"] for r in requests}:
        raise ValueError("a synthetic case id equals a real one; rename the real cases")


def _relative(entry: Mapping, folder: Path) -> dict:
    """``entry`` with its file paths relative to ``folder`` (where the datalist that lists it lives)."""
    return relative_paths(entry, folder, PATH_KEYS)


def synthesis_parser(
    requests_path: Path,
    synthetic_dir: Path,
    config_file: str | Sequence[str],
    bundle_root: Path,
    seed: int,
    models_dir: str | os.PathLike | None,
    overrides: Mapping[str, object],
    quality_filter: Path | None = None,
) -> ConfigParser:
    """The inference config set up to run on the requests (judged by the saved ``quality_filter`` if given): its
    ``job`` and ``initialize`` are what runs."""
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
    if quality_filter is not None:
        parser["quality_filter"] = str(quality_filter)
    return parser


def run_synthesis(parser: ConfigParser) -> dict:
    """Run a :func:`synthesis_parser` config's job (it skips cases an earlier run finished); its report."""
    for index in range(len(parser.get("initialize") or [])):
        parser.get_parsed_content(f"initialize#{index}")
    return parser.get_parsed_content("job").run()


def fit_quality_filter(
    parser: ConfigParser,
    training: Sequence[Mapping],
    classes: Sequence[str],
    path: Path,
    k: int = 5,
    quantile: float = 0.95,
    calibration_fraction: float = 0.3,
    seed: int = 0,
) -> FeatureSpaceFilter:
    """Fit the quality filter on the real cases of ``classes`` in ``training`` and save it to ``path``: their
    slices by the inference config's ``preprocessing`` (what the job predicts), features by its
    ``quality_features`` (what the job scores with)."""
    real = [e for e in training if str(e.get("label")) in set(classes) and not e.get("synthetic")]
    counts = Counter(str(e["label"]) for e in real)
    scarce = {c: counts.get(c, 0) for c in classes if counts.get(c, 0) < 2}
    if scarce:
        raise ValueError(
            f"the quality filter needs at least 2 real cases of each class it judges (a reference part and a "
            f"held-out calibration part); the training list has {scarce}. Add real cases or balance without the "
            "filter (quality_filter: none)"
        )
    extractor = parser.get_parsed_content("quality_features")
    features = case_features(real, parser.get_parsed_content("preprocessing"), extractor)
    fitted = FeatureSpaceFilter.fit(
        features, k, quantile, calibration_fraction, seed, feature_space=str(extractor.description)
    )
    fitted.save(path)
    logger.info(
        "quality filter fitted on %s real cases, thresholds %s (k %d, quantile %.2f): %s",
        dict(counts),
        {c: round(t, 4) for c, t in fitted.thresholds.items()},
        k,
        quantile,
        path,
    )
    return fitted


def _passed(outputs: Mapping) -> bool:
    """Whether a finished case passed the quality filter (a case judged by none counts as passing)."""
    quality = outputs.get("quality")
    return quality is None or bool(quality.get("passed"))


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
    quality_filter: str | os.PathLike | None = None,
    quality_k: int = 5,
    quality_quantile: float = 0.95,
    calibration_fraction: float = 0.3,
    max_attempts: int = 5,
    checks: PreparationChecks | None = None,
) -> dict:
    """Write ``output_dir/datalist.json``: ``datalist``'s training cases plus synthetic ones so every disease
    class matches ``target``'s count; its test cases unchanged. Returns the ``balancing`` summary.

    Real entries get ``synthetic: false``; synthetic ones ``synthetic: true``, ``source_case`` (the normal
    case), ``source_image``, ``text_from`` (the case the text came from), ``provenance`` (the record beside the
    volume), the source's soft-mask source (valid: same voxel grid) and the requested ``label`` /
    ``class_index`` / ``text``. File paths are relative to ``output_dir``.

    With a quality filter, every synthetic case is judged (:class:`bundle.metrics.quality_filter.QualityCheck`;
    the decision is in its provenance record) and only passing cases are listed. While a class has fewer passing
    cases than it needs, another attempt synthesises the shortfall with new case ids (:func:`class_requests`), up
    to ``max_attempts`` attempts; the summary's ``unfilled`` then names the classes still short. Rejected cases
    stay in ``synthetic/``, marked ``"passed": false``.

    Args:
        models_dir: trained models (default: the config's, ``<bundle_root>/models``).
        config_file: the inference config(s), relative to ``bundle_root`` unless absolute.
        bundle_root: the bundle folder (default: the one this package lives in).
        overrides: further inference-config settings, e.g. ``{"num_inference_steps": 20}``.
        quality_filter: ``None`` (no filter), ``"fit"`` (fit one on the training list's real cases of the classes
            balanced, saved as ``OUT/quality_filter.safetensors``) or the path of a saved filter.
        quality_k, quality_quantile, calibration_fraction: the fitted filter's settings
            (:meth:`bundle.metrics.quality_filter.FeatureSpaceFilter.fit`).
        max_attempts: synthesis attempts at most (the first included) before giving up on a class.
        checks: the thresholds of the summary's ``warnings`` (:func:`balancing_warnings`; default
            :class:`PreparationChecks`' defaults).
    """
    datalist, output_dir = Path(datalist), Path(output_dir).absolute()
    bundle_root = Path(bundle_root) if bundle_root is not None else BUNDLE_ROOT
    overrides = overrides or {}
    if max_attempts < 1:
        raise ValueError(f"max_attempts must be at least 1, got {max_attempts}")
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
    requests_path = output_dir / REQUESTS_NAME
    arguments = (requests_path, synthetic_dir, config_file, bundle_root, seed, models_dir)
    filtered = [c for c, n in needed.items() if n > 0]
    filter_path = None
    if quality_filter is not None and filtered:
        if str(quality_filter) == "fit":
            filter_path = output_dir / QUALITY_FILTER_NAME
            fit_quality_filter(
                synthesis_parser(*arguments, overrides),
                training,
                filtered,
                filter_path,
                quality_k,
                quality_quantile,
                calibration_fraction,
                seed,
            )
        else:
            filter_path = Path(quality_filter).absolute()

    requests, finished, report, attempts = _synthesise_until_full(
        requests,
        needed,
        training,
        normal_sources(training, normal_label),
        seed,
        arguments,
        overrides,
        f"synthetic cases balancing {datalist} to the {target!r} class count",
        quality_filter=filter_path,
        max_attempts=max_attempts,
    )
    synthetic, rejected = [], []
    listed: Counter = Counter()
    for request in requests:
        outputs = finished.get(request["case_id"])
        if outputs is None or not Path(outputs["volume"]).exists() or not Path(outputs["provenance"]).is_file():
            continue
        if not _passed(outputs):
            rejected.append(request["case_id"])
            continue
        if listed[str(request["label"])] >= needed.get(str(request["label"]), 0):
            continue  # more passed than needed (an earlier run's attempts): the first ones are listed
        listed[str(request["label"])] += 1
        synthetic.append(
            {
                **request,
                "image": outputs["volume"],
                "source_image": request["image"],
                "synthetic": True,
                "provenance": outputs["provenance"],
            }
        )
    missing = [r["case_id"] for r in requests if r["case_id"] not in finished]
    unfilled = {c: n - listed.get(c, 0) for c, n in needed.items() if listed.get(c, 0) < n}
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
        "complete": not unfilled,
        "unfilled": unfilled,
        "missing": missing,
        "failed": report.get("failed", []),
        "attempts": attempts,
        "quality": _quality_summary(filter_path, requests, finished, rejected, output_dir),
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
    summary["warnings"] = balancing_warnings(content, training, unfilled, checks)
    balanced["balancing"] = summary
    write_json_atomically(output_dir / DATALIST_NAME, balanced)
    logger.info(
        "balanced datalist: %s (%d real + %d synthetic training cases%s)",
        output_dir / DATALIST_NAME,
        len(training),
        len(synthetic),
        "" if not unfilled else f"; short of {unfilled}",
    )
    return summary


def _synthesise_until_full(
    requests: list[dict],
    needed: Mapping[str, int],
    training: Sequence[Mapping],
    normal: Sequence[Mapping],
    seed: int,
    arguments: tuple,
    overrides: Mapping[str, object],
    description: str,
    quality_filter: Path | None,
    max_attempts: int,
) -> tuple[list[dict], dict[str, dict], dict, int]:
    """Run the job on ``requests``; with a quality filter, add the shortfall of passing cases per class as new
    requests (:func:`class_requests`) and run again, ``max_attempts`` runs at most. Returns the requests made,
    the finished cases' outputs by case id, the last job report and the number of runs."""
    requests_path, output_dir = arguments[0], arguments[0].parent
    finished: dict[str, dict] = {}
    report: dict = {"written": [], "skipped": [], "failed": []}
    attempts = 0
    while requests:
        attempts += 1
        write_json_atomically(
            requests_path, {"description": description, "test": [_relative(r, output_dir) for r in requests]}
        )
        report = run_synthesis(synthesis_parser(*arguments, overrides, quality_filter))
        finished = {str(o["case_id"]): o for o in [*report.get("written", []), *report.get("skipped", [])]}
        passing = Counter(
            str(r["label"]) for r in requests if r["case_id"] in finished and _passed(finished[r["case_id"]])
        )
        shortfall = {c: n - passing.get(c, 0) for c, n in needed.items() if n > passing.get(c, 0)}
        if quality_filter is None or not shortfall or attempts == max_attempts:
            break
        logger.info("attempt %d: passing cases short of the need %s; synthesising more", attempts, shortfall)
        requests = requests + [
            r for c, n in shortfall.items() for r in class_requests(normal, training, c, n, seed, attempts)
        ]
        check_case_ids(requests, training)
    return requests, finished, report, attempts


def balancing_warnings(
    content: Mapping[str, object],
    training: Sequence[Mapping],
    unfilled: Mapping[str, int],
    checks: PreparationChecks | None = None,
) -> list[dict[str, object]]:
    """The warnings of a balanced datalist, each also logged: what ``checks`` (:class:`PreparationChecks`) finds on
    the source datalist ``content`` with its real ``training`` entries (an empty or tiny validation or test
    split, judged by the source's ``split`` fractions where it records them, else each split it has; a class
    with too few real training cases), then ``unfilled_class`` for each class still short of synthetic cases."""
    recorded = (content.get("split") or {}).get("fractions")
    fractions = (
        normalise_fractions(recorded)
        if recorded
        else {name: float(name == "training" or name in content) for name in SPLITS}
    )
    splits = {name: list(training if name == "training" else content.get(name) or []) for name in SPLITS}
    found = (checks or PreparationChecks())(splits, fractions, sorted(class_counts(training)), [])
    for name, short in unfilled.items():
        found.append(
            warning(
                "unfilled_class",
                f"class {name!r} is {short} synthetic cases short of the target: the quality filter rejected them "
                "or synthesis failed (see synthetic/report.json); raise max_attempts or check the inputs",
                {"class": name, "short": short},
                0,
            )
        )
        logger.warning(found[-1]["message"])
    return found


def _quality_summary(
    filter_path: Path | None,
    requests: Sequence[Mapping],
    finished: Mapping[str, Mapping],
    rejected: Sequence[str],
    output_dir: Path,
) -> dict | None:
    """The filter used and, per class, the cases judged, passed and the pass rate; ``None`` without a filter."""
    if filter_path is None:
        return None
    per_class: dict[str, dict[str, object]] = {}
    for request in requests:
        outputs = finished.get(request["case_id"])
        if outputs is None:
            continue
        counts = per_class.setdefault(str(request["label"]), {"judged": 0, "passed": 0})
        counts["judged"] += 1
        counts["passed"] += int(_passed(outputs))
    for counts in per_class.values():
        counts["pass_rate"] = round(counts["passed"] / counts["judged"], 4)
    loaded = FeatureSpaceFilter.load(filter_path)
    return {
        "filter": os.path.relpath(filter_path, output_dir),
        "feature_space": loaded.feature_space,
        "k": loaded.k,
        "quantile": loaded.quantile,
        "thresholds": loaded.thresholds,
        "per_class": per_class,
        "rejected": list(rejected),
    }
