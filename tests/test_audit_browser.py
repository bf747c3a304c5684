# SPDX-License-Identifier: Apache-2.0
"""The audit report's HTML page in a real headless browser: Debian's Chromium driven by
Playwright (executable_path: no browser download). The page must render with no console
error, no network request and no script, show the hostile model-card strings as text, and give
a screenshot. FWA_UPDATE_AUDIT_EXAMPLE=1 copies the screenshot to docs/audit-report-example.png.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import zlib
from pathlib import Path
from typing import Any

import pytest

from fwassist.audit import build_report, parse_oem_policy, write_report

from test_audit import CARD_V1, CARD_V2, HOSTILE, POLICY, _export

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("FWA_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"


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


@pytest.fixture(scope="module")
def report_dir(build_tiny_model, tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("audit_browser")
    base = Path(build_tiny_model(seed=1234).onnx_path).parent
    _export(base, d / "v1.fwa", card=CARD_V1)
    _export(base, d / "v2.fwa", card=CARD_V2)
    trust = None
    try:  # signed releases where the sign extra is installed: more of the page to render
        import cryptography  # noqa: F401
    except ImportError:
        pass
    else:
        from fwassist.release import generate_key, make_policy, sign
        from fwassist.release.keys import ECDSA_P256, ED25519

        signers = {"supplier": generate_key(ECDSA_P256)[1], "oem": generate_key(ED25519)[1]}
        for name, version in (("v1", 1), ("v2", 2)):
            for k in signers.values():
                sign(d / f"{name}.fwa", k, version, f"RXSWIN-ECU7-{version}.0")
        trust = d / "trust-policy.json"
        trust.write_bytes(make_policy([(r, k.public_key_pem) for r, k in signers.items()],
                                      {"supplier": 1, "oem": 1}))
    rep = build_report(d / "v1.fwa", d / "v2.fwa", trust=trust,
                       policy=parse_oem_policy(json.dumps(POLICY).encode()),
                       policy_file="oem-policy.json")
    rep["new"]["file"] = HOSTILE[3]  # a file name with a bidi override
    write_report(rep, d / "report")
    return d / "report"


def _load(browser: Any, url: str) -> tuple[Any, list[str], list[str]]:
    """(page, console errors and page errors, URLs requested)."""
    page = browser.new_page(viewport={"width": 1100, "height": 1000})
    errors: list[str] = []
    requests: list[str] = []
    page.on("console", lambda m: errors.append(f"console.{m.type}: {m.text}")
            if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
    page.on("request", lambda r: requests.append(r.url))
    page.goto(url, wait_until="load")
    return page, errors, requests


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    w, h = struct.unpack(">II", data[16:24])
    return w, h


def test_page_renders_without_errors(browser, report_dir, tmp_path):
    url = (report_dir / "index.html").as_uri()
    page, errors, requests = _load(browser, url)
    try:
        assert errors == []
        assert requests == [url]          # nothing fetched but the page itself
        assert page.locator("script").count() == 0
        assert page.locator("img").count() == 0
        assert page.locator("h1").is_visible()
        body = page.inner_text("body")
        for s in HOSTILE[:3]:
            assert s in body
        assert "evil\\u202egnp.fwa" in body and "\u202e" not in body
        assert page.locator("table").count() >= 8
        shot = page.screenshot(full_page=False)
    finally:
        page.close()
    w, h = _png_size(shot)
    assert (w, h) == (1100, 1000)
    # Not a blank page: the compressed image of a uniform page is a few hundred bytes.
    assert len(shot) > 20_000 and len(zlib.compress(shot)) > 10_000
    (tmp_path / "shot.png").write_bytes(shot)
    if os.environ.get("FWA_UPDATE_AUDIT_EXAMPLE") == "1":
        (ROOT / "docs" / "audit-report-example.png").write_bytes(shot)


def test_console_errors_are_seen(browser, report_dir, tmp_path):
    """The control: the same page with an injected script is blocked by its CSP, and that
    shows as a console error, so an empty error list above means something."""
    page_html = (report_dir / "index.html").read_text(encoding="utf-8")
    bad = tmp_path / "bad.html"
    bad.write_text(page_html.replace("<body>", "<body><script>document.title='x'</script>", 1),
                   encoding="utf-8")
    page, errors, _ = _load(browser, bad.as_uri())
    try:
        assert page.title() != "x"
        assert any("Content Security Policy" in e for e in errors), errors
    finally:
        page.close()
