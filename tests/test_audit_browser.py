# SPDX-License-Identifier: Apache-2.0
"""The audit report's HTML page in a real headless browser: Debian's Chromium driven by
Playwright (executable_path: no browser download). The page must render with no console
error, no network request and no script, show the hostile model-card strings as text, and give
a screenshot. FWA_UPDATE_AUDIT_EXAMPLE=1 copies the screenshot to docs/audit-report-example.png.
"""

from __future__ import annotations

import json
import os
import zlib
from pathlib import Path

import pytest

from fwassist.audit import build_report, parse_oem_policy, write_report

from browser_fixtures import browser, open_page, png_size  # noqa: F401 (the fixture)
from test_audit import CARD_V1, CARD_V2, HOSTILE, POLICY, _export

ROOT = Path(__file__).resolve().parent.parent


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


def test_page_renders_without_errors(browser, report_dir, tmp_path):
    url = (report_dir / "index.html").as_uri()
    page, errors, requests = open_page(browser, url, 1100, 1000)
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
    w, h = png_size(shot)
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
    page, errors, _ = open_page(browser, bad.as_uri(), 1100, 1000)
    try:
        assert page.title() != "x"
        assert any("Content Security Policy" in e for e in errors), errors
    finally:
        page.close()
