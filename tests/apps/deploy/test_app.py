"""The MONAI Deploy app end to end, in its own environment (``make deploy-env``): a CT series with real UIDs in,
``python apps/deploy -i -o -m`` with tiny models, a derived synthetic series out with the input's geometry, changed
only inside the soft mask, marked and with its provenance; bad requests and series no rule selects end the run
with one clear line and write nothing."""

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
from tests.helpers.dicom_uids import series_with_uids
from tests.helpers.paths import CT_DICOM, REPO
from tests.helpers.tiny_bundle import TINY_SPATIAL_SIZE, make_tiny_models

pytestmark = pytest.mark.usefixtures("shared_data")

DEPLOY_PYTHON = REPO / ".venv-deploy" / "bin" / "python"
TEXT = "a hypointense lesion in the vertebral body"
BOX_LPS = [[-55.0, -243.0, -800.0], [45.0, -143.0, -780.0]]  # patient mm, inside the CT series' body


@pytest.fixture(scope="module")
def deploy_python() -> Path:
    if not (DEPLOY_PYTHON.parent.parent / ".installed").is_file():
        pytest.fail(f"the MONAI Deploy environment {DEPLOY_PYTHON.parent.parent} is missing: run `make deploy-env`")
    return DEPLOY_PYTHON


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("deploy")
    make_tiny_models(root / "models")
    series_with_uids(CT_DICOM, root / "ct")
    return root


def request_file(work: Path, path: Path, **content) -> Path:
    settings = {"models_dir": str(work / "models"), "spatial_size": TINY_SPATIAL_SIZE, "num_inference_steps": 2}
    path.write_text(json.dumps({**content, "settings": settings}))
    return path


def run_app(python: Path, dicom: Path, output: Path, request: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "SYNTHESIS_REQUEST_FILE": str(request), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("SYNTHESIS_REQUEST", None)
    command = [str(python), "-W", "ignore", str(REPO / "apps" / "deploy"), "-i", str(dicom), "-o", str(output)]
    return subprocess.run(
        [*command, "-m", str(REPO)], cwd=output.parent, env=env, capture_output=True, text=True, timeout=600
    )


def error_lines(result: subprocess.CompletedProcess) -> list[str]:
    """The app's own error report (Holoscan logs its teardown on stderr after it)."""
    return [line for line in result.stderr.splitlines() if line.startswith("error: ")]


def by_position(folder: Path) -> dict[float, pydicom.Dataset]:
    return {float(d.ImagePositionPatient[2]): d for d in map(pydicom.dcmread, sorted(folder.iterdir()))}


def hounsfield(dataset: pydicom.Dataset) -> np.ndarray:
    return dataset.pixel_array * float(dataset.RescaleSlope) + float(dataset.RescaleIntercept)


def patient_mm(dataset: pydicom.Dataset, rows: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """LPS positions (N, 3) of pixels (row, column) of one instance."""
    orientation = np.asarray(dataset.ImageOrientationPatient, float)
    row_spacing, column_spacing = map(float, dataset.PixelSpacing)
    return (
        np.asarray(dataset.ImagePositionPatient, float)
        + np.outer(columns * column_spacing, orientation[:3])
        + np.outer(rows * row_spacing, orientation[3:])
    )


def soft_mask_at(ct: Path, box_ras: list, positions_lps: np.ndarray) -> np.ndarray:
    """The bundle's soft mask of the box on the series' own grid, at LPS positions."""
    sigma = common_settings(REPO)["soft_mask_sigma_mm"]
    entry = {"image": str(ct), "box": box_ras, "coordinate_space": "world"}
    soft = Compose([LoadVolumed(["image"]), SoftMaskFromSourced(sigma_mm=sigma)])(entry)["soft_mask"]
    ras = positions_lps * [-1, -1, 1]
    voxels = np.linalg.solve(np.asarray(soft.affine, float), np.c_[ras, np.ones(len(ras))].T)[:3].T
    return soft[0].numpy()[tuple(np.rint(voxels).astype(int).T)]


def test_the_app_writes_a_derived_synthetic_series_changed_only_in_the_mask(deploy_python, work, tmp_path):
    request = request_file(work, tmp_path / "request.json", text=TEXT, box=BOX_LPS, seed=1)
    started = time.perf_counter()
    result = run_app(deploy_python, work / "ct", tmp_path / "out", request)
    print(f"MONAI Deploy app run: {time.perf_counter() - started:.1f} s")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = tmp_path / "out"
    names = ["series_1_synthetic", "series_1_synthetic.json", "series_1_synthetic.png"]
    names.append("series_1_synthetic_provenance_sr.dcm")
    assert sorted(p.name for p in out.iterdir()) == names

    sources, written = by_position(work / "ct"), by_position(out / "series_1_synthetic")
    assert sorted(written) == sorted(sources)  # the same slice positions
    changed_positions = []
    for z, dataset in written.items():
        source = sources[z]
        for tag in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "Rows", "Columns"):
            assert dataset[tag].value == source[tag].value, tag
        assert list(dataset.ImageType[:2]) == ["DERIVED", "SECONDARY"]
        assert dataset.DerivationDescription == f"{SYNTHETIC_DESCRIPTION}: {TEXT}"
        assert dataset.SeriesDescription.startswith("SYNTHETIC") and dataset.PatientIdentityRemoved == "YES"
        assert dataset.SeriesInstanceUID != source.SeriesInstanceUID
        assert dataset.SOPInstanceUID != source.SOPInstanceUID
        rows, columns = np.nonzero(np.abs(hounsfield(dataset) - hounsfield(source)) > 1e-3)
        changed_positions.append(patient_mm(dataset, rows, columns))
    assert len({d.SeriesInstanceUID for d in written.values()}) == 1
    assert len({d.SOPInstanceUID for d in written.values()}) == len(written)
    changed = np.concatenate(changed_positions)
    assert len(changed) > 100  # a lesion was inserted
    assert (soft_mask_at(work / "ct", [[55, 243, -800], [-45, 143, -780]], changed) > 0).all()

    record = json.loads((out / "series_1_synthetic.json").read_text())
    assert record["synthetic"] is True and record["text"] == TEXT and record["input"]["format"] == "dicom_series"
    assert record["mask_source"] == {
        "type": "box",
        "box": [[55.0, 243.0, -800.0], [-45.0, 143.0, -780.0]],  # the request's LPS box in RAS
        "space": "world",
        "sigma_mm": record["mask_source"]["sigma_mm"],
    }
    assert record["output"] == str(out / "series_1_synthetic") and record["num_inference_steps"] == 2
    assert record["models_dir"] == str(work / "models")
    assert_provenance_sr(pydicom.dcmread(out / "series_1_synthetic_provenance_sr.dcm"), record, written)


def assert_provenance_sr(report: pydicom.Dataset, record: dict, series: dict[float, pydicom.Dataset]) -> None:
    """The SR joins the synthetic series' (de-identified) study, lists its instances as evidence and carries the
    record's algorithm, text and parameters."""
    first = next(iter(series.values()))
    assert report.Modality == "SR" and report.SOPClassUID == pydicom.uid.EnhancedSRStorage
    assert (report.StudyInstanceUID, report.PatientID) == (first.StudyInstanceUID, first.PatientID)
    assert report.SeriesInstanceUID != first.SeriesInstanceUID
    [evidence] = report.CurrentRequestedProcedureEvidenceSequence
    [referenced] = evidence.ReferencedSeriesSequence
    assert referenced.SeriesInstanceUID == first.SeriesInstanceUID
    assert {item.ReferencedSOPInstanceUID for item in referenced.ReferencedSOPSequence} == {
        d.SOPInstanceUID for d in series.values()
    }
    items = {item.ConceptNameCodeSequence[0].CodeValue: item for item in report.ContentSequence}
    assert items["111001"].TextValue == "MedSoft-Diffusion"  # DCM Algorithm Name
    assert items["121401"].TextValue == f"{SYNTHETIC_DESCRIPTION}: {TEXT}"  # DCM Derivation
    parameters = json.loads(items["111002"].TextValue)  # DCM Algorithm Parameters
    assert parameters["seed"] == record["seed"] and parameters["mask_source"] == record["mask_source"]


def test_a_request_without_text_ends_the_run_naming_the_file_and_writes_nothing(deploy_python, work, tmp_path):
    request = request_file(work, tmp_path / "no_text.json", box=BOX_LPS)
    result = run_app(deploy_python, work / "ct", tmp_path / "out", request)
    assert result.returncode == 2, result.stdout[-3000:] + result.stderr[-3000:]
    assert error_lines(result) == [
        f"error: {request}: no text: the request needs 'text', the lesion to insert (e.g. 'a 10 mm lesion')"
    ]
    assert not any((tmp_path / "out").iterdir())


def test_a_series_no_rule_selects_ends_the_run_naming_the_input(deploy_python, work, tmp_path):
    axial_mr = series_with_uids(CT_DICOM, tmp_path / "axial_mr", sop_class=pydicom.uid.MRImageStorage, Modality="MR")
    request = request_file(work, tmp_path / "request.json", text=TEXT, box=BOX_LPS)
    result = run_app(deploy_python, axial_mr, tmp_path / "out", request)
    assert result.returncode == 2, result.stdout[-3000:] + result.stderr[-3000:]
    [error] = error_lines(result)
    assert (
        error.startswith(f"error: {axial_mr}: no DICOM series matched the selection rules") and "sagittal MR" in error
    )
    assert not any((tmp_path / "out").iterdir())
