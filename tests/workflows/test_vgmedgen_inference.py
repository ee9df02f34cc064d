"""configs/vgmedgen_inference.json end to end on tiny sizes: the trained stages V, T and G (the session's
``vgmedgen_models``) generate crops from the captions of a datalist split with DPM-Solver++ and guidance; each crop
is written as a one-slice volume with its millimetre geometry and vertebra label, marked synthetic, with provenance
and a preview, or, when the stage-V head finds no vertebra in it, listed with that reason (after one tiny epoch per
stage, every crop is); the review page lists them all, and the classifier's own config reads the datalist it
writes. tests/io/test_crop_writer.py writes a phantom crop and reads it back through the classifier."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from monai.bundle import ConfigParser

from bundle.data.datalist import load_datalist
from bundle.engines.vgmedgen_generation import NO_VERTEBRA, CaptionGenerationJob
from bundle.errors import InputError
from bundle.io.crop_writer import SYNTHETIC_DESCRIPTION
from bundle.io.gallery import read_gallery_cases
from tests.helpers.paths import CONFIGS, REPO

TINY_INFERENCE = {"spatial_size": 32, "dit_layers": 1, "num_inference_steps": 2, "requests_split": "test"}


def inference_parser(**overrides) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "vgmedgen_inference.json"))
    parser.update({"bundle_root": str(REPO), **TINY_INFERENCE, **overrides})
    return parser


@pytest.fixture(scope="module")
def generated(demo_data, vgmedgen_models, tmp_path_factory):
    output = tmp_path_factory.mktemp("vgmedgen_generated")
    parser = inference_parser(dataset_dir=str(demo_data), models_dir=str(vgmedgen_models), output_dir=str(output))
    assert parser.get_parsed_content("sampler").scheduler.config.algorithm_type == "dpmsolver++"
    report = parser.get_parsed_content("job").run()
    assert parser.get_parsed_content("crop_pixel_mm") == [2.0, 2.0]
    return output, report


def test_every_request_gives_a_marked_one_slice_crop_with_its_files(generated, demo_data):
    output, report = generated
    requests = load_datalist(demo_data / "datalist.json", "test")
    assert len(report["written"]) + len(report["failed"]) == len(requests) > 0
    assert all(f["error"] == NO_VERTEBRA for f in report["failed"])
    for case in report["written"]:
        volume = nib.load(case["volume"])
        assert volume.shape == (1, 32, 32)
        assert np.allclose(volume.header.get_zooms(), (2.0, 2.0, 2.0))
        assert nib.aff2axcodes(volume.affine) == ("R", "I", "P")
        assert volume.header["descrip"].tobytes().decode().rstrip("\0") == SYNTHETIC_DESCRIPTION
        assert 0 <= volume.get_fdata().min() and volume.get_fdata().max() <= 1000
        label = nib.load(case["vertebra_seg"])
        assert label.shape == (1, 32, 32) and np.array_equal(label.affine, volume.affine)
        record = json.loads(open(case["provenance"]).read())
        assert record["synthetic"] is True and record["generator"] == "VG-MedGen"
        assert record["text"] in {r["text"] for r in requests} and isinstance(record["seed"], int)
        assert open(case["preview"], "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    seeds = [json.loads(open(c["provenance"]).read())["seed"] for c in report["written"]]
    assert len(set(seeds)) == len(seeds)  # one seed per crop


def test_the_review_page_lists_every_crop(generated):
    output, report = generated
    rows = read_gallery_cases(output / "index.html")
    assert sorted(r["id"] for r in rows) == sorted(c["case_id"] for c in report["written"] + report["failed"])
    written = [r for r in rows if r["status"] == "written"]
    assert all(r["text"] and r["thumbnail"] and (output / r["thumbnail"]).is_file() for r in written)
    assert all(r["error"] == NO_VERTEBRA for r in rows if r["status"] == "failed")


def test_the_classifier_reads_the_datalist_as_it_is(generated, demo_data):
    output, report = generated
    datalist = output / "datalist.json"
    synthetic = [e for e in load_datalist(datalist, "training") if e.get("synthetic")]
    assert len(synthetic) == len(report["written"])
    classify = ConfigParser()
    classify.read_config(str(CONFIGS / "classify.json"))
    classify.update({"bundle_root": str(REPO), "datalist": str(datalist), "spatial_size": 32})
    transform = classify.get_parsed_content("train#preprocessing")
    for entry in synthetic:
        items = transform(entry)
        assert len(items) == 1 and items[0]["image"].shape == (1, 32, 32)
        assert float(items[0]["image"].std()) > 0  # the generated crop, not an empty window


@pytest.mark.parametrize("request_entry", [{"text": " ", "label": "benign"}, {"text": "Benign L2 vertebra."}])
def test_a_request_without_text_or_class_is_refused_by_name(request_entry, tmp_path):
    with pytest.raises(InputError, match="case_7: a generation request needs"):
        CaptionGenerationJob(
            None, None, None, [{"case_id": "case_7", "class_index": 1, **request_entry}], None, tmp_path, 32, [2, 2]
        )
