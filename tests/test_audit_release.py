# SPDX-License-Identifier: Apache-2.0
"""``fwassist audit`` with signed releases: the signature verdicts of both artifacts (the
reference verifier fwassist.release.verify), the identities they give (security version,
RXSWIN, signers by role) and the OEM policy's version rules on them."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("cryptography", reason="signing needs the 'sign' extra (cryptography)")

from fwassist.audit import AuditError, build_report, parse_oem_policy, render_html  # noqa: E402
from fwassist.release import generate_key, make_policy, sign  # noqa: E402
from fwassist.release.keys import ECDSA_P256, ED25519  # noqa: E402

from test_audit import CARD_V1, POLICY, _export, validate  # noqa: E402

RULES = dict(POLICY, require_security_version_increase=True, require_rxswin_change=True,
             required_evidence={"substantial": ["signed-release", "logits-reproduction"],
                                "non_substantial": ["signed-release"]})


@pytest.fixture(scope="module")
def keys() -> dict[str, Any]:
    return {"supplier": generate_key(ECDSA_P256)[1], "oem": generate_key(ED25519)[1],
            "stranger": generate_key(ECDSA_P256)[1]}


@pytest.fixture(scope="module")
def setup(build_tiny_model, keys, tmp_path_factory) -> dict[str, Path]:
    """v1 (security version 1, RXSWIN R-1) and v2 (other weights; 2, R-2), both signed by
    the supplier (ECDSA P-256) and the OEM (Ed25519); a trust policy requiring both."""
    d = tmp_path_factory.mktemp("audit_release")
    _export(Path(build_tiny_model(seed=1234).onnx_path).parent, d / "v1.fwa", card=CARD_V1)
    _export(Path(build_tiny_model(seed=4321).onnx_path).parent, d / "v2.fwa", card=CARD_V1)
    for name, version, rxswin in (("v1", 1, "R-1"), ("v2", 2, "R-2")):
        for role in ("supplier", "oem"):
            sign(d / f"{name}.fwa", keys[role], version, rxswin)
    (d / "trust.json").write_bytes(make_policy(
        [(r, keys[r].public_key_pem) for r in ("supplier", "oem")],
        {"supplier": 1, "oem": 1}, policy_version=4))
    (d / "oem.json").write_text(json.dumps(RULES), encoding="utf-8")
    return {"dir": d, "v1": d / "v1.fwa", "v2": d / "v2.fwa", "trust": d / "trust.json",
            "oem": d / "oem.json"}


def _report(setup: dict[str, Path], new: Path, **kw: Any) -> dict[str, Any]:
    r = build_report(setup["v1"], new, trust=setup["trust"],
                     policy=parse_oem_policy(setup["oem"].read_bytes()),
                     policy_file=setup["oem"], reproduce=kw.pop("reproduce", False), **kw)
    validate(r)
    return r


def test_signed_upgrade_passes(setup, keys):
    r = _report(setup, setup["v2"], reproduce=True)
    assert r["trust_policy"] == {"file": "trust.json", "policy_version": 4}
    for side, version, rxswin in (("old", 1, "R-1"), ("new", 2, "R-2")):
        rel = r[side]["release"]
        assert rel["status"] == "ok" and rel["message"] is None
        assert (rel["security_version"], rel["rxswin"]) == (version, rxswin)
        assert rel["signature_file"] == f"v{version}.fwa.sig"
        assert [(s["keyid"], s["role"], s["status"]) for s in rel["signers"]] == [
            (keys["supplier"].keyid, "supplier", "valid"), (keys["oem"].keyid, "oem", "valid")]
    p = r["oem_policy"]
    assert {f["rule"]: f["result"] for f in p["findings"]} == {
        "substantial-modification": "pass", "security-version-increase": "pass",
        "rxswin-change": "pass"}
    assert [(e["name"], e["status"]) for e in p["required_evidence"]] == [
        ("signed-release", "present"), ("logits-reproduction", "present")]
    assert p["verdict"] == "pass"


def _variant(setup: dict[str, Path], name: str, signers: list[Any], version: int,
             rxswin: Any) -> Path:
    p = setup["dir"] / f"{name}.fwa"
    shutil.copyfile(setup["v2"], p)
    for k in signers:
        sign(p, k, version, rxswin)
    return p


def test_replayed_version_and_same_rxswin_fail(setup, keys):
    p = _variant(setup, "replay", [keys["supplier"], keys["oem"]], 1, "R-1")
    r = _report(setup, p)
    assert r["new"]["release"]["status"] == "ok"
    res = {f["rule"]: (f["result"], f["message"]) for f in r["oem_policy"]["findings"]}
    assert res["security-version-increase"] == ("fail", "security version 1 -> 1")
    assert res["rxswin-change"] == ("fail", "RXSWIN 'R-1' -> 'R-1'")
    assert r["oem_policy"]["verdict"] == "fail"


def test_missing_role_is_refused_with_the_claims_marked(setup, keys):
    p = _variant(setup, "supplier-only", [keys["supplier"], keys["stranger"]], 3, "R-3")
    r = _report(setup, p)
    rel = r["new"]["release"]
    assert rel["status"] == "untrusted" and "'oem'" in rel["message"]
    # What the statement claims is recorded, the stranger's key without a role.
    assert (rel["security_version"], rel["rxswin"]) == (3, "R-3")
    assert [(s["role"], s["status"]) for s in rel["signers"]] == [("supplier", "valid"),
                                                                   (None, "untrusted")]
    p_ = r["oem_policy"]
    assert {e["name"]: e["status"] for e in p_["required_evidence"]}["signed-release"] == \
        "missing"
    assert {f["rule"]: f["result"] for f in p_["findings"]}["security-version-increase"] == \
        "unknown"
    assert p_["verdict"] == "fail"
    assert "(claimed; not verified)" in render_html(r)


def test_signature_of_another_artifact_and_unsigned(setup):
    p = setup["dir"] / "borrowed.fwa"
    shutil.copyfile(setup["v2"], p)
    shutil.copyfile(setup["dir"] / "v1.fwa.sig", str(p) + ".sig")
    r = _report(setup, p)
    assert r["new"]["release"]["status"] == "subject_mismatch"
    u = setup["dir"] / "unsigned.fwa"
    shutil.copyfile(setup["v2"], u)
    r = _report(setup, u)
    assert r["new"]["release"] == {"signature_file": "unsigned.fwa.sig", "status": "unsigned",
                                   "message": "no signature file", "security_version": None,
                                   "rxswin": None, "signers": []}
    assert r["oem_policy"]["verdict"] == "fail"


def test_trust_policy_errors(setup, tmp_path):
    bad = tmp_path / "trust.json"
    bad.write_text('{"format": "fwassist.trust-policy"}', encoding="utf-8")
    with pytest.raises(AuditError, match="policy_malformed"):
        build_report(setup["v1"], setup["v2"], trust=bad, reproduce=False)
    with pytest.raises(AuditError, match="need --trust"):
        build_report(setup["v1"], setup["v2"], sig=str(setup["v2"]) + ".sig")


def test_cli_exit_codes_follow_the_verdicts(setup, keys, tmp_path):
    def run(new: Path, out: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "fwassist", "audit", str(setup["v1"]),
                               str(new), "--trust", str(setup["trust"]), "--policy",
                               str(setup["oem"]), "--no-reproduce", "-o", out], cwd=tmp_path,
                              capture_output=True, text=True, timeout=600)
    # --no-reproduce: the policy's logits-reproduction is missing for a substantial change.
    p = run(setup["v2"], "a")
    assert p.returncode == 1 and "verdict fail" in p.stdout, p.stderr
    assert "new release  ok, security version 2, RXSWIN R-2" in p.stdout
    # A refused signature: exit 1, and the report still written.
    p = run(_variant(setup, "cli-untrusted", [keys["stranger"]], 3, None), "b")
    assert p.returncode == 1, p.stderr
    assert "new release  untrusted" in p.stdout
    rep = json.loads((tmp_path / "b" / "report.json").read_text(encoding="utf-8"))
    assert rep["new"]["release"]["status"] == "untrusted"
