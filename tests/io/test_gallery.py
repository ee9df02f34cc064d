"""The review gallery of a synthesis run, opened in headless Chromium: a row for every case (written, kept from an
earlier run, failed), every thumbnail loads, a broken one is caught, the page is rewritten whole on every run, and a
case's text cannot break out of the page's data."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.image import imread

from bundle.engines.synthesis_job import KeyPredictor, SynthesisJob
from bundle.io.gallery import PANELS, THUMBNAIL_HEIGHT, ReviewGallery, render_thumbnail
from bundle.metrics.quality_filter import FeatureSpaceFilter, QualityCheck
from bundle.metrics.synthesis_checks import SynthesisChecks
from tests.helpers.browser import dump_dom, root_attributes, screenshot
from tests.helpers.paths import SCT_LEVELS, SCT_T2
from tests.helpers.workflows import preview_parser, write_datalist

pytestmark = pytest.mark.usefixtures("shared_data")

SEGMENT = {"image": str(SCT_T2), "vertebra_seg": str(SCT_LEVELS), "mask_labels": [3]}
POINT = {"image": str(SCT_T2), "point": [30, 27, 26], "box_size_mm": 12}
HOSTILE_TEXT = 'a hypointense lesion</script><img src="x.png" id="injected">'
ENTRIES = [
    {**SEGMENT, "case_id": "still", "label": "benign", "text": "a hypointense lesion"},
    {**SEGMENT, "case_id": "darkened", "label": "malignant", "text": HOSTILE_TEXT},
    {**POINT, "case_id": "point", "label": "benign", "text": "a hyperintense lesion"},
    {**POINT, "case_id": "unknown_class", "label": "fracture", "text": "a lesion"},
]


class MeanIntensity(torch.nn.Module):
    """A one-number feature space for the quality filter: a slice's mean intensity."""

    description = "mean intensity"

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images.mean(dim=(1, 2, 3))[:, None]


class StillOrMasked:
    """The input unchanged for case ``still`` (warned: negligible change), ``I_m`` (the vertebra darkened) else."""

    def __call__(self, items):
        return KeyPredictor("image" if items[0].get("case_id") == "still" else "masked_image")(items)


def run(folder: Path) -> dict:
    """The soft-mask job of ``configs/mask_preview.json`` with warnings, a quality filter and the gallery."""
    output_dir = folder / "out"
    preview = preview_parser(
        datalist=str(write_datalist(folder / "list.json", ENTRIES)), output_dir=str(output_dir)
    ).get_parsed_content("job")
    thresholds = {"benign": 1.0, "malignant": 0.0}  # distance of the mean intensity to 0: malignant fails
    quality_filter = FeatureSpaceFilter(
        {label: torch.zeros(1, 1) for label in thresholds},
        thresholds,
        k=1,
        quantile=0.95,
        feature_space="mean intensity",
    )
    job = SynthesisJob(
        preview.cases,
        preview.preprocessing,
        StillOrMasked(),
        preview.writer,
        output_dir,
        details=preview.details,
        quality_check=QualityCheck(quality_filter, MeanIntensity()),
        checks=SynthesisChecks(),
        gallery=ReviewGallery(output_dir),
    )
    return job.run()


@pytest.fixture(scope="module")
def gallery(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("gallery")
    report = run(folder)
    assert [f["case_id"] for f in report["failed"]] == ["unknown_class"]
    return folder / "out" / "index.html"


def page_data(page: Path) -> list[dict]:
    embedded = re.search(r'<script type="application/json" id="cases">(.*?)</script>', page.read_text(), re.S)
    return json.loads(embedded.group(1))


def test_every_case_has_its_row_and_every_thumbnail_loads(gallery):
    dom = dump_dom(gallery, "?all")
    page = root_attributes(dom)
    assert page["data-rows"] == "4" and page["data-images"] == "3 of 3" and page["data-broken"] == ""
    rows = re.findall(r'<tr class="case" data-case="([^"]+)"', dom)
    assert rows == ["still", "darkened", "point", "unknown_class"]
    assert dom.count("<img ") == 3 and '<img src="x.png"' not in dom  # the text is shown as text, not markup
    assert "a hypointense lesion&lt;/script&gt;&lt;img" in dom
    cases = {c["id"]: c for c in page_data(gallery)}
    assert cases["darkened"]["decision"] == "rejected" and cases["point"]["decision"] == "passed"
    assert cases["darkened"]["score"] > cases["darkened"]["threshold"] == 0.0
    assert cases["unknown_class"]["decision"] == "failed" and "fracture" in cases["unknown_class"]["error"]
    warned = {w["code"]: w for w in cases["still"]["warnings"]}
    assert warned["negligible_change"]["measured"] == 0.0 and warned["negligible_change"]["threshold"] == 0.01
    assert "quality_filter_rejected" in {w["code"] for w in cases["darkened"]["warnings"]}
    assert "negligible_change</b>: the largest change inside the mask is 0.00%" in dom
    for case in ("still", "darkened", "point"):  # links relative to the page, to files that exist
        assert (gallery.parent / cases[case]["volume"]).is_file()
        assert (gallery.parent / cases[case]["provenance"]).is_file()
        assert f'href="{cases[case]["provenance"]}"' in dom


def test_a_missing_thumbnail_is_reported_as_broken(gallery, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(gallery.parent, copy)
    (copy / "point_synthetic_thumbnail.png").unlink()
    page = root_attributes(dump_dom(copy / "index.html", "?all"))
    assert page["data-images"] == "2 of 3" and page["data-broken"] == "point_synthetic_thumbnail.png"


def test_the_first_page_draws_lazy_rows_and_a_screenshot_is_taken(gallery, tmp_path):
    dom = dump_dom(gallery)
    assert dom.count('loading="lazy"') == 3 and root_attributes(dom)["data-rows"] == "4"
    png = screenshot(gallery, tmp_path / "gallery.png")
    shot = imread(png)
    assert shot.shape[:2] == (900, 1400) and shot[..., :3].std() > 0.05  # not a blank page


def test_a_rerun_rewrites_the_page_whole_with_the_kept_cases(gallery, tmp_path):
    folder = tmp_path / "rerun"
    shutil.copytree(gallery.parent.parent, folder)
    (folder / "out" / "index.html").write_text("stale")
    report = run(folder)
    assert sorted(s["case_id"] for s in report["skipped"]) == ["darkened", "point", "still"]
    statuses = {c["id"]: c["status"] for c in page_data(folder / "out" / "index.html")}
    assert statuses == {"still": "kept", "darkened": "kept", "point": "kept", "unknown_class": "failed"}
    assert not [p for p in (folder / "out").iterdir() if p.name.startswith(".")]  # no temporary file left


def test_the_thumbnail_shows_the_slice_of_largest_change_and_the_through_plane_extent(tmp_path):
    image = np.zeros((40, 30))
    masks = [np.pad(np.ones((10, 10)), ((15, 15), (10, 10)))] * 3
    changes = [np.zeros((40, 30)), masks[1] * 0.5, masks[1] * 0.2]
    path = render_thumbnail(tmp_path / "t.png", [image] * 3, masks, changes, 3.0, [1.0, 1.0])
    strip = imread(path)[..., :3]
    assert strip.shape[0] == THUMBNAIL_HEIGHT
    # the crop: the mask's 10 pixels and 5 on each side (20 rows -> 96), 20 columns -> 96; the reformat: 3 slices of
    # 3 mm against 1 mm pixels -> 9 columns for 20 rows -> 43
    widths = [96, 96, 96, 96, 43]
    assert strip.shape[1] == sum(widths) + 4 * (len(PANELS) - 1)
    synthetic = strip[:, 100:196]
    assert synthetic[48, 48].mean() == pytest.approx(0.5, abs=0.02)  # the slice changed most (by 0.5)
    difference = strip[:, 200:296]
    assert difference[48, 48, 0] > difference[48, 48, 2]  # a brighter change is red on the diverging scale
