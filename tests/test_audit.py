# SPDX-License-Identifier: Apache-2.0
"""``fwassist audit``: the evidence pack of one change (docs/audit-report.md).

The artifacts are real exports (fwassist export of QAT ONNX graphs from tests/model_fixtures.py)
differing in known ways: the model card only, the tokenizer only, the weights (another seed),
the export evidence only. Each report is validated against docs/audit-report.schema.json.
"""

from __future__ import annotations

import copy
import hashlib
import html.parser
import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fwassist import ArtifactError
from fwassist.audit import (AuditError, build_report, parse_oem_policy, render_html,
                            report_json, write_report)
from fwassist.audit.compare import json_differences, sbom_difference
from fwassist.audit.logits import logits_digest, probe_ids
from fwassist.export.pipeline import export_onnx
from fwassist.runtime import Model

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = json.loads((ROOT / "docs" / "audit-report.schema.json").read_text(encoding="utf-8"))

# Strings an attacker controls in a model card: markup, attribute breakers, a bidi override
# that makes "evil<U+202E>gnp.fwa" read as "evilawf.png", zero-width and control characters.
HOSTILE = ["</td></tr></table><script>alert('card')</script>",
           "\"><img src=x onerror=alert(1)>",
           "it's <b>bold</b> & 'quoted'",
           "evil\u202egnp.fwa",
           "zero\u200bwidth\x1b[2J",
           "</title></style><style>body{display:none}</style>"]
CARD_V1 = {"name": "fwassist-test-moe", "version": "1.0.0",
           "known_limitations": ["random weights: a test fixture, not a useful model"]}
CARD_V2 = {"name": "fwassist-test-moe", "version": "1.1.0",
           "description": HOSTILE[1],
           "known_limitations": ["random weights: a test fixture, not a useful model",
                                 *HOSTILE],
           "datasets": [{"name": HOSTILE[0], "licenses": ["MIT"], "sha256": "ab" * 32,
                         "files": 3}]}

POLICY = {
    "format": "fwassist.oem-policy", "format_version": [1, 0],
    "name": "test OEM policy <script>", "policy_version": 2,
    "substantial_classes": ["tokenizer", "config", "weights", "quantization", "architecture"],
    "substantial_sections": [],
    "required_evidence": {"substantial": ["export-equivalence", "logits-reproduction",
                                          "hil-regression-report"],
                          "non_substantial": ["logits-reproduction"]},
    "require_security_version_increase": False,
    "require_rxswin_change": False,
}


def validate(report: dict[str, Any]) -> None:
    jsonschema = pytest.importorskip("jsonschema", reason="jsonschema is in the test extra")
    jsonschema.Draft202012Validator(SCHEMA).validate(report)


def _export(src_dir: Path, out: Path, *, card: dict[str, Any], tokenizer: Any = None,
            evidence: bool = False) -> str:
    """Exports the model of ``src_dir`` (model.onnx, config.json, tokenizer.json) with the
    given card (and tokenizer.json content) to ``out``."""
    work = out.parent / (out.stem + "-inputs")
    work.mkdir()
    (work / "card.json").write_text(json.dumps(card), encoding="utf-8")
    tok = src_dir / "tokenizer.json"
    if tokenizer is not None:
        tok = work / "tokenizer.json"
        tok.write_text(json.dumps(tokenizer), encoding="utf-8")
    return export_onnx(str(src_dir / "model.onnx"), str(out),
                       config_path=str(src_dir / "config.json"), tokenizer_path=str(tok),
                       card_path=str(work / "card.json"), evidence=evidence, quiet=True)


@pytest.fixture(scope="module")
def arts(build_tiny_model, tmp_path_factory) -> dict[str, Path]:
    """old, card (card only), tokenizer (normalizer dropped), weights (another seed),
    evidence (measured export evidence) and hostile (card full of hostile strings)."""
    d = tmp_path_factory.mktemp("audit")
    base = Path(build_tiny_model(seed=1234).onnx_path).parent
    other = Path(build_tiny_model(seed=4321).onnx_path).parent
    tok = json.loads((base / "tokenizer.json").read_text(encoding="utf-8"))
    assert tok["normalizer"] is not None
    tok2 = dict(tok, normalizer=None)
    out = {k: d / f"{k}.fwa" for k in ("old", "card", "tokenizer", "weights", "evidence")}
    _export(base, out["old"], card=CARD_V1)
    _export(base, out["card"], card=CARD_V2)
    _export(base, out["tokenizer"], card=CARD_V1, tokenizer=tok2)
    _export(other, out["weights"], card=CARD_V1)
    _export(base, out["evidence"], card=CARD_V1, evidence=True)
    return out


@pytest.fixture(scope="module")
def reports(arts) -> dict[str, dict[str, Any]]:
    policy = parse_oem_policy(json.dumps(POLICY).encode())
    return {k: build_report(arts["old"], arts[k], policy=policy, policy_file="oem.json")
            for k in ("card", "tokenizer", "weights", "evidence")}


# ---- classification and differences ----------------------------------------------------------

def test_card_change_is_metadata_only_and_keeps_logits(arts, reports):
    r = reports["card"]
    validate(r)
    assert r["change"]["class"] == "metadata-only"
    assert {c.get("section") for c in r["change"]["changes"]["metadata-only"]} >= {
        "model_card", "sbom"}
    assert r["old"]["model_version"] == "1.0.0" and r["new"]["model_version"] == "1.1.0"
    assert r["old"]["model_card_sha256"] != r["new"]["model_card_sha256"]
    diffs = {(x["path"], x["change"]): x for x in r["model_card"]["differences"]}
    assert diffs[("/version", "changed")]["old"] == "1.0.0"
    assert diffs[("/description", "added")]["new"] == HOSTILE[1]
    for i, s in enumerate(HOSTILE, start=1):
        assert diffs[(f"/known_limitations/{i}", "added")]["new"] == s
    assert r["model_card"]["count"] == len(r["model_card"]["differences"]) == len(HOSTILE) + 3
    # The card's dataset is a new CycloneDX data component; the model component changed.
    assert [(c["ref"], c["type"], c["name"], c["licenses"], c["sha256"])
            for c in r["sbom"]["added"]] == [("dataset-0", "data", HOSTILE[0], ["MIT"],
                                              "ab" * 32)]
    assert r["sbom"]["removed"] == []
    changed = {c["new"]["ref"]: c for c in r["sbom"]["changed"]}
    assert set(changed) == {"model"}
    assert "/version" in changed["model"]["fields"]
    assert r["sbom"]["old_serial"] != r["sbom"]["new_serial"]
    assert not r["evidence"]["changed"]
    # Same weights: the same logits, so the old artifact's digests equal the report's.
    old = Model.load(str(arts["old"]))
    ids = probe_ids(old.vocab_size)
    assert r["reproduce"]["probe"]["digests"] == {m: logits_digest(old, ids, m)
                                                  for m in ("exact", "fast")}
    # Not substantial under the policy: only its non-substantial evidence is asked for.
    p = r["oem_policy"]
    assert p["substantial"] is False and p["verdict"] == "pass"
    assert [(e["name"], e["status"]) for e in p["required_evidence"]] == [
        ("logits-reproduction", "present")]


def test_tokenizer_change(reports):
    r = reports["tokenizer"]
    validate(r)
    assert r["change"]["class"] == "tokenizer"
    (item,) = r["change"]["changes"]["tokenizer"]
    assert item["keys"] == ["normalizer"]
    assert item["vocab_added"] == item["vocab_removed"] == item["vocab_reassigned"] == 0
    assert r["change"]["weights"] == []
    assert not r["model_card"]["changed"]
    assert r["oem_policy"]["substantial"] is True
    assert r["oem_policy"]["reasons"] == ["change class 'tokenizer' is substantial under this "
                                          "policy"]


def test_weights_change(arts, reports):
    r = reports["weights"]
    validate(r)
    assert r["change"]["class"] == "weights"
    assert r["change"]["weights"] and all(w["changed"] > 0 for w in r["change"]["weights"])
    assert r["change"]["experts_changed"]
    assert r["old"]["source_sha256"] != r["new"]["source_sha256"]
    model = {c["new"]["ref"]: c for c in r["sbom"]["changed"]}["model"]
    assert model["old"]["sha256"] != model["new"]["sha256"]  # sections.tensors
    assert "/hashes/0/content" in model["fields"]
    old = Model.load(str(arts["old"]))
    assert r["reproduce"]["probe"]["digests"]["exact"] != logits_digest(
        old, probe_ids(old.vocab_size), "exact")
    # Substantial; export-equivalence was not measured (evidence=False export): fail.
    p = r["oem_policy"]
    assert p["substantial"] is True and p["verdict"] == "fail"
    assert {e["name"]: e["status"] for e in p["required_evidence"]} == {
        "export-equivalence": "missing", "logits-reproduction": "present",
        "hil-regression-report": "external"}


def test_evidence_difference(reports):
    r = reports["evidence"]
    validate(r)
    assert r["change"]["class"] == "metadata-only"
    paths = {x["path"]: x for x in r["evidence"]["differences"]}
    assert paths["/measured"] == {"path": "/measured", "change": "changed", "old": False,
                                  "new": True}
    assert len(paths) > 1  # the measured figures were added
    assert not r["model_card"]["changed"]


def test_policy_counts_sections_and_passes_with_evidence(arts):
    pol = dict(POLICY, substantial_sections=["evidence"],
               required_evidence={"substantial": ["export-equivalence", "logits-reproduction"],
                                  "non_substantial": []})
    r = build_report(arts["old"], arts["evidence"],
                     policy=parse_oem_policy(json.dumps(pol).encode()), policy_file="p.json")
    validate(r)
    p = r["oem_policy"]
    assert p["substantial"] is True
    assert p["reasons"] == ["the evidence section changed, which this policy counts as "
                            "substantial"]
    assert [e["status"] for e in p["required_evidence"]] == ["present", "present"]
    assert p["verdict"] == "pass"


def test_version_rules_unknown_without_signatures(arts):
    pol = dict(POLICY, require_security_version_increase=True, require_rxswin_change=True)
    r = build_report(arts["old"], arts["weights"], reproduce=False,
                     policy=parse_oem_policy(json.dumps(pol).encode()), policy_file="p.json")
    validate(r)
    rules = {f["rule"]: f["result"] for f in r["oem_policy"]["findings"]}
    assert rules == {"substantial-modification": "pass", "security-version-increase": "unknown",
                     "rxswin-change": "unknown"}
    assert r["reproduce"] == {"available": False, "reason": "not run (--no-reproduce)"}
    # logits-reproduction is then missing: the verdict fails on it.
    assert {e["name"]: e["status"] for e in r["oem_policy"]["required_evidence"]}[
        "logits-reproduction"] == "missing"
    assert r["oem_policy"]["verdict"] == "fail"


def test_identical(arts, tmp_path):
    copy_ = tmp_path / "copy.fwa"
    shutil.copyfile(arts["old"], copy_)
    r = build_report(arts["old"], copy_, reproduce=False)
    validate(r)
    assert r["change"]["class"] == "identical" and r["change"]["changes"] == {}
    assert r["old"]["pin"] == r["new"]["pin"]
    assert r["sbom"] == {"old_serial": r["sbom"]["old_serial"],
                         "new_serial": r["sbom"]["old_serial"], "added": [], "removed": [],
                         "changed": []}


def test_schema_rejects_a_wrong_report(reports):
    jsonschema = pytest.importorskip("jsonschema", reason="jsonschema is in the test extra")
    v = jsonschema.Draft202012Validator(SCHEMA)
    good = reports["weights"]
    assert v.is_valid(good)
    for mutate in (lambda r: r["change"].update({"class": "cosmetic"}),
                   lambda r: r["new"].update({"pin": "sha256:xyz"}),
                   lambda r: r.update({"extra": 1}),
                   lambda r: r["oem_policy"].update({"verdict": "maybe"}),
                   lambda r: r["model_card"]["differences"].append({"path": "/a",
                                                                    "change": "added"}),
                   lambda r: r["reproduce"]["probe"]["digests"].pop("fast")):
        bad = copy.deepcopy(good)
        mutate(bad)
        assert not v.is_valid(bad)


# ---- reproduction ----------------------------------------------------------------------------

def _fwassist(cmd: str, cwd: Path) -> subprocess.CompletedProcess:
    argv = shlex.split(cmd)
    assert argv[0] == "fwassist"
    return subprocess.run([sys.executable, "-m", "fwassist", *argv[1:]], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def test_reproduce_commands_print_the_recorded_results(arts, reports):
    r = reports["weights"]["reproduce"]
    cwd = arts["weights"].parent
    for mode, cmd in r["probe"]["commands"].items():
        p = _fwassist(cmd, cwd)
        assert p.returncode == 0, p.stderr
        assert p.stdout == f"logits {mode} {r['probe']['digests'][mode]}\n"
    g = r["generation"]
    p = _fwassist(g["command"], cwd)
    assert p.returncode == 0, p.stderr
    assert len(g["expected_ids"]) == g["max_tokens"]
    assert g["expected_text"] is not None  # the model has a tokenizer: run prints text
    assert p.stdout == g["expected_text"] + "\n"


def test_logits_digest_is_the_device_path(arts, reports):
    """The digest equals the one a device computes through the C ABI's pattern, one token at
    a time (eval one id, read the last logits), and SHA-256 of the logits as float32 LE."""
    m = Model.load(str(arts["weights"]))
    ids = probe_ids(m.vocab_size)
    assert ids[:3] == [11, 48, 85]
    rows = []
    with m.session(mode="exact", threads=2, prefill_chunk=1) as s:
        for i in ids:
            rows.append(s.logits([i])[0].astype("<f4").tobytes())
    want = "sha256:" + hashlib.sha256(b"".join(rows)).hexdigest()
    assert reports["weights"]["reproduce"]["probe"]["digests"]["exact"] == want


def test_unrunnable_artifact_reports_why(tmp_path):
    """A valid artifact the runtime cannot run (the reader's test fixture has no decoder):
    the report says so instead of failing."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from artifact_fixtures import build, small_tensors

    a, b = tmp_path / "a.fwa", tmp_path / "b.fwa"
    a.write_bytes(build(small_tensors(0)))
    b.write_bytes(build(small_tensors(1)))
    r = build_report(a, b)
    validate(r)
    assert r["change"]["class"] == "weights"
    assert r["reproduce"]["available"] is False and r["reproduce"]["reason"]


# ---- JSON and HTML output ------------------------------------------------------------------

class _Tags(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, list[tuple[str, Any]]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, Any]]) -> None:
        self.tags.append((tag, attrs))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


ALLOWED_TAGS = {"html", "head", "meta", "title", "style", "body", "h1", "h2", "h3", "p",
                "table", "thead", "tbody", "tr", "th", "td", "code", "pre", "span", "strong",
                "br"}


def test_html_escapes_every_hostile_string(reports):
    r = copy.deepcopy(reports["card"])
    r["new"]["file"] = HOSTILE[3]
    r["oem_policy"]["name"] = HOSTILE[0]
    page = render_html(r)
    p = _Tags()
    p.feed(page)
    p.close()
    # Only the module's own markup: none of the hostile tags, no event handler attributes.
    assert {t for t, _ in p.tags} <= ALLOWED_TAGS
    assert sum(1 for t, _ in p.tags if t == "style") == 1
    assert sum(1 for t, _ in p.tags if t == "title") == 1
    for _, attrs in p.tags:
        for k, v in attrs:
            assert k in ("charset", "http-equiv", "content", "name", "class", "lang")
            assert "alert" not in (v or "")
    text = "".join(p.text)
    # The strings are shown, as text, with unsafe characters made visible.
    for s in HOSTILE[:3]:
        assert s in text
    assert "evil\\u202egnp.fwa" in text and "\u202e" not in page
    assert "zero\\u200bwidth\\x1b[2J" in text and "\u200b" not in page and "\x1b" not in page
    assert "</style><style>" not in page.split("</head>")[1]
    # The CSP allows exactly the page's own style block.
    assert "default-src 'none'" in page and "script-src" not in page


def test_report_json_escapes_and_round_trips(reports):
    r = copy.deepcopy(reports["card"])
    r["new"]["file"] = HOSTILE[3]
    text = report_json(r)
    assert "\u202e" not in text and "\\u202e" in text
    assert json.loads(text) == r


def test_write_report_is_deterministic_and_refuses_to_overwrite(arts, tmp_path):
    out = tmp_path / "rep"
    r = build_report(arts["old"], arts["card"], reproduce=False)
    paths = write_report(r, out)
    first = [Path(p).read_bytes() for p in paths]
    with pytest.raises(AuditError, match="report.json exists; pass --force"):
        write_report(r, out)
    write_report(build_report(arts["old"], arts["card"], reproduce=False), out, force=True)
    assert [Path(p).read_bytes() for p in paths] == first
    assert sorted(x.name for x in out.iterdir()) == ["index.html", "report.json"]


# ---- OEM policy ----------------------------------------------------------------------------

def _policy_bytes(**kw: Any) -> bytes:
    return json.dumps(dict(POLICY, **kw)).encode()


@pytest.mark.parametrize("data,msg", [
    (b'{"format": "fwassist.oem-policy", "format": "x"}', "duplicate key 'format'"),
    (_policy_bytes(extra=1), "unknown key 'extra'"),
    (json.dumps({k: v for k, v in POLICY.items() if k != "name"}).encode(), "missing key 'name'"),
    (_policy_bytes(format="fwassist.trust-policy"), "format must be"),
    (_policy_bytes(format_version=[2, 0]), "format_version 2.0 is not supported"),
    (_policy_bytes(format_version=[1, 1]), "format_version 1.1 is not supported"),
    (_policy_bytes(policy_version=0), "policy_version must be an integer >= 1"),
    (_policy_bytes(policy_version=True), "policy_version must be an integer >= 1"),
    (_policy_bytes(substantial_classes=["cosmetic"]), "'cosmetic' is not one of"),
    (_policy_bytes(substantial_classes=["weights", "weights"]), "listed twice"),
    (_policy_bytes(substantial_sections=["tensors"]), "'tensors' is not one of"),
    (_policy_bytes(required_evidence={"substantial": []}), "exactly the keys"),
    (_policy_bytes(required_evidence={"substantial": [""], "non_substantial": []}),
     "not a non-empty printable string"),
    (_policy_bytes(require_rxswin_change=1), "require_rxswin_change must be true or false"),
    (b'{"format": NaN}', "NaN is not a JSON number"),
    (b"[1]", "must be a JSON object"),
    (b"\xff", "not UTF-8"),
    (b"{", "not JSON"),
    (b" " * (1 << 20) + b"{}", "exceed the cap"),
])
def test_policy_refused(data, msg):
    with pytest.raises(AuditError, match=msg):
        parse_oem_policy(data)


def test_policy_parsed():
    p = parse_oem_policy(_policy_bytes())
    assert p.policy_version == 2 and p.substantial_classes[0] == "tokenizer"
    assert p.sha256 == hashlib.sha256(_policy_bytes()).hexdigest()
    assert p.is_substantial("weights", []) == (True, ["change class 'weights' is substantial "
                                                      "under this policy"])
    assert p.is_substantial("metadata-only", ["model_card"]) == (False, [])


# ---- section differences -------------------------------------------------------------------

def test_json_differences():
    d = json_differences({"a": [1, 2], "b/c": {"x": 1}, "t": 1, "gone": None},
                         {"a": [1, 3, 4], "b/c": {"x": 1}, "t": "1", "new~": True})
    assert d["differences"] == [
        {"path": "/a/1", "change": "changed", "old": 2, "new": 3},
        {"path": "/a/2", "change": "added", "new": 4},
        {"path": "/gone", "change": "removed", "old": None},
        {"path": "/new~0", "change": "added", "new": True},
        {"path": "/t", "change": "changed", "old": 1, "new": "1"}]
    assert d["count"] == 5 and d["changed"] and not d["truncated"]
    big = json_differences(list(range(600)), [])
    assert big["count"] == 600 and len(big["differences"]) == 500 and big["truncated"]


def test_sbom_difference_by_bom_ref():
    def comp(ref: str, version: str, lic: str) -> dict[str, Any]:
        return {"bom-ref": ref, "type": "library", "name": ref.upper(), "version": version,
                "licenses": [{"license": {"id": lic}}],
                "hashes": [{"alg": "SHA-256", "content": version * 64}]}
    a = {"serialNumber": "urn:uuid:a", "metadata": {"component": comp("m", "1", "MIT")},
         "components": [comp("x", "1", "MIT"), dict(comp("y", "1", "MIT"),
                                                    components=[comp("z", "1", "MIT")])]}
    b = {"serialNumber": "urn:uuid:b", "metadata": {"component": comp("m", "1", "MIT")},
         "components": [comp("y", "2", "Apache-2.0"), comp("w", "1", "BSD-3-Clause")]}
    d = sbom_difference(a, b)
    assert [c["ref"] for c in d["added"]] == ["w"]
    assert [(c["ref"], c["where"]) for c in d["removed"]] == [
        ("x", "components[0]"), ("z", "components[1].components[0]")]
    (ch,) = d["changed"]
    assert ch["old"]["licenses"] == ["MIT"] and ch["new"]["licenses"] == ["Apache-2.0"]
    assert ch["fields"] == ["/components", "/hashes/0/content", "/licenses/0/license/id",
                            "/version"]
    assert (d["old_serial"], d["new_serial"]) == ("urn:uuid:a", "urn:uuid:b")


# ---- command line --------------------------------------------------------------------------

def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fwassist", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=600)


def test_cli_writes_the_report_and_exit_codes(arts, tmp_path):
    pol = tmp_path / "oem.json"
    pol.write_bytes(_policy_bytes())
    p = _cli("audit", str(arts["old"]), str(arts["card"]), "--policy", str(pol), "-o",
             "out", "--no-reproduce", cwd=tmp_path)
    # --no-reproduce leaves logits-reproduction missing: the policy's verdict fails (exit 1),
    # and the report is written all the same.
    assert p.returncode == 1, p.stderr
    assert "change   metadata-only" in p.stdout and "verdict fail" in p.stdout
    rep = json.loads((tmp_path / "out" / "report.json").read_text(encoding="utf-8"))
    validate(rep)
    assert rep["oem_policy"]["file"] == "oem.json"
    assert rep == build_report(arts["old"], arts["card"], reproduce=False,
                               policy=parse_oem_policy(_policy_bytes()), policy_file=str(pol))
    # An existing report: usage error, nothing replaced.
    before = (tmp_path / "out" / "index.html").read_bytes()
    p = _cli("audit", str(arts["old"]), str(arts["card"]), "-o", "out", cwd=tmp_path)
    assert p.returncode == 2 and "report.json exists; pass --force" in p.stderr
    assert (tmp_path / "out" / "index.html").read_bytes() == before
    # Without a policy, exit 0.
    p = _cli("audit", str(arts["old"]), str(arts["card"]), "-o", "out2", "--no-reproduce",
             cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    # Signatures need a trust policy.
    p = _cli("audit", str(arts["old"]), str(arts["card"]), "-o", "out3", "--sig",
             str(arts["card"]) + ".sig", cwd=tmp_path)
    assert p.returncode == 2 and "need --trust" in p.stderr
    assert not (tmp_path / "out3").exists()
    # A malformed OEM policy: exit 2 before any work.
    pol.write_bytes(_policy_bytes(extra=True))
    p = _cli("audit", str(arts["old"]), str(arts["card"]), "--policy", str(pol), "-o", "out4",
             cwd=tmp_path)
    assert p.returncode == 2 and "unknown key 'extra'" in p.stderr
    assert not (tmp_path / "out4").exists()


def test_cli_invalid_artifact(arts, tmp_path):
    bad = tmp_path / "bad.fwa"
    data = bytearray(arts["card"].read_bytes())
    data[-1] ^= 1
    bad.write_bytes(bytes(data))
    p = _cli("audit", str(arts["old"]), str(bad), "-o", "out", cwd=tmp_path)
    assert p.returncode == 3 and "bad.fwa" in p.stderr
    assert not (tmp_path / "out").exists()
    with pytest.raises(ArtifactError):
        build_report(arts["old"], bad)


def test_cli_logits_digest(arts, tmp_path):
    m = Model.load(str(arts["old"]))
    want = {mode: logits_digest(m, probe_ids(m.vocab_size), mode) for mode in ("exact", "fast")}
    p = _cli("logits-digest", str(arts["old"]), "--pin", m.pin, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert p.stdout == f"logits exact {want['exact']}\nlogits fast {want['fast']}\n"
    p = _cli("logits-digest", str(arts["old"]), "--pin", "sha256:" + "0" * 64, cwd=tmp_path)
    assert p.returncode == 3 and "pin_mismatch" in p.stderr
    p = _cli("logits-digest", str(arts["old"]), "--prompt-ids", "1,2,3", "--mode", "exact",
             cwd=tmp_path)
    with m.session() as s:
        lg = s.logits([1, 2, 3])
    assert p.stdout == ("logits exact sha256:"
                        + hashlib.sha256(np.asarray(lg, "<f4").tobytes()).hexdigest() + "\n")


def test_logits_digest_equals_the_cpp_tool():
    """`fwassist logits-digest` prints the lines of the C++ cross-ISA tool
    (tests/cpp/logits_digest.cpp) for its test model: the digests tests/run_all.sh checks on
    every x86 kernel path and the qemu matrix on every aarch64 CPU model (FWA_EXPECT_DIGESTS),
    so the command in a report reproduces a device's logits."""
    import os

    model, expect = os.environ.get("FWA_TEST_MODEL"), os.environ.get("FWA_EXPECT_DIGESTS")
    if not (model and expect and os.path.isfile(model) and os.path.isfile(expect)):
        pytest.skip("FWA_TEST_MODEL / FWA_EXPECT_DIGESTS not set: tests/run_all.sh sets them "
                    "after running build-native/tests/cpp/fwa_logits_digest")
    with open(expect, encoding="utf-8") as f:
        want = [line for line in f.read().splitlines() if line.startswith("logits ")]
    assert [w.split()[1] for w in want] == ["exact", "fast"]
    p = _cli("logits-digest", model, cwd=Path(model).parent)
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines() == want


def test_documented_policy_example_parses():
    """The OEM policy shown in docs/audit-report.md is a valid policy."""
    doc = (ROOT / "docs" / "audit-report.md").read_text(encoding="utf-8")
    block = doc.split("```json\n", 1)[1].split("```", 1)[0]
    p = parse_oem_policy(block.encode())
    assert p.policy_version == 3 and p.require_rxswin_change
    assert "hil-regression-report" in p.evidence_substantial


def test_free_form_sections_of_any_shape(tmp_path):
    """provenance, model card, evidence and SBOM are free-form beyond their required keys: odd
    shapes and hostile strings give a valid report and an escaped page, never a crash."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from artifact_fixtures import assemble, build, small_tensors, split

    blob = build(small_tensors())
    good = tmp_path / "good.fwa"
    good.write_bytes(blob)
    m, data = split(blob)
    m["provenance"] = {"source": "not an object", "exporter": [1, 2]}
    m["model_card"] = {"name": 7, "version": ["x"], "known_limitations": HOSTILE}
    m["evidence"] = {HOSTILE[0]: [HOSTILE[3]], "measured": "yes"}
    m["sbom"] = {"metadata": {"component": {"name": HOSTILE[1], "hashes": "none",
                                            "licenses": [{"license": {"name": HOSTILE[2]}}, 3]},
                              "tools": ["not", "an", "object"]},
                 "components": [{"bom-ref": HOSTILE[0]}, {"bom-ref": HOSTILE[0]}, "junk"]}
    odd = tmp_path / "odd.fwa"
    odd.write_bytes(assemble(m, data))
    pol = parse_oem_policy(json.dumps(dict(POLICY, substantial_sections=["sbom"])).encode())
    r = build_report(good, odd, policy=pol, policy_file="p.json")
    validate(r)
    assert r["change"]["class"] == "metadata-only"
    assert r["new"]["exporter"] == {"name": None, "version": None}
    assert r["new"]["model_name"] is None and r["new"]["source_sha256"] is None
    # The old BOM has no components; the new one's, keyed by bom-ref (a repeated one
    # numbered), else by type:name (a missing type is "component").
    added = r["sbom"]["added"]
    assert [c["ref"] for c in added] == [HOSTILE[0], HOSTILE[0] + "#2",
                                         "component:" + HOSTILE[1]]
    assert added[2]["licenses"] == [HOSTILE[2]] and added[2]["where"] == "metadata.component"
    assert r["sbom"]["changed"] == r["sbom"]["removed"] == []
    ev = {e["name"]: e["status"] for e in r["oem_policy"]["required_evidence"]}
    assert r["oem_policy"]["substantial"] is True
    assert ev["export-equivalence"] == "missing"       # "measured": "yes" is not true
    page = render_html(r)
    p = _Tags()
    p.feed(page)
    assert {t for t, _ in p.tags} <= ALLOWED_TAGS
    assert "\u202e" not in page and "\x1b" not in page


@pytest.mark.parametrize("bad", ["missing.fwa", "adir"])
def test_cli_refuses_unusable_inputs_in_one_line(arts, tmp_path, bad):
    (tmp_path / "adir").mkdir()
    p = _cli("audit", str(arts["old"]), bad, "-o", "out", cwd=tmp_path)
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "Traceback" not in p.stderr
    assert not (tmp_path / "out").exists()
    (tmp_path / "file").write_text("x")
    p = _cli("audit", str(arts["old"]), str(arts["card"]), "-o", "file", cwd=tmp_path)
    assert p.returncode == 2 and "exists and is not a directory" in p.stderr
