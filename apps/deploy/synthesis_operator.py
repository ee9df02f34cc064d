"""The lesion-synthesis operator: the selected DICOM series -> :class:`bundle.serving.Synthesizer` -> a derived,
marked-synthetic DICOM series written by the bundle's writer (``bundle.io.volume_writer``), with its provenance
record and PNG preview."""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from monai.deploy.core import ConditionType, Fragment, Operator, OperatorSpec
from monai.deploy.core.domain.dicom_series_selection import SelectedSeries, StudySelectedSeries
from selection_rules import SELECTION_RULES, by_priority
from synthesis_request import SynthesisRequest

from bundle.errors import InputError
from bundle.serving import Synthesizer

logger = logging.getLogger(__name__)


def first_selected(studies: list[StudySelectedSeries], input_folder: Path) -> SelectedSeries:
    """The series to synthesize into: the match of the earliest rule (a sagittal MR series before a CT one), in any
    study of the input; the others are logged and left alone.

    Raises:
        InputError: no series of ``input_folder`` matched a rule.
    """
    selected = by_priority([series for study in studies or [] for series in study.selected_series])
    if not selected:
        raise InputError(input_folder, f"no DICOM series matched the selection rules ({SELECTION_RULES})")
    for other in selected[1:]:
        logger.warning(
            "series %s (%s) also matched; one series is synthesized per run",
            other.series.SeriesInstanceUID,
            other.selection_name,
        )
    return selected[0]


@contextmanager
def series_folder(selected: SelectedSeries) -> Iterator[tuple[Path, bool]]:
    """The folder the bundle reads the selected series from, and whether it is a staged copy: the series' own folder
    when that holds exactly its files (the provenance then names the real input), else a temporary copy of its files
    (their folder holds other series or files too), removed afterwards."""
    files = [Path(i.get_native_sop_instance().filename).resolve() for i in selected.series.get_sop_instances()]
    folder = files[0].parent
    if {path.resolve() for path in folder.iterdir() if path.is_file()} == set(files):
        yield folder, False
        return
    number = getattr(selected.series, "SeriesNumber", None)
    with tempfile.TemporaryDirectory(prefix="synthesis_") as staging:
        staged = Path(staging) / f"series_{number if number is not None else 'x'}"
        staged.mkdir()
        for index, file in enumerate(files):
            shutil.copyfile(file, staged / f"{index:05d}.dcm")
        yield staged, True


class LesionSynthesisOperator(Operator):
    """Insert the requested lesion into the selected series and write the synthetic series to ``output_folder``.

    Named input:
        study_selected_series_list: the selector's list of ``StudySelectedSeries``.

    Named output:
        synthesis: the :class:`bundle.serving.Synthesis` written (the series folder, provenance, preview).

    Args:
        synthesizer: the bundle's serving API, its network already loaded.
        request: the validated request.
        output_folder: where the series folder, its provenance JSON and PNG preview are written.
        input_folder: the app's DICOM input folder, named in the error when no series matched.
    """

    def __init__(
        self,
        fragment: Fragment,
        *args,
        synthesizer: Synthesizer,
        request: SynthesisRequest,
        output_folder: Path,
        input_folder: Path,
        **kwargs,
    ) -> None:
        self.synthesizer, self.request = synthesizer, request
        self.output_folder, self.input_folder = Path(output_folder), Path(input_folder)
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.input("study_selected_series_list")
        spec.output("synthesis").condition(ConditionType.NONE)  # the provenance SR writer is optional

    def compute(self, op_input, op_output, context) -> None:
        studies = op_input.receive("study_selected_series_list")
        selected = first_selected(studies, self.input_folder)
        series = selected.series
        started = time.perf_counter()
        with series_folder(selected) as (image, staged):
            try:
                synthesis = self.synthesizer.synthesize(
                    image, output_dir=self.output_folder, **self.request.synthesize_arguments()
                )
            except InputError as error:
                if not staged or error.source != str(image):
                    raise
                # name the series the user gave, not its staged copy
                described = f"{self.input_folder} ({selected.selection_name} series {series.SeriesInstanceUID})"
                raise InputError(described, error.problem) from error
        logger.info(
            "%s series (%d instances) -> %s in %.1f s",
            selected.selection_name,
            len(series.get_sop_instances()),
            synthesis.volume,
            time.perf_counter() - started,
        )
        op_output.emit(synthesis, "synthesis")
