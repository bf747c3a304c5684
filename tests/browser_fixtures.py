# SPDX-License-Identifier: Apache-2.0
"""A real headless browser for the tests of the HTML pages (the audit report, the serve
dashboard): Debian's Chromium driven by Playwright (executable_path: no browser download).
A test module takes the ``browser`` fixture by importing it."""

from __future__ import annotations

import os
import shutil
import struct
from typing import Any, Iterator

import pytest

CHROMIUM = os.environ.get("FWA_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="Playwright is in the test extra (pip install "
                                      "'fwassist[test]')")
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"Chromium not found at {CHROMIUM} (Debian package 'chromium'; "
                    f"scripts/install_deps.sh installs it)")
    with sync_api.sync_playwright() as pw:
        # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start.
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield b
        b.close()


def open_page(browser: Any, url: str, width: int,
              height: int) -> tuple[Any, list[str], list[str]]:
    """A new page loaded from ``url``: (page, its console errors and warnings and page
    errors, the URLs it requested)."""
    page = browser.new_page(viewport={"width": width, "height": height})
    errors: list[str] = []
    requests: list[str] = []
    page.on("console", lambda m: errors.append(f"console.{m.type}: {m.text}")
            if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
    page.on("request", lambda r: requests.append(r.url))
    page.goto(url, wait_until="load")
    return page, errors, requests


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) of a PNG image."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    w, h = struct.unpack(">II", data[16:24])
    return w, h
