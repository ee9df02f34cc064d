"""The class-effect measurement: does a synthetic lesion change the in-mask signal the way its text asks?"""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from bundle.balancing.synthesis_requests import write_demo_requests
from bundle.demo.dataset import generate_dataset
from bundle.experiments.class_effect import class_effect, effect_figure, requested_signal


def test_requested_signal():
    assert requested_signal("a well-circumscribed hyperintense lesion") == "hyperintense"
    assert requested_signal("Hypointense marrow replacement") == "hypointense"
    assert requested_signal("normal marrow") == "unspecified"


def test_class_effect_measures_the_direction_of_the_change(tmp_path):
    generate_dataset(tmp_path / "data", num_cases=8, seed=2)
    requests_path = write_demo_requests(tmp_path / "data" / "datalist.json", tmp_path / "data" / "requests.json")
    requests = json.loads(requests_path.read_text())["test"]
    assert requests and {r["label"] for r in requests} == {"benign", "malignant"}
    out = tmp_path / "synthesis"
    out.mkdir()
    for request in requests:  # a stand-in synthesis: brighten or darken the central slice of the vertebra
        image = nib.load(str(tmp_path / "data" / request["image"]))
        seg = np.asarray(nib.load(str(tmp_path / "data" / request["vertebra_seg"])).dataobj)
        data = np.asarray(image.dataobj).astype(np.int16)
        mask = np.isin(seg, request["mask_labels"])
        centre = np.zeros_like(mask)
        centre[..., data.shape[-1] // 2] = True
        factor = 1.2 if requested_signal(request["text"]) == "hyperintense" else 0.8
        data[mask & centre] = (data[mask & centre] * factor).astype(np.int16)
        nib.save(nib.Nifti1Image(data, image.affine, image.header), str(out / f"{request['case_id']}_synthetic.nii.gz"))
    report = class_effect(requests_path, out)
    assert report["by_signal"]["hyperintense"]["mean_relative_change"] == pytest.approx(0.2, abs=0.02)
    assert report["by_signal"]["hypointense"]["mean_relative_change"] == pytest.approx(-0.2, abs=0.02)
    assert all(row["changed_slices"] == 1 for row in report["cases"])
    figure = effect_figure(requests_path, out, tmp_path / "effect.png")
    assert figure.stat().st_size > 10_000
