"""VG-MedGen's crop writer: a crop written as a one-slice volume with its vertebra label is read back by the
classifier's own preprocessing as the same crop; the files are marked synthetic, carry provenance and a preview; a
folder that cannot be written is refused by name with nothing left behind."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser

from bundle.data.datalist import load_datalist
from bundle.data.slice_dataset import pixel_size
from bundle.errors import OutputError
from bundle.io.crop_writer import SYNTHETIC_DESCRIPTION, GeneratedCropWriter, crop_entry
from bundle.io.pair_writer import write_pair_datalist
from bundle.transforms.vgmedgen_crops import vgmedgen_crop_transform
from tests.helpers.paths import CONFIGS, REPO

DETAILS = {"case_id": "vgmedgen_x_00", "text": "Malignant L3 vertebra.", "label": "malignant", "class_index": 2}


@pytest.fixture(scope="module")
def phantom_crop(demo_data):
    """A phantom lesion case's working-window crop (32 x 32), its anatomy labels and pixel size."""
    entry = next(e for e in load_datalist(demo_data / "datalist.json", "training") if e["label"] != "normal")
    item = vgmedgen_crop_transform(spatial_size=32, slices_per_case=1)(entry)[0]
    image = torch.as_tensor(item["image"]).as_subclass(torch.Tensor)
    return image, item["anatomy_labels"][0].long(), pixel_size(item["image"]).tolist()


def test_the_classifier_reads_a_written_crop_back_as_that_crop(phantom_crop, tmp_path):
    image, labels, pixel_mm = phantom_crop
    outputs = GeneratedCropWriter(tmp_path / "out")(image, labels, pixel_mm, {**DETAILS, "seed": 3})
    volume = nib.load(outputs["volume"])
    assert volume.shape == (1, 32, 32) and nib.aff2axcodes(volume.affine) == ("R", "I", "P")
    assert np.allclose(volume.header.get_zooms()[1:], pixel_mm)
    assert volume.header["descrip"].tobytes().decode().rstrip("\0") == SYNTHETIC_DESCRIPTION
    record = json.loads(open(outputs["provenance"]).read())
    assert record["synthetic"] is True and record["seed"] == 3 and record["text"] == DETAILS["text"]
    assert open(outputs["preview"], "rb").read(4) == b"\x89PNG"
    datalist = write_pair_datalist(tmp_path / "out" / "datalist.json", [crop_entry(DETAILS, outputs)])
    entry = load_datalist(datalist, "training")[0]
    assert entry["synthetic"] is True and entry["class_index"] == 2
    classify = ConfigParser()
    classify.read_config(str(CONFIGS / "classify.json"))
    classify.update({"bundle_root": str(REPO), "spatial_size": 32})
    items = classify.get_parsed_content("train#preprocessing")(entry)
    assert len(items) == 1
    seen = torch.as_tensor(items[0]["image"])[0]
    correlation = np.corrcoef(seen.flatten().numpy(), image[0].flatten().numpy())[0, 1]
    assert correlation > 0.8, correlation  # the classifier's window on the written crop is that crop


def test_an_unwritable_folder_is_refused_and_nothing_is_left(phantom_crop, tmp_path):
    image, labels, pixel_mm = phantom_crop
    (tmp_path / "file").write_text("in the way")
    with pytest.raises(OutputError, match="file"):
        GeneratedCropWriter(tmp_path / "file")(image, labels, pixel_mm, DETAILS)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]
