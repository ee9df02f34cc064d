"""The generation job's segmentation of crops of another size than the stage-V head's (the full profile generates
512 px crops; the head works at the classifier's crop size): the crop reaches the head at its own size and the labels
come back at the crop's; a request's own crop geometry (pixel size, origin) reaches its written files."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bundle.engines.vgmedgen_generation import CaptionGenerationJob
from bundle.errors import InputError
from bundle.io.crop_writer import GeneratedCropWriter
from bundle.networks.vgmedgen_visual import VisualDisentangler


def test_crops_of_another_size_are_segmented_at_the_heads_size(tmp_path):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        head = VisualDisentangler(image_size=32).eval()
        for parameter in head.segmentation.parameters():  # a head whose labels vary over the crop
            parameter.data.normal_(0.0, 1.0)
    small = CaptionGenerationJob(torch.nn.Module(), None, head, [], None, tmp_path, 16, [4.0, 4.0])
    native = CaptionGenerationJob(torch.nn.Module(), None, head, [], None, tmp_path, 32, [2.0, 2.0])
    crops = torch.rand(2, 1, 16, 16)
    with torch.no_grad():
        labels = small.segment(crops)
        at_head_size = native.segment(F.interpolate(crops, size=(32, 32), mode="nearest"))
    assert labels.shape == (2, 16, 16) and labels.dtype == torch.long
    assert torch.equal(labels, at_head_size[:, ::2, ::2])
    assert len(labels.unique()) > 1


class FixedCrops(CaptionGenerationJob):
    """The job with its sampling replaced by fixed crops that all hold a vertebra: what is tested here is how each
    request's geometry reaches the written files (sampling is the workflow test's)."""

    def generate(self, texts, seeds):
        crops = torch.linspace(0, 1, 16 * 16).reshape(1, 1, 16, 16).repeat(len(texts), 1, 1, 1)
        return crops, torch.ones(len(texts), 16, 16, dtype=torch.long)


def test_a_request_with_its_own_crop_geometry_is_written_with_it(tmp_path):
    requests = [
        {"case_id": "own", "text": "Benign L1 vertebra.", "label": "benign", "class_index": 1,
         "crop_pixel_mm": [1.6, 2.2], "crop_origin_mm": [12.5, -40.0, 110.0]},
        {"case_id": "plain", "text": "Normal L2 vertebra.", "label": "normal", "class_index": 0},
        {"case_id": "window", "text": "Normal L3 vertebra.", "label": "normal", "class_index": 0,
         "crop_window_mm": [40.0, 24.0]},
    ]  # fmt: skip
    job = FixedCrops(
        torch.nn.Module(), None, torch.nn.Module(), requests, GeneratedCropWriter(tmp_path), tmp_path, 16, [2.0, 2.0]
    )
    report = job.run()
    own, plain, window = (nib.load(written["volume"]) for written in report["written"])
    assert np.allclose(window.header.get_zooms()[1:], [40.0 / 16, 24.0 / 16])  # the window's extent on 16 pixels
    assert np.allclose(own.header.get_zooms()[1:], [1.6, 2.2]) and np.allclose(own.affine[:3, 3], [12.5, -40.0, 110.0])
    assert np.allclose(plain.header.get_zooms()[1:], [2.0, 2.0]) and np.allclose(plain.affine[:3, 3], 0.0)
    assert nib.aff2axcodes(own.affine) == nib.aff2axcodes(plain.affine) == ("R", "I", "P")
    assert json.loads(open(report["written"][0]["provenance"]).read())["pixel_mm"] == [1.6, 2.2]


@pytest.mark.parametrize(
    "geometry",
    [
        {"crop_pixel_mm": [2.0]},
        {"crop_pixel_mm": [2.0, 0.0]},
        {"crop_origin_mm": [0.0, "x", 1.0]},
        {"crop_window_mm": [-40.0, 40.0]},
    ],
)
def test_a_bad_crop_geometry_is_refused_naming_the_request(geometry, tmp_path):
    request = {"case_id": "case_7", "text": "Benign L1 vertebra.", "label": "benign", "class_index": 1, **geometry}
    with pytest.raises(InputError, match="case_7.*crop_"):
        CaptionGenerationJob(torch.nn.Module(), None, torch.nn.Module(), [request], None, tmp_path, 16, [2.0, 2.0])
