# SPDX-License-Identifier: Apache-2.0
"""The dashboard of ``fwassist serve`` in a real headless browser (Debian's Chromium driven by
Playwright, as tests/test_audit_browser.py): no console error, nothing fetched from another
origin, data shown after a generation, readable at a phone's width. With
FWA_UPDATE_SERVE_SCREENSHOT=1 the screenshot is copied to docs/serve-dashboard.png."""

from __future__ import annotations

import os
import shutil
import struct
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from serve_fixtures import ServerProcess, stream_completion

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("FWA_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
PROMPT = "static int i2c_read(struct i2c *bus, uint8_t addr)\n{\n"


@pytest.fixture(scope="module")
def browser():
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


def _open(browser: Any, url: str, width: int) -> tuple[Any, list[str], list[str]]:
    page = browser.new_page(viewport={"width": width, "height": 900})
    errors: list[str] = []
    requests: list[str] = []
    page.on("console", lambda m: errors.append(f"console.{m.type}: {m.text}")
            if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
    page.on("request", lambda r: requests.append(r.url))
    page.goto(url, wait_until="load")
    return page, errors, requests


def _wait(page: Any, selector: str, ok: Callable[[str], bool], timeout: float = 20.0) -> None:
    """Polls the element's text from here: the page's CSP forbids the eval that
    page.wait_for_function needs."""
    deadline = time.monotonic() + timeout
    text = page.inner_text(selector)
    while not ok(text):
        assert time.monotonic() < deadline, f"{selector}: {text!r}"
        time.sleep(0.2)
        text = page.inner_text(selector)


def test_dashboard_shows_data_after_a_generation(browser, tmp_path):
    srv = ServerProcess("--sessions", "2")
    try:
        total = 0
        for n in (24, 32):
            status, _, usage, _ = stream_completion(srv, {"prompt": PROMPT, "max_tokens": n,
                                                          "temperature": 0})
            assert status == 200
            total += usage["completion_tokens"]
        page, errors, requests = _open(browser, srv.url + "/", 1100)
        try:
            _wait(page, "#heat-legend", lambda t: "layers" in t)
            # A generation during the page's life shows up in its totals and series.
            status, _, usage, _ = stream_completion(srv, {"prompt": PROMPT, "max_tokens": 48,
                                                          "temperature": 0})
            total += usage["completion_tokens"]
            _wait(page, "#totals", lambda t: t.startswith(f"{total} tokens"))
            _wait(page, "#n-j", lambda t: t != "–" and float(t) > 0)
            assert "tiny-coder" in page.inner_text("#sub")
            assert errors == []
            assert all(u.startswith(srv.url) for u in requests), requests
            heat = page.locator("#heat").bounding_box()
            assert heat is not None and heat["width"] > 100 and heat["height"] > 4
            shot = page.screenshot(full_page=True)
        finally:
            page.close()
        assert shot[:8] == b"\x89PNG\r\n\x1a\n" and len(shot) > 20_000
        (tmp_path / "dashboard.png").write_bytes(shot)
        if os.environ.get("FWA_UPDATE_SERVE_SCREENSHOT") == "1":
            (ROOT / "docs" / "serve-dashboard.png").write_bytes(shot)
        # A phone: one column, nothing wider than the screen.
        page, errors, _ = _open(browser, srv.url + "/", 390)
        try:
            _wait(page, "#heat-legend", lambda t: "layers" in t)
            assert page.evaluate("document.documentElement.scrollWidth") <= 390
            assert errors == []
            w = struct.unpack(">I", page.screenshot()[16:20])[0]
            assert w == 390
        finally:
            page.close()
    finally:
        assert srv.stop() == 0
