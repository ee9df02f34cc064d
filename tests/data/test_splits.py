"""The validation split of a training datalist."""

from __future__ import annotations

import json

from bundle.data.splits import training_split


def test_training_validates_on_the_prepared_validation_list(tmp_path):
    """A prepared datalist's patient-disjoint ``validation`` list is what training validates on; without one,
    validation is held out of ``training``."""
    entries = [
        {"case_id": f"c{i}", "image": f"c{i}.nii.gz", "label": "normal" if i % 2 else "benign"} for i in range(8)
    ]
    prepared = tmp_path / "prepared.json"
    prepared.write_text(json.dumps({"training": entries[:6], "validation": entries[6:], "test": []}))
    ids = [e["case_id"] for e in training_split(prepared, "validation")]
    assert ids == ["c6", "c7"]
    assert [e["case_id"] for e in training_split(prepared, "training")] == [f"c{i}" for i in range(6)]
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps({"training": entries}))
    held_out = {e["case_id"] for e in training_split(plain, "validation", fraction=0.25)}
    kept = {e["case_id"] for e in training_split(plain, "training", fraction=0.25)}
    assert len(held_out) == 2 and held_out.isdisjoint(kept) and held_out | kept == {f"c{i}" for i in range(8)}
