"""The review gallery of a synthesis run: ``OUT/index.html``, one static, self-contained page with a row per case.

Each case's row shows its thumbnail strip (:func:`render_thumbnail`, written beside the volume by the writer): the
original and the synthetic slice where the change is largest, their difference, the soft mask and a through-plane
reformat of the synthetic volume through the change; then the case's text, class, seed, the quality filter's score
and decision, its warnings (code, measured figure, threshold) and links to the volume and the provenance record.
The page filters by class, decision and warnings and sorts by score; it shows 50 rows a page and loads images
lazily, so a run of a thousand cases stays light. The cases are one JSON array embedded in the page and drawn by a
small inline script: no server, no network, nothing fetched but the thumbnails beside it.

For automatic checks the page marks ``<html>`` when it has loaded: ``data-rows`` (rows drawn), ``data-images``
(``"<loaded> of <total>"``), ``data-broken`` (the images that did not load) and ``data-ready-ms`` (time from
navigation start to the page drawn); the query ``?all`` draws every row with eager images. The query also sets the
filters and the order (``?class=benign&decision=rejected&warnings=with&sort=score-desc``), e.g. for a link to the
doubtful cases.
"""

from __future__ import annotations

import html
import io
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from urllib.parse import quote

import matplotlib
import numpy as np
from PIL import Image
from scipy import ndimage

from bundle.utils.files import read_json_object, write_atomically

GALLERY_NAME = "index.html"
THUMBNAIL_HEIGHT = 96  # pixels of each panel of a case's thumbnail strip
PANEL_GAP = 4
CROP_MARGIN = 0.5  # of the soft mask's extent, on each side, around the in-plane panels
PANELS = ("original", "synthetic", "difference", "soft mask", "through-plane")


def _grey(values: np.ndarray, low: float, high: float) -> np.ndarray:
    grey = np.clip((values - low) / ((high - low) or 1.0), 0.0, 1.0)
    return np.repeat(grey[..., None], 3, axis=-1)


def _coloured(values: np.ndarray, colormap: str, low: float, high: float) -> np.ndarray:
    return matplotlib.colormaps[colormap](np.clip((values - low) / ((high - low) or 1.0), 0.0, 1.0))[..., :3]


def _to_height(panel: np.ndarray, height: int, aspect: float = 1.0) -> np.ndarray:
    """An RGB panel ``(h, w, 3)`` resized to ``height`` rows, its width scaled by ``aspect`` (pixel width / height)."""
    zoom = height / panel.shape[0]
    width = max(1, round(panel.shape[1] * zoom * aspect))
    resized = ndimage.zoom(panel, (zoom, width / panel.shape[1], 1), order=1, grid_mode=True, mode="nearest")
    return np.clip(resized, 0.0, 1.0)


def largest_change_slice(changes: Sequence[np.ndarray]) -> int:
    """The index of the slice whose summed absolute change is largest (the first one when nothing changed)."""
    return int(np.argmax([float(np.abs(change).sum()) for change in changes]))


def render_thumbnail(
    path: str | os.PathLike,
    images: Sequence[np.ndarray],
    soft_masks: Sequence[np.ndarray],
    changes: Sequence[np.ndarray],
    slice_spacing_mm: float,
    pixel_spacing_mm: Sequence[float],
) -> Path:
    """Write one case's gallery strip: :data:`PANELS`, each :data:`THUMBNAIL_HEIGHT` pixels high, as a PNG.

    Args:
        images, soft_masks, changes: per slice of the case, in slice order, the native slice ``(H, W)`` (model
            intensity units), its soft mask (0..1) and the synthesis's change to it.
        slice_spacing_mm: the distance between neighbouring slices.
        pixel_spacing_mm: the slices' pixel size along ``H`` and ``W``.

    The in-plane panels show the slice of largest change, cropped to the soft mask's extent plus a margin; the
    through-plane panel is the synthetic volume's reformat along ``H`` (rows) and the slices (columns) at the column
    of largest change, at its physical aspect ratio.
    """
    shown = largest_change_slice(changes)
    image, mask, change = images[shown], soft_masks[shown], changes[shown]
    inside = np.argwhere(mask > 0) if (mask > 0).any() else np.argwhere(np.ones_like(mask, bool))
    low_corner, high_corner = inside.min(0), inside.max(0) + 1
    margin = np.ceil((high_corner - low_corner) * CROP_MARGIN).astype(int)
    rows = slice(max(0, low_corner[0] - margin[0]), min(mask.shape[0], high_corner[0] + margin[0]))
    columns = slice(max(0, low_corner[1] - margin[1]), min(mask.shape[1], high_corner[1] + margin[1]))
    low, high = np.percentile(image, [0.5, 99.5])
    limit = float(np.abs(change).max()) or 1.0
    column = int(np.unravel_index(int(np.argmax(np.abs(change))), change.shape)[1])
    reformat = np.stack([(i + c)[rows, column] for i, c in zip(images, changes, strict=True)], axis=1)
    aspect = pixel_spacing_mm[1] / pixel_spacing_mm[0]
    panels = [
        _to_height(_grey(image[rows, columns], low, high), THUMBNAIL_HEIGHT, aspect),
        _to_height(_grey((image + change)[rows, columns], low, high), THUMBNAIL_HEIGHT, aspect),
        _to_height(_coloured(change[rows, columns], "coolwarm", -limit, limit), THUMBNAIL_HEIGHT, aspect),
        _to_height(_coloured(mask[rows, columns], "magma", 0.0, 1.0), THUMBNAIL_HEIGHT, aspect),
        _to_height(_grey(reformat, low, high), THUMBNAIL_HEIGHT, slice_spacing_mm / pixel_spacing_mm[0]),
    ]
    gap = np.ones((THUMBNAIL_HEIGHT, PANEL_GAP, 3))
    strip = np.concatenate([part for panel in panels for part in (panel, gap)][:-1], axis=1)
    buffer = io.BytesIO()
    Image.fromarray((strip * 255).round().astype(np.uint8)).save(buffer, format="PNG", optimize=True)
    return write_atomically(path, buffer.getvalue())


def _relative(path: object, folder: Path) -> str | None:
    """``path`` as a URL relative to ``folder`` (where the page is), or ``None``."""
    if not path:
        return None
    return quote(Path(os.path.relpath(Path(str(path)).absolute(), folder.absolute())).as_posix())


def _figure(value: object) -> object:
    """A figure for the page's JSON: a non-finite number (no JSON for it) becomes ``None``."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _decision(quality: Mapping | None) -> str:
    if not quality:
        return "not judged"
    return "passed" if quality.get("passed") else "rejected"


def gallery_case(entry: Mapping, status: str, folder: Path) -> dict[str, object]:
    """One row of the page from a report entry (``written`` or ``skipped``; ``status`` says which) and its
    provenance record (text, class, seed); paths relative to ``folder``."""
    try:
        record = read_json_object(entry["provenance"], "the provenance record")
    except (OSError, ValueError, KeyError):
        record = {}
    quality = entry.get("quality") or record.get("quality") or {}
    thumbnail = entry.get("thumbnail")
    if not thumbnail or not Path(str(thumbnail)).is_file():  # a case written before thumbnails existed
        thumbnail = entry.get("preview")
    return {
        "id": str(entry.get("case_id", record.get("case_id", ""))),
        "status": status,
        "label": record.get("label"),
        "text": record.get("text"),
        "seed": record.get("seed"),
        "score": _figure(quality.get("score")),
        "threshold": _figure(quality.get("threshold")),
        "decision": _decision(quality),
        "warnings": [
            {key: _figure(w.get(key)) for key in ("code", "message", "measured", "threshold")}
            for w in entry.get("warnings") or record.get("warnings") or []
        ],
        "thumbnail": _relative(thumbnail, folder),
        "volume": _relative(entry.get("volume"), folder),
        "provenance": _relative(entry.get("provenance"), folder),
    }


def gallery_cases(report: Mapping, folder: Path) -> list[dict[str, object]]:
    """Every case of a synthesis report as a row: written now, kept from an earlier run, rejected by the quality
    filter and not written (a job with ``write_rejected=False``: score and decision, no images), failed (with its
    error)."""
    cases = [gallery_case(e, "written", folder) for e in report.get("written", [])]
    cases += [gallery_case(e, "kept", folder) for e in report.get("skipped", [])]
    cases += [gallery_case(e, "not written", folder) for e in report.get("rejected", [])]
    cases += [
        {"id": str(f.get("case_id")), "status": "failed", "decision": "failed", "warnings": [], "error": f.get("error")}
        for f in report.get("failed", [])
    ]
    return cases


def read_gallery_cases(page: str | os.PathLike) -> list[dict[str, object]]:
    """The case rows embedded in a written page (``index.html``)."""
    found = re.search(r'<script type="application/json" id="cases">(.*?)</script>', Path(page).read_text(), re.S)
    if found is None:
        raise ValueError(f"{page}: no embedded case data; not a review gallery page")
    return json.loads(found.group(1))


class ReviewGallery:
    """Writes ``output_dir/index.html`` from a synthesis report (:meth:`bundle.engines.synthesis_job.SynthesisJob.
    finish`'s): atomically (a temporary file renamed into place), so the page is whole or the earlier one is kept;
    each run over the folder writes it anew.

    Args:
        output_dir: the folder of the page (the run's output folder; the outputs are linked relative to it).
        title: the page's heading.
        page_size: rows per page.
    """

    def __init__(self, output_dir: str | os.PathLike, title: str = "Synthesis review", page_size: int = 50) -> None:
        self.output_dir = Path(output_dir)
        self.title = title
        self.page_size = int(page_size)

    def __call__(self, report: Mapping) -> Path:
        """Write the page of ``report``'s cases; returns its path."""
        cases = gallery_cases(report, self.output_dir)
        return self.write(cases)

    def write(self, cases: Sequence[Mapping]) -> Path:
        """Write the page of ``cases`` (rows as :func:`gallery_case` makes them)."""
        # "<" escaped: no text of a case can close the script element that holds the data
        data = json.dumps(list(cases), separators=(",", ":"), allow_nan=False).replace("<", "\\u003c")
        page = (
            PAGE.replace("__TITLE__", html.escape(self.title))
            .replace("__PAGE_SIZE__", str(self.page_size))
            .replace("__PANELS__", " · ".join(PANELS))
            .replace("__CASES__", data)
        )
        self.output_dir.mkdir(parents=True, exist_ok=True)
        return write_atomically(self.output_dir / GALLERY_NAME, page.encode())


PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>__TITLE__</title>
<style>
body { font: 13px/1.35 system-ui, sans-serif; margin: 12px; color: #222; }
h1 { font-size: 18px; margin: 0 0 6px; }
#controls { display: flex; gap: 12px; align-items: center; flex-wrap: wrap; margin: 6px 0 10px; }
table { border-collapse: collapse; width: 100%; }
th, td { border-bottom: 1px solid #ddd; padding: 4px 6px; text-align: left; vertical-align: top; }
th { background: #f3f3f3; position: sticky; top: 0; }
td.thumb img { height: 80px; display: block; background: #000; }
td.case, td.files { white-space: nowrap; }
td.text { min-width: 16em; max-width: 26em; font-size: 12px; }
td.warnings { min-width: 14em; max-width: 24em; font-size: 12px; }
.warn { color: #a34400; margin: 0 0 3px; }
.rejected, .failed { color: #b00020; font-weight: 600; }
.passed { color: #1b7a1b; }
.muted { color: #777; }
</style>
</head>
<body>
<h1>__TITLE__</h1>
<div id="summary" class="muted"></div>
<div id="controls">
<label>class <select id="class"><option value="*">all</option></select></label>
<label>decision <select id="decision"><option value="*">all</option><option>passed</option><option>rejected</option>
<option>not judged</option><option>failed</option></select></label>
<label>warnings <select id="warnings"><option value="*">all</option><option value="with">with warnings</option>
<option value="without">without</option></select></label>
<label>sort <select id="sort"><option value="run">report order</option>
<option value="score-desc">score, highest first</option>
<option value="score-asc">score, lowest first</option></select></label>
<button id="previous">&larr;</button><span id="page"></span><button id="next">&rarr;</button>
</div>
<table>
<thead><tr><th>case · class · seed</th><th>__PANELS__</th><th>text</th><th>score / threshold</th><th>decision</th>
<th>warnings</th><th>files</th></tr></thead>
<tbody id="rows"></tbody>
</table>
<script type="application/json" id="cases">__CASES__</script>
<script>
"use strict";
const cases = JSON.parse(document.getElementById("cases").textContent);
const query = new URLSearchParams(location.search);
const everything = query.has("all");
const pageSize = everything ? Infinity : __PAGE_SIZE__;
const element = (id) => document.getElementById(id);
let page = 0;

function cell(row, text, className) {
  const td = row.insertCell();
  if (text !== undefined && text !== null) td.textContent = String(text);
  if (className) td.className = className;
  return td;
}

function link(td, href, text) {
  if (!href) return;
  const a = document.createElement("a");
  a.href = href;
  a.textContent = text;
  td.append(a, " ");
}

function figure(value) {
  return value === null || value === undefined ? "" : Number(value).toPrecision(3);
}

function selected() {
  const label = element("class").value, decision = element("decision").value;
  const warnings = element("warnings").value, order = element("sort").value;
  const chosen = cases.filter((c) =>
    (label === "*" || String(c.label ?? "") === label) &&
    (decision === "*" || c.decision === decision) &&
    (warnings === "*" || (warnings === "with") === (c.warnings.length > 0)));
  if (order !== "run") {
    const sign = order === "score-asc" ? 1 : -1;
    chosen.sort((a, b) => (a.score ?? null) === null ? ((b.score ?? null) === null ? 0 : 1)
      : (b.score ?? null) === null ? -1 : sign * (a.score - b.score));
  }
  return chosen;
}

function draw() {
  const chosen = selected();
  const pages = Math.max(1, Math.ceil(chosen.length / pageSize));
  page = Math.min(page, pages - 1);
  const rows = element("rows");
  rows.replaceChildren();
  const shown = everything ? chosen : chosen.slice(page * pageSize, (page + 1) * pageSize);
  for (const c of shown) {
    const row = rows.insertRow();
    row.className = "case";
    row.dataset.case = c.id;
    const name = cell(row, c.id, "case");
    const seed = c.seed === undefined || c.seed === null ? null : "seed " + c.seed;
    for (const [text, className] of [[c.status, "muted"], [c.label, ""], [seed, "muted"]]) {
      if (text === undefined || text === null) continue;
      const line = document.createElement("div");
      line.className = className;
      line.textContent = String(text);
      name.append(line);
    }
    const thumb = cell(row, null, "thumb");
    if (c.thumbnail) {
      const img = document.createElement("img");
      img.loading = everything ? "eager" : "lazy";
      img.alt = "thumbnail of " + c.id;
      img.src = c.thumbnail;
      thumb.append(img);
    } else if (c.error) {
      thumb.textContent = c.error;
      thumb.className = "failed";
    }
    cell(row, c.text, "text");
    cell(row, c.score === undefined || c.score === null ? "" : figure(c.score) + " / " + figure(c.threshold));
    cell(row, c.decision, c.decision.replace(" ", "-"));
    const warned = cell(row, null, "warnings");
    for (const w of c.warnings) {
      const p = document.createElement("p");
      p.className = "warn";
      p.title = "measured " + w.measured + ", threshold " + w.threshold;
      const code = document.createElement("b");
      code.textContent = w.code;
      p.append(code, ": " + w.message);
      warned.append(p);
    }
    const files = cell(row, null, "files");
    link(files, c.volume, "volume");
    link(files, c.provenance, "provenance");
  }
  element("page").textContent = " page " + (page + 1) + " of " + pages + " (" + chosen.length + " cases) ";
  document.documentElement.dataset.rows = String(shown.length);
}

function checkImages() {
  const images = [...document.querySelectorAll("#rows img")];
  const loaded = images.filter((img) => img.complete && img.naturalWidth > 0);
  const broken = images.filter((img) => img.complete && img.naturalWidth === 0);
  document.documentElement.dataset.images = loaded.length + " of " + images.length;
  document.documentElement.dataset.broken = broken.map((img) => img.getAttribute("src")).join(" ");
}

const labels = [...new Set(cases.map((c) => String(c.label ?? "")))].sort();
for (const label of labels) {
  const option = document.createElement("option");
  option.value = label;
  option.textContent = label || "(none)";
  element("class").append(option);
}
const count = (test) => cases.filter(test).length;
element("summary").textContent = cases.length + " cases: " +
  count((c) => c.status === "written") + " written now, " + count((c) => c.status === "kept") +
  " kept from an earlier run, " + count((c) => c.status === "not written") + " rejected and not written, " +
  count((c) => c.status === "failed") + " failed; " +
  count((c) => c.decision === "passed") + " passed and " + count((c) => c.decision === "rejected") +
  " rejected by the quality filter; " + count((c) => c.warnings.length > 0) + " with warnings.";
for (const id of ["class", "decision", "warnings", "sort"]) {
  if (query.has(id)) element(id).value = query.get(id);
  element(id).addEventListener("change", () => { page = 0; draw(); });
}
element("previous").addEventListener("click", () => { page = Math.max(0, page - 1); draw(); });
element("next").addEventListener("click", () => { page += 1; draw(); });
draw();
document.documentElement.dataset.readyMs = performance.now().toFixed(1);
window.addEventListener("load", () => {
  checkImages();
  document.documentElement.dataset.loadMs = performance.now().toFixed(1);
});
</script>
</body>
</html>
"""
