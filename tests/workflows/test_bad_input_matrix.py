"""The rest of the bad-input matrix (docs/bad_inputs.md): bad DICOM series, huge volumes, masks in the air,
NaN / Inf, negative 16-bit images, NIfTI files of other voxel types, scalings, shapes and broken affines, malformed
datalists and entry fields, unsafe patient ids, over-long texts, checkpoints of another architecture and
checkpoints that carry code. Each refusal names the file or case and the problem; in a batch the other cases
still complete and nothing half-written is left."""

from __future__ import annotations

import ast
import gzip
import json
import logging
import os
import pickle
import re
import shutil
import time
import tracemalloc
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from ignite.engine import Engine
from safetensors.torch import save_file
from scipy import ndimage

from bundle.data.datalist import load_datalist
from bundle.errors import InputError
from bundle.transforms.loading import LoadVolume
from bundle.utils.files import safe_case_name
from tests.helpers.bad_inputs import GOOD_CT, assert_refused, copy_series, set_tags
from tests.helpers.paths import CT_DICOM, REPO, SCT_LEVELS, SCT_T2, TOTALSEG_MR
from tests.helpers.workflows import run_job, write_datalist

IDENTITY = {"predictor#key": "image"}

GOOD_SCT = {"image": str(SCT_T2), "vertebra_seg": str(SCT_LEVELS), "mask_labels": [3], "text": "lesion"}
NIFTI_OUTPUTS = ("_synthetic.json", "_synthetic.nii.gz", "_synthetic.png", "_synthetic_thumbnail.png")


# ------------------------------------------------------------------ DICOM series
@pytest.fixture()
def bad_series(tmp_path, shared_data):
    series = {}
    folder, files = copy_series(tmp_path, "truncated")
    files[5].write_bytes(files[5].read_bytes()[:60000])  # cut inside the compressed pixel data
    series["truncated"] = (folder, files[5].name)
    folder, files = copy_series(tmp_path, "corrupt")
    (folder / "IM_0099.dcm").write_bytes(b"this is not DICOM " * 500)
    series["corrupt"] = (folder, "IM_0099.dcm")
    folder, files = copy_series(tmp_path, "two_series")
    for path in files:
        set_tags(path, SeriesInstanceUID="1.2.826.0.1.3680043.8.498.1")
    for path in files[:5]:
        set_tags(
            path,
            folder / f"bone_{path.name}",
            SeriesInstanceUID="1.2.826.0.1.3680043.8.498.2",
            SeriesDescription="CT Bone 1.0",
            SOPInstanceUID=pydicom.uid.generate_uid(),
        )
    series["two_series"] = (folder, None)
    folder, files = copy_series(tmp_path, "mixed_thickness")
    for path in files[:10]:
        set_tags(path, SliceThickness="5")
    series["mixed_thickness"] = (folder, None)
    folder, files = copy_series(tmp_path, "missing_slice")
    files[10].unlink()
    series["missing_slice"] = (folder, None)
    return series


def test_bad_dicom_series_are_refused_and_the_good_series_is_written(shared_data, tmp_path, bad_series):
    expected = {
        "truncated": rf"truncated/{re.escape(bad_series['truncated'][1])}: no pixel data: the file is truncated",
        "corrupt": r"corrupt/IM_0099\.dcm: not a DICOM file",
        "two_series": r"two_series: 2 DICOM series in one folder: 1\.2\.826\.0\.1\.3680043\.8\.498\.1 \(20 files, "
        r"'CT Body 3\.0'\); 1\.2\.826\.0\.1\.3680043\.8\.498\.2 \(5 files, 'CT Bone 1\.0'\); move each "
        r"series into its own folder",
        "mixed_thickness": r"mixed_thickness: mixed slice thickness: 3 mm \(10 files\), 5 mm \(10 files\)",
        "missing_slice": r"missing_slice: non-uniform slice spacing: 2 mm \(17 gaps\), 4 mm \(1 gap\) between 19 "
        r"slice positions",
    }
    entries = [{**GOOD_CT, "image": str(folder), "case_id": name} for name, (folder, _) in bad_series.items()]
    entries.append({**GOOD_CT, "case_id": "ct_good"})
    output_dir = tmp_path / "out"
    report = run_job(write_datalist(tmp_path / "list.json", entries), output_dir)
    assert_refused(report, expected)
    assert [w["case_id"] for w in report["written"]] == ["ct_good"]
    assert sorted(p.name for p in output_dir.iterdir()) == [
        "ct_good_synthetic",
        "ct_good_synthetic.json",
        "ct_good_synthetic.png",
        "ct_good_synthetic_thumbnail.png",
        "report.json",
    ]
    assert len(list((output_dir / "ct_good_synthetic").iterdir())) == 20


def test_dicom_checks_name_the_file_in_direct_loading(shared_data, tmp_path, bad_series):
    folder, name = bad_series["truncated"]
    with pytest.raises(InputError) as raised:
        LoadVolume()(folder / name)  # the one file on its own
    assert raised.value.source == str(folder / name) and "truncated" in raised.value.problem
    single = tmp_path / "single.dcm"
    dataset = pydicom.dcmread(min(CT_DICOM.iterdir()))
    dataset.decompress()  # uncompressed pixel data has a length to check against the file size
    dataset.save_as(single, enforce_file_format=True)
    assert LoadVolume()(single).shape == (1, 512, 512, 1)
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(single.read_bytes()[:300_000])
    with pytest.raises(
        InputError,
        match=r"cut\.dcm: truncated: its pixel data needs 524,288 bytes from byte "
        r"[\d,]+ but the file ends at byte 300,000",
    ):
        LoadVolume()(cut)


# ------------------------------------------------------------------ NIfTI and mask inputs
def write_huge_header(path: Path) -> None:
    """A NIfTI whose header claims 30000^3 int16 voxels (54 TB) but holds none: only the header is written."""
    header = nib.Nifti1Header()
    header.set_data_shape((30000, 30000, 30000))
    header.set_data_dtype(np.int16)
    header["vox_offset"] = 352
    block = header.binaryblock + b"\0" * 4
    path.write_bytes(gzip.compress(block) if path.name.endswith(".gz") else block)


@pytest.fixture()
def bad_niftis(tmp_path, shared_data):
    original = nib.load(str(SCT_T2))
    data = np.asanyarray(original.dataobj)
    files = {}
    with_inf = data.astype(np.float32)
    with_inf[30, 27, 26], with_inf[1, 2, 3] = np.inf, -np.inf
    files["inf"] = tmp_path / "inf.nii.gz"
    nib.save(nib.Nifti1Image(with_inf, original.affine), str(files["inf"]))
    files["huge"] = tmp_path / "huge.nii.gz"
    write_huge_header(files["huge"])
    files["negative"] = tmp_path / "negative_int16.nii.gz"
    shifted = (data.astype(np.int32) - 300).astype(np.int16)
    nib.save(nib.Nifti1Image(shifted, original.affine, header=original.header), str(files["negative"]))
    return files


def test_more_bad_inputs_in_one_batch_and_negative_int16_is_processed(shared_data, tmp_path, bad_niftis):
    cases = {
        "inf": (
            {**GOOD_SCT, "image": str(bad_niftis["inf"]), "vertebra_seg": None, "point": [30, 27, 26]},
            r"inf\.nii\.gz: 2 voxels are NaN or infinite",
        ),
        "huge": (
            {**GOOD_SCT, "image": str(bad_niftis["huge"]), "vertebra_seg": None, "point": [5, 5, 5]},
            (
                r"huge\.nii\.gz: too large: 30000 x 30000 x 30000 = 27,000,000,000,000 voxels \([\d,.]+ GiB as "
                r"float32\) is more than the limit of 536,870,912 voxels \(max_voxels\)"
            ),
        ),
        "mask_in_air": (
            {**GOOD_SCT, "image": str(TOTALSEG_MR), "vertebra_seg": None, "point": [3, 3, 10], "box_size_mm": 10},
            (
                r"mask_in_air: the soft mask lies outside the body: 0\.0% of its weight is on body voxels "
                r"\(brighter than [\d.]+ in .*example_mr_sm\.nii\.gz\), at least 10% is needed; check the "
                r"point coordinates and 'coordinate_space' \(voxel\)"
            ),
        ),
        "long_text": (
            {**GOOD_SCT, "text": ("a hyperintense lesion " * 500)[:10_000]},
            (
                r"long_text: lesion text of 10,000 characters is longer than the limit of 1,000 "
                r"\(max_text_length\)"
            ),
        ),
        "empty_text": ({**GOOD_SCT, "text": ""}, r"empty_text: missing lesion text"),
        "sct": (GOOD_SCT, None),
        "negative_int16": ({**GOOD_SCT, "image": str(bad_niftis["negative"])}, None),
    }
    entries = [{**entry, "case_id": name} for name, (entry, _) in cases.items()]
    output_dir = tmp_path / "out"
    report = run_job(write_datalist(tmp_path / "list.json", entries), output_dir)
    assert_refused(report, {name: pattern for name, (_, pattern) in cases.items() if pattern})
    assert [w["case_id"] for w in report["written"]] == ["sct", "negative_int16"]
    assert sorted(p.name for p in output_dir.iterdir()) == sorted(
        [f"{case}{suffix}" for case in ("sct", "negative_int16") for suffix in NIFTI_OUTPUTS] + ["report.json"]
    )

    # the 16-bit image with negative values: same dtype, negative voxels away from the mask untouched
    original = np.asanyarray(nib.load(str(bad_niftis["negative"])).dataobj)
    written_image = nib.load(str(output_dir / "negative_int16_synthetic.nii.gz"))
    written = np.asanyarray(written_image.dataobj)
    assert written_image.get_data_dtype() == np.int16 and written.dtype == np.int16
    vertebra = np.rint(nib.load(str(SCT_LEVELS)).get_fdata()) == 3
    far = ndimage.distance_transform_edt(~vertebra) > 4 * 3.0 + 1  # beyond the 3 mm blur's 4-sigma kernel
    assert (original[far] < 0).sum() > 10_000
    np.testing.assert_array_equal(written[far], original[far])
    assert (written[vertebra] != original[vertebra]).mean() > 0.5  # the masked image changed the vertebra


@pytest.mark.parametrize("name", ["huge.nii", "huge.nii.gz"])
def test_huge_volume_is_refused_from_its_header_without_reading_voxels(tmp_path, name):
    path = tmp_path / name
    write_huge_header(path)
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(InputError, match=r"too large: 30000 x 30000 x 30000 = 27,000,000,000,000 voxels"):
            LoadVolume()(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 20 * 2**20 and time.perf_counter() - started < 10


def test_huge_dicom_is_refused_from_its_header(shared_data, tmp_path):
    claimed = tmp_path / "claims_huge.dcm"
    set_tags(min(CT_DICOM.iterdir()), claimed, Rows=60000, Columns=60000, NumberOfFrames="1000")
    with pytest.raises(
        InputError,
        match=r"claims_huge\.dcm: too large: 60000 x 60000 x 1000 = 3,600,000,000,000 "
        r"voxels",
    ):
        LoadVolume()(claimed)
    with pytest.raises(
        InputError,
        match=r"ct_dicom: too large: 512 x 512 x 20 = 5,242,880 voxels .* limit of "
        r"2,621,440 voxels",
    ):
        LoadVolume(max_voxels=512 * 512 * 10)(CT_DICOM)  # the limit is configurable; a series counts its files


# ------------------------------------------------------------------ NIfTI voxel types, scalings, shapes and affines
def with_sform(source: Path, target: Path, affine: np.ndarray) -> Path:
    """A copy of the uncompressed NIfTI ``source`` whose header's sform (code 1, qform code 0) is ``affine``, written
    into the header bytes: nibabel itself refuses to make an image of a broken affine."""
    raw = bytearray(source.read_bytes())
    raw[252:256] = np.array([0, 1], "<i2").tobytes()  # qform_code, sform_code
    raw[280:328] = np.asarray(affine[:3], "<f4").tobytes()  # srow_x, srow_y, srow_z
    target.write_bytes(bytes(raw))
    return target


@pytest.fixture()
def odd_niftis(tmp_path, shared_data):
    original = nib.load(str(SCT_T2))
    data, affine = np.asanyarray(original.dataobj), original.affine
    files = {}
    files["complex"] = tmp_path / "complex.nii.gz"
    nib.save(nib.Nifti1Image(data.astype(np.complex64) * (1 + 0.5j), affine), str(files["complex"]))
    rgb = np.zeros(data.shape, dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    rgb["R"] = np.clip(data // 5, 0, 255)
    files["rgb"] = tmp_path / "rgb.nii.gz"
    nib.save(nib.Nifti1Image(rgb, affine), str(files["rgb"]))
    files["vectors"] = tmp_path / "vectors.nii.gz"  # (X, Y, Z, 1, 3): a vector per voxel, NIfTI's intent layout
    nib.save(nib.Nifti1Image(np.stack([data] * 3, -1)[:, :, :, None].astype(np.float32), affine), str(files["vectors"]))
    plain = tmp_path / "plain.nii"
    nib.save(nib.Nifti1Image(data, affine), str(plain))
    singular = affine.copy()
    singular[:3, 2] = 0.0  # the third voxel axis has no length
    files["singular_affine"] = with_sform(plain, tmp_path / "singular_affine.nii", singular)
    files["slope_zero"] = tmp_path / "slope_zero.nii"  # scl_slope 0 (with an intercept): "not scaled" in NIfTI
    raw = bytearray(plain.read_bytes())
    raw[112:120] = np.array([0.0, 5.0], "<f4").tobytes()  # scl_slope, scl_inter
    files["slope_zero"].write_bytes(bytes(raw))
    not_finite = affine.copy()
    not_finite[0, 3] = np.nan
    files["nan_affine"] = with_sform(plain, tmp_path / "nan_affine.nii", not_finite)
    scaled = nib.Nifti1Image(data.astype(np.float64) * 0.0071 + 243.6, affine)
    scaled.set_data_dtype(np.int16)  # nibabel picks scl_slope / scl_inter to store these as int16
    files["scaled"] = tmp_path / "scaled_int16.nii.gz"
    nib.save(scaled, str(files["scaled"]))
    files["singleton"] = tmp_path / "singleton.nii.gz"  # (X, Y, Z, 1): one volume with a 4th dimension of 1
    nib.save(nib.Nifti1Image(data[..., None], affine), str(files["singleton"]))
    cube = data[:52, :52, :52]  # a cube: (X, Y, Z, 1) + (X, Y, Z) used to broadcast to (52, 52, 52, 52)
    files["singleton_cube"] = tmp_path / "singleton_cube.nii.gz"
    nib.save(nib.Nifti1Image(cube[..., None, None], affine), str(files["singleton_cube"]))
    return files


def test_niftis_that_cannot_be_read_as_one_real_volume_are_refused(shared_data, tmp_path, odd_niftis):
    point = {"vertebra_seg": None, "point": [30, 27, 26]}
    affine_hint = r"; fix the header's orientation \(NIfTI sform / qform, DICOM position and orientation\)"
    cases = {
        "complex": r"complex\.nii\.gz: complex-valued voxels \(complex64\): only real images are supported and the "
        r"imaginary part would be lost",
        "rgb": r"rgb\.nii\.gz: voxels of type \[\('R', 'u1'\), \('G', 'u1'\), \('B', 'u1'\)\] "
        r"\(e\.g\. RGB colour\) are not one real number each",
        "vectors": r"vectors\.nii\.gz: 4-D input: 3 volumes or channels of \(60, 55, 52\), "
        r"expected a single 3-D volume",
        "singular_affine": r"singular_affine\.nii: the voxel-to-world affine cannot be inverted "
        r"\(voxel spacing 1 x 1 x 0 mm\): \[\[" + r".*" + affine_hint,
        "nan_affine": r"nan_affine\.nii: the voxel-to-world affine has NaN or infinite entries: \[\[.*nan.*"
        + affine_hint,
    }
    entries = [{**GOOD_SCT, **point, "image": str(odd_niftis[name]), "case_id": name} for name in cases]
    entries.append({**GOOD_SCT, "case_id": "sct"})
    output_dir = tmp_path / "out"
    report = run_job(write_datalist(tmp_path / "list.json", entries), output_dir)
    assert_refused(report, cases)
    assert [w["case_id"] for w in report["written"]] == ["sct"]
    assert sorted(p.name for p in output_dir.iterdir()) == sorted([f"sct{s}" for s in NIFTI_OUTPUTS] + ["report.json"])


def test_scaled_and_singleton_niftis_are_written_back_exactly(shared_data, tmp_path, odd_niftis):
    """With a model that returns its input, every stored value comes back bit for bit, with the file's own
    scaling and shape; the masked image then changes the vertebra, on the same scaling."""
    names = ["scaled", "slope_zero", "singleton", "singleton_cube"]
    entries = [
        {
            **GOOD_SCT,
            "vertebra_seg": None,
            "point": [30, 27, 26],
            "box_size_mm": 12,
            "image": str(odd_niftis[name]),
            "case_id": name,
        }
        for name in names
    ]
    datalist = write_datalist(tmp_path / "list.json", entries)
    for run, overrides in (("identity", IDENTITY), ("masked", {})):
        report = run_job(datalist, tmp_path / run, **overrides)
        assert not report["failed"] and [w["case_id"] for w in report["written"]] == names, report["failed"]
        for name, written in zip(names, report["written"], strict=False):
            original, output = nib.load(str(odd_niftis[name])), nib.load(written["volume"])
            assert output.shape == original.shape and output.get_data_dtype() == original.get_data_dtype()
            assert (output.dataobj.slope, output.dataobj.inter) == (original.dataobj.slope, original.dataobj.inter)
            stored, stored_before = (np.asanyarray(image.dataobj.get_unscaled()) for image in (output, original))
            if run == "identity":
                np.testing.assert_array_equal(stored, stored_before)
            else:
                changed = np.argwhere((stored != stored_before).reshape(stored.shape[:3]))
                # the 12 mm box around the point, grown by the blur's 4-sigma support (3 mm sigma, 1 mm voxels)
                reach = 12 / 2 + 4 * 3.0
                assert len(changed) and (np.abs(changed - [30, 27, 26]) <= reach).all(), (name, len(changed))
    scaled = nib.load(str(odd_niftis["scaled"]))
    assert scaled.dataobj.slope != 1.0 and scaled.dataobj.inter != 0.0  # the fixture is really scaled
    assert (
        nib.load(str(odd_niftis["slope_zero"])).dataobj.slope,
        nib.load(str(odd_niftis["slope_zero"])).dataobj.inter,
    ) == (1.0, 0.0)  # slope 0 reads as unscaled, its intercept ignored, as the NIfTI standard says


@pytest.mark.parametrize("extension, data_file", [(".mhd", ".raw"), (".hdr", ".img")])
def test_header_and_data_file_formats_are_written_whole(shared_data, tmp_path, extension, data_file):
    """A format of two files (.mhd + .raw, .hdr + .img) is written as two files under the output's name."""
    import itk

    image = tmp_path / "inputs" / f"t2{extension}"
    image.parent.mkdir()
    itk.imwrite(itk.imread(str(SCT_T2)), str(image))
    entries = [{**GOOD_SCT, "vertebra_seg": None, "point": [30, 27, 26], "image": str(image), "case_id": "two"}]
    output_dir = tmp_path / "out"
    report = run_job(write_datalist(tmp_path / "list.json", entries), output_dir, **IDENTITY)
    assert not report["failed"]
    assert sorted(p.name for p in output_dir.iterdir()) == sorted(
        [
            f"two_synthetic{data_file}",
            "two_synthetic.json",
            f"two_synthetic{extension}",
            "two_synthetic.png",
            "two_synthetic_thumbnail.png",
            "report.json",
        ]
    )
    if extension == ".mhd":
        assert "ElementDataFile = two_synthetic.raw" in (output_dir / "two_synthetic.mhd").read_text()
    np.testing.assert_array_equal(
        itk.array_from_image(itk.imread(report["written"][0]["volume"])), itk.array_from_image(itk.imread(str(image)))
    )


# ------------------------------------------------------------------ datalists and entry fields
@pytest.mark.parametrize(
    "content, pattern",
    [
        (
            [{"image": "a.nii.gz"}],
            (
                r"the datalist is a JSON list, not an object of lists: expected e\.g\. "
                r'\{"test": \[\{"image": \.\.\., "text": \.\.\., "point": \[x, y, z\]\}, \.\.\.\]\}'
            ),
        ),
        (
            {"test": ["a.nii.gz", {"image": "b.nii.gz"}, 3]},
            (
                r"2 of the 3 entries of 'test' are not a JSON object, e\.g\. entry 0 is a string \(\"a\.nii\.gz\"\); "
                r'each entry must be an object such as \{"image": \.\.\., "text": \.\.\.\}'
            ),
        ),
        ({"test": {"image": "a.nii.gz"}}, r"a JSON object, not a list, named 'test' \(lists found: \[\]\)"),
        ({"training": []}, r"no list named 'test' \(lists found: \['training'\]\)"),
    ],
)
def test_malformed_datalists_are_refused_in_one_line(tmp_path, content, pattern):
    path = tmp_path / "list.json"
    path.write_text(json.dumps(content))
    with pytest.raises(InputError) as raised:
        load_datalist(path, "test")
    assert raised.value.source == str(path) and "\n" not in str(raised.value)
    assert re.fullmatch(pattern, raised.value.problem), raised.value.problem


def test_entry_fields_of_the_wrong_form_are_refused_by_case_field_and_image(shared_data, tmp_path):
    image = re.escape(str(SCT_T2))
    point = {**GOOD_SCT, "vertebra_seg": None, "point": [30, 27, 26]}
    cases = {
        "space": (
            {**point, "coordinate_space": "mm"},
            r"'coordinate_space' must be one of \['voxel', 'world'\] \(voxel indices or RAS mm\), got \"mm\"",
        ),
        "box_2d": (
            {**point, "point": None, "box": [[1, 2], [30, 40]]},
            (
                r"'box' must be two corners of 3 finite numbers each, \[\[x0, y0, z0\], \[x1, y1, z1\]\], got "
                r"\[\[1, 2\], \[30, 40\]\]"
            ),
        ),
        "box_three_corners": ({**point, "point": None, "box": [[1, 2, 3], [30, 40, 40], [5, 5, 5]]}, r"'box' must be"),
        "box_text": ({**point, "point": None, "box": "[[1, 2, 3], [30, 40, 40]]"}, r"'box' must be"),
        "box_nan": (
            {**point, "point": None, "box": [[1, 2, 3], [30, 40, float("nan")]]},
            r"'box' must be .*, got \[\[1, 2, 3\], \[30, 40, NaN\]\]",
        ),
        "point_2d": ({**point, "point": [30, 27]}, r"'point' must be 3 finite numbers \[x, y, z\], got \[30, 27\]"),
        "point_text": ({**point, "point": ["a", 27, 3]}, r"'point' must be 3 finite numbers"),
        "size_zero": (
            {**point, "box_size_mm": 0},
            (
                r"'box_size_mm' must be a positive size in mm, one number or one "
                r"per axis \[sx, sy, sz\], got 0"
            ),
        ),
        "size_2": ({**point, "box_size_mm": [10, 10]}, r"'box_size_mm' must be a positive size"),
        "label_name": (
            {**GOOD_SCT, "mask_labels": ["L3"]},
            r"'mask_labels' must be a list of integer label values, e\.g\. \[30\], got \[\"L3\"\]",
        ),
        "label_fraction": ({**GOOD_SCT, "mask_labels": [3.7]}, r"'mask_labels' must be a list of integer label values"),
        "label_number": ({**GOOD_SCT, "mask_labels": 3}, r"'mask_labels' must be a list of integer label values"),
        "text_number": ({**GOOD_SCT, "text": 42}, r"'text' must be a string \(the lesion's description\), got 42"),
    }
    entries = [{**entry, "case_id": name} for name, (entry, _) in cases.items()]
    entries.append({**GOOD_SCT, "mask_labels": [3.0], "case_id": "sct"})  # a whole number written as 3.0 is a label
    output_dir = tmp_path / "out"
    report = run_job(write_datalist(tmp_path / "list.json", entries), output_dir)
    image_named = r" \(image " + image + r"\)"
    assert_refused(report, {name: f"^{name}: {pattern}.*{image_named}$" for name, (_, pattern) in cases.items()})
    assert [w["case_id"] for w in report["written"]] == ["sct"]


# ------------------------------------------------------------------ case ids from DICOM tags
EVIL_ID = "../../ëvil/..\\x"


def test_unsafe_patient_ids_never_steer_or_collide_outputs(shared_data, tmp_path):
    folder, files = copy_series(tmp_path / "inputs", "patient")
    for path in files:
        set_tags(path, SpecificCharacterSet="ISO_IR 192", PatientID=EVIL_ID)
    tag = pydicom.dcmread(files[0]).PatientID  # a backslash makes DICOM read two values
    case_id = "\\".join(tag) if isinstance(tag, pydicom.multival.MultiValue) else str(tag)
    assert case_id == EVIL_ID
    entries = [
        {**GOOD_CT, "image": str(folder), "case_id": case_id},
        {**GOOD_SCT, "case_id": "a/b"},
        {**GOOD_SCT, "case_id": "a\\b"},
        {**GOOD_SCT, "case_id": "ëë/.."},
        {**GOOD_SCT, "case_id": "a_b"},
    ]
    before = {p for p in tmp_path.rglob("*")}
    output_dir = tmp_path / "run" / "out"
    report = run_job(write_datalist(tmp_path / "list.json", entries), output_dir)
    assert not report["failed"] and [w["case_id"] for w in report["written"]] == [e["case_id"] for e in entries]
    volumes = [Path(w["volume"]) for w in report["written"]]
    assert len(set(volumes)) == len(entries)  # none overwrote another
    for written in report["written"]:
        for key in ("volume", "provenance", "preview"):
            assert Path(written[key]).resolve().parent == output_dir.resolve(), written[key]
    created = {p for p in tmp_path.rglob("*")} - before
    assert all(
        output_dir in p.parents or p in (output_dir, output_dir.parent, tmp_path / "list.json") for p in created
    ), sorted(created)
    names = [v.name for v in volumes]
    assert names[0] == f"{safe_case_name(EVIL_ID)}_synthetic" and re.fullmatch(
        r"vil_\.\._x_[0-9a-f]{8}_synthetic", names[0]
    )
    assert re.fullmatch(r"a_b_[0-9a-f]{8}_synthetic\.nii\.gz", names[1]) and names[1] != names[2]
    assert re.fullmatch(r"case_[0-9a-f]{8}_synthetic\.nii\.gz", names[3])
    assert names[4] == "a_b_synthetic.nii.gz"  # an id that is already safe keeps its name
    written_id = pydicom.dcmread(next((output_dir / names[0]).iterdir())).PatientID
    assert written_id.startswith("SYN") and EVIL_ID not in str(written_id)  # de-identified: a pseudonym


# ------------------------------------------------------------------ texts
def test_text_filling_the_token_limit_is_processed_with_a_warning(caplog):
    from bundle.networks.medical_clip import MedicalClipEncoder

    encoder = MedicalClipEncoder.tiny()
    long_text = "hyperintense lesion with sclerotic rim " * 20  # 780 characters: under the limit, over 77 tokens
    with caplog.at_level(logging.WARNING, logger="bundle.networks.text_truncation"):
        features = encoder.encode_text(["small lesion", long_text])
    assert features.shape[0] == 2
    warnings = [r.getMessage() for r in caplog.records if r.name == "bundle.networks.text_truncation"]
    assert len(warnings) == 1 and "780 characters fills all 77 tokens" in warnings[0]


# ------------------------------------------------------------------ checkpoints of another architecture
@pytest.fixture(scope="module")
def models_dirs(tmp_path_factory):
    from bundle.networks.medsoft_diffusion import CLIP_FOLDER, CONTROLLER_FILE, save_trained, tiny_model
    from bundle.networks.semantic_controller import MedicalSemanticController

    made = {}
    for name, channels in (("mine", (16, 32, 32)), ("other", (24, 48, 48))):
        folder = tmp_path_factory.mktemp(name)
        model = tiny_model(spatial_size=32, unet_channels=channels)
        save_trained(model, folder)
        model.controller.save(folder / CONTROLLER_FILE)
        model.clip_encoder.save_local_dir(folder / CLIP_FOLDER)
        made[name] = folder
    wide = tmp_path_factory.mktemp("wide")
    MedicalSemanticController(embed_dim=96).save(wide / CONTROLLER_FILE)
    MedicalSemanticController(embed_dim=64, width=64).save(wide / "narrow.safetensors")
    made["wide"] = wide
    return made


def swapped(tmp_path: Path, mine: Path, replacement: Path, name: str) -> Path:
    """A copy of the models folder ``mine`` whose file ``name`` is ``replacement``."""
    folder = tmp_path / "models"
    shutil.copytree(mine, folder)
    shutil.copyfile(replacement, folder / name)
    return folder


def test_the_good_models_folder_loads(models_dirs):
    from bundle.networks.medsoft_diffusion import load_trained

    assert load_trained(models_dirs["mine"]).unet.msc_dim == 64


@pytest.mark.parametrize(
    "name, source, pattern",
    [
        (
            "msc_adapter.safetensors",
            ("other", "msc_adapter.safetensors"),
            (
                r"msc_adapter\.safetensors: weights of another architecture: \d+ tensors have other shapes than this "
                r"guided UNet's adapter needs, e\.g\. .* is \(\d+, 64\) in the file, \(\d+, 64\) here"
            ),
        ),
        (
            "unet/diffusion_pytorch_model.safetensors",
            ("other", "unet/diffusion_pytorch_model.safetensors"),
            (
                r"unet/diffusion_pytorch_model\.safetensors: does not fit .*unet/config\.json: weights of another "
                r"architecture or a damaged file"
            ),
        ),
        (
            "msc.safetensors",
            ("wide", "msc.safetensors"),
            r"msc\.safetensors: a controller for 96-wide CLIP features, but the medical CLIP gives 64",
        ),
        (
            "msc_adapter.safetensors",
            ("mine", "msc.safetensors"),
            r"msc_adapter\.safetensors: not a guided-UNet adapter file",
        ),
    ],
)
def test_checkpoint_of_another_architecture_is_refused_by_name(models_dirs, tmp_path, name, source, pattern):
    from bundle.networks.medsoft_diffusion import load_trained

    folder = swapped(tmp_path, models_dirs["mine"], models_dirs[source[0]] / source[1], name)
    with pytest.raises(InputError, match=pattern) as raised:
        load_trained(folder)
    assert raised.value.source == str(folder / name)


def test_weights_whose_settings_lie_about_their_shapes_are_refused(models_dirs, tmp_path):
    """A controller file claiming the default width (128) while holding a 64-wide controller's tensors."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    from bundle.networks.semantic_controller import MedicalSemanticController

    with safe_open(str(models_dirs["mine"] / "msc.safetensors"), framework="pt") as handle:
        metadata = handle.metadata()
    lying = tmp_path / "msc.safetensors"
    save_file(load_file(str(models_dirs["wide"] / "narrow.safetensors")), str(lying), metadata=metadata)
    with pytest.raises(
        InputError,
        match=r"msc\.safetensors: weights of another architecture: \d+ tensors have "
        r"other shapes than this semantic controller needs",
    ):
        MedicalSemanticController.load(lying)


# ------------------------------------------------------------------ checkpoints that carry code
class RunsCode:
    """Unpickling this calls ``os.system``: what a malicious checkpoint does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch '{self.marker}'",)


def tiny_trainer() -> tuple[Engine, torch.nn.Module]:
    network = torch.nn.Linear(2, 2)
    return Engine(lambda engine, batch: None), network


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("kind", ["zip", "legacy_pickle"])
def test_resume_checkpoint_with_code_is_refused_and_never_run(tmp_path, kind):
    from bundle.handlers.checkpoints import ResumableCheckpoints

    marker = tmp_path / "MARKER"
    checkpoint_dir = tmp_path / "checkpoints"
    checkpoint_dir.mkdir()
    path = checkpoint_dir / "checkpoint_epoch=3.pt"
    payload = {"network": RunsCode(marker), "trainer": {"epoch": 3}}
    if kind == "zip":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload))
    trainer, network = tiny_trainer()
    with pytest.raises(InputError) as raised:
        ResumableCheckpoints(checkpoint_dir, {"network": network}).attach(trainer)
    assert raised.value.source == str(path)
    assert re.match(
        r"refused: loading this checkpoint would call (posix|os|nt)\.system, i\.e\. run code", raised.value.problem
    ), raised.value.problem
    assert not marker.exists()


def test_resume_checkpoint_of_another_architecture_is_refused_by_name(tmp_path):
    from bundle.handlers.checkpoints import ResumableCheckpoints

    checkpoint_dir = tmp_path / "checkpoints"
    checkpoint_dir.mkdir()
    previous, _ = tiny_trainer()
    previous.run([0, 1], max_epochs=1)
    path = checkpoint_dir / "checkpoint_epoch=1.pt"
    torch.save({"network": torch.nn.Linear(3, 3).state_dict(), "trainer": previous.state_dict()}, path)
    trainer, network = tiny_trainer()
    ResumableCheckpoints(checkpoint_dir, {"network": network}).attach(trainer)
    with pytest.raises(InputError) as raised:
        trainer.run([0, 1], max_epochs=2)
    assert raised.value.source == str(path)
    assert raised.value.problem.startswith("does not fit this model or trainer (Error(s) in loading state_dict")
    assert "size mismatch for weight" in raised.value.problem


def test_pickled_clip_weights_with_code_are_refused(tmp_path):
    from bundle.networks.medical_clip import MedicalClipEncoder

    folder = tmp_path / "clip"
    MedicalClipEncoder.tiny().save_local_dir(folder)
    (folder / "open_clip_model.safetensors").unlink()
    marker = tmp_path / "MARKER"
    torch.save({"visual.proj": RunsCode(marker)}, folder / "open_clip_pytorch_model.bin")
    with pytest.raises(InputError) as raised:
        MedicalClipEncoder.from_local_dir(folder)
    assert raised.value.source.startswith(str(folder)) and "pickle" in raised.value.problem
    assert raised.value.source.endswith(".bin")
    assert not marker.exists()


def test_feature_extractor_weights_with_code_are_refused(tmp_path):
    from bundle.metrics.distribution import TorchvisionFeatures

    marker = tmp_path / "MARKER"
    weights = tmp_path / "resnet50.pt"
    torch.save({"fc.weight": RunsCode(marker)}, weights)
    with pytest.raises(InputError, match=r"resnet50\.pt: cannot read the weights as tensors only"):
        TorchvisionFeatures("resnet50", weights)
    assert not marker.exists()


def test_no_code_in_the_bundle_unpickles_without_weights_only():
    """Every ``torch.load`` passes ``weights_only=True``; nothing calls ``pickle.load(s)`` or
    ``numpy.load(allow_pickle=True)``."""
    offending = []
    sources = sorted((REPO / "bundle").rglob("*.py")) + sorted((REPO / "scripts").glob("*.py"))
    for source in sources:
        for node in ast.walk(ast.parse(source.read_text(), str(source))):
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
                continue
            owner = node.func.value.id if isinstance(node.func.value, ast.Name) else None
            keywords = {k.arg: k.value for k in node.keywords}
            where = f"{source.name}:{node.lineno}"
            if owner == "torch" and node.func.attr == "load":
                flag = keywords.get("weights_only")
                if not (isinstance(flag, ast.Constant) and flag.value is True):
                    offending.append(where)
            elif owner in ("pickle", "dill", "joblib") and node.func.attr in ("load", "loads", "Unpickler"):
                offending.append(where)
            elif owner in ("np", "numpy") and node.func.attr == "load":
                flag = keywords.get("allow_pickle")
                if isinstance(flag, ast.Constant) and flag.value is True:
                    offending.append(where)
    assert len(sources) > 20 and not offending, offending
