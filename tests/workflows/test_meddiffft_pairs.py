"""MedDiff-FT's pair job from its config, end to end on the small generated dataset (a tiny random inpainting model,
a few pairs, few steps): lesion masks drawn into normal hosts, painted under the guiding mask, filtered, eroded,
written as image-label pairs on the host's grid and listed in a datalist ``configs/segment.json`` reads unchanged;
and each ablation override changes what it names."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from scipy import ndimage

from bundle.engines.meddiffft_pairs import LesionPairs
from bundle.errors import InputError
from bundle.io.gallery import read_gallery_cases
from bundle.networks.meddiffft_inpainting import LesionPrompt, tiny_inpainting_model
from bundle.networks.meddiffft_mask_generator import HierarchicalMaskSampler, RealMaskSampler, shape_frame
from tests.helpers.paths import CONFIGS, REPO

SMALL = {
    "spatial_size": 48,
    "real_lesion_cases": 4,
    "validation_fraction": 0.0,
    "shape_steps": 5,
    "num_inference_steps": 3,
    "quality_k": 1,
    "host_inset_mm": 3.0,  # one pixel of the 48 x 48 grid (about 2.7 mm): the lesion stays inside the vertebra
}


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    """A tiny (random) inpainting model where the pair job reads the fine-tuned one, another for the ablation."""
    folder = tmp_path_factory.mktemp("meddiffft_models")
    tiny_inpainting_model(32, unet_channels=(16, 32), seed=1).save(folder / "meddiffft")
    tiny_inpainting_model(32, unet_channels=(16, 32), seed=2).save(folder / "meddiffft_no_foundation")
    return folder


def pair_parser(names: list[str], demo_data: Path, models: Path, **overrides) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config([str(CONFIGS / name) for name in ["meddiffft_pairs.json", *names]])
    parser.update(
        {"bundle_root": str(REPO), "dataset_dir": str(demo_data), "models_dir": str(models), **SMALL, **overrides}
    )
    return parser


def run_pairs(parser: ConfigParser) -> tuple[dict, dict]:
    parser.get_parsed_content("initialize#0")
    datalist = Path(parser.get_parsed_content("run#0"))
    report = json.loads((Path(parser.get_parsed_content("pairs_dir")) / "report.json").read_text())
    return json.loads(datalist.read_text()), report


def test_pairs_are_painted_into_normal_hosts_eroded_and_read_by_the_segmentation_workflow(
    demo_data, models, tmp_path, one_torch_thread
):
    out = tmp_path / "pairs"
    parser = pair_parser(["meddiffft_ablation_no_filter.json"], demo_data, models, pairs_dir=str(out), num_pairs=3)
    content, report = run_pairs(parser)
    assert len(report["written"]) == 3 and not report["failed"] and "quality" not in report
    pairs = [entry for entry in content["training"] if entry.get("synthetic")]
    real = [entry for entry in content["training"] if not entry.get("synthetic")]
    assert len(pairs) == 3 and real and content["pairs"]["written"] == 3
    hosts = {entry["case_id"]: entry for entry in real if entry["label"] == "normal"}
    lesion_texts = {entry["text"] for entry in real if entry["label"] != "normal"}
    for pair in pairs:
        record = json.loads((out / pair["provenance"]).read_text())
        assert record["synthetic"] is True and record["model"] == "MedDiff-FT"
        drawn = record["lesion_pair"]
        assert pair["host_case"] in hosts and drawn["host_case"] == pair["host_case"]
        assert pair["text"] in lesion_texts and pair["label"] != "normal"
        assert drawn["lesion_pixels"] > 0 and drawn["diameter_mm"] > 0 and record["label_erosion_mm"] == 1.0
        host = nib.load(str(demo_data / hosts[pair["host_case"]]["image"]))
        synthetic, label = nib.load(str(out / pair["image"])), nib.load(str(out / pair["lesion_seg"]))
        assert synthetic.shape == label.shape == host.shape
        assert np.allclose(synthetic.affine, host.affine) and np.allclose(label.affine, host.affine)
        assert label.get_data_dtype() == np.uint8
        change = np.abs(synthetic.get_fdata() - host.get_fdata()) > 1e-3
        marked = label.get_fdata() > 0
        assert marked.any() and change.any()
        vertebra = np.isin(
            nib.load(str(demo_data / hosts[pair["host_case"]]["vertebra_seg"])).get_fdata(), pair["mask_labels"]
        )
        assert vertebra[marked].all()  # the lesion lies in the host vertebra
        assert change[marked].mean() > 0.5  # the label marks voxels the model changed
        assert min(len(set(indices.tolist())) for indices in np.nonzero(change)) == 1  # one painted slice
    segment = ConfigParser()
    segment.read_config(str(CONFIGS / "segment.json"))
    segment.update({"bundle_root": str(REPO), "datalist": str(out / "datalist.json")})
    dataset = segment.get_parsed_content("train#dataset")
    assert dataset.counts()["synthetic_cases"] == 3 and dataset.counts()["slices_with_target"] >= 3


def test_the_quality_filter_drops_the_pairs_it_rejects_before_anything_is_written(
    demo_data, models, tmp_path, one_torch_thread
):
    out = tmp_path / "filtered"
    content, report = run_pairs(pair_parser([], demo_data, models, pairs_dir=str(out), num_pairs=3))
    judged = [*report["written"], *report["rejected"]]
    assert len(judged) == 3 and report["quality"]["judged"] == 3
    assert all(o["quality"]["score"] <= o["quality"]["threshold"] for o in report["written"])
    assert all(o["quality"]["score"] > o["quality"]["threshold"] for o in report["rejected"])
    for rejected in report["rejected"]:
        assert not list(out.glob(f"{rejected['case_id']}*"))  # nothing of a rejected pair is written
    dropped = {d["case_id"] for d in content["pairs"]["dropped"]}
    assert dropped == {o["case_id"] for o in report["rejected"]}
    assert content["pairs"]["written"] == len(report["written"])
    assert report["rejected"], "a random model's pairs should not all look like real lesion slices"
    rows = {row["id"]: row for row in read_gallery_cases(out / "index.html")}  # the review page lists all three
    assert set(rows) == {o["case_id"] for o in judged}
    for rejected in report["rejected"]:
        row = rows[rejected["case_id"]]
        assert row["status"] == "not written" and row["decision"] == "rejected" and row["thumbnail"] is None
    assert all(
        rows[o["case_id"]]["thumbnail"] and rows[o["case_id"]]["decision"] == "passed" for o in report["written"]
    )


def test_the_host_is_the_vertebral_body_without_the_posterior_elements(demo_data, models):
    hosts = pair_parser([], demo_data, models).get_parsed_content("hosts")
    whole = pair_parser([], demo_data, models, host_body_only=False).get_parsed_content("hosts")
    parts = [ndimage.label(mask.numpy())[1] for mask in whole.masks]
    assert max(parts) > 1  # the phantom's vertebra label also covers the posterior elements
    for body, mask in zip(hosts.masks, whole.masks, strict=True):
        assert ndimage.label(body.numpy())[1] == 1 and (body <= mask).all()
        assert body.sum() == max(np.bincount(ndimage.label(mask.numpy())[0].ravel())[1:])  # its largest part
    pairs = pair_parser([], demo_data, models, num_pairs=2).get_parsed_content("pairs")
    for request in pairs.requests:
        item = pairs(request)[0]
        assert ndimage.label(item["host_mask"][0].numpy())[1] == 1  # the guides stay in the body too
        assert (item["lesion_mask"] <= item["host_mask"]).all() and item["lesion_mask"].any()


def test_each_ablation_override_changes_what_it_names(demo_data, models):
    base = pair_parser([], demo_data, models)
    assert base.get_parsed_content("guide_schedule").mode == "shrink"
    assert base.get_parsed_content("writer").erosion_mm == 1.0
    assert base.get_parsed_content("quality_check") is not None
    sampler = base.get_parsed_content("mask_sampler")
    assert type(sampler) is HierarchicalMaskSampler
    dirs = {base.get_parsed_content("pairs_dir")}

    static = pair_parser(["meddiffft_ablation_static_guide.json"], demo_data, models)
    assert static.get_parsed_content("guide_schedule").mode == "static"
    assert static.get_parsed_content("inferer").guide_schedule.mode == "static"
    no_erosion = pair_parser(["meddiffft_ablation_no_erosion.json"], demo_data, models)
    assert no_erosion.get_parsed_content("writer").erosion_mm == 0.0
    no_filter = pair_parser(["meddiffft_ablation_no_filter.json"], demo_data, models)
    assert no_filter.get_parsed_content("quality_check") is None
    no_foundation = pair_parser(["meddiffft_ablation_no_foundation.json"], demo_data, models)
    loaded = no_foundation.get_parsed_content("inpainting_model").unet.state_dict()
    expected = tiny_inpainting_model(32, unet_channels=(16, 32), seed=2).unet.state_dict()
    assert all(torch.equal(loaded[name], value) for name, value in expected.items())

    real = pair_parser(["meddiffft_ablation_real_masks.json"], demo_data, models)
    sampler = real.get_parsed_content("mask_sampler")
    assert type(sampler) is RealMaskSampler
    masks, sizes = real.get_parsed_content("real_masks")
    frames = [shape_frame(mask) for mask in masks]
    for index in range(4):
        draw = sampler.draw(index)
        assert any(torch.equal(draw.shape, frame) for frame in frames)  # a real lesion's shape, re-placed
        assert (draw.mask[0] <= sampler.hosts[draw.host_index]).all()

    for parser in (static, no_erosion, no_filter, no_foundation, real):
        dirs.add(parser.get_parsed_content("pairs_dir"))
    assert len(dirs) == 6  # each arm writes its own pairs


class NoLesionSampler:
    """Draws host 0 and no lesion for every pair (the pair would fail in the job; its request is still made)."""

    frozen = ()

    def host_of(self, index: int) -> int:
        return 0

    def draw(self, index: int):
        raise InputError("host", "no lesion fits")


def test_pairs_take_their_lesion_cases_text_or_the_fixed_prompt_and_the_label_mode_reaches_the_writer():
    hosts = SimpleNamespace(entries=[{"case_id": "host", "image": "host.nii.gz", "text": "a normal vertebra"}])
    cases = [{"case_id": f"c{i}", "label": "benign", "text": f"lesion {i}"} for i in range(3)]
    for prompt, expected in (
        (None, ["lesion 0", "lesion 1", "lesion 2", "lesion 0"]),
        (LesionPrompt("fixed", "a photo of sks"), ["a photo of sks"] * 4),
    ):
        pairs = LesionPairs(hosts, NoLesionSampler(), cases, 4, preprocessing=None, prompt=prompt)
        assert [request["text"] for request in pairs.requests] == expected
        assert [request["text_case"] for request in pairs.requests] == ["c0", "c1", "c2", "c0"]
    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "meddiffft_pairs.json"))
    parser.update({"prompt_mode": "fixed"})
    assert parser.get_parsed_content("pairs#prompt")(["lesion 0"]) == ["a photo of hta"]
    parser.update({"label_mode": "change", "change_threshold": 0.2, "pairs_dir": "unused"})
    writer = parser.get_parsed_content("writer")
    assert (writer.label_mode, writer.change_threshold) == ("change", 0.2)
