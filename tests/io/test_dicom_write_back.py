"""DICOM in and out: the loader (ITK) and the writer (pydicom) agree on the instances and their values, compressed
clinical transfer syntaxes round-trip, inputs that cannot be written back exactly are refused before predicting, and
the derived series is de-identified by default and marked synthetic (checked with pydicom and dciodvfy)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import gdcm
import numpy as np
import pydicom
import pytest
from dicomanonymizer.simpledicomanonymizer import dictionary as uid_map
from pydicom.fileset import FileSet

from bundle.errors import InputError
from bundle.io.synthetic_dicom import Deidentifier
from bundle.io.volume_writer import check_dicom_identity
from bundle.transforms.loading import LoadVolume
from tests.helpers.bad_inputs import GOOD_CT, assert_refused, copy_series, set_tags
from tests.helpers.paths import CT_DICOM
from tests.helpers.workflows import run_job, write_datalist

IDENTITY = {"predictor#key": "image"}
COMPRESSED = {  # GDCM's name and the UID of each transfer syntax
    "jpeg_lossless": ("JPEGLosslessProcess14_1", pydicom.uid.JPEGLosslessSV1),
    "jpeg_ls": ("JPEGLSLossless", pydicom.uid.JPEGLSLossless),
    "rle": ("RLELossless", pydicom.uid.RLELossless),
    "jpeg_2000": ("JPEG2000Lossless", pydicom.uid.JPEG2000Lossless),
}


def originals_by_position(folder: Path) -> dict[float, pydicom.Dataset]:
    return {float(d.ImagePositionPatient[2]): d for d in (pydicom.dcmread(p) for p in sorted(folder.iterdir()))}


def assert_written_back(output: Path, source: Path, tolerance: int = 1) -> list[pydicom.Dataset]:
    """Every instance of ``source`` is written once, uncompressed, with its pixels within ``tolerance``."""
    originals = originals_by_position(source)
    written = [pydicom.dcmread(p) for p in sorted(output.iterdir())]
    assert sorted(float(d.ImagePositionPatient[2]) for d in written) == sorted(originals)
    for dataset in written:
        assert dataset.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
        original = originals[float(dataset.ImagePositionPatient[2])]
        difference = np.abs(dataset.pixel_array.astype(int) - original.pixel_array.astype(int)).max()
        assert difference <= tolerance
    return written


def compress_series(folder: Path, target: Path, syntax: str) -> Path:
    """A copy of the series with every instance transcoded by GDCM (lossless) to ``syntax``."""
    target.mkdir(parents=True)
    for path in sorted(folder.iterdir()):
        dataset = pydicom.dcmread(path)  # the shared series leaves SOP Class / Instance UID empty: GDCM needs them
        dataset.SOPClassUID = dataset.file_meta.MediaStorageSOPClassUID
        dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID
        dataset.save_as(target / f"{path.name}.in")
        reader = gdcm.ImageReader()
        reader.SetFileName(str(target / f"{path.name}.in"))
        assert reader.Read()
        change = gdcm.ImageChangeTransferSyntax()
        change.SetTransferSyntax(gdcm.TransferSyntax(getattr(gdcm.TransferSyntax, syntax)))
        change.SetInput(reader.GetImage())
        assert change.Change()
        writer = gdcm.ImageWriter()
        writer.SetFileName(str(target / path.name))
        writer.SetFile(reader.GetFile())
        writer.SetImage(change.GetOutput())
        assert writer.Write()
        (target / f"{path.name}.in").unlink()
    return target


def write_dicomdir(files: list[Path], media: Path) -> Path:
    """A real DICOMDIR (pydicom's FileSet) indexing copies of ``files`` under ``media``; returns its path."""
    fileset = FileSet()
    for path in files:
        dataset = pydicom.dcmread(path)  # a DICOMDIR record needs the IDs the shared series leaves empty
        dataset.PatientID, dataset.StudyID, dataset.SeriesNumber = "P1", "1", 1
        dataset.StudyInstanceUID = dataset.SeriesInstanceUID = "1.2.826.0.1.3680043.8.498.9"
        dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID
        fileset.add(dataset)
    fileset.write(media)
    return media / "DICOMDIR"


# ------------------------------------------------------------------ which instances form the series
@pytest.mark.parametrize("tag, value", [("SeriesNumber", "7"), ("SeriesDate", "20221209"), ("SequenceName", "b")])
def test_instances_itk_would_split_into_sub_series_are_all_read_and_written(shared_data, tmp_path, tag, value):
    """GDCM groups a folder by series number, date and sequence name besides the series UID and read only the
    first group: half the slices were read and written back as a complete output."""
    folder, files = copy_series(tmp_path, "split")
    for path in files[10:]:
        set_tags(path, **{tag: value})
    assert LoadVolume()(folder).shape == (1, 512, 512, 20)
    report = run_job(
        write_datalist(tmp_path / "list.json", [{**GOOD_CT, "image": str(folder), "case_id": "ct"}]),
        tmp_path / "out",
        **IDENTITY,
    )
    assert not report["failed"]
    assert len(assert_written_back(tmp_path / "out" / "ct_synthetic", folder)) == 20


def test_per_instance_fractional_rescale_is_read_exactly(shared_data, tmp_path):
    """ITK took the pixel type from the first slice (integer rescale) and rounded a later slice's 0.5 steps."""
    folder, files = copy_series(tmp_path, "rescale")
    dataset = pydicom.dcmread(files[0])
    doubled = np.clip(dataset.pixel_array.astype(np.int32) * 2 + 1, 0, 4095).astype(np.uint16)
    dataset.set_pixel_data(doubled, "MONOCHROME2", 12)
    dataset.RescaleSlope = "0.5"
    dataset.save_as(files[0])
    volume = LoadVolume()(folder)[0].numpy()
    index = int(
        np.argmin(
            [
                abs(float(pydicom.dcmread(p).ImagePositionPatient[2]) - float(dataset.ImagePositionPatient[2]))
                for p in sorted(files, key=lambda p: float(pydicom.dcmread(p).ImagePositionPatient[2]))
            ]
        )
    )
    np.testing.assert_array_equal(volume[:, :, index].T, doubled * 0.5 - 1024)


def test_hidden_files_and_a_dicomdir_beside_the_series_are_ignored_by_loader_and_writer(shared_data, tmp_path):
    folder, files = copy_series(tmp_path, "with_extras")
    last = max(files, key=lambda p: float(pydicom.dcmread(p).ImagePositionPatient[2]))
    step = 2.0  # the series' slice spacing: a hidden copy one step further would extend the volume
    position = [float(v) for v in pydicom.dcmread(last).ImagePositionPatient]
    set_tags(
        last,
        folder / ".hidden_extra.dcm",
        ImagePositionPatient=[*position[:2], position[2] + step],
        SOPInstanceUID=pydicom.uid.generate_uid(),
    )
    shutil.copy(write_dicomdir(files[:3], tmp_path / "media"), folder / "DICOMDIR")
    (folder / "README.txt").write_text("exported from PACS\n")
    assert LoadVolume()(folder).shape == (1, 512, 512, 20)
    report = run_job(
        write_datalist(tmp_path / "list.json", [{**GOOD_CT, "image": str(folder), "case_id": "ct"}]),
        tmp_path / "out",
        **IDENTITY,
    )
    assert not report["failed"]
    assert len(assert_written_back(tmp_path / "out" / "ct_synthetic", CT_DICOM)) == 20


# ------------------------------------------------------------------ compressed transfer syntaxes
@pytest.mark.parametrize("name", sorted(COMPRESSED))
def test_compressed_series_round_trip_uncompressed(shared_data, tmp_path, name):
    syntax, uid = COMPRESSED[name]
    folder = compress_series(CT_DICOM, tmp_path / name, syntax)
    assert {pydicom.dcmread(p).file_meta.TransferSyntaxUID for p in folder.iterdir()} == {uid}
    report = run_job(
        write_datalist(tmp_path / "list.json", [{**GOOD_CT, "image": str(folder), "case_id": name}]),
        tmp_path / "out",
        **IDENTITY,
    )
    assert not report["failed"], report["failed"]
    assert_written_back(tmp_path / "out" / f"{name}_synthetic", folder)


# ------------------------------------------------------------------ refused before predicting
def test_inputs_that_cannot_be_written_back_are_refused_by_file(shared_data, tmp_path):
    inputs = tmp_path / "inputs"
    cases = {}
    folder, files = copy_series(inputs, "slope_zero")
    set_tags(files[4], RescaleSlope="0")
    cases["slope_zero"] = (
        folder,
        (
            rf"slope_zero/{re.escape(files[4].name)}: RescaleSlope is 0: every stored value "
            r"maps to the intercept"
        ),
    )
    folder, files = copy_series(inputs, "intercept_nan")
    set_tags(files[2], RescaleIntercept="NaN")
    cases["intercept_nan"] = (folder, rf"{re.escape(files[2].name)}: RescaleIntercept is nan")
    folder, files = copy_series(inputs, "no_decoder")
    dataset = pydicom.dcmread(files[0])
    dataset.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG2: no pydicom decoder
    dataset.save_as(files[0])
    cases["no_decoder"] = (
        folder,
        (
            rf"{re.escape(files[0].name)}: pixel data in transfer syntax "
            r"1\.2\.840\.10008\.1\.2\.4\.100 \(MPEG2 Main Profile / Main Level\), which this "
            r"installation cannot decode"
        ),
    )
    folder, files = copy_series(inputs, "multi_frame")
    dataset = pydicom.dcmread(files[0])
    dataset.decompress()
    dataset.set_pixel_data(np.stack([dataset.pixel_array] * 2), "MONOCHROME2", 12)
    dataset.NumberOfFrames = 2
    dataset.save_as(files[0])
    cases["multi_frame"] = (
        folder,
        (
            rf"{re.escape(files[0].name)}: multi-frame DICOM \(2 frames in one file\) is "
            r"not supported"
        ),
    )
    for name, preamble in (("no_file_meta", b"\0" * 128), ("no_file_header", None)):
        folder, files = copy_series(inputs, name)
        dataset = pydicom.dcmread(files[0])
        dataset.decompress()
        del dataset.file_meta
        dataset.preamble = preamble  # without it, no 'DICM' marker either
        dataset.save_as(folder / "RAW0001", enforce_file_format=False, implicit_vr=True, little_endian=True)
        files[0].unlink()
    cases["no_file_meta"] = (
        inputs / "no_file_meta",
        (
            r"no_file_meta/RAW0001: no transfer syntax: the file has no "
            r"DICOM file meta information"
        ),
    )
    cases["no_file_header"] = (
        inputs / "no_file_header",
        (
            r"no_file_header/RAW0001: DICOM image data without the "
            r"DICOM file header"
        ),
    )
    write_dicomdir(files[1:2], inputs / "media")
    cases["dicomdir_entry"] = (
        inputs / "media" / "DICOMDIR",
        (
            r"media/DICOMDIR: a DICOMDIR \(the index of a DICOM "
            r"medium\), not an image"
        ),
    )
    only_index = inputs / "only_dicomdir"
    only_index.mkdir()
    shutil.copy(inputs / "media" / "DICOMDIR", only_index / "DICOMDIR")
    cases["dicomdir_folder"] = (only_index, r"only_dicomdir: no DICOM image files in the folder \(only a DICOMDIR")
    folder, files = copy_series(inputs, "no_position")
    dataset = pydicom.dcmread(files[3])
    del dataset.ImagePositionPatient
    dataset.save_as(files[3])
    cases["no_position"] = (folder, r"no_position: 1 of 20 instances have no ImagePositionPatient")
    for path, pattern in cases.values():
        with pytest.raises(InputError, match=pattern):
            LoadVolume()(path)  # the first step of preprocessing: nothing is predicted for these
    folder, files = copy_series(inputs, "burned_in")
    for path in files:
        set_tags(path, BurnedInAnnotation="YES")
    cases["burned_in"] = (
        folder,
        (
            rf"{re.escape(files[0].name)}: BurnedInAnnotation is YES: text burned into the "
            r"pixels may identify the patient"
        ),
    )
    with pytest.raises(InputError, match=cases["burned_in"][1]):
        check_dicom_identity(folder, Deidentifier())  # the writer's check, for the job to call before predicting
    entries = [{**GOOD_CT, "image": str(path), "case_id": name} for name, (path, _) in cases.items()]
    output_dir = tmp_path / "out"
    report = run_job(write_datalist(tmp_path / "list.json", entries + [{**GOOD_CT, "case_id": "good"}]), output_dir)
    assert_refused(report, {name: pattern for name, (_, pattern) in cases.items()})
    assert sorted(p.name for p in output_dir.iterdir()) == [
        "good_synthetic",
        "good_synthetic.json",
        "good_synthetic.png",
        "good_synthetic_thumbnail.png",
        "report.json",
    ]


def test_write_back_check_names_the_instance_whose_values_differ(shared_data):
    from bundle.data.dicom_series import check_write_back, series_instances

    instances = series_instances(CT_DICOM)
    volume = LoadVolume()(CT_DICOM)
    values = volume[0].numpy().copy()
    check_write_back(CT_DICOM, instances, values, np.asarray(volume.affine))
    values[100, 200, 7] += 1.0  # one stored unit off in one slice
    with pytest.raises(
        InputError,
        match=r"pydicom decodes other pixel values than ITK loaded \(up to 1 apart, in 1 "
        r"pixels\)",
    ):
        check_write_back(CT_DICOM, instances, values, np.asarray(volume.affine))
    shifted = np.asarray(volume.affine).copy()
    shifted[2, 3] += 1.0  # the instances no longer sit on the loaded slices
    with pytest.raises(InputError, match=r"matches none of the 20 loaded slices"):
        check_write_back(CT_DICOM, instances, values, shifted)


# ------------------------------------------------------------------ identity and marking of the derived series
IDENTIFYING = {
    "PatientName": "Doe^Jane",
    "PatientBirthDate": "19610412",
    "AccessionNumber": "ACC-99812",
    "InstitutionName": "St Example Hospital",
    "ReferringPhysicianName": "Who^Doctor",
    "StudyDescription": "Spine of Jane Doe",
    "StudyDate": "20221208",
    "SeriesNumber": 4,
}


def identified_series(root: Path, name: str, patient_id: str) -> tuple[Path, dict[str, str]]:
    """A copy of the shared series with a patient's identity and real UIDs; returns it and its UIDs."""
    folder, files = copy_series(root, name)
    uids = {"study": pydicom.uid.generate_uid(), "series": pydicom.uid.generate_uid()}
    for path in files:
        instance = pydicom.dcmread(path).file_meta.MediaStorageSOPInstanceUID
        set_tags(
            path,
            **IDENTIFYING,
            PatientID=patient_id,
            StudyInstanceUID=uids["study"],
            SeriesInstanceUID=uids["series"],
            SOPInstanceUID=instance,
            SOPClassUID=pydicom.uid.CTImageStorage,
        )
        uids[path.name] = instance
    return folder, uids


def dciodvfy_errors(path: Path) -> set[str]:
    result = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60, check=False)
    return {line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")}


def test_derived_series_is_deidentified_pseudonymous_marked_and_valid(shared_data, tmp_path):
    inputs = tmp_path / "inputs"
    sources = {
        "jane_a": identified_series(inputs, "jane_a", "MRN-4711"),
        "jane_b": identified_series(inputs, "jane_b", "MRN-4711"),  # another series of the same patient
        "other": identified_series(inputs, "other", "MRN-0815"),
    }
    entries = [{**GOOD_CT, "image": str(folder), "case_id": name} for name, (folder, _) in sources.items()]
    datalist = write_datalist(tmp_path / "list.json", entries)
    report = run_job(datalist, tmp_path / "out")
    assert not report["failed"] and len(report["written"]) == 3
    pseudonyms = {}
    for written in report["written"]:
        name, output = written["case_id"], Path(written["volume"])
        uids = sources[name][1]
        record = json.loads(Path(written["provenance"]).read_text())["deidentification"]
        files = sorted(output.iterdir())
        assert len(files) == 20
        for path in files:  # nothing of the identity or the real UIDs, anywhere in the file
            raw = path.read_bytes()
            for secret in [*map(str, IDENTIFYING.values()), "Doe", "MRN-", *uids.values()]:
                if secret not in ("4", "20221208"):
                    assert secret.encode() not in raw, (name, secret)
        instances = [pydicom.dcmread(path) for path in files]
        first = instances[0]
        pseudonyms[name] = first.PatientID
        assert {d.PatientID for d in instances} == {first.PatientID} and first.PatientID.startswith("SYN")
        assert record["patient_id"] == {
            "real": "MRN-4711" if name.startswith("jane") else "MRN-0815",
            "pseudonym": first.PatientID,
        }
        assert (
            first.PatientIdentityRemoved == "YES" and first.DeidentificationMethodCodeSequence[0].CodeValue == "113100"
        )
        assert not first.get("StudyDate") and not first.get("AccessionNumber") and not first.get("PatientBirthDate")
        references = set()
        for dataset in instances:
            assert list(dataset.ImageType[:2]) == ["DERIVED", "SECONDARY"]
            assert dataset.SeriesDescription.startswith("SYNTHETIC") and dataset.ImageComments.startswith("SYNTHETIC")
            assert dataset.BurnedInAnnotation == "NO" and dataset.SeriesNumber == 1004
            code = dataset.DerivationCodeSequence[0]
            assert (code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning) == (
                "113077",
                "DCM",
                "Volume editing",
            )
            assert dataset.ContentDate == dataset.SeriesDate and len(dataset.ContentTime) >= 6
            source = dataset.SourceImageSequence[0]
            assert source.ReferencedSOPClassUID == pydicom.uid.CTImageStorage
            assert source.PurposeOfReferenceCodeSequence[0].CodeValue == "121322"
            study = dataset.StudiesContainingOtherReferencedInstancesSequence[0]
            assert study.StudyInstanceUID == record["source_study_uid"]["pseudonym"] != uids["study"]
            series = study.ReferencedSeriesSequence[0]
            assert series.SeriesInstanceUID == record["source_series_uid"]["pseudonym"] != uids["series"]
            assert series.ReferencedInstanceSequence[0].ReferencedSOPInstanceUID == source.ReferencedSOPInstanceUID
            references.add(source.ReferencedSOPInstanceUID)
        real = {uid for key, uid in uids.items() if key not in ("study", "series")}
        assert references == {uid_map[uid] for uid in real}  # each derived instance points at its source instance
    assert pseudonyms["jane_a"] == pseudonyms["jane_b"] != pseudonyms["other"]  # patient-level splits still work

    if shutil.which("dciodvfy") is None:  # Debian's dicom3tools: .ci/run installs it
        assert not os.environ.get("CI"), "dciodvfy (apt-get install dicom3tools) is needed in CI"
        pytest.skip("dciodvfy not installed (apt-get install dicom3tools)")
    source = min(sources["jane_a"][0].iterdir())
    derived = sorted((tmp_path / "out" / "jane_a_synthetic").iterdir())
    assert dciodvfy_errors(derived[0]) <= dciodvfy_errors(source)  # no DICOM error the source did not have


def test_keep_patient_identity_keeps_patient_and_study_tags(shared_data, tmp_path):
    folder, uids = identified_series(tmp_path / "inputs", "jane", "MRN-4711")
    entries = [{**GOOD_CT, "image": str(folder), "case_id": "jane"}]
    report = run_job(write_datalist(tmp_path / "list.json", entries), tmp_path / "out", keep_patient_identity=True)
    written = report["written"][0]
    assert json.loads(Path(written["provenance"]).read_text())["deidentification"] == {"keep_patient_identity": True}
    for path in Path(written["volume"]).iterdir():
        dataset = pydicom.dcmread(path)
        assert (dataset.PatientID, str(dataset.PatientName), dataset.AccessionNumber) == (
            "MRN-4711",
            "Doe^Jane",
            "ACC-99812",
        )
        assert dataset.StudyInstanceUID != uids["study"]  # a new study all the same, marked synthetic
        assert dataset.SeriesDescription == "SYNTHETIC CT Body 3.0"
        series = dataset.StudiesContainingOtherReferencedInstancesSequence[0].ReferencedSeriesSequence[0]
        assert series.SeriesInstanceUID == uids["series"]
        assert dataset.SourceImageSequence[0].ReferencedSOPInstanceUID in uids.values()
