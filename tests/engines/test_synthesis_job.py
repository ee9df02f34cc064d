"""A case's outputs (volume, provenance record, preview) appear together or not at all, and whatever can be checked
about writing them is checked before anything is predicted: the output folder is writable and has room, no output
overwrites an input or another entry's output. Failures name the case, the file and the problem."""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import shutil
import tempfile
from collections import namedtuple
from pathlib import Path

import nibabel as nib
import pytest
import torch
from monai.transforms import Compose, Lambda

import bundle.io.volume_writer
import bundle.utils.files
from bundle.engines.synthesis_job import CaseByCaseEvaluator, DiffusionPredictor, SynthesisJob, case_seed
from bundle.errors import OutputError, describe_failure
from bundle.metrics.synthesis_checks import SynthesisChecks
from bundle.transforms.soft_mask import GaussianBlurMM
from tests.helpers.paths import SCT_LEVELS, SCT_T2, TOTALSEG_MR, TOTALSEG_MR_SEG
from tests.helpers.slice_sampling import CORE, neighbouring_slices, tiny_sampling
from tests.helpers.synthesis_jobs import StillOrMasked, job_from_preview, mean_intensity_check
from tests.helpers.workflows import preview_parser, write_datalist

GOOD = {"image": str(SCT_T2), "vertebra_seg": str(SCT_LEVELS), "mask_labels": [3], "text": "lesion"}
POINT = {"image": str(SCT_T2), "point": [30, 27, 26], "box_size_mm": 12, "text": "lesion"}
OUTPUTS = ("_synthetic.json", "_synthetic.nii.gz", "_synthetic.png", "_synthetic_thumbnail.png")


class CountingPredictor:
    """The job's predictor, recording the case of every call: what ran the (expensive) prediction step."""

    def __init__(self, predictor) -> None:
        self.predictor, self.cases = predictor, []

    def __call__(self, items):
        self.cases.append(items[0].get("case_id"))
        return self.predictor(items)


def make_job(entries: list[dict], datalist: Path, output_dir: Path, **overrides):
    """The mask-preview job of the config on ``entries``, with a :class:`CountingPredictor`."""
    job = preview_parser(
        datalist=str(write_datalist(datalist, entries)), output_dir=str(output_dir), **overrides
    ).get_parsed_content("job")
    job.predictor = CountingPredictor(job.predictor)
    return job


def listing(folder: Path) -> list[str]:
    """Every name in ``folder``, hidden ones (temporary files and folders) included."""
    return sorted(p.name for p in folder.iterdir())


def outputs_of(*cases: str) -> list[str]:
    return sorted([f"{case}{suffix}" for case in cases for suffix in OUTPUTS] + ["report.json"])


# ------------------------------------------------------------------ entries whose outputs would collide
def test_equal_case_ids_are_refused_and_the_others_written(shared_data, tmp_path):
    entries = [
        {**GOOD, "case_id": "dup"},
        {
            "image": str(TOTALSEG_MR),
            "vertebra_seg": str(TOTALSEG_MR_SEG),
            "mask_labels": [19],
            "text": "x",
            "case_id": "dup",
        },
        {**POINT, "case_id": "Case7"},
        {**POINT, "case_id": "case7"},  # the same file as Case7 on a case-insensitive file system
        {**GOOD, "case_id": "good"},
    ]
    output_dir = tmp_path / "out"
    job = make_job(entries, tmp_path / "list.json", output_dir)
    report = job.run()
    failures = [(f["case_id"], f["error"]) for f in report["failed"]]
    same = (
        f"entries 1, 2 of the datalist have the same case id ('dup', 'dup'), so their outputs (dup_synthetic.*) "
        f"would overwrite each other; none of them is written: give each entry its own case_id (images: "
        f"{SCT_T2}, {TOTALSEG_MR})"
    )
    letter_case = (
        "entries 3, 4 of the datalist have case ids that differ only in letter case ('Case7', 'case7'), "
        "so their outputs ({}_synthetic.*) would overwrite each other; none of them is written: give each "
        f"entry its own case_id (images: {SCT_T2}, {SCT_T2})"
    )
    assert failures == [
        ("dup", f"dup: {same}"),
        ("dup", f"dup: {same}"),
        ("Case7", f"Case7: {letter_case.format('Case7')}"),
        ("case7", f"case7: {letter_case.format('case7')}"),
    ]
    assert all(f["bad_input"] for f in report["failed"])
    assert [w["case_id"] for w in report["written"]] == ["good"] and job.predictor.cases == ["good"]
    assert listing(output_dir) == outputs_of("good")


# ------------------------------------------------------------------ cases predicted together
class TogetherOrAlone(CountingPredictor):
    """Predicts several cases in one call (``predict_cases``, recording each call's cases), which fails when one of
    them says FAIL; alone, only that case fails."""

    def __init__(self, predictor) -> None:
        super().__init__(predictor)
        self.together = []

    def __call__(self, items):
        if "FAIL" in items[0]["text"]:
            raise RuntimeError("cannot sample this case")
        return super().__call__(items)

    def predict_cases(self, cases):
        self.together.append([items[0].get("case_id") for items in cases])
        if any("FAIL" in items[0]["text"] for items in cases):
            raise RuntimeError("cannot sample one of these cases")
        return [self.predictor(items) for items in cases]


def test_cases_predicted_together_are_written_alone_and_a_failing_case_loses_only_itself(shared_data, tmp_path):
    missing = tmp_path / "missing.nii.gz"
    entries = [
        {**POINT, "case_id": "one"},
        {**POINT, "case_id": "unreadable", "image": str(missing)},  # fails before prediction
        {**POINT, "case_id": "bad", "text": "FAIL"},  # fails in the shared prediction, then alone
        {**GOOD, "case_id": "two"},
        {**GOOD, "case_id": "three"},  # the second group
    ]
    output_dir = tmp_path / "out"
    job = make_job(entries, tmp_path / "list.json", output_dir, **{"job#cases_per_batch": 4})
    job.predictor = TogetherOrAlone(job.predictor.predictor)
    evaluator = CaseByCaseEvaluator(job)  # how inference.json runs the job: an iteration per group of cases
    evaluator.run()
    report = evaluator.report
    assert evaluator.state.iteration == 2
    assert job.predictor.together == [["one", "bad", "two"]]  # the group's ready cases, in one call
    assert job.predictor.cases == ["one", "two", "three"]  # after the shared call failed: one by one
    assert [w["case_id"] for w in report["written"]] == ["one", "two", "three"]
    failed = {f["case_id"]: f for f in report["failed"]}
    assert sorted(failed) == ["bad", "unreadable"] and str(missing) in failed["unreadable"]["error"]
    assert failed["bad"]["error"] == f"{SCT_T2}: RuntimeError: cannot sample this case"
    assert listing(output_dir) == outputs_of("one", "two", "three")
    with pytest.raises(ValueError, match="cases_per_batch"):
        SynthesisJob(job.cases, job.preprocessing, job.predictor, job.writer, output_dir, cases_per_batch=0)


# ------------------------------------------------------------------ all or nothing
@pytest.fixture()
def unrenderable(monkeypatch):
    """The preview fails for texts containing "UNRENDERABLE": a failure after the volume is written."""
    render = bundle.io.volume_writer.render_preview

    def render_or_fail(path, *args, title: str = "", **kwargs):
        if "UNRENDERABLE" in title:
            raise ValueError("cannot render this text")
        return render(path, *args, title=title, **kwargs)

    monkeypatch.setattr(bundle.io.volume_writer, "render_preview", render_or_fail)


def test_a_failure_after_the_volume_leaves_nothing_of_the_case(shared_data, tmp_path, unrenderable):
    entries = [
        {**POINT, "case_id": "late", "text": "an UNRENDERABLE lesion"},
        {**POINT, "case_id": "tex", "text": r"a lesion of $\frac{1}{$ the body"},  # shown as written, not TeX
        {**GOOD, "case_id": "good"},
    ]
    output_dir = tmp_path / "out"
    report = make_job(entries, tmp_path / "list.json", output_dir).run()
    assert report["failed"] == [
        {"case_id": "late", "error": f"{SCT_T2}: ValueError: cannot render this text", "bad_input": False}
    ]
    assert [w["case_id"] for w in report["written"]] == ["tex", "good"]
    assert listing(output_dir) == outputs_of("tex", "good")


def test_a_redone_case_that_fails_late_keeps_its_earlier_outputs_whole(shared_data, tmp_path, unrenderable):
    output_dir = tmp_path / "out"
    first = {**POINT, "case_id": "c", "text": "first lesion"}
    make_job([first], tmp_path / "a.json", output_dir).run()
    before = {name: (output_dir / name).read_bytes() for name in outputs_of("c") if name != "report.json"}
    moved = {**first, "point": [30, 20, 20], "text": "an UNRENDERABLE lesion elsewhere"}
    report = make_job([moved], tmp_path / "b.json", output_dir, **{"job#skip_completed": False}).run()
    assert [f["case_id"] for f in report["failed"]] == ["c"]
    assert listing(output_dir) == outputs_of("c")
    assert {name: (output_dir / name).read_bytes() for name in before} == before  # not a new volume, old record
    again = make_job([first], tmp_path / "c.json", output_dir, **{"job#skip_completed": True})
    assert [s["case_id"] for s in again.run()["skipped"]] == ["c"] and again.predictor.cases == []


def test_a_failing_last_move_leaves_nothing_of_the_case(shared_data, tmp_path, monkeypatch):
    output_dir = tmp_path / "out"
    replace = os.replace

    def replace_or_fail(source, target):
        if Path(target) == output_dir / "mv_synthetic.json":
            raise OSError(errno.EIO, "Input/output error")
        return replace(source, target)

    monkeypatch.setattr(bundle.utils.files.os, "replace", replace_or_fail)
    report = make_job([{**POINT, "case_id": "mv"}, {**GOOD, "case_id": "good"}], tmp_path / "l.json", output_dir).run()
    assert report["failed"] == [
        {
            "case_id": "mv",
            "bad_input": False,
            "error": (
                f"{output_dir / 'mv_synthetic.nii.gz'}: could not be written (OSError: [Errno 5] Input/output error); "
                "nothing of this case was kept"
            ),
        }
    ]
    assert listing(output_dir) == outputs_of("good")


# ------------------------------------------------------------------ output folder, disk space, inputs
def test_a_full_disk_names_the_output_and_keeps_nothing(shared_data, tmp_path, monkeypatch):
    def disk_full(self, filename):
        Path(filename).write_bytes(b"\x1f\x8b half a volume")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(nib.Nifti1Image, "to_filename", disk_full)
    output_dir = tmp_path / "out"
    report = make_job([{**POINT, "case_id": "full"}], tmp_path / "l.json", output_dir).run()
    assert report["failed"] == [
        {
            "case_id": "full",
            "bad_input": False,
            "error": (
                f"{output_dir / 'full_synthetic.nii.gz'}: could not be written (OSError: [Errno 28] No space left on "
                "device); nothing of this case was kept"
            ),
        }
    ]
    assert listing(output_dir) == ["report.json"]


def test_too_little_free_space_is_refused_before_predicting(shared_data, tmp_path, monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(bundle.utils.files.shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 50_000, 50_000))
    output_dir = tmp_path / "out"
    job = make_job([{**POINT, "case_id": "c"}], tmp_path / "l.json", output_dir)
    report = job.run()
    needed = (SCT_T2.stat().st_size + 2**20) / 2**20
    assert report["failed"] == [
        {
            "case_id": "c",
            "bad_input": False,
            "error": (
                f"{output_dir}: not enough free space: 0.0 MiB free, about {needed:,.1f} MiB needed; free some space "
                "or choose another folder"
            ),
        }
    ]
    assert job.predictor.cases == [] and listing(output_dir) == ["report.json"]


@pytest.mark.parametrize("how", ["file_in_the_way", "permission_denied"])
def test_an_unwritable_output_folder_stops_the_job_before_any_case(shared_data, tmp_path, monkeypatch, how):
    if how == "file_in_the_way":
        (tmp_path / "taken").write_text("a file where the output folder's parent should be")
        output_dir, problem = tmp_path / "taken" / "out", "NotADirectoryError: Not a directory"
    else:  # what a read-only folder does for a user without root rights (the tests may run as root)
        output_dir, problem = tmp_path / "out", "PermissionError: Permission denied"
        output_dir.mkdir()
        mkstemp = tempfile.mkstemp

        def denied(*args, dir=None, **kwargs):
            if dir is not None and Path(output_dir) in (Path(dir), *Path(dir).parents):
                raise PermissionError(errno.EACCES, "Permission denied", str(Path(dir) / "x"))
            return mkstemp(*args, dir=dir, **kwargs)

        monkeypatch.setattr(tempfile, "mkstemp", denied)
    job = make_job([{**POINT, "case_id": "c"}], tmp_path / "l.json", output_dir)
    with pytest.raises(OutputError) as raised:
        job.run()
    assert str(raised.value) == f"{output_dir}: cannot write to this folder ({problem})"
    assert job.predictor.cases == []


def test_an_output_onto_an_input_is_refused_before_predicting(shared_data, tmp_path):
    image = tmp_path / "case.nii.gz"
    shutil.copyfile(SCT_T2, image)
    job = make_job(
        [{**POINT, "image": str(image), "case_id": "case"}], tmp_path / "l.json", tmp_path, **{"writer#suffix": ""}
    )
    report = job.run()
    assert report["failed"][0]["error"] == f"{image}: refusing to write {image}: it would overwrite an input"
    assert job.predictor.cases == [] and image.read_bytes() == SCT_T2.read_bytes()


# ------------------------------------------------------------------ messages of unexpected failures
def test_an_unexpected_failure_names_the_image_and_the_transform_not_an_object_address(
    shared_data, tmp_path, monkeypatch
):
    def broken(self, mask):
        raise ZeroDivisionError("sigma of zero length")

    monkeypatch.setattr(GaussianBlurMM, "__call__", broken)
    report = make_job([{**POINT, "case_id": "c"}], tmp_path / "l.json", tmp_path / "out").run()
    assert report["failed"] == [
        {
            "case_id": "c",
            "bad_input": False,
            "error": (f"{SCT_T2}: ZeroDivisionError: sigma of zero length (in SoftMaskFromSourced)"),
        }
    ]


def test_describe_failure_unwraps_nested_composes():
    def fail(data):
        raise KeyError("vertebra_seg")

    inner = Compose([Lambda(fail)])
    with pytest.raises(RuntimeError) as raised:
        Compose([Lambda(lambda d: d), inner])({"image": 1})
    assert re.search(r"object at 0x", str(raised.value)) or re.search(r"object at 0x", str(raised.value.__cause__))
    assert describe_failure(raised.value, "/data/a.nii.gz") == "/data/a.nii.gz: KeyError: 'vertebra_seg' (in Lambda)"
    assert "\n" not in describe_failure(raised.value)


# ------------------------------------------------------------------ the quality filter's decision
class RecordingPredictor(CountingPredictor):
    """Also keeps every case's predictions, to score them independently of the job."""

    def __init__(self, predictor) -> None:
        super().__init__(predictor)
        self.predictions = {}

    def __call__(self, items):
        results = super().__call__(items)
        self.predictions[items[0].get("case_id")] = torch.stack([torch.as_tensor(r) for r in results])
        return results


def judged_job(entries, tmp_path, output_dir, thresholds: dict[str, float], **options) -> SynthesisJob:
    """The mask-preview job with a one-number quality filter: reference 0 for each class, k = 1; ``options``: the
    job's other settings (``write_rejected``)."""
    preview = make_job(entries, tmp_path / "list.json", output_dir)
    predictor = RecordingPredictor(preview.predictor.predictor)
    return job_from_preview(preview, output_dir, predictor, quality_check=mean_intensity_check(thresholds), **options)


def test_the_quality_decision_reaches_the_provenance_and_the_report_and_a_failed_case_is_kept(shared_data, tmp_path):
    entries = [
        {**GOOD, "case_id": "kept", "label": "benign"},
        {**POINT, "case_id": "rejected", "label": "malignant"},
        {**POINT, "case_id": "unknown", "label": "fracture"},
    ]
    output_dir = tmp_path / "out"
    job = judged_job(entries, tmp_path, output_dir, {"benign": 1.0, "malignant": 0.0})
    report = job.run()
    assert [f["case_id"] for f in report["failed"]] == ["unknown"] and report["failed"][0]["bad_input"]
    assert "label is 'fracture'" in report["failed"][0]["error"]
    written = {w["case_id"]: w for w in report["written"]}
    for case_id, passed in (("kept", True), ("rejected", False)):
        expected = float(job.predictor.predictions[case_id].mean(dim=(1, 2, 3)).mean())  # distance to 0, k = 1
        record = json.loads(Path(written[case_id]["provenance"]).read_text())
        assert record["quality"] == written[case_id]["quality"]
        assert record["quality"]["score"] == pytest.approx(expected) and expected > 0
        assert record["quality"]["passed"] is passed and record["quality"]["feature_space"] == "mean intensity"
        assert record["quality_filter"] == job.quality_check.identity()
        assert Path(written[case_id]["volume"]).is_file()  # a rejected case stays on disk, marked
    on_disk = json.loads((output_dir / "report.json").read_text())
    assert on_disk["quality"]["judged"] == 2 and on_disk["quality"]["passed"] == 1

    again = judged_job(entries[:2], tmp_path, output_dir, {"benign": 1.0, "malignant": 0.0}).run()
    assert {s["case_id"]: s["quality"] for s in again["skipped"]} == {k: written[k]["quality"] for k in written}
    other = judged_job(entries[:2], tmp_path, output_dir, {"benign": 1.0, "malignant": 1.0}).run()
    assert sorted(w["case_id"] for w in other["written"]) == ["kept", "rejected"]  # another filter: judged again
    assert all(w["quality"]["passed"] for w in other["written"])


def test_without_write_rejected_a_rejected_case_is_reported_and_nothing_of_it_written(shared_data, tmp_path):
    entries = [
        {**GOOD, "case_id": "kept", "label": "normal", "quality_label": "lesion"},
        {**POINT, "case_id": "rejected", "label": "normal", "quality_label": "strict"},
    ]
    output_dir = tmp_path / "out"
    report = judged_job(entries, tmp_path, output_dir, {"lesion": 1.0, "strict": 0.0}, write_rejected=False).run()
    assert [w["case_id"] for w in report["written"]] == ["kept"]  # judged as its quality_label, not its label
    assert [r["case_id"] for r in report["rejected"]] == ["rejected"] and not report["failed"]
    assert report["rejected"][0]["quality"]["passed"] is False and report["rejected"][0]["quality"]["score"] > 0
    assert not list(output_dir.glob("rejected*"))
    assert report["quality"]["judged"] == 2 and report["quality"]["passed"] == 1


# ------------------------------------------------------------------ the warnings on doubtful cases
def checked_job(entries, tmp_path, output_dir) -> SynthesisJob:
    preview = make_job(entries, tmp_path / "list.json", output_dir)
    return job_from_preview(preview, output_dir, StillOrMasked(), checks=SynthesisChecks())


def test_a_negligible_change_is_marked_in_the_report_the_provenance_and_the_log(shared_data, tmp_path, caplog):
    entries = [{**GOOD, "case_id": "still"}, {**GOOD, "case_id": "changed"}]
    output_dir = tmp_path / "out"
    with caplog.at_level(logging.WARNING, logger="bundle.engines.synthesis_job"):
        report = checked_job(entries, tmp_path, output_dir).run()
    written = {w["case_id"]: w for w in report["written"]}
    assert written["changed"]["warnings"] == []
    still = {w["code"]: w for w in written["still"]["warnings"]}
    assert set(still) == {"negligible_change", "negligible_slices"}
    assert still["negligible_change"]["measured"] == 0.0 and still["negligible_change"]["threshold"] == 0.01
    assert set(still["negligible_slices"]) == {"code", "message", "measured", "threshold"}
    record = json.loads(Path(written["still"]["provenance"]).read_text())
    assert record["warnings"] == written["still"]["warnings"]
    assert record["checks"] == written["still"]["checks"] and written["still"]["checks"]["largest_change"] == 0.0
    assert written["changed"]["checks"]["largest_change"] > 0.1  # I_m: the vertebra darkened to about 0
    assert record["synthesis_checks"] == SynthesisChecks().settings()
    on_disk = json.loads((output_dir / "report.json").read_text())
    assert on_disk["warnings"]["cases_warned"] == 1
    assert on_disk["warnings"]["by_code"] == {"negligible_change": 1, "negligible_slices": 1}
    logged = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("still" in m and "negligible_change" in m and "0.00%" in m and "1.00%" in m for m in logged)
    assert not any("changed:" in m for m in logged)

    again = checked_job(entries, tmp_path, output_dir).run()  # a resumed run keeps the warnings of its cases
    assert {s["case_id"]: s["warnings"] for s in again["skipped"]} == {k: w["warnings"] for k, w in written.items()}


# Coherent through-plane synthesis by the predictor: outward from the centre slice, each slice started from its inner
# neighbour's lesion, against independent per-slice sampling.
@pytest.fixture(scope="module")
def sampling():
    return tiny_sampling()


def neighbour_correlations(items, predictions) -> list[float]:
    """Pearson correlation of the in-mask change of each pair of neighbouring slices."""
    changes = [(p - i["image"])[CORE].flatten() for i, p in zip(items, predictions, strict=True)]
    return [float(torch.corrcoef(torch.stack(pair))[0, 1]) for pair in zip(changes, changes[1:], strict=False)]


def test_outward_synthesis_is_coherent_through_plane_and_independent_slices_are_not(sampling):
    model, inferer = sampling
    items = neighbouring_slices()
    independent = DiffusionPredictor(model, inferer)(items)
    coherent = DiffusionPredictor(model, inferer, through_plane_strength=0.5)(items)
    assert max(neighbour_correlations(items, independent)) < 0.3
    assert min(neighbour_correlations(items, coherent)) > 0.8
    # the centre slice is sampled from noise with the case seed; every slice keeps its input outside the mask
    seed = case_seed(0, "case")
    assert all(item["seed"] == seed for item in items)
    centre = inferer(items[2]["image"][None], model, items[2]["soft_mask"][None], [items[2]["text"]], [seed])
    assert torch.equal(coherent[2], centre[0])
    for item, prediction in zip(items, coherent, strict=True):
        outside = item["soft_mask"] == 0
        assert torch.equal(prediction[outside], item["image"][outside])
        assert (prediction - item["image"])[CORE].abs().mean() > 0.02


def test_each_slice_starts_from_its_inner_neighbour(sampling):
    model, inferer = sampling
    predictor = DiffusionPredictor(model, inferer, through_plane_strength=0.5)
    reference = predictor(neighbouring_slices())
    changed = neighbouring_slices()
    changed[3]["image"] = changed[3]["image"].flip(-1)  # an outer slice: only it and the ones beyond may change
    again = predictor(changed)
    assert [torch.equal(a, b) for a, b in zip(reference, again, strict=True)] == [True, True, True, False, False]
    with pytest.raises(ValueError, match="through_plane_strength"):
        DiffusionPredictor(model, inferer, through_plane_strength=1.5)
