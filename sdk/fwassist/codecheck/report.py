# SPDX-License-Identifier: Apache-2.0
"""Output of ``fwassist check-code``: one line per finding, and SARIF 2.1.0
(https://docs.oasis-open.org/sarif/sarif/v2.1.0/), the format code-scanning services read."""

from __future__ import annotations

import os
import urllib.parse
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from ..textsafe import printable
from .check import CodeParseError, Finding
from .rules import RULES, Policy

__all__ = ["format_finding", "to_sarif", "SARIF_SCHEMA"]

SARIF_SCHEMA = "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/" \
    "sarif-schema-2.1.0.json"


def format_finding(f: Finding) -> str:
    """``path:line:col: severity rule CWE-n: message``, untrusted text escaped."""
    from .rules import rule

    return (f"{printable(f.path)}:{f.line}:{f.column}: {f.severity} {f.rule} "
            f"{rule(f.rule).cwe_id}: {printable(f.message)}")


def _uri(path: str) -> Dict[str, str]:
    """A SARIF artifactLocation: a relative reference for a relative path (resolved against
    the working directory, %SRCROOT%), a file: URI for an absolute one."""
    if os.path.isabs(path):
        return {"uri": Path(path).as_uri()}
    return {"uri": urllib.parse.quote(Path(path).as_posix()), "uriBaseId": "%SRCROOT%"}


def _location(path: str, line: int, column: int) -> Dict[str, Any]:
    return {"physicalLocation": {"artifactLocation": _uri(path),
                                 "region": {"startLine": line, "startColumn": column}}}


def to_sarif(findings: Sequence[Finding], policy: Policy, version: str,
             syntax_errors: Optional[Sequence[CodeParseError]] = None) -> Dict[str, Any]:
    """One SARIF 2.1.0 log with one run: every rule of the policy in ``tool.driver.rules``
    (with its CWE, MISRA C:2012 and CERT C mapping and precision in ``properties``), every
    finding as a result. ``syntax_errors`` (tolerant mode): the regions left unchecked, as
    warnings of the run's invocation."""
    rules = [r for r in RULES if policy.enabled(r.id)]
    index = {r.id: i for i, r in enumerate(rules)}
    descriptors: List[Dict[str, Any]] = []
    for r in rules:
        tags = ["security", f"external/cwe/cwe-{r.cwe}"]
        if r.misra:
            tags.append(f"misra-c-2012/rule-{r.misra}")
        if r.cert:
            tags.append(f"cert-c/{r.cert.lower()}")
        descriptors.append({
            "id": r.id,
            "name": r.title,
            "shortDescription": {"text": r.title},
            "fullDescription": {"text": r.description},
            "help": {"text": f"{r.description} (fwassist docs/code-policy.md, rule {r.id})"},
            "defaultConfiguration": {"level": policy.severities[r.id]},
            "properties": {"tags": tags, "cwe": r.cwe_id, "misra-c-2012": r.misra,
                           "cert-c": r.cert, "precision": r.precision},
        })
    results = []
    for f in findings:
        results.append({
            "ruleId": f.rule,
            "ruleIndex": index[f.rule],
            "level": f.severity,
            "message": {"text": f.message},
            "locations": [{"physicalLocation": {
                "artifactLocation": _uri(f.path),
                "region": {"startLine": f.line, "startColumn": f.column,
                           "endLine": f.end_line, "endColumn": f.end_column},
            }}],
        })
    run: Dict[str, Any] = {
        "tool": {"driver": {"name": "fwassist check-code", "version": version,
                            "rules": descriptors}},
        "columnKind": "unicodeCodePoints",
        "originalUriBaseIds": {"%SRCROOT%": {"uri": Path(os.getcwd()).as_uri() + "/"}},
        "properties": {"policy": policy.name},
        "results": results,
    }
    if syntax_errors is not None:
        run["invocations"] = [{"executionSuccessful": True, "toolExecutionNotifications": [
            {"level": "warning", "message": {"text": f"syntax error: {e.what}; region not checked"},
             "locations": [_location(e.path, e.line, e.column)]} for e in syntax_errors]}]
    return {"$schema": SARIF_SCHEMA, "version": "2.1.0", "runs": [run]}
