"""MONAI Label app of the MedSoft-Diffusion bundle: lesion synthesis served to 3D Slicer, OHIF or plain HTTP.

    monailabel start_server --app apps/monailabel --studies DIR --host 127.0.0.1 [--conf KEY VALUE ...]

``--conf bundle_root DIR``: the bundle folder (default: the repository holding this app); any ID of its
``configs/inference.json`` is a setting for every request, e.g. ``--conf models_dir DIR`` (default
``bundle_root/models``), ``--conf num_inference_steps 50``, ``--conf device cpu``. The network is loaded once, when
the server starts."""

from __future__ import annotations

from pathlib import Path

from lib.infers.lesion_synthesis import LesionSynthesis, client_error
from lib.infers.synthesis_request import DATASTORE_LABEL, server_settings
from monai.bundle import ConfigParser
from monailabel.interfaces.app import MONAILabelApp

import bundle
from bundle.errors import InputError
from bundle.serving import Synthesizer
from bundle.serving.synthesizer import INFERENCE_CONFIG

MODEL = "lesion_synthesis"
REPOSITORY = Path(__file__).resolve().parents[2]


class MedSoftDiffusionApp(MONAILabelApp):
    def __init__(self, app_dir: str, studies: str, conf: dict[str, str]) -> None:
        bundle_root = Path(conf.get("bundle_root", REPOSITORY)).resolve()
        config_ids = ConfigParser.load_config_files(str(bundle_root / INFERENCE_CONFIG)).keys()
        self.synthesizer = Synthesizer(bundle_root, **server_settings(conf, config_ids))
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name="MedSoft-Diffusion lesion synthesis",
            description="Inserts text-described lesions into spine MRI inside a soft mask around a vertebra",
            version=bundle.__version__,
        )

    def init_infers(self) -> dict[str, LesionSynthesis]:
        return {MODEL: LesionSynthesis(self.synthesizer)}

    def infer(self, request, datastore=None):
        """Resolve ``mask_tag`` (a label of the study in the datastore, e.g. ``"final"``) to its file, then infer."""
        tag = request.get("mask_tag")
        if tag:
            store = datastore or self.datastore()
            image = request.get("image")
            tags = store.get_labels_by_image_id(image)
            if tag not in tags:
                problem = f"no label tagged {tag!r} in the datastore (its tags: {sorted(tags)})"
                raise client_error(InputError(image, problem))
            request = {**request, DATASTORE_LABEL: store.get_label_uri(image, tag)}
        return super().infer(request, datastore)
