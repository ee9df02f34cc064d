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
from matplotlib.image import imread

from bundle.experiments.headless_browser import dump_dom, root_attributes, screenshot
from bundle.io.gallery import PANELS, THUMBNAIL_HEIGHT, ReviewGallery, read_gallery_cases, render_thumbnail
from bundle.metrics.synthesis_checks import SynthesisChecks
from tests.helpers.paths import SCT_LEVELS, SCT_T2
from tests.helpers.synthesis_jobs import StillOrMasked, job_from_preview, mean_intensity_check
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


def run(folder: Path) -> dict:
    """The soft-mask job of ``configs/mask_preview.json`` with warnings, a quality filter and the gallery."""
    output_dir = folder / "out"
    preview = preview_parser(
        datalist=str(write_datalist(folder / "list.json", ENTRIES)), output_dir=str(output_dir)
    ).get_parsed_content("job")
    thresholds = {"benign": 1.0, "malignant": 0.0}  # the score is the mean intensity: malignant fails
    job = job_from_preview(
        preview,
        output_dir,
        StillOrMasked(),
        quality_check=mean_intensity_check(thresholds),
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


def test_every_case_has_its_row_and_every_thumbnail_loads(gallery):
    dom = dump_dom(gallery, "?all")
    page = root_attributes(dom)
    assert page["data-rows"] == "4" and page["data-images"] == "3 of 3" and page["data-broken"] == ""
    rows = re.findall(r'<tr class="case" data-case="([^"]+)"', dom)
    assert rows == ["still", "darkened", "point", "unknown_class"]
    assert dom.count("<img ") == 3 and '<img src="x.png"' not in dom  # the text is shown as text, not markup
    assert "a hypointense lesion&lt;/script&gt;&lt;img" in dom
    cases = {c["id"]: c for c in read_gallery_cases(gallery)}
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


@pytest.mark.parametrize(
    ("query", "shown"),
    [
        ("warnings=with", ["still", "darkened", "point"]),
        ("warnings=without", ["unknown_class"]),
        ("class=benign", ["still", "point"]),
        ("decision=rejected", ["darkened"]),
        ("decision=failed", ["unknown_class"]),
    ],
)
def test_the_filters_choose_the_rows(gallery, query, shown):
    dom = dump_dom(gallery, f"?all&{query}")
    assert re.findall(r'<tr class="case" data-case="([^"]+)"', dom) == shown


@pytest.mark.parametrize("order", ["score-desc", "score-asc"])
def test_sorting_by_score_puts_the_unscored_case_last(gallery, order):
    scores = {c["id"]: c["score"] for c in read_gallery_cases(gallery) if c.get("score") is not None}
    assert len(set(scores.values())) == 3  # three distinct scores: the order is not the run's by chance
    expected = sorted(scores, key=scores.get, reverse=order == "score-desc") + ["unknown_class"]
    dom = dump_dom(gallery, f"?all&sort={order}")
    assert re.findall(r'<tr class="case" data-case="([^"]+)"', dom) == expected


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
    statuses = {c["id"]: c["status"] for c in read_gallery_cases(folder / "out" / "index.html")}
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


def test_a_non_finite_score_leaves_the_page_data_valid_json(tmp_path):
    record = tmp_path / "a b_synthetic.json"  # a name a URL must escape
    record.write_text(json.dumps({"case_id": "a b", "text": "a lesion", "label": "benign", "seed": 3}))
    written = {"case_id": "a b", "provenance": str(record), "volume": str(tmp_path / "a b_synthetic.nii.gz")}
    report = {"written": [{**written, "quality": {"score": float("inf"), "threshold": 1.0, "passed": False}}]}
    (case,) = read_gallery_cases(ReviewGallery(tmp_path)(report))  # a browser's JSON.parse has no Infinity
    assert case["score"] is None and case["threshold"] == 1.0 and case["decision"] == "rejected"
    assert case["provenance"] == "a%20b_synthetic.json" and case["seed"] == 3 and case["label"] == "benign"
