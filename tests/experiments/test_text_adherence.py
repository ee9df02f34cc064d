"""Text adherence over a synthesis folder: lesions put into the normal sources by hand, following the text or
against it, are counted as such."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from bundle.balancing.synthesis_requests import write_demo_requests
from bundle.demo.dataset import generate_dataset
from bundle.experiments.lesion_coherence import phantom_lesions
from bundle.experiments.text_adherence import (
    effect_figure,
    format_summary,
    synthesis_adherence,
    write_adherence_report,
)
from bundle.metrics.text_adherence import requested_facts


def insert_lesion(request: dict, data_dir, out_dir, contrast: float) -> None:
    """A sphere of the text's diameter at the vertebra's deepest point, ``contrast`` times the signal, written in
    the source's canonical (RAS) orientation."""
    image = nib.as_closest_canonical(nib.load(str(data_dir / request["image"])))
    labels = np.asarray(nib.as_closest_canonical(nib.load(str(data_dir / request["vertebra_seg"]))).dataobj)
    spacing = np.linalg.norm(image.affine[:3, :3], axis=0)
    vertebra = np.isin(labels, request["mask_labels"])
    centre = np.array(
        np.unravel_index(np.argmax(ndimage.distance_transform_edt(vertebra, sampling=spacing)), labels.shape)
    )
    grid = np.stack(np.meshgrid(*(np.arange(n) for n in labels.shape), indexing="ij"), axis=-1)
    radius = requested_facts(request["text"]).size_mm / 2
    sphere = (((grid - centre) * spacing) ** 2).sum(axis=-1) <= radius**2
    data = np.asarray(image.dataobj, np.float64)
    data[sphere] *= 1 + contrast
    name = out_dir / f"{request['case_id']}_synthetic.nii.gz"
    nib.save(nib.Nifti1Image(np.rint(data).astype(np.int16), image.affine), str(name))


def test_lesions_that_follow_the_text_and_lesions_against_it(tmp_path):
    generate_dataset(tmp_path / "data", num_cases=8, seed=2)
    requests_path = write_demo_requests(tmp_path / "data" / "datalist.json", tmp_path / "data" / "requests.json")
    requests = json.loads(requests_path.read_text())["test"]
    assert {r["label"] for r in requests} == {"benign", "malignant"}
    out = tmp_path / "synthesis"
    out.mkdir()
    for request in requests:  # hyperintense texts get a bright lesion (right), hypointense ones too (wrong)
        insert_lesion(request, tmp_path / "data", out, contrast=0.4)
    written = write_adherence_report(
        tmp_path / "report.json", requests_path, out, datalist=tmp_path / "data" / "datalist.json"
    )
    assert json.loads((tmp_path / "report.json").read_text()) == json.loads(json.dumps(written))
    report = written["synthetic"]
    real = written["real_phantom"]  # the phantom's own lesions against their twins: the text is followed
    assert all(row["adherence"]["direction_ok"] for row in real["cases"]) and real["cases"]
    hyper, hypo = report["by_signal"]["hyperintense"], report["by_signal"]["hypointense"]
    assert hyper["direction_ok"] == 1.0 and hypo["direction_ok"] == 0.0
    assert hyper["size_ok"] == 1.0 and hyper["median_size_ratio"] == pytest.approx(1.0, abs=0.15)
    assert all(row["measure"]["direction"] == 1 for row in report["cases"])
    assert report["through_plane"]["benign"]["found"] == hyper["count"]
    summary = format_summary(written)
    assert "real phantom lesions:" in summary
    assert "right direction 100%" in summary and "right direction 0%" in summary
    assert effect_figure(requests_path, out, tmp_path / "effect.png").stat().st_size > 10_000


def test_an_empty_folder_is_an_error(tmp_path):
    requests_path = tmp_path / "requests.json"
    requests_path.write_text(json.dumps({"test": [{"case_id": "a", "image": "a.nii.gz", "text": "a 9 mm lesion"}]}))
    with pytest.raises(ValueError, match="no synthesised volume"):
        synthesis_adherence(requests_path, tmp_path)


def test_the_report_needs_something_to_measure(tmp_path):
    with pytest.raises(ValueError, match="nothing to measure"):
        write_adherence_report(tmp_path / "report.json")
    with pytest.raises(ValueError, match="both"):
        write_adherence_report(tmp_path / "report.json", requests_path=tmp_path / "requests.json")
    assert not (tmp_path / "report.json").exists()


def test_real_lesions_need_a_phantom_datalist(tmp_path):
    datalist = tmp_path / "datalist.json"
    datalist.write_text(json.dumps({"name": "my_hospital", "training": []}))
    with pytest.raises(ValueError, match="not a demo phantom datalist"):
        phantom_lesions(datalist)
