# SPDX-License-Identifier: Apache-2.0
"""The dashboard of ``fwassist serve`` in a real headless browser (Debian's Chromium driven by
Playwright, as tests/test_audit_browser.py): no console error, nothing fetched from another
origin, data shown after a generation, readable at a phone's width. With
FWA_UPDATE_SERVE_SCREENSHOT=1 the screenshot is copied to docs/serve-dashboard.png."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable

from browser_fixtures import browser, open_page, png_size  # noqa: F401 (the fixture)
from serve_fixtures import ServerProcess, stream_completion

ROOT = Path(__file__).resolve().parent.parent
PROMPT = "static int i2c_read(struct i2c *bus, uint8_t addr)\n{\n"


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
        page, errors, requests = open_page(browser, srv.url + "/", 1100, 900)
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
        page, errors, _ = open_page(browser, srv.url + "/", 390, 900)
        try:
            _wait(page, "#heat-legend", lambda t: "layers" in t)
            assert page.evaluate("document.documentElement.scrollWidth") <= 390
            assert errors == []
            assert png_size(page.screenshot())[0] == 390
        finally:
            page.close()
    finally:
        assert srv.stop() == 0
