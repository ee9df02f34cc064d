"""Running a job over a datalist case by case: one bad case is reported and the others still complete."""

from __future__ import annotations

import logging
import os
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from monai.engines import Evaluator
from monai.transforms import Compose

from bundle.data.datalist import load_datalist
from bundle.engines.slice_batching import CrossCaseBatcher, SliceTask
from bundle.errors import InputError, describe_failure, find_input_error
from bundle.metrics.quality_filter import QualityCheck
from bundle.metrics.synthesis_checks import SynthesisChecks
from bundle.utils.files import check_folder_writable, read_json_object, write_json_atomically

if TYPE_CHECKING:  # the writer is io, a layer above the engines: the job only calls it
    from bundle.io.volume_writer import SyntheticVolumeWriter

logger = logging.getLogger(__name__)

Predictor = Callable[[Sequence[Mapping]], Sequence[torch.Tensor]]


class KeyPredictor:
    """Returns one entry of each slice item as its result, e.g. ``"masked_image"`` to write ``I_m`` back.

    It is how the pipeline is run without a generative model (the soft-mask preview job), and with
    ``key="image"`` it is the identity model of the round-trip tests.
    """

    def __init__(self, key: str = "masked_image") -> None:
        self.key = key

    def __call__(self, items: Sequence[Mapping]) -> list[torch.Tensor]:
        return [torch.as_tensor(item[self.key]) for item in items]


def case_seed(base_seed: int, case_id: str) -> int:
    """A case's own seed: the same case gets the same noise whatever else runs with it."""
    return (int(base_seed) + zlib.crc32(str(case_id).encode())) % 2**31


class DiffusionPredictor:
    """Samples each slice item with the trained model and the soft-mask inferer; :meth:`predict_cases` samples
    several cases' slices together (:class:`bundle.engines.slice_batching.CrossCaseBatcher`).

    Independent slices (``through_plane_strength`` None): slice ``i`` of a case uses seed ``case_seed(seed,
    case_id) + i``. Coherent through-plane (``through_plane_strength`` in (0, 1]; the items of one case on one shared
    model grid, :func:`bundle.transforms.case_to_slices.case_to_slices` with ``through_plane=True``):
    :meth:`outward`. The case seed is recorded on the items (``"seed"``) for the provenance record. A case's result
    does not depend on the other cases sampled with it (per-image seeds; up to float rounding of the batched UNet).

    Args:
        batch_size: the most slice images in one sampler call, from one case or several (the memory budget; the
            UNet's batch is twice that with classifier-free guidance).
    """

    def __init__(
        self,
        network: torch.nn.Module,
        inferer: Callable,
        seed: int = 0,
        batch_size: int = 8,
        device: torch.device | str = "cpu",
        through_plane_strength: float | None = None,
    ) -> None:
        self.network, self.inferer, self.seed = network, inferer, seed
        self.device = torch.device(device)
        self.batcher = CrossCaseBatcher(network, inferer, batch_size, self.device)
        if through_plane_strength is not None and not 0.0 < through_plane_strength <= 1.0:
            raise ValueError(f"through_plane_strength must be in (0, 1] or None, got {through_plane_strength}")
        self.through_plane_strength = through_plane_strength

    def __call__(self, items: Sequence[Mapping]) -> list[torch.Tensor]:
        """One case's slice items -> one result per item."""
        return self.predict_cases([items])[0]

    def predict_cases(self, cases: Sequence[Sequence[Mapping]]) -> list[list[torch.Tensor]]:
        """The slice items of several cases -> each case's results, one per item (the CPU)."""
        seeds = [case_seed(self.seed, items[0].get("case_id", "")) for items in cases]
        for items, seed in zip(cases, seeds, strict=True):
            for item in items:
                item["seed"] = seed
        if self.through_plane_strength is not None:
            return self.outward(cases, seeds)
        tasks = [
            SliceTask(item["image"], item["soft_mask"], str(item["text"]), seed + index)
            for items, seed in zip(cases, seeds, strict=True)
            for index, item in enumerate(items)
        ]
        results = iter(result for result, _ in self.batcher(tasks))
        return [[next(results) for _ in items] for items in cases]

    def outward(self, cases: Sequence[Sequence[Mapping]], seeds: Sequence[int]) -> list[list[torch.Tensor]]:
        """Coherent through-plane, each case's slices from its centre slice (``item["through_plane"]["centre_slice"]``,
        else the middle item) from pure noise, then outward one ring at a time (the next slice on each side), each
        slice started from its inner neighbour's lesion: ``x0 + (content_nb - x0_nb)`` noised to
        ``through_plane_strength`` of the steps (:meth:`SoftMaskInpaintingInferer.inpaint`), blended at every step
        with its own soft mask. Every slice of a case uses the case seed (the same noise). The cases go through the
        stages together: all centre slices, then every case's first ring, and so on."""
        firsts = []
        for items in cases:
            indices = [int(i["placement"]["slice_index"]) for i in items]
            centre = items[0].get("through_plane", {}).get("centre_slice", indices[len(indices) // 2])
            firsts.append(min(range(len(items)), key=lambda p: (abs(indices[p] - centre), p)))
        images = [[torch.as_tensor(i["image"]).float().to(self.device) for i in items] for items in cases]
        results = [[None] * len(items) for items in cases]
        contents = [[None] * len(items) for items in cases]
        stage = [
            (
                c,
                first,
                SliceTask(images[c][first], cases[c][first]["soft_mask"], str(cases[c][first]["text"]), seeds[c]),
            )
            for c, first in enumerate(firsts)
        ]
        strength, ring = 1.0, 0
        while stage:
            outputs = self.batcher([task for *_, task in stage], strength)
            for (c, p, _), (result, content) in zip(stage, outputs, strict=True):
                results[c][p], contents[c][p] = result, content
            strength, ring, stage = self.through_plane_strength, ring + 1, []
            for c, first in enumerate(firsts):
                for p in (first - ring, first + ring):
                    if 0 <= p < len(cases[c]):
                        inner = p + 1 if p < first else p - 1
                        start = (images[c][p] + (contents[c][inner] - images[c][inner])).clamp(0.0, 1.0)
                        item = cases[c][p]
                        task = SliceTask(images[c][p], item["soft_mask"], str(item["text"]), seeds[c], start)
                        stage.append((c, p, task))
        return results


def output_name_clashes(cases: Sequence[Mapping], output_stem: Callable[[Mapping], str]) -> dict[int, InputError]:
    """The entries (by 1-based number) whose outputs would have the same names as another entry's, each with the
    error that refuses it: equal case ids (or ids that differ only in letter case, which share a file on
    case-insensitive file systems). ``output_stem`` gives an entry's output name stem. Entries whose stem cannot
    be made (no ``case_id`` and no ``image``) are left to the entry checks."""
    groups: dict[str, list[int]] = {}
    for number, case in enumerate(cases, start=1):
        try:
            stem = output_stem(case)
        except (KeyError, TypeError, AttributeError):
            continue
        groups.setdefault(stem.casefold(), []).append(number)
    clashes = {}
    for numbers in groups.values():
        if len(numbers) < 2:
            continue
        ids = [cases[n - 1].get("case_id") for n in numbers]
        images = ", ".join(str(cases[n - 1].get("image")) for n in numbers)
        how = "the same case id" if len({str(i) for i in ids}) == 1 else "case ids that differ only in letter case"
        for number, case_id in zip(numbers, ids, strict=True):
            clashes[number] = InputError(
                case_id,
                (
                    f"entries {', '.join(map(str, numbers))} of the datalist have {how} "
                    f"({', '.join(repr(i) for i in ids)}), so their outputs ({output_stem(cases[number - 1])}.*) would "
                    f"overwrite each other; none of them is written: give each entry its own case_id (images: {images})"
                ),
            )
    return clashes


class SynthesisJob:
    """For each case: preprocess (one item per slice), check the outputs can be written, predict, write; then a
    ``report.json``.

    Before any case runs, the output folders must be writable (else :class:`bundle.errors.OutputError`), and
    entries whose outputs would share names (equal case ids) are refused (:func:`output_name_clashes`).

    Args:
        cases: datalist entries, or the path of a datalist JSON (with ``split``).
        preprocessing: transforms from an entry to a list of slice items.
        predictor: slice items -> one model-grid result per item.
        writer: puts the results back into the volume.
        output_dir: where ``report.json`` goes (the writer's outputs go to its own folder).
        details: extra provenance fields for every output (e.g. the model used).
        skip_completed: resume an interrupted run: a case whose outputs an earlier run finished (same image,
            text and ``details``; see :meth:`bundle.io.volume_writer.SyntheticVolumeWriter.completed`) is not redone
            but listed under ``"skipped"``. ``False`` redoes (and overwrites) every case.
        quality_check: judge each case's predicted slices against the real cases of its ``label``
            (:class:`bundle.metrics.quality_filter.QualityCheck`). The decision goes into the case's provenance
            record and its report entry as ``"quality"`` (score, threshold, passed); a case that fails is still
            written (and marked), unless ``write_rejected`` is ``False``. A case's ``quality_label``, where it has
            one, is the class it is judged as (else its ``label``). The filter's identity joins ``details``, so a
            case judged by another filter is redone.
        write_rejected: write the cases the quality filter rejects (marked). ``False``: nothing of such a case is
            written; the report lists it under ``"rejected"`` with the filter's decision.
        checks: the warnings on each case (:class:`bundle.metrics.synthesis_checks.SynthesisChecks`: negligible
            change, change outside the mask, lesion against the text, rejected by the quality filter): in the case's
            provenance record and report entry as ``"warnings"`` (each code, message, measured, threshold), with
            the figures of every case as ``"checks"``, and in the log. The thresholds join ``details``, so a case
            checked with other thresholds is redone.
        gallery: called with the report once ``report.json`` is written, to write the run's review page (in the
            configs :class:`bundle.io.gallery.ReviewGallery`: ``OUTPUT/index.html``); it returns the page's path.
        cases_per_batch: how many cases are prepared and predicted together: with a predictor that has
            ``predict_cases`` (:class:`DiffusionPredictor`) their slices share the sampler calls, each of at most the
            predictor's ``batch_size`` slices. A case's outputs are still written (or refused) on their own; if the
            shared prediction fails, each case is predicted alone, so a failing case loses only itself. 1: case by
            case.
    """

    def __init__(
        self,
        cases: Sequence[Mapping] | str | os.PathLike,
        preprocessing: Compose,
        predictor: Predictor,
        writer: SyntheticVolumeWriter,
        output_dir: str | os.PathLike,
        split: str = "test",
        details: Mapping[str, object] | None = None,
        skip_completed: bool = True,
        quality_check: QualityCheck | None = None,
        checks: SynthesisChecks | None = None,
        gallery: Callable[[Mapping[str, object]], os.PathLike] | None = None,
        write_rejected: bool = True,
        cases_per_batch: int = 1,
    ) -> None:
        if int(cases_per_batch) < 1:
            raise ValueError(f"cases_per_batch must be at least 1, got {cases_per_batch}")
        self.cases_per_batch = int(cases_per_batch)
        self.cases = load_datalist(cases, split) if isinstance(cases, (str, os.PathLike)) else list(cases)
        self.preprocessing = preprocessing
        self.predictor = predictor
        self.writer = writer
        self.output_dir = Path(output_dir)
        self.details = dict(details or {})
        self.skip_completed = skip_completed
        self.quality_check = quality_check
        self.write_rejected = write_rejected
        if quality_check is not None:
            self.details["quality_filter"] = quality_check.identity()
        self.checks = checks
        self.gallery = gallery
        if checks is not None:
            self.details["synthesis_checks"] = checks.settings()

    def prepare_case(self, case: Mapping) -> list[Mapping]:
        """A case's slice items, after checking its outputs can be written (before the expensive prediction)."""
        items = self.preprocessing(dict(case))
        items = items if isinstance(items, list) else [items]
        self.writer.check_writable(items)
        return items

    def predict(self, cases: Sequence[Sequence[Mapping]]) -> list[Sequence[torch.Tensor] | Exception]:
        """Each case's predictions, or the exception that stopped them: all cases in one call where the predictor
        takes several (``predict_cases``); if that fails, each case alone, so a failing case loses only itself."""
        together = getattr(self.predictor, "predict_cases", None)
        with torch.no_grad():
            if together is not None and len(cases) > 1:
                try:
                    return list(together(cases))
                except Exception as error:
                    logger.warning(
                        "predicting %d cases together failed (%s); predicting them one by one", len(cases), error
                    )
            outcomes: list[Sequence[torch.Tensor] | Exception] = []
            for items in cases:
                try:
                    outcomes.append(self.predictor(items))
                except Exception as error:
                    outcomes.append(error)
            return outcomes

    def write_case(self, case: Mapping, items: Sequence[Mapping], predictions: Sequence[torch.Tensor]) -> dict:
        """Judge and write one predicted case; returns its outputs (and judgement)."""
        judgement = {}
        if self.quality_check is not None:
            try:
                judgement["quality"] = self.quality_check(case.get("quality_label", case.get("label")), predictions)
            except ValueError as error:  # a label the filter does not know
                raise InputError(case.get("case_id", case.get("image")), str(error)) from error
            if not self.write_rejected and not judgement["quality"]["passed"]:
                return judgement
        if self.checks is not None:
            judgement["checks"], judgement["warnings"] = self.checks(items, predictions, judgement.get("quality"))
        return {**self.writer(items, predictions, {**self.details, **judgement}), **judgement}

    def run_case(self, case: Mapping) -> dict[str, object]:
        """Prepare, predict and write one case; raises what stops it."""
        items = self.prepare_case(case)
        with torch.no_grad():
            predictions = self.predictor(items)
        return self.write_case(case, items, predictions)

    def log_warnings(self, number: int, case_id: str, outputs: Mapping[str, object]) -> None:
        for found in outputs.get("warnings") or []:
            logger.warning("[%d/%d] %s: %s: %s", number, len(self.cases), case_id, found["code"], found["message"])

    def start(self) -> None:
        """Check the output folders can be written to, remove an interrupted run's temporary files, find clashing
        output names.

        Raises:
            OutputError: naming the output folder that cannot be written to.
        """
        for folder in dict.fromkeys([self.output_dir, self.writer.output_dir]):
            check_folder_writable(folder)
        for path in self.writer.remove_partial_outputs():
            logger.warning("removed %s, left half-written by an interrupted run", path)
        self.clashes = output_name_clashes(self.cases, self.writer.output_stem)
        self.written: list[dict[str, object]] = []
        self.rejected: list[dict[str, object]] = []
        self.skipped: list[dict[str, object]] = []
        self.failed: list[dict[str, object]] = []

    def fail(self, number: int, case: Mapping, error: BaseException) -> None:
        """Record case ``number``'s failure: the bad input or the output it is about, else what failed and where,
        after the case's image."""
        case_id = str(case.get("case_id", case.get("image")))
        problem = describe_failure(error, case.get("image"))
        bad_input = find_input_error(error) is not None
        self.failed.append({"case_id": case_id, "error": problem, "bad_input": bad_input})
        # not the input's fault (a fault of the code, a full disk): the traceback says where
        logger.error("[%d/%d] %s failed: %s", number, len(self.cases), case_id, problem, exc_info=not bad_input)

    def done_earlier(self, number: int, case: Mapping) -> bool:
        """Whether case ``number`` needs no prediction: refused for a clashing output name (recorded as failed), or
        written by an earlier run (recorded as skipped)."""
        case_id = str(case.get("case_id", case.get("image")))
        if number in self.clashes:
            self.fail(number, case, self.clashes[number])
            return True
        earlier = self.writer.completed(case, self.details) if self.skip_completed else None
        if earlier is None:
            return False
        record = read_json_object(earlier["provenance"], "the provenance record")
        if self.quality_check is not None:
            earlier["quality"] = record.get("quality")
        if self.checks is not None:
            earlier["checks"], earlier["warnings"] = record.get("checks"), record.get("warnings", [])
        self.skipped.append({"case_id": case_id, **earlier})
        self.log_warnings(number, case_id, earlier)
        logger.info(
            "[%d/%d] %s already written by an earlier run (%s): skipped",
            number,
            len(self.cases),
            case_id,
            earlier["provenance"],
        )
        return True

    def process(self, number: int, case: Mapping) -> None:
        """Run case ``number`` (1-based) and record its outputs, or its failure without raising."""
        self.process_cases(number, [case])

    def process_cases(self, first_number: int, cases: Sequence[Mapping]) -> None:
        """Run ``cases`` (numbered from ``first_number``, 1-based), predicted together (:meth:`predict`), and record
        each one's outputs or failure without raising."""
        started = time.perf_counter()
        ready = []
        for number, case in enumerate(cases, start=first_number):
            if self.done_earlier(number, case):
                continue
            try:
                ready.append((number, case, self.prepare_case(case)))
            except (
                Exception
            ) as error:  # report the case and go on; 'bad_input' tells a fault of the code's from the input's
                self.fail(number, case, error)
        predicted = self.predict([items for _, _, items in ready]) if ready else []
        for (number, case, items), predictions in zip(ready, predicted, strict=True):
            try:
                if isinstance(predictions, Exception):
                    raise predictions
                outputs = self.write_case(case, items, predictions)
            except Exception as error:
                self.fail(number, case, error)
                continue
            case_id = str(case.get("case_id", case.get("image")))
            if "volume" not in outputs:
                self.rejected.append({"case_id": case_id, **outputs})
                logger.info(
                    "[%d/%d] %s rejected by the quality filter (score %.4g > threshold %.4g): not written",
                    number,
                    len(self.cases),
                    case_id,
                    outputs["quality"]["score"],
                    outputs["quality"]["threshold"],
                )
                continue
            self.written.append({"case_id": case_id, **outputs})
            self.log_warnings(number, case_id, outputs)
            logger.info(
                "[%d/%d] %s -> %s (%.1f s%s)",
                number,
                len(self.cases),
                case_id,
                outputs["volume"],
                time.perf_counter() - started,
                f", {len(ready)} cases together" if len(ready) > 1 else "",
            )

    def finish(self) -> dict[str, object]:
        """Write and return the report: outputs written now, outputs kept from an earlier run, failures; then the
        review page (``gallery``)."""
        report = {"written": self.written, "skipped": self.skipped, "failed": self.failed, "num_cases": len(self.cases)}
        if not self.write_rejected:
            report["rejected"] = self.rejected
        if self.quality_check is not None:
            judged = [c.get("quality") or {} for c in [*self.written, *self.skipped, *self.rejected]]
            report["quality"] = {
                **self.details["quality_filter"],
                "judged": len(judged),
                "passed": sum(bool(q.get("passed")) for q in judged),
            }
        if self.checks is not None:
            codes = [w["code"] for c in [*self.written, *self.skipped] for w in c.get("warnings") or []]
            report["warnings"] = {
                **self.checks.settings(),
                "cases_warned": sum(bool(c.get("warnings")) for c in [*self.written, *self.skipped]),
                "by_code": {code: codes.count(code) for code in sorted(set(codes))},
            }
        write_json_atomically(self.output_dir / "report.json", report)
        logger.info(
            "%d of %d cases written, %d already written earlier, %d failed; report: %s",
            len(self.written),
            len(self.cases),
            len(self.skipped),
            len(self.failed),
            self.output_dir / "report.json",
        )
        if self.gallery is not None:
            logger.info("review gallery: %s", self.gallery(report))
        return report

    def run(self) -> dict[str, object]:
        """Run every case; returns (and writes) the report of written outputs and failures."""
        self.start()
        for first in range(0, len(self.cases), self.cases_per_batch):
            self.process_cases(first + 1, self.cases[first : first + self.cases_per_batch])
        return self.finish()


class CaseByCaseEvaluator(Evaluator):
    """A MONAI evaluator over a :class:`SynthesisJob`'s cases, so MONAI's workflow tools (the property
    checker, MONAI Label / Deploy, handlers) drive the job: each iteration is the job's ``cases_per_batch`` cases
    (:meth:`SynthesisJob.process_cases`); the report is written when the run completes."""

    def __init__(
        self, job: SynthesisJob, device: torch.device | str = "cpu", val_handlers: Sequence | None = None
    ) -> None:
        self.job = job
        super().__init__(
            device=torch.device(device),
            val_data_loader=[
                job.cases[first : first + job.cases_per_batch]
                for first in range(0, len(job.cases), job.cases_per_batch)
            ],
            epoch_length=-(-len(job.cases) // job.cases_per_batch),
            val_handlers=val_handlers,
            decollate=False,
        )

    def run(self, global_epoch: int = 1) -> None:
        self.job.start()
        super().run(global_epoch)
        self.report = self.job.finish()

    def _iteration(self, engine: CaseByCaseEvaluator, batchdata: list[Mapping]) -> dict[str, object]:
        self.job.process_cases((engine.state.iteration - 1) * self.job.cases_per_batch + 1, batchdata)
        return {"written": len(self.job.written), "failed": len(self.job.failed)}
