"""Each bad input gets a clear error naming the file and the problem; the other cases still complete and
nothing is left half-written."""

from __future__ import annotations

import gzip
import re

import nibabel as nib
import numpy as np
import pytest

from bundle.errors import InputError
from bundle.io.volume_writer import write_dicom_series
from bundle.transforms.loading import LoadVolume
from tests.helpers.paths import CT_DICOM, SCT_LEVELS, SCT_T2, TOTALSEG_MR_SEG
from tests.helpers.workflows import run_job, write_datalist


@pytest.fixture()
def bad_files(tmp_path, shared_data):
    original = nib.load(str(SCT_T2))
    data = np.asanyarray(original.dataobj)
    files = {}
    files["corrupt"] = tmp_path / "corrupt.nii.gz"
    files["corrupt"].write_bytes(gzip.compress(b"this is not a NIfTI header" * 20))
    files["truncated"] = tmp_path / "truncated.nii.gz"
    files["truncated"].write_bytes(SCT_T2.read_bytes()[:2000])
    with_nan = data.astype(np.float32)
    with_nan[30, 27, 26] = np.nan
    files["nan"] = tmp_path / "nan.nii.gz"
    nib.save(nib.Nifti1Image(with_nan, original.affine), str(files["nan"]))
    files["four_d"] = tmp_path / "four_d.nii.gz"
    nib.save(nib.Nifti1Image(np.stack([data, data], axis=-1), original.affine), str(files["four_d"]))
    files["two_d"] = tmp_path / "two_d.nii.gz"
    nib.save(nib.Nifti1Image(data[:, :, 26], original.affine), str(files["two_d"]))
    return files


def test_bad_cases_are_reported_and_the_good_one_is_written(shared_data, tmp_path, bad_files):
    good = {"image": str(SCT_T2), "vertebra_seg": str(SCT_LEVELS), "mask_labels": [3], "text": "lesion"}
    cases = {
        "missing_file": ({**good, "image": str(tmp_path / "absent.nii.gz")}, r"absent\.nii\.gz: file not found"),
        "corrupt": ({**good, "image": str(bad_files["corrupt"])}, r"corrupt\.nii\.gz: cannot be read as an image"),
        "truncated": ({**good, "image": str(bad_files["truncated"])}, r"truncated\.nii\.gz: cannot be read"),
        "grid_mismatch": (
            {**good, "vertebra_seg": str(TOTALSEG_MR_SEG), "mask_labels": [19]},
            r"example_seg_mr\.nii\.gz: grid \(117, 91, 20\) \(LPS\) does not match the image grid \(60, 55, 52\)",
        ),
        "empty_mask": ({**good, "mask_labels": [7]}, r"labeled\.nii\.gz: empty mask: none of the labels \[7\]"),
        "nan": (
            {**good, "image": str(bad_files["nan"]), "vertebra_seg": None, "point": [30, 27, 26]},
            r"nan\.nii\.gz: 1 voxels are NaN or infinite",
        ),
        "four_d": (
            {**good, "image": str(bad_files["four_d"]), "vertebra_seg": None, "point": [30, 27, 26]},
            r"four_d\.nii\.gz: 4-D input: 2 volumes",
        ),
        "two_d": (
            {**good, "image": str(bad_files["two_d"]), "vertebra_seg": None, "point": [30, 27, 0]},
            r"two_d\.nii\.gz: 2-D image \(60, 55\), expected a 3-D volume",
        ),
        "missing_text": ({**good, "text": "  "}, r"missing_text: missing lesion text"),
        "no_mask_source": ({**good, "mask_labels": []}, r"no_mask_source: no soft-mask source"),
        "good": (good, None),
    }
    entries = [{**entry, "case_id": name} for name, (entry, _) in cases.items()]
    output_dir = tmp_path / "out"
    report = run_job(write_datalist(tmp_path / "list.json", entries), output_dir)
    failures = {failure["case_id"]: failure["error"] for failure in report["failed"]}
    assert set(failures) == set(cases) - {"good"}
    for name, (_, pattern) in cases.items():
        if pattern:
            assert re.search(pattern, failures[name]), (name, failures[name])
    assert [w["case_id"] for w in report["written"]] == ["good"]
    left = sorted(p.name for p in output_dir.iterdir())
    assert left == [
        "good_synthetic.json",
        "good_synthetic.nii.gz",
        "good_synthetic.png",
        "good_synthetic_thumbnail.png",
        "report.json",
    ]


def test_loader_messages_name_the_file(tmp_path, bad_files):
    with pytest.raises(InputError) as raised:
        LoadVolume()(bad_files["four_d"])
    assert raised.value.source == str(bad_files["four_d"]) and "4-D input" in raised.value.problem


def test_failed_dicom_write_leaves_no_partial_folder(shared_data, tmp_path):
    """A DICOM folder whose files do not match the loaded grid fails as a whole: no folder is left behind."""
    with pytest.raises(InputError, match="matches none of the 20 loaded slices"):
        write_dicom_series(CT_DICOM, tmp_path / "out_synthetic", np.zeros((512, 512, 20)), np.eye(4) * 100, "x")
    assert list(tmp_path.iterdir()) == []
