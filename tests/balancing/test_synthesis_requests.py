"""Synthesis requests: which normal case gets which lesion text."""

from __future__ import annotations

import pytest

from bundle.balancing.synthesis_requests import lesion_requests


def test_requests_take_a_class_text_and_the_normal_case_level():
    normal = [
        {
            "case_id": "n1",
            "image": "a.nii.gz",
            "level": "L3",
            "label": "normal",
            "mask_labels": [29],
            "lesion_seg": "x",
            "attributes": {},
        }
    ]
    donors = [
        {
            "case_id": "d1",
            "label": "benign",
            "level": "L5",
            "class_index": 1,
            "text": "T1-weighted sagittal MRI: a 9 mm hyperintense lesion in the L5 vertebral body.",
        },
        {
            "case_id": "d2",
            "label": "malignant",
            "level": "L1",
            "class_index": 2,
            "text": "Sagittal T1-weighted MRI: an ill-defined hypointense lesion replacing L1.",
        },
    ]
    requests = lesion_requests(normal, donors, ["benign", "malignant"])
    assert [r["case_id"] for r in requests] == ["n1_benign", "n1_malignant"]
    assert requests[0]["text"] == "T1-weighted sagittal MRI: a 9 mm hyperintense lesion in the L3 vertebral body."
    assert "replacing L3" in requests[1]["text"] and "T1-weighted" in requests[1]["text"]
    assert requests[1]["class_index"] == 2 and requests[1]["source_case"] == "n1"
    assert "lesion_seg" not in requests[0] and requests[0]["mask_labels"] == [29]
    with pytest.raises(ValueError, match="no case of class 'stenosis'"):
        lesion_requests(normal, donors, ["stenosis"])
