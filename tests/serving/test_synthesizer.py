"""The serving API: the network loaded once, one synthetic volume per request (NIfTI, DICOM; segmentation, box,
point), bit-identical to the command line, bad input raised as InputError, concurrent requests served one by one."""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nibabel as nib
import pydicom
import pytest

import bundle.networks.medsoft_diffusion as medsoft_diffusion
from bundle.errors import InputError
from bundle.serving import Synthesizer
from tests.helpers.paths import CONFIGS, CT_DICOM, CT_DICOM_SEG, REPO, SCT_LEVELS, SCT_T2, T12_LABEL
from tests.helpers.synthesis_checks import assert_changed_in_mask_only, voxels
from tests.helpers.tiny_bundle import TINY_SPATIAL_SIZE, make_tiny_models
from tests.helpers.workflows import bundle_run

pytestmark = pytest.mark.usefixtures("one_torch_thread", "shared_data")

STEPS = 2
TEXT = "a 10 mm hyperintense lesion in the vertebral body"
BOX = [[20, 20, 20], [40, 40, 30]]  # voxels of SCT_T2 (60 x 55 x 52)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    return make_tiny_models(tmp_path_factory.mktemp("serving") / "models")


@pytest.fixture(scope="module")
def synthesizer(models) -> Synthesizer:
    return Synthesizer(REPO, models_dir=str(models), spatial_size=TINY_SPATIAL_SIZE, num_inference_steps=STEPS)


def test_a_request_equals_the_command_line_bit_for_bit(synthesizer, models, tmp_path, monkeypatch):
    served = synthesizer.synthesize(SCT_T2, TEXT, tmp_path / "served", box=BOX, seed=7)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # one torch thread, as here: a float sum's bits depend on the threads
    bundle_run(
        "--config_file",
        str(CONFIGS / "inference.json"),
        "--models_dir",
        str(models),
        "--spatial_size",
        str(TINY_SPATIAL_SIZE),
        "--num_inference_steps",
        str(STEPS),
        "--image",
        str(SCT_T2),
        "--text",
        TEXT,
        "--box",
        json.dumps(BOX),
        "--seed",
        "7",
        "--output_dir",
        str(tmp_path / "cli"),
    )
    command_line = tmp_path / "cli" / served.volume.name
    assert voxels(served.volume).tobytes() == voxels(command_line).tobytes()
    assert nib.load(str(served.volume)).header.binaryblock == nib.load(str(command_line)).header.binaryblock
    record, cli_record = served.record, json.loads(command_line.with_name("t2_synthetic.json").read_text())
    assert record["seed"] == cli_record["seed"] and record["mask_source"] == cli_record["mask_source"]
    # another seed gives another lesion: the equality above is not that of an unchanged input
    other = synthesizer.synthesize(SCT_T2, TEXT, tmp_path / "other", box=BOX, seed=8)
    assert voxels(other.volume).tobytes() != voxels(served.volume).tobytes()


def test_nifti_with_a_segmentation_keeps_the_geometry_and_changes_the_mask_only(synthesizer, tmp_path):
    served = synthesizer.synthesize(SCT_T2, TEXT, tmp_path, mask=SCT_LEVELS, mask_labels=[3])
    assert served.volume == tmp_path / "t2_synthetic.nii.gz" and served.preview.is_file()
    assert_changed_in_mask_only(served.volume, SCT_T2, {"vertebra_seg": str(SCT_LEVELS), "mask_labels": [3]})
    record = served.record
    assert record["mask_source"]["type"] == "segmentation" and record["text"] == TEXT and record["synthetic"]


def test_a_doubtful_result_is_returned_with_its_warnings_and_logged(synthesizer, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="bundle.serving.synthesizer"):
        # every change below the whole intensity range counts as negligible: this result is doubtful
        doubtful = synthesizer.synthesize(SCT_T2, TEXT, tmp_path / "doubtful", box=BOX, warn_min_change=1.0)
    warned = {w["code"]: w for w in doubtful.warnings}
    assert warned["negligible_change"]["threshold"] == 1.0 and 0 < warned["negligible_change"]["measured"] < 1.0
    assert doubtful.warnings == doubtful.record["warnings"] and doubtful.thumbnail.is_file()
    measured = warned["negligible_change"]["measured"]
    logged = [r.getMessage() for r in caplog.records if r.name == "bundle.serving.synthesizer"]
    assert any(
        "negligible_change" in m and f"measured {measured}, threshold 1.0" in m and str(doubtful.volume) in m
        for m in logged
    )
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="bundle.serving.synthesizer"):
        plain = synthesizer.synthesize(SCT_T2, TEXT, tmp_path / "plain", box=BOX, warn_min_change=0.0)
    assert "negligible_change" not in {w["code"] for w in plain.warnings}
    assert not any("negligible_change" in r.getMessage() for r in caplog.records)


def test_box_and_point_sources(synthesizer, tmp_path):
    box = synthesizer.synthesize(SCT_T2, TEXT, tmp_path / "box", box=BOX)
    assert_changed_in_mask_only(box.volume, SCT_T2, {"box": BOX})
    point = synthesizer.synthesize(SCT_T2, TEXT, tmp_path / "point", point=[30, 30, 25], box_size_mm=15)
    assert_changed_in_mask_only(point.volume, SCT_T2, {"point": [30, 30, 25], "box_size_mm": 15})
    assert (box.record["mask_source"]["type"], point.record["mask_source"]["type"]) == ("box", "point")


def test_dicom_series_in_a_derived_synthetic_series_out(synthesizer, tmp_path):
    served = synthesizer.synthesize(CT_DICOM, TEXT, tmp_path, box=[[200, 200, 6], [300, 300, 12]])
    assert served.volume == tmp_path / "ct_dicom_synthetic" and served.record["input"]["format"] == "dicom_series"
    originals = {float(d.ImagePositionPatient[2]): d for d in map(pydicom.dcmread, CT_DICOM.iterdir())}
    written = [pydicom.dcmread(path) for path in sorted(served.volume.iterdir())]
    assert sorted(float(d.ImagePositionPatient[2]) for d in written) == sorted(originals)
    changed = 0
    for dataset in written:
        original = originals[float(dataset.ImagePositionPatient[2])]
        assert list(dataset.ImageType[:2]) == ["DERIVED", "SECONDARY"]
        assert dataset.pixel_array.shape == original.pixel_array.shape
        changed += int((dataset.pixel_array != original.pixel_array).sum())
    assert 0 < changed < 0.05 * 512 * 512 * 20  # a lesion, not a new image


@pytest.mark.parametrize(
    "request_, message",
    [
        ({"image": "missing.nii.gz", "box": BOX}, r"missing\.nii\.gz"),
        ({"box": BOX, "text": "  "}, r"text"),
        ({"box": None}, r"mask source|soft-mask source|mask, box or point"),
        ({"mask": CT_DICOM / "missing_seg.nii.gz", "mask_labels": [1]}, r"missing_seg\.nii\.gz"),
        ({"mask": CT_DICOM_SEG, "mask_labels": [T12_LABEL]}, r"ct_dicom_seg\.nii\.gz"),
        ({"image": None, "box": BOX}, r"no image given"),
    ],
)
def test_bad_input_raises_the_bundles_input_error_and_writes_nothing(synthesizer, tmp_path, request_, message):
    arguments = {"image": SCT_T2, "text": TEXT, "output_dir": tmp_path / "out", **request_}
    with pytest.raises(InputError, match=message):
        synthesizer.synthesize(**arguments)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_a_missing_models_folder_raises_the_input_error(tmp_path):
    with pytest.raises(InputError, match="nowhere"):
        Synthesizer(REPO, models_dir=str(tmp_path / "nowhere"))


def test_the_network_is_loaded_once_for_many_concurrent_requests(models, tmp_path, monkeypatch):
    loads = []

    def counted(*args, **kwargs):
        loads.append(args)
        return load_trained(*args, **kwargs)

    load_trained = medsoft_diffusion.load_trained
    monkeypatch.setattr(medsoft_diffusion, "load_trained", counted)
    served = Synthesizer(REPO, models_dir=str(models), spatial_size=TINY_SPATIAL_SIZE, num_inference_steps=STEPS)
    seeds = [1, 2, 3]
    one_by_one = [served.synthesize(SCT_T2, TEXT, tmp_path / f"seq{s}", box=BOX, seed=s) for s in seeds]
    with ThreadPoolExecutor(max_workers=3) as pool:
        together = list(
            pool.map(lambda s: served.synthesize(SCT_T2, TEXT, tmp_path / f"par{s}", box=BOX, seed=s), seeds)
        )
    assert len(loads) == 1
    for alone, concurrent in zip(one_by_one, together, strict=True):
        assert voxels(alone.volume).tobytes() == voxels(concurrent.volume).tobytes()
    assert len({voxels(result.volume).tobytes() for result in together}) == 3
