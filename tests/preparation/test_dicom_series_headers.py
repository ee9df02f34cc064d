"""A DICOM series folder's headers in ITK's slice order."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from bundle.errors import InputError
from bundle.preparation.dicom_series_headers import read_dicom_series
from bundle.transforms.loading import LoadVolume
from tests.helpers.dataset_layouts import write_dicom_series
from tests.helpers.paths import CT_DICOM


def test_series_slice_order_matches_itk_on_a_shuffled_series(tmp_path):
    order = [4, 1, 6, 2, 5, 3]
    pixels = {instance: [(instance, 2 * instance, 3000 + instance)] for instance in order}
    write_dicom_series(tmp_path / "series", order, rows=20, columns=16, pixels=pixels)
    series = read_dicom_series(tmp_path / "series")
    assert series.instance_numbers == tuple(order) and series.shape == (16, 20, 6)
    volume = LoadVolume()(tmp_path / "series")
    assert tuple(volume.shape[1:]) == series.shape
    for instance in order:
        k = series.slice_index(instance)
        assert volume[0, 2 * instance, instance, k] == 3000 + instance
        assert float(volume[0, :, :, k].max()) == 3000 + instance
    assert series.slice_index(99) is None


def test_series_slice_order_on_the_real_ct_series(shared_data):
    series = read_dicom_series(CT_DICOM)
    volume = LoadVolume()(CT_DICOM)
    assert series.instance_numbers[0] == 286 and series.instance_numbers[-1] == 267  # reverse of the file names
    for instance in (267, 270, 286):
        k = series.slice_index(instance)
        dataset = pydicom.dcmread(series.files[k])
        assert int(dataset.InstanceNumber) == instance
        expected = dataset.pixel_array.T * float(dataset.RescaleSlope) + float(dataset.RescaleIntercept)
        np.testing.assert_allclose(volume[0, :, :, k].numpy(), expected)


@pytest.mark.parametrize(
    "problem, message",
    [
        ("two_series", "2 series in one folder"),
        ("same_position", "two slices at the same position"),
        ("two_stacks", "different orientations"),
        ("empty", "no DICOM files"),
    ],
)
def test_series_problems_are_input_errors(tmp_path, problem, message):
    folder = tmp_path / "series"
    if problem == "empty":
        folder.mkdir()
        (folder / "notes.txt").write_text("not DICOM")
    else:
        write_dicom_series(folder, [1, 2, 3])
        if problem == "two_series":
            write_dicom_series(tmp_path / "other", [7])
            (tmp_path / "other" / "7.dcm").rename(folder / "7.dcm")
        elif problem in ("same_position", "two_stacks"):
            dataset = pydicom.dcmread(folder / "3.dcm")
            if problem == "same_position":
                dataset.ImagePositionPatient = pydicom.dcmread(folder / "1.dcm").ImagePositionPatient
            else:
                dataset.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
            dataset.save_as(folder / "3.dcm")
    with pytest.raises(InputError, match=message) as raised:
        read_dicom_series(folder)
    assert str(raised.value).startswith(str(folder))
