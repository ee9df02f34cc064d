"""Headless Chromium (Debian's ``chromium`` package) opening a page from disk: its DOM after the scripts ran, or a
screenshot. The review gallery's tests (``tests/io/test_gallery.py``) and its load-time measurement
(:mod:`bundle.experiments.gallery_scale`) use it; CI installs it (``.ci/run``)."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


class BrowserError(RuntimeError):
    """Chromium is missing or failed."""


def chromium() -> str:
    found = shutil.which("chromium")
    if not found:
        raise BrowserError("headless Chromium is needed to open the review gallery: apt-get install -y chromium")
    return found


def open_page(url: str, *arguments: str, timeout: float = 120.0) -> str:
    """Run headless Chromium (a fresh profile) on ``url`` with ``arguments``; its standard output."""
    with tempfile.TemporaryDirectory(prefix="chromium_profile_") as profile:
        done = subprocess.run(
            [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *arguments, url],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    if done.returncode != 0:
        raise BrowserError(f"chromium failed on {url} (exit status {done.returncode}): {done.stderr[-2000:]}")
    return done.stdout


def dump_dom(page: Path, query: str = "", virtual_time_ms: int | None = 5000) -> str:
    """The DOM of ``page`` (a file) once it has loaded and its scripts ran: with ``virtual_time_ms`` of virtual time
    (timers run, no real waiting), or with ``None`` in real time up to the load event (page timings are real)."""
    budget = () if virtual_time_ms is None else (f"--virtual-time-budget={virtual_time_ms}",)
    return open_page(page.absolute().as_uri() + query, *budget, "--dump-dom")


def screenshot(page: Path, png: Path, window: tuple[int, int] = (1400, 900), query: str = "") -> Path:
    """A PNG of ``page`` (with the URL ``query``) as a ``window``-sized browser window shows it."""
    open_page(
        page.absolute().as_uri() + query,
        "--virtual-time-budget=5000",
        f"--screenshot={png.absolute()}",
        f"--window-size={window[0]},{window[1]}",
        "--hide-scrollbars",
    )
    if not png.is_file() or png.stat().st_size == 0:
        raise BrowserError(f"chromium wrote no screenshot {png}")
    return png


def root_attributes(dom: str) -> dict[str, str]:
    """The attributes of the dumped DOM's ``<html>`` element."""
    tag = re.search(r"<html([^>]*)>", dom)
    if tag is None:
        raise BrowserError("no <html> element in the dumped DOM")
    return dict(re.findall(r'([\w-]+)="([^"]*)"', tag.group(1)))
