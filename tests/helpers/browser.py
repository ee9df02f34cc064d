"""Headless Chromium (Debian's ``chromium`` package) opening a page from disk: its DOM after the scripts ran, or a
screenshot. CI installs it (``.ci/run``); without it the tests that need it fail and say how to install it."""

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


def chromium() -> str:
    found = shutil.which("chromium")
    assert found, "headless Chromium is needed for the gallery tests: apt-get install -y chromium (see .ci/run)"
    return found


def open_page(url: str, *arguments: str, timeout: float = 60.0) -> str:
    """Run headless Chromium on ``url`` with ``arguments``; its standard output."""
    with tempfile.TemporaryDirectory(prefix="chromium_profile_") as profile:
        done = subprocess.run(
            [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *arguments, url],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    assert done.returncode == 0, f"chromium failed on {url}: {done.stderr[-2000:]}"
    return done.stdout


def dump_dom(page: Path, query: str = "", virtual_time_ms: int | None = 5000) -> str:
    """The DOM of ``page`` (a file) once it has loaded, its scripts run (``virtual_time_ms`` of virtual time, or
    real time until the load event when ``None``)."""
    budget = () if virtual_time_ms is None else (f"--virtual-time-budget={virtual_time_ms}",)
    return open_page(page.absolute().as_uri() + query, *budget, "--dump-dom")


def screenshot(page: Path, png: Path, window: tuple[int, int] = (1400, 900)) -> Path:
    open_page(
        page.absolute().as_uri(),
        "--virtual-time-budget=5000",
        f"--screenshot={png.absolute()}",
        f"--window-size={window[0]},{window[1]}",
        "--hide-scrollbars",
    )
    assert png.is_file() and png.stat().st_size > 0, f"chromium wrote no screenshot {png}"
    return png


def root_attributes(dom: str) -> dict[str, str]:
    """The attributes of the dumped DOM's ``<html>`` element."""
    tag = re.search(r"<html([^>]*)>", dom)
    assert tag, "no <html> element in the dumped DOM"
    return dict(re.findall(r'([\w-]+)="([^"]*)"', tag.group(1)))
