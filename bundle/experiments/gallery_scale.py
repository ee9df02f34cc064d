"""How heavy the review gallery of a large run is: a gallery of ``num_cases`` rows made from a real run's cases, its
size on disk and its load time in headless Chromium.

:func:`scaled_gallery` repeats a run folder's cases (its ``report.json``) until there are ``num_cases``: every row
gets its own id and its own copy of its source case's thumbnail (so the browser loads distinct files, as in a real
run); its other fields and its links (volume, provenance record) are the source case's. :func:`measure_load` opens
the page ``repeats`` times (a fresh browser profile each time, real time) and reads the timings the page writes on
``<html>``: ``data-ready-ms`` (navigation start to the rows drawn) and ``data-load-ms`` (to the load event: the
images in view loaded; with ``?all`` every image).
"""

from __future__ import annotations

import os
import shutil
import statistics
import time
from collections.abc import Mapping
from pathlib import Path

from bundle.experiments.headless_browser import dump_dom, root_attributes
from bundle.io.gallery import ReviewGallery, gallery_cases
from bundle.utils.files import read_json_object


def scaled_gallery(run_dir: str | os.PathLike, output_dir: str | os.PathLike, num_cases: int = 1000) -> Path:
    """Write ``output_dir/index.html`` with ``num_cases`` rows repeated from ``run_dir``'s cases; returns the page."""
    run_dir, output_dir = Path(run_dir), Path(output_dir)
    report = read_json_object(run_dir / "report.json", "the synthesis report")
    output_dir.mkdir(parents=True, exist_ok=True)
    sources = [c for c in gallery_cases(report, output_dir) if c.get("thumbnail")]
    if not sources:
        raise ValueError(f"{run_dir}: no case with a thumbnail in its report.json")
    cases = []
    for number in range(num_cases):
        source = sources[number % len(sources)]
        thumbnail = f"case_{number:05d}_thumbnail.png"
        shutil.copyfile(output_dir / source["thumbnail"], output_dir / thumbnail)
        cases.append({**source, "id": f"case_{number:05d}", "thumbnail": thumbnail})
    return ReviewGallery(output_dir, title=f"{num_cases} cases from {run_dir.name}").write(cases)


def measure_load(page: Path, repeats: int = 3, query: str = "") -> dict[str, object]:
    """The median (and all) of ``repeats`` loads of ``page`` (with the URL ``query``) in headless Chromium."""
    loads = []
    for _ in range(repeats):
        started = time.perf_counter()
        attributes = root_attributes(dump_dom(page, query, virtual_time_ms=None))
        wall = time.perf_counter() - started
        loads.append(
            {
                "ready_ms": float(attributes["data-ready-ms"]),
                "load_ms": float(attributes["data-load-ms"]),
                "rows_drawn": int(attributes["data-rows"]),
                "browser_wall_s": round(wall, 2),
            }
        )
    return {"median": {key: statistics.median(load[key] for load in loads) for key in loads[0]}, "loads": loads}


def gallery_scale(run_dir: str | os.PathLike, output_dir: str | os.PathLike, num_cases: int = 1000) -> Mapping:
    """:func:`scaled_gallery`, its bytes, then :func:`measure_load` as it opens (a page of rows, lazy images) and with
    ``?all`` (every row, every image loaded before the load event: what the pages and lazy loading save)."""
    page = scaled_gallery(run_dir, output_dir, num_cases)
    thumbnails = list(page.parent.glob("*.png"))
    return {
        "num_cases": num_cases,
        "source_run": str(Path(run_dir)),
        "page": str(page),
        "html_bytes": page.stat().st_size,
        "thumbnails": len(thumbnails),
        "thumbnail_bytes": sum(p.stat().st_size for p in thumbnails),
        "as_opened": measure_load(page),
        "all_rows": measure_load(page, query="?all"),
    }
