# SPDX-License-Identifier: Apache-2.0
"""The audit report as one self-contained HTML page: no script, no external resource, one
inline style block allowed by its hash in the page's Content-Security-Policy.

Every string from an artifact, a signature or a policy is attacker-chosen: each goes through
:func:`text`, which first makes unsafe characters visible (:func:`fwassist.textsafe.printable`:
bidi overrides, zero-width and control characters become ``\\u202e``-style escapes) and then
HTML-escapes ``& < > " '``. The page is built only from literals of this module and such
escaped text, so no artifact string can open a tag or an attribute; the policy forbids scripts
in case one ever did.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
from typing import Any, Iterable, Optional

from ..textsafe import printable

__all__ = ["render_html", "text", "MAX_ROWS"]

# Rows shown per table; report.json holds everything.
MAX_ROWS = 200

_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:72em;padding:0 1em;
color:#1d1d1f;background:#fff}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.8em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;width:100%;margin:.5em 0}
th,td{border:1px solid #ddd;padding:.25em .5em;text-align:left;vertical-align:top}
th{background:#f3f3f3}
code,pre,.mono{font-family:ui-monospace,monospace;font-size:12px;word-break:break-all}
pre{background:#f6f6f6;padding:.5em;white-space:pre-wrap}
.badge{display:inline-block;padding:.1em .6em;border-radius:.8em;font-weight:600}
.pass,.ok,.valid,.present{background:#d8f5d8}.fail,.missing{background:#fbd3d3}
.open,.unknown,.external{background:#fdf0c2}.muted{color:#666}
"""


def text(value: Any) -> str:
    """Escaped HTML text of any value: strings as themselves, other values as JSON."""
    if value is None:
        return '<span class="muted">none</span>'
    s = value if isinstance(value, str) else json.dumps(value, sort_keys=True,
                                                        ensure_ascii=False)
    return html.escape(printable(s, keep="\n"), quote=True)


def _code(value: Any) -> str:
    return f"<code>{text(value)}</code>"


def _badge(word: str) -> str:
    # The class is one of this module's fixed words, never an artifact string.
    cls = word if word in ("pass", "ok", "valid", "present", "fail", "missing", "open",
                           "unknown", "external") else "unknown"
    return f'<span class="badge {cls}">{text(word)}</span>'


def _table(head: Iterable[str], rows: list[list[str]], total: Optional[int] = None) -> str:
    """rows: cells already escaped."""
    h = "".join(f"<th>{text(c)}</th>" for c in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>"
                   for r in rows[:MAX_ROWS])
    more = total if total is not None else len(rows)
    note = (f'<p class="muted">{MAX_ROWS} of {more} shown; report.json has all of them.</p>'
            if more > MAX_ROWS else "")
    return f"<table><thead><tr>{h}</tr></thead><tbody>{body}</tbody></table>{note}"


def _release_status(r: dict[str, Any]) -> str:
    return _badge("ok") if r["status"] == "ok" else f"{_badge('fail')} {text(r['status'])}"


def _identity(rep: dict[str, Any]) -> str:
    o, n = rep["old"], rep["new"]

    def rel(side: dict[str, Any], key: str) -> str:
        r = side["release"]
        if r is None or r[key] is None:
            return text(None)
        # A refused release's values are what the statement claims, not verified facts.
        return text(r[key]) + ("" if r["status"] == "ok" else
                               ' <span class="muted">(claimed; not verified)</span>')

    def signers(side: dict[str, Any]) -> str:
        r = side["release"]
        if r is None:
            return text("not checked (no --trust)")
        if not r["signers"]:
            return text(r["message"] or "none")
        return "<br>".join(f"{_code(s['keyid'][:16])} {text(s['role'])} "
                           + (_badge("valid") if s["status"] == "valid" else text(s["status"]))
                           for s in r["signers"])

    def status(side: dict[str, Any]) -> str:
        r = side["release"]
        if r is None:
            return text(None)
        return _release_status(r) + (f" {text(r['message'])}" if r["message"] else "")

    rows = [
        ["file", text(o["file"]), text(n["file"])],
        ["pin", _code(o["pin"]), _code(n["pin"])],
        ["size (bytes)", text(o["size"]), text(n["size"])],
        ["format version", text(".".join(map(str, o["format_version"]))),
         text(".".join(map(str, n["format_version"])))],
        ["model", text(o["model_name"]), text(n["model_name"])],
        ["model version", text(o["model_version"]), text(n["model_version"])],
        ["exporter", text(f"{o['exporter']['name']} {o['exporter']['version']}"),
         text(f"{n['exporter']['name']} {n['exporter']['version']}")],
        ["source checkpoint sha256", _code(o["source_sha256"]), _code(n["source_sha256"])],
        ["model card sha256", _code(o["model_card_sha256"]), _code(n["model_card_sha256"])],
        ["signature", status(o), status(n)],
        ["security version", rel(o, "security_version"), rel(n, "security_version")],
        ["RXSWIN", rel(o, "rxswin"), rel(n, "rxswin")],
        ["signers", signers(o), signers(n)],
    ]
    trust = rep["trust_policy"]
    note = (f"<p>Signatures verified against the trust policy {_code(trust['file'])} "
            f"(policy version {text(trust['policy_version'])}).</p>" if trust else
            '<p class="muted">No trust policy given: signatures not checked.</p>')
    return "<h2>Identities</h2>" + note + _table(["", "old", "new"],
                                                 [[text(r[0])] + r[1:] for r in rows])


def _summary(rep: dict[str, Any]) -> str:
    rows = [[text("change class"), f"<strong>{text(rep['change']['class'])}</strong>"]]
    p = rep["oem_policy"]
    if p is not None:
        rows.append([text("substantial modification"),
                     text("yes" if p["substantial"] else "no")])
        rows.append([text("OEM policy verdict"), _badge(p["verdict"])])
    for side in ("old", "new"):
        r = rep[side]["release"]
        if r is not None:
            rows.append([text(f"{side} release"), _release_status(r)])
    r = rep["reproduce"]
    rows.append([text("logits digest (exact)"),
                 _code(r["probe"]["digests"]["exact"]) if r["available"] else text(None)])
    return "<h2>Summary</h2>" + _table(["item", "value"], rows)


def _change(rep: dict[str, Any]) -> str:
    c = rep["change"]
    out = [f"<h2>Change</h2><p>Class <strong>{text(c['class'])}</strong> "
           f"(<code>fwassist diff</code> exit code {text(c['exit_code'])}).</p>"]
    for kind, items in sorted(c["changes"].items(), key=lambda kv: kv[0]):
        out.append(f"<h3>{text(kind)}: {text(len(items))}</h3>")
        out.append(_table(["difference"], [[_code(it)] for it in items]))
    if c["weights"]:
        rows = [[_code(w["name"]), text(w.get("layer")), text(w.get("expert")),
                 text(f"{w.get('changed', '?')}/{w.get('total', '?')}"),
                 text(w.get("max_abs_delta"))] for w in c["weights"]]
        out.append("<h3>Changed weights</h3>" + _table(
            ["tensor", "layer", "expert", "changed blocks/elements", "max |dequantized delta|"],
            rows))
    return "".join(out)


def _policy(rep: dict[str, Any]) -> str:
    p = rep["oem_policy"]
    if p is None:
        return ('<h2>OEM policy</h2><p class="muted">No OEM policy given (--policy): whether '
                'this is a substantial modification is not assessed.</p>')
    head = (f"<h2>OEM policy</h2><p>{text(p['name'])}, policy version "
            f"{text(p['policy_version'])} ({_code(p['file'])}, sha256 {_code(p['sha256'])})."
            f"</p><p>Verdict {_badge(p['verdict'])}; "
            f"<strong>{'a substantial' if p['substantial'] else 'not a substantial'}"
            f"</strong> modification.</p>")
    findings = _table(["rule", "result", "detail"],
                      [[text(f["rule"]), _badge(f["result"]), text(f["message"])]
                       for f in p["findings"]])
    ev = _table(["evidence", "status", "detail"],
                [[text(e["name"]), _badge(e["status"]), text(e["detail"])]
                 for e in p["required_evidence"]])
    return head + findings + "<h3>Required evidence</h3>" + ev


def _component(c: dict[str, Any]) -> list[str]:
    return [_code(c["ref"]), text(c["type"]), text(c["name"]), text(c["version"]),
            _code(c["sha256"]), text(", ".join(c["licenses"]) or None)]


def _sbom(rep: dict[str, Any]) -> str:
    s = rep["sbom"]
    head = ["ref", "type", "name", "version", "sha256", "licenses"]
    out = [f"<h2>SBOM (CycloneDX)</h2><p>Serial number {_code(s['old_serial'])} &rarr; "
           f"{_code(s['new_serial'])}.</p>"]
    for what in ("added", "removed"):
        out.append(f"<h3>Components {what}: {len(s[what])}</h3>")
        if s[what]:
            out.append(_table(head, [_component(c) for c in s[what]]))
    out.append(f"<h3>Components changed: {len(s['changed'])}</h3>")
    if s["changed"]:
        out.append(_table(["ref", "name", "old version", "new version", "old sha256",
                           "new sha256", "fields changed"],
                          [[_code(c["new"]["ref"]), text(c["new"]["name"]),
                            text(c["old"]["version"]), text(c["new"]["version"]),
                            _code(c["old"]["sha256"]), _code(c["new"]["sha256"]),
                            "<br>".join(_code(f) for f in c["fields"][:20])
                            + (text(" ...") if len(c["fields"]) > 20 else "")]
                           for c in s["changed"]]))
    return "".join(out)


def _differences(title: str, d: dict[str, Any]) -> str:
    if not d["changed"]:
        return f"<h2>{text(title)}</h2><p>No difference.</p>"
    rows = [[_code(x["path"]), text(x["change"]), _code(x["old"]) if "old" in x else "",
             _code(x["new"]) if "new" in x else ""] for x in d["differences"]]
    return (f"<h2>{text(title)}</h2><p>{text(d['count'])} difference(s).</p>"
            + _table(["path", "change", "old", "new"], rows, d["count"]))


def _reproduce(rep: dict[str, Any]) -> str:
    r = rep["reproduce"]
    out = ["<h2>Reproducing the device's logits on a PC</h2>"]
    if not r["available"]:
        out.append(f"<p>Not available: {text(r['reason'])}</p>")
        return "".join(out)
    p, g = r["probe"], r["generation"]
    out.append("<p>The runtime's logits are bit-identical on every CPU: these commands print "
               "the same digests on the device and on a PC.</p>")
    out.append(_table(["mode", "expected logits digest", "command"],
                      [[text(m), _code(d), f"<pre>{text(p['commands'][m])}</pre>"]
                       for m, d in sorted(p["digests"].items())]))
    out.append(f"<p>Probe prompt ids ({text(len(p['prompt_ids']))}): "
               f"{_code(','.join(map(str, p['prompt_ids'])))}; {text(p['logits'])}.</p>")
    out.append(f"<h3>Greedy generation</h3><pre>{text(g['command'])}</pre>"
               f"<p>Expected token ids: {_code(' '.join(map(str, g['expected_ids'])))}</p>")
    if g["expected_text"] is not None:
        out.append(f"<p>Expected text:</p><pre>{text(g['expected_text'])}</pre>")
    return "".join(out)


def render_html(rep: dict[str, Any]) -> str:
    """The page for a report from :func:`fwassist.audit.build_report`."""
    css_hash = base64.b64encode(hashlib.sha256(_CSS.encode("utf-8")).digest()).decode("ascii")
    csp = f"default-src 'none'; style-src 'sha256-{css_hash}'; base-uri 'none'; form-action 'none'"
    title = f"fwassist audit: {rep['change']['class']}"
    body = "".join([
        f"<h1>{text(title)}</h1>",
        f"<p class=\"muted\">{text(rep['tool']['name'])} {text(rep['tool']['version'])}, "
        f"report format {text(rep['format'])} "
        f"{text('.'.join(map(str, rep['format_version'])))}; the complete record is "
        f"report.json.</p>",
        _summary(rep), _identity(rep), _change(rep), _policy(rep), _sbom(rep),
        _differences("Model card differences", rep["model_card"]),
        _differences("Evaluation evidence differences", rep["evidence"]),
        _reproduce(rep),
    ])
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta http-equiv=\"Content-Security-Policy\" content=\"{csp}\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            "<meta name=\"referrer\" content=\"no-referrer\">"
            f"<title>{text(title)}</title><style>{_CSS}</style></head>\n<body>{body}</body>"
            "</html>\n")
