"""configs/properties.json declares the inference properties this bundle adds to MONAI's, so a host checks and sets
them by name (``workflow.text = ...``) through MONAI's ConfigWorkflow."""

from __future__ import annotations

import json

from monai.bundle import ConfigWorkflow
from monai.bundle.properties import InferProperties

from tests.helpers.paths import CONFIGS, REPO, SCT_T2
from tests.helpers.tiny_bundle import make_tiny_models

BOX = [[1, 2, 3], [4, 5, 6]]
ADDED = {
    "image",
    "text",
    "mask",
    "mask_labels",
    "box",
    "point",
    "box_size_mm",
    "coordinate_space",
    "seed",
    "output_dir",
}


def test_the_properties_file_extends_monais_inference_properties():
    properties = json.loads((CONFIGS / "properties.json").read_text())
    assert set(InferProperties) <= set(properties["infer"]) and ADDED <= set(properties["infer"])
    assert all(properties["infer"][name]["description"] for name in properties["infer"])


def test_a_host_checks_and_sets_the_added_properties_by_name(tmp_path):
    models = make_tiny_models(tmp_path / "models")
    flow = ConfigWorkflow(
        config_file=str(CONFIGS / "inference.json"),
        meta_file=str(CONFIGS / "metadata.json"),
        workflow_type="infer",
        properties_path=str(CONFIGS / "properties.json"),
        logging_file=False,
        bundle_root=str(REPO),
        models_dir=str(models),
    )
    flow.image, flow.text, flow.box, flow.seed = str(SCT_T2), "a lesion", BOX, 5
    flow.initialize()
    assert flow.check_properties() == []
    assert flow.dataset == [
        {"case_id": "t2", "image": str(SCT_T2), "text": "a lesion", "coordinate_space": "voxel", "box": BOX}
    ]
    assert flow.seed == 5 and flow.inferer.seed == 5
