"""A datalist's file keys, and only they, are made absolute against the datalist's folder (the reason the bundle
does not use MONAI's ``load_decathlon_datalist``, which guesses from what exists on disk)."""

from __future__ import annotations

import json

import pytest

from bundle.data.datalist import load_datalist
from bundle.errors import InputError


def test_only_the_file_keys_become_paths_whether_or_not_the_file_exists(tmp_path):
    (tmp_path / "case_0001").mkdir()
    (tmp_path / "case_0001" / "t2.nii.gz").write_bytes(b"")
    entry = {"case_id": "case_0001", "image": "case_0001/t2.nii.gz", "vertebra_seg": "case_0001/missing.nii.gz"}
    (tmp_path / "datalist.json").write_text(json.dumps({"training": [{**entry, "text": "case_0001"}]}))
    [loaded] = load_datalist(tmp_path / "datalist.json", "training")
    assert loaded["case_id"] == "case_0001" and loaded["text"] == "case_0001"  # a folder of that name exists
    assert loaded["image"] == str(tmp_path / "case_0001" / "t2.nii.gz")
    assert loaded["vertebra_seg"] == str(tmp_path / "case_0001" / "missing.nii.gz")  # the error will name it


def test_a_missing_split_and_a_non_object_entry_name_the_file(tmp_path):
    path = tmp_path / "datalist.json"
    path.write_text(json.dumps({"training": [{"image": "a.nii.gz"}, "b.nii.gz"]}))
    with pytest.raises(InputError, match=r"datalist.json.*no list named 'test' \(lists found: \['training'\]\)"):
        load_datalist(path, "test")
    with pytest.raises(InputError, match=r"1 of the 2 entries of 'training' is not a JSON object, e.g. entry 1"):
        load_datalist(path, "training")
