"""MedDiff-FT pairs: the host with its lesion and the eroded lesion label on the host's grid, written together or not
at all, a label that erodes to nothing drops the pair by name, and the datalist reads back through
``configs/segment.json``'s own training dataset."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from monai.data import MetaTensor

from bundle.errors import OutputError
from bundle.io import pair_writer
from bundle.io.pair_writer import LesionPairWriter, pair_entry, write_pair_datalist
from bundle.transforms.case_to_slices import case_to_slices, slice_grid
from bundle.transforms.lesion_label import EmptyLabelError
from tests.helpers.paths import CONFIGS, REPO, SCT_LEVELS, SCT_T2

HOST = {
    "case_id": "sct_c3",
    "image": str(SCT_T2),
    "vertebra_seg": str(SCT_LEVELS),
    "mask_labels": [3],
    "text": "a bright lesion in the C3 vertebral body",
    "label": "benign",
}


@pytest.fixture(scope="module")
def grid():
    return slice_grid(32, 1.0, window_margin_mm=4.0, lesion_mask=True)


@pytest.fixture(scope="module")
def synthesised(shared_data, grid):
    """The host's slice items, each with a lesion on the model grid (``lesion_mask``: a 5-pixel-radius disc at the
    centre of the vertebra's blurred mask, cut to its core), and predictions: the host with the lesion bright,
    fading towards the mask's edge as a synthetic lesion does."""
    items = case_to_slices(grid, max_slices=2, lesion_mask=True)(dict(HOST))
    rows, cols = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    predictions = []
    for item in items:
        core = item["soft_mask"][0] > 0.8 * item["soft_mask"].max()  # C3 is small: its blurred mask peaks at 0.7
        inside = torch.nonzero(core).float().mean(dim=0)
        radius = ((rows - inside[0]) ** 2 + (cols - inside[1]) ** 2).sqrt()
        disc = ((radius <= 5) & core).float()[None]
        fading = ((6.0 - radius) / 3.0).clamp(0, 1)[None] * disc  # full inside r = 3, half at the mask's edge
        item["lesion_mask"] = disc
        predictions.append(torch.as_tensor(item["image"]) * (1 - fading) + 0.95 * fading)
    return items, predictions


def write(items, predictions, grid, folder: Path, erosion_mm: float):
    return LesionPairWriter(folder, grid, erosion_mm=erosion_mm)(items, predictions)


def test_the_pair_has_the_hosts_grid_and_the_label_lies_where_the_lesion_surely_is(synthesised, grid, tmp_path):
    items, predictions = synthesised
    outputs = write(items, predictions, grid, tmp_path / "eroded", erosion_mm=1.0)
    plain = write(items, predictions, grid, tmp_path / "plain", erosion_mm=0.0)
    host, volume = nib.load(str(SCT_T2)), nib.load(outputs["volume"])
    label_image = nib.load(outputs["lesion_label"])
    assert Path(outputs["lesion_label"]).name == "sct_c3_synthetic_lesion.nii.gz"
    for written in (volume, label_image):
        assert written.shape == host.shape
        np.testing.assert_array_equal(written.affine, host.affine)
        assert b"SYNTHETIC" in written.header["descrip"].tobytes()
    assert label_image.get_data_dtype() == np.uint8 and volume.get_data_dtype() == host.get_data_dtype()
    label = np.asanyarray(label_image.dataobj) > 0
    whole = np.asanyarray(nib.load(plain["lesion_label"]).dataobj) > 0
    changed = np.asanyarray(volume.dataobj) != np.asanyarray(host.dataobj)
    vertebra = np.rint(nib.load(str(SCT_LEVELS)).get_fdata()) == 3
    record = json.loads(Path(outputs["provenance"]).read_text())
    assert record["synthetic"] is True and record["lesion_label"] == outputs["lesion_label"]
    assert record["label_erosion_mm"] == 1.0 and record["input"]["sha256"]
    assert record["label_erosion_pixels"] == [1, 1]  # the host's pixels are 1 mm
    slices = np.zeros(host.shape, bool)
    slices[:, :, record["slices"]["indices"]] = True  # the file is P, S, R: sagittal slices are its third axis
    assert label.sum() > 20 and not label[~slices].any() and not changed[~slices].any()
    assert (label <= whole).all() and label.sum() < 0.7 * whole.sum()
    assert changed[label].all()  # every label voxel is changed by the lesion
    # erosion raises the label's precision against the actual change (voxels changed by more than half the largest
    # change); measured 0.93 (88 voxels) -> 1.00 (32 voxels; recall 0.98 -> 0.38) here
    change = np.abs(np.asanyarray(volume.dataobj).astype(float) - np.asanyarray(host.dataobj).astype(float))
    strong = change > 0.5 * change.max()
    assert strong[label].mean() > strong[whole].mean() and strong[label].mean() >= 0.95
    assert vertebra[label].all()


def test_a_label_that_erodes_to_nothing_drops_the_pair_and_a_failed_write_leaves_nothing(
    synthesised, grid, tmp_path, monkeypatch
):
    items, predictions = synthesised
    with pytest.raises(EmptyLabelError, match="sct_c3: the lesion label .* erodes to nothing at 8 mm"):
        write(items, predictions, grid, tmp_path / "dropped", erosion_mm=8.0)
    assert list((tmp_path / "dropped").iterdir()) == []

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pair_writer, "write_label_nifti", disk_full)
    with pytest.raises(OutputError, match="nothing of this case was kept"):
        write(items, predictions, grid, tmp_path / "full", erosion_mm=1.0)
    assert list((tmp_path / "full").iterdir()) == []


def slice_items(pixel_mm: float, cases: int) -> list[list[dict]]:
    """``cases`` one-slice cases whose native slice has ``pixel_mm`` pixels (all :meth:`erosion_pixels` reads)."""
    affine = torch.diag(torch.tensor([pixel_mm, pixel_mm, 1.0, 1.0], dtype=torch.float64))
    return [
        [{"case_id": f"case_{i}", "native_image": MetaTensor(torch.zeros(1, 4, 4), affine=affine)}]
        for i in range(cases)
    ]


@pytest.mark.parametrize(
    ("erosion_mm", "pixels", "warned"), [(1.0, [0, 0], True), (2.5, [2, 2], False), (0.0, [0, 0], False)]
)
def test_an_erosion_below_the_pixel_size_is_warned_once_per_job(grid, tmp_path, caplog, erosion_mm, pixels, warned):
    writer = LesionPairWriter(tmp_path, grid, erosion_mm=erosion_mm)
    with caplog.at_level(logging.WARNING, logger="bundle.io.pair_writer"):
        assert [writer.erosion_pixels(items) for items in slice_items(1.1, cases=3)] == [pixels] * 3
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    if warned:
        assert len(warnings) == 1, warnings  # once for the job, not once per case
        assert "1 mm is below the pixel size (1.1 x 1.1 mm) of case_0" in warnings[0]
    else:
        assert warnings == []


def test_a_pair_records_the_erosion_left_undone_below_its_pixel_size(synthesised, grid, tmp_path, caplog):
    items, predictions = synthesised
    with caplog.at_level(logging.WARNING, logger="bundle.io.pair_writer"):
        outputs = write(items, predictions, grid, tmp_path, erosion_mm=0.5)  # the host's pixels are 1 mm
    record = json.loads(Path(outputs["provenance"]).read_text())
    assert record["label_erosion_mm"] == 0.5 and record["label_erosion_pixels"] == [0, 0]
    assert any("0.5 mm is below the pixel size (1 x 1 mm) of sct_c3" in r.getMessage() for r in caplog.records)


def test_a_finished_pair_is_recognised_only_with_its_label(synthesised, grid, tmp_path):
    items, predictions = synthesised
    writer = LesionPairWriter(tmp_path, grid, erosion_mm=1.0)
    outputs = writer(items, predictions)
    assert writer.completed(HOST) == outputs
    Path(outputs["lesion_label"]).unlink()
    assert writer.completed(HOST) is None


def test_the_pair_datalist_reads_back_through_the_segmentation_workflow(synthesised, grid, tmp_path):
    items, predictions = synthesised
    outputs = write(items, predictions, grid, tmp_path / "pairs", erosion_mm=1.0)
    base = tmp_path / "base.json"
    base.write_text(json.dumps({"training": [dict(HOST, case_id="real_c3")], "test": [dict(HOST, case_id="t")]}))
    datalist = write_pair_datalist(
        tmp_path / "pairs" / "datalist.json",
        [pair_entry(HOST, outputs)],
        base,
        dropped=[{"case_id": "small", "error": "erodes to nothing"}],
    )
    content = json.loads(datalist.read_text())
    assert content["training"][1]["image"] == "sct_c3_synthetic.nii.gz"  # relative to the datalist
    assert content["pairs"]["dropped"][0]["case_id"] == "small" and "synthetic" not in content["test"][0]
    assert content["training"][0]["synthetic"] is False and content["training"][1]["synthetic"] is True
    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "segment.json"))
    parser.update({"bundle_root": str(REPO), "datalist": str(datalist)})
    dataset = parser.get_parsed_content("train#dataset")
    assert dataset.without_target == ["real_c3"]  # the real host has no lesion segmentation
    assert dataset.counts()["synthetic_cases"] == 1 and dataset.counts()["slices_with_target"] >= 1
    item = next(i for i in dataset.items if i["label"].any())
    label = item["label"][0] > 0
    image = item["image"][0]
    assert image[label].mean() > 0.8 > image[~label].mean()  # the label marks the bright synthetic lesion


def test_the_change_label_mode_keeps_only_the_part_of_the_mask_the_model_changed(synthesised, grid, tmp_path):
    items, _ = synthesised
    predictions = []
    for item in items:  # the model brightens only the left half of the lesion mask (up to its median column)
        left = torch.zeros_like(item["lesion_mask"])
        columns = torch.nonzero(item["lesion_mask"][0])[:, 1]
        left[..., : int(columns.float().median()) + 1] = 1
        predictions.append(torch.as_tensor(item["image"]) + 0.5 * item["lesion_mask"] * left)
    whole_pair = LesionPairWriter(tmp_path / "mask", grid, erosion_mm=0.0)(items, predictions)
    writer = LesionPairWriter(tmp_path / "change", grid, erosion_mm=0.0, label_mode="change", change_threshold=0.1)
    outputs = writer(items, predictions)
    host = np.asanyarray(nib.load(str(SCT_T2)).dataobj).astype(float)
    changed = np.abs(np.asanyarray(nib.load(outputs["volume"]).dataobj) - host) > 0
    whole = np.asanyarray(nib.load(whole_pair["lesion_label"]).dataobj) > 0
    label = np.asanyarray(nib.load(outputs["lesion_label"]).dataobj) > 0
    assert (~changed[whole]).sum() > 10  # the mask label includes the unchanged right half
    assert label.sum() > 10 and (label <= whole).all() and changed[label].all()
    assert 0.3 < label.sum() / whole.sum() < 0.7
    record = json.loads(Path(outputs["provenance"]).read_text())
    assert record["label_mode"] == "change" and record["label_change_threshold"] == 0.1
    with pytest.raises(
        EmptyLabelError, match="sct_c3: no voxel of the eroded lesion label .* changed by more than 0.6"
    ):
        LesionPairWriter(tmp_path / "faint", grid, erosion_mm=0.0, label_mode="change", change_threshold=0.6)(
            items, predictions
        )
    assert list((tmp_path / "faint").iterdir()) == []
    with pytest.raises(ValueError, match="label_mode must be one of"):
        LesionPairWriter(tmp_path, grid, label_mode="changed")
