"""The MONAI Deploy application: DICOM data loader -> series selector (sagittal MR, else CT) -> lesion synthesis
(the bundle's serving API and DICOM writer) -> the provenance as a DICOM SR (unless the request turns it off)."""

from __future__ import annotations

from pathlib import Path

from bundle_path import find_bundle
from monai.deploy.conditions import CountCondition
from monai.deploy.core import AppContext, Application
from monai.deploy.operators.dicom_data_loader_operator import DICOMDataLoaderOperator
from provenance_sr_operator import ProvenanceSROperator
from series_selector_operator import SeriesSelectorOperator
from synthesis_operator import LesionSynthesisOperator
from synthesis_request import SynthesisRequest, load_request

from bundle.serving import Synthesizer


class LesionSynthesisApp(Application):
    """Insert a text-described lesion into a DICOM series; ``-m`` is the bundle folder (configs/, bundle/, models/) or
    a folder holding it (:func:`bundle_path.find_bundle`).

    The request (``request``, else read from the environment when the app is composed) is checked and the network
    loaded before any operator runs, so a bad request or a missing models folder stops the app before it writes
    anything.
    """

    name = "medsoft-diffusion-lesion-synthesis"
    description = "Insert a text-described lesion into a spine MR (or CT) DICOM series; writes a synthetic series."

    def __init__(self, *args, request: SynthesisRequest | None = None, **kwargs) -> None:
        self.request = request
        super().__init__(*args, **kwargs)

    def compose(self) -> None:
        context: AppContext = Application.init_app_context(self.argv)
        request = self.request or load_request()
        synthesizer = Synthesizer(find_bundle(Path(context.model_path).resolve()), **request.settings)
        input_folder, output_folder = Path(context.input_path), Path(context.output_path)
        loader = DICOMDataLoaderOperator(self, CountCondition(self, 1), input_folder=input_folder, name="loader")
        selector = SeriesSelectorOperator(self, input_folder=input_folder, name="selector")
        synthesis = LesionSynthesisOperator(
            self,
            synthesizer=synthesizer,
            request=request,
            output_folder=output_folder,
            input_folder=input_folder,
            name="synthesis",
        )
        self.add_flow(loader, selector, {("dicom_study_list", "dicom_study_list")})
        self.add_flow(selector, synthesis, {("study_selected_series_list", "study_selected_series_list")})
        if request.provenance_sr:
            self.add_flow(synthesis, ProvenanceSROperator(self, name="provenance_sr"), {("synthesis", "synthesis")})
