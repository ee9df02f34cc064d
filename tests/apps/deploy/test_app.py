"""The MONAI Deploy app end to end, in its own environment (``make deploy-env``): DICOM series with real UIDs in,
``python apps/deploy -i -o -m`` with tiny models, a derived synthetic series out with the input's geometry, changed
only inside the soft mask, marked, with its provenance (JSON and DICOM SR); bad requests and series no rule selects
end the run with one clear line and write nothing."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
from monai.transforms import Compose

from bundle.io.synthetic_dicom import SYNTHETIC_DESCRIPTION
from bundle.transforms.loading import LoadVolumed
from bundle.transforms.soft_mask import SoftMaskFromSourced
from bundle.utils.bundle_files import common_settings
from tests.helpers.dicom_series import mr_series_from_nifti, series_with_uids
from tests.helpers.paths import CT_DICOM, REPO, SCT_LEVELS, SCT_T2
from tests.helpers.tiny_bundle import TINY_SPATIAL_SIZE, make_tiny_models

pytestmark = pytest.mark.usefixtures("shared_data")

DEPLOY_ENV = REPO / ".venv-deploy"
TEXT = "a hypointense lesion in the vertebral body"
BOX_LPS = [[-55.0, -243.0, -800.0], [45.0, -143.0, -780.0]]  # patient mm, in the CT series' body
BOX_RAS = [[55.0, 243.0, -800.0], [-45.0, 143.0, -780.0]]
SETTINGS = {"spatial_size": TINY_SPATIAL_SIZE, "num_inference_steps": 2}
GEOMETRY = ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "SliceThickness", "Rows", "Columns")


@pytest.fixture(scope="module")
def deploy_python() -> Path:
    if not (DEPLOY_ENV / ".installed").is_file():
        pytest.fail(f"the MONAI Deploy environment {DEPLOY_ENV} is missing: run `make deploy-env`")
    return DEPLOY_ENV / "bin" / "python"


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    return make_tiny_models(tmp_path_factory.mktemp("deploy") / "models")


def run_app(
    python: Path, dicom: Path, output: Path, model: Path = REPO, **request_env: str
) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNTHESIS_REQUEST")}
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", **request_env)
    command = [str(python), "-W", "ignore", str(REPO / "apps" / "deploy"), "-i", str(dicom), "-o", str(output)]
    started = time.perf_counter()
    result = subprocess.run(
        [*command, "-m", str(model)], cwd=output.parent, env=env, capture_output=True, text=True, timeout=600
    )
    print(f"MONAI Deploy app run on {dicom.name}: {time.perf_counter() - started:.1f} s")
    return result


def assert_wrote(result: subprocess.CompletedProcess, out: Path, series: str, with_sr: bool) -> Path:
    """The run succeeded and ``out`` holds exactly the series folder, its provenance JSON, preview, thumbnail (and
    SR)."""
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    expected = [series, f"{series}.json", f"{series}.png"] + [f"{series}_provenance_sr.dcm"] * with_sr
    expected.append(f"{series}_thumbnail.png")  # the review gallery's strip
    assert sorted(p.name for p in out.iterdir()) == expected
    return out


def error_lines(result: subprocess.CompletedProcess) -> list[str]:
    """The app's own error report (Holoscan logs its teardown on stderr after it)."""
    assert result.returncode == 2, result.stdout[-3000:] + result.stderr[-3000:]
    return [line for line in result.stderr.splitlines() if line.startswith("error: ")]


def pixels(dataset: pydicom.Dataset) -> np.ndarray:
    return dataset.pixel_array * float(dataset.get("RescaleSlope", 1)) + float(dataset.get("RescaleIntercept", 0))


def assert_derived_series(
    written: Path, source: Path, files: str = "*.dcm"
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Check the synthetic series against its source, instance by instance (matched by position): the geometry
    tags equal, DERIVED and SYNTHETIC marks, new UIDs, one series. ``files`` selects the source's instances in its
    folder. Returns the changed (rows, columns) per source file name."""
    sources = {tuple(d.ImagePositionPatient): d for d in map(pydicom.dcmread, sorted(source.glob(files)))}
    outputs = [pydicom.dcmread(path) for path in sorted(written.iterdir())]
    assert sorted(tuple(d.ImagePositionPatient) for d in outputs) == sorted(sources)  # the same slice positions
    changed = {}
    for dataset in outputs:
        original = sources[tuple(dataset.ImagePositionPatient)]
        assert all(dataset[tag].value == original[tag].value for tag in GEOMETRY)
        assert list(dataset.ImageType[:2]) == ["DERIVED", "SECONDARY"]
        assert dataset.DerivationDescription == f"{SYNTHETIC_DESCRIPTION}: {TEXT}"
        assert dataset.SeriesDescription.startswith("SYNTHETIC") and dataset.PatientIdentityRemoved == "YES"
        assert dataset.SOPInstanceUID != original.SOPInstanceUID
        assert dataset.SeriesInstanceUID != original.SeriesInstanceUID
        assert dataset.StudyInstanceUID != original.StudyInstanceUID
        changed[Path(original.filename).name] = np.nonzero(np.abs(pixels(dataset) - pixels(original)) > 1e-3)
    assert len({d.SeriesInstanceUID for d in outputs}) == 1 and len({d.SOPInstanceUID for d in outputs}) == len(outputs)
    assert sum(len(rows) for rows, _ in changed.values()) > 50  # a lesion was inserted
    return changed


def soft_mask(entry: dict) -> np.ndarray:
    """The bundle's soft mask of a datalist-style entry on its image's own grid, and that grid's affine."""
    sigma = common_settings(REPO)["soft_mask_sigma_mm"]
    loaded = Compose(
        [LoadVolumed(["image", "vertebra_seg"], allow_missing_keys=True), SoftMaskFromSourced(sigma_mm=sigma)]
    )
    mask = loaded(entry)["soft_mask"]
    return mask[0].numpy(), np.asarray(mask.affine, float)


def assert_sr(report: pydicom.Dataset, record: dict, series: Path) -> None:
    """The provenance SR joins the synthetic series' (de-identified) study, lists its instances as evidence and
    carries the record's algorithm, text and parameters."""
    instances = [pydicom.dcmread(path, stop_before_pixels=True) for path in sorted(series.iterdir())]
    assert report.Modality == "SR" and report.SOPClassUID == pydicom.uid.EnhancedSRStorage
    assert (report.StudyInstanceUID, report.PatientID) == (instances[0].StudyInstanceUID, instances[0].PatientID)
    assert report.SeriesInstanceUID != instances[0].SeriesInstanceUID
    [evidence] = report.CurrentRequestedProcedureEvidenceSequence
    [referenced] = evidence.ReferencedSeriesSequence
    assert referenced.SeriesInstanceUID == instances[0].SeriesInstanceUID
    assert {i.ReferencedSOPInstanceUID for i in referenced.ReferencedSOPSequence} == {
        d.SOPInstanceUID for d in instances
    }
    items = {item.ConceptNameCodeSequence[0].CodeValue: item for item in report.ContentSequence}
    assert items["111001"].TextValue == "MedSoft-Diffusion"  # DCM Algorithm Name
    assert items["121401"].TextValue == f"{SYNTHETIC_DESCRIPTION}: {TEXT}"  # DCM Derivation
    parameters = json.loads(items["111002"].TextValue)  # DCM Algorithm Parameters
    assert parameters["seed"] == record["seed"] and parameters["mask_source"] == record["mask_source"]


def test_sagittal_mr_is_chosen_over_ct_and_synthesized_inside_a_segmentation(deploy_python, models, tmp_path):
    # one folder holds both series, of two studies: the app reads a staged copy of the selected one's files
    mr = mr_series_from_nifti(SCT_T2, tmp_path / "study")
    series_with_uids(CT_DICOM, tmp_path / "study")
    request = tmp_path / "request.json"
    segmentation = {"segmentation": str(SCT_LEVELS), "mask_labels": [3]}
    request.write_text(
        json.dumps({"text": TEXT, **segmentation, "seed": 1, "settings": {**SETTINGS, "models_dir": str(models)}})
    )
    result = run_app(deploy_python, tmp_path / "study", tmp_path / "out", SYNTHESIS_REQUEST_FILE=str(request))
    out = assert_wrote(result, tmp_path / "out", "series_2_synthetic", with_sr=True)
    assert "sagittal MR series" in result.stderr + result.stdout
    changed = assert_derived_series(out / "series_2_synthetic", mr, files="mr_*.dcm")
    # instance k holds voxels (column, row, k) of the NIfTI volume: the change lies where its soft mask is > 0
    mask, _ = soft_mask({"image": str(SCT_T2), "vertebra_seg": str(SCT_LEVELS), "mask_labels": [3]})
    for name, (rows, columns) in changed.items():
        assert (mask[columns, rows, int(Path(name).stem.removeprefix("mr_"))] > 0).all(), name
    record = json.loads((out / "series_2_synthetic.json").read_text())
    assert record["synthetic"] is True and record["text"] == TEXT and record["input"]["format"] == "dicom_series"
    assert record["mask_source"]["type"] == "segmentation" and record["output"] == str(out / "series_2_synthetic")
    assert record["models_dir"] == str(models) and record["num_inference_steps"] == 2
    assert_sr(pydicom.dcmread(out / "series_2_synthetic_provenance_sr.dcm"), record, out / "series_2_synthetic")


def test_ct_with_a_box_in_patient_mm_from_the_environment(deploy_python, models, tmp_path):
    ct = series_with_uids(CT_DICOM, tmp_path / "ct")
    request = {
        "text": TEXT,
        "box": BOX_LPS,
        "provenance_sr": False,
        "settings": {**SETTINGS, "models_dir": str(models)},
    }
    # -m names a folder holding the bundle, as a packaged app's /opt/holoscan/models does
    (tmp_path / "map_models").mkdir()
    (tmp_path / "map_models" / "spine_mri_lesion_synthesis").symlink_to(REPO, target_is_directory=True)
    result = run_app(
        deploy_python, ct, tmp_path / "out", tmp_path / "map_models", SYNTHESIS_REQUEST=json.dumps(request)
    )
    # the series alone in its folder: read in place, the output named after it
    out = assert_wrote(result, tmp_path / "out", "ct_synthetic", with_sr=False)
    changed = assert_derived_series(out / "ct_synthetic", ct)
    # the change lies where the soft mask of the box (the request's LPS box in the bundle's RAS) is > 0
    mask, affine = soft_mask({"image": str(ct), "box": BOX_RAS, "coordinate_space": "world"})
    for name, (rows, columns) in changed.items():
        source = pydicom.dcmread(ct / name, stop_before_pixels=True)
        orientation, (row_mm, column_mm) = np.asarray(source.ImageOrientationPatient, float), source.PixelSpacing
        lps = np.asarray(source.ImagePositionPatient, float) + np.outer(columns * column_mm, orientation[:3])
        lps += np.outer(rows * row_mm, orientation[3:])
        ras = lps * [-1, -1, 1]
        voxels = np.rint(np.linalg.solve(affine, np.c_[ras, np.ones(len(ras))].T)[:3]).astype(int)
        assert (mask[tuple(voxels)] > 0).all(), name
    record = json.loads((out / "ct_synthetic.json").read_text())
    assert record["mask_source"]["type"] == "box" and record["mask_source"]["box"] == BOX_RAS
    assert record["input"]["path"] == str(ct)


def test_a_request_without_text_ends_the_run_naming_the_file_and_writes_nothing(deploy_python, models, tmp_path):
    request = tmp_path / "no_text.json"
    request.write_text(json.dumps({"box": BOX_LPS, "settings": {"models_dir": str(models)}}))
    result = run_app(deploy_python, CT_DICOM, tmp_path / "out", SYNTHESIS_REQUEST_FILE=str(request))
    assert error_lines(result) == [
        f"error: {request}: no text: the request needs 'text', the lesion to insert (e.g. 'a 10 mm lesion')"
    ]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("case", ["axial MR", "sagittal MR without PatientPosition"])
def test_a_series_no_rule_can_select_ends_the_run_naming_the_input(deploy_python, models, tmp_path, case):
    if case == "axial MR":
        series = series_with_uids(CT_DICOM, tmp_path / "mr", sop_class=pydicom.uid.MRImageStorage, Modality="MR")
        expected = f"error: {series}: no DICOM series matched the selection rules"
    else:
        series = mr_series_from_nifti(SCT_T2, tmp_path / "mr", patient_position="")
        expected = f"error: {series}: a series cannot be matched to the selection rules: PatientPosition tag absent"
    request = {"text": TEXT, "box": BOX_LPS, "settings": {**SETTINGS, "models_dir": str(models)}}
    result = run_app(deploy_python, series, tmp_path / "out", SYNTHESIS_REQUEST=json.dumps(request))
    [error] = error_lines(result)
    assert error.startswith(expected), error
    assert not any((tmp_path / "out").iterdir())
