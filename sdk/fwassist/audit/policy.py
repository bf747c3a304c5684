# SPDX-License-Identifier: Apache-2.0
"""The OEM policy of ``fwassist audit`` (docs/audit-report.md, "OEM policy"): which changes an
OEM counts as a substantial modification, and what each kind of release must show.

A policy is a JSON object with exactly these keys (every one required, so a policy never means
something by omission)::

    {"format": "fwassist.oem-policy", "format_version": [1, 0],
     "name": "...", "policy_version": 3,
     "substantial_classes": ["tokenizer", "config", "weights", "quantization", "architecture"],
     "substantial_sections": ["model_card"],
     "required_evidence": {"substantial": ["signed-release", "export-equivalence",
                                           "logits-reproduction", "hil-regression-report"],
                           "non_substantial": ["signed-release"]},
     "require_security_version_increase": true,
     "require_rxswin_change": true}

Evidence names the audit checks itself are :data:`CHECKED_EVIDENCE`; any other name is
evidence kept outside the artifact, listed in the report as an open item for the auditor.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from typing import Any, Union

from ..artifact.diff import DIFF_CLASSES
from ..errors import Error
from ..textsafe import printable

__all__ = ["AuditError", "OemPolicy", "load_oem_policy", "parse_oem_policy", "CHECKED_EVIDENCE",
           "POLICY_FORMAT", "POLICY_VERSION", "METADATA_SECTIONS"]

POLICY_FORMAT = "fwassist.oem-policy"
POLICY_VERSION = (1, 0)
MAX_POLICY_BYTES = 1 << 20
MAX_NAME = 256
MAX_EVIDENCE = 64
# A change of one of these manifest sections alone is diff class "metadata-only"; a policy may
# still count it as substantial (e.g. a changed intended use in the model card).
METADATA_SECTIONS = ("model_card", "provenance", "evidence", "sbom")
# Evidence the audit establishes itself from the inputs.
CHECKED_EVIDENCE = {
    "signed-release": "the new artifact's signatures verify against the trust policy (--sig "
                      "and --trust)",
    "export-equivalence": "the new artifact carries equivalence evidence measured at export "
                          "(manifest evidence.measured = true)",
    "logits-reproduction": "the report holds the new artifact's logits digest and the command "
                           "that reproduces it",
}
_KEYS = ("format", "format_version", "name", "policy_version", "substantial_classes",
         "substantial_sections", "required_evidence", "require_security_version_increase",
         "require_rxswin_change")


class AuditError(Error, ValueError):
    """An input of the audit (OEM policy, options) is malformed; the message names the
    problem."""


@dataclass(frozen=True)
class OemPolicy:
    name: str
    policy_version: int
    substantial_classes: tuple[str, ...]
    substantial_sections: tuple[str, ...]
    evidence_substantial: tuple[str, ...]
    evidence_non_substantial: tuple[str, ...]
    require_security_version_increase: bool
    require_rxswin_change: bool
    sha256: str          # of the policy file's bytes, so the report names the exact policy

    def is_substantial(self, klass: str, sections: list[str]) -> tuple[bool, list[str]]:
        """(substantial?, the reasons) for a diff class and the metadata sections changed."""
        reasons = []
        if klass in self.substantial_classes:
            reasons.append(f"change class {klass!r} is substantial under this policy")
        for s in sections:
            if s in self.substantial_sections:
                reasons.append(f"the {s} section changed, which this policy counts as "
                               f"substantial")
        return bool(reasons), reasons


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise AuditError(f"OEM policy: duplicate key {printable(k)!r}")
        out[k] = v
    return out


def _bool(p: dict[str, Any], key: str) -> bool:
    v = p[key]
    if not isinstance(v, bool):
        raise AuditError(f"OEM policy: {key} must be true or false")
    return v


def _names(v: Any, what: str, allowed: tuple[str, ...] | None = None) -> tuple[str, ...]:
    if not isinstance(v, list) or len(v) > MAX_EVIDENCE:
        raise AuditError(f"OEM policy: {what} must be a list of at most {MAX_EVIDENCE} strings")
    out = []
    for x in v:
        if not isinstance(x, str) or not x or len(x) > MAX_NAME or not x.isprintable():
            raise AuditError(f"OEM policy: {what}: {printable(repr(x))} is not a non-empty "
                             f"printable string of at most {MAX_NAME} characters")
        if allowed is not None and x not in allowed:
            raise AuditError(f"OEM policy: {what}: {printable(x)!r} is not one of "
                             f"{', '.join(allowed)}")
        if x in out:
            raise AuditError(f"OEM policy: {what}: {printable(x)!r} is listed twice")
        out.append(x)
    return tuple(out)


def parse_oem_policy(data: bytes) -> OemPolicy:
    """Parses and checks a policy (see the module doc); raises :class:`AuditError`."""
    if len(data) > MAX_POLICY_BYTES:
        raise AuditError(f"OEM policy: {len(data)} bytes exceed the cap of {MAX_POLICY_BYTES}")
    try:
        p = json.loads(data.decode("utf-8"), object_pairs_hook=_no_duplicates,
                       parse_constant=_reject_constant)
    except UnicodeDecodeError as e:
        raise AuditError(f"OEM policy: not UTF-8 ({e.reason} at byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise AuditError(f"OEM policy: not JSON ({e.msg} at line {e.lineno} column "
                         f"{e.colno})") from None
    except RecursionError:
        raise AuditError("OEM policy: nested too deeply") from None
    if not isinstance(p, dict):
        raise AuditError("OEM policy: the top level must be a JSON object")
    unknown = sorted(set(p) - set(_KEYS))
    if unknown:
        raise AuditError(f"OEM policy: unknown key {printable(unknown[0])!r} (format "
                         f"{POLICY_FORMAT} {POLICY_VERSION[0]}.{POLICY_VERSION[1]} has "
                         f"{', '.join(_KEYS)})")
    missing = [k for k in _KEYS if k not in p]
    if missing:
        raise AuditError(f"OEM policy: missing key {missing[0]!r}")
    if p["format"] != POLICY_FORMAT:
        raise AuditError(f"OEM policy: format must be {POLICY_FORMAT!r}")
    fv = p["format_version"]
    if (not isinstance(fv, list) or len(fv) != 2
            or not all(isinstance(x, int) and not isinstance(x, bool) for x in fv)):
        raise AuditError("OEM policy: format_version must be [major, minor]")
    if fv[0] != POLICY_VERSION[0] or fv[1] > POLICY_VERSION[1]:
        raise AuditError(f"OEM policy: format_version {fv[0]}.{fv[1]} is not supported (this "
                         f"fwassist reads {POLICY_VERSION[0]}.0 to {POLICY_VERSION[0]}."
                         f"{POLICY_VERSION[1]})")
    name = p["name"]
    if not isinstance(name, str) or not name or len(name) > MAX_NAME:
        raise AuditError(f"OEM policy: name must be a non-empty string of at most {MAX_NAME} "
                         f"characters")
    pv = p["policy_version"]
    if not isinstance(pv, int) or isinstance(pv, bool) or not 1 <= pv < 2**53:
        raise AuditError("OEM policy: policy_version must be an integer >= 1")
    ev = p["required_evidence"]
    if not isinstance(ev, dict) or set(ev) != {"substantial", "non_substantial"}:
        raise AuditError("OEM policy: required_evidence must be an object with exactly the keys "
                         "substantial and non_substantial")
    return OemPolicy(
        name=name, policy_version=pv,
        substantial_classes=_names(p["substantial_classes"], "substantial_classes",
                                   DIFF_CLASSES[1:]),
        substantial_sections=_names(p["substantial_sections"], "substantial_sections",
                                    METADATA_SECTIONS),
        evidence_substantial=_names(ev["substantial"], "required_evidence.substantial"),
        evidence_non_substantial=_names(ev["non_substantial"],
                                        "required_evidence.non_substantial"),
        require_security_version_increase=_bool(p, "require_security_version_increase"),
        require_rxswin_change=_bool(p, "require_rxswin_change"),
        sha256=hashlib.sha256(data).hexdigest())


def _reject_constant(name: str) -> Any:
    raise AuditError(f"OEM policy: {name} is not a JSON number")


def load_oem_policy(path: Union[str, "os.PathLike[str]"]) -> OemPolicy:
    """Reads and parses the policy file at ``path`` (at most 1 MiB)."""
    with open(path, "rb") as f:
        data = f.read(MAX_POLICY_BYTES + 1)
    return parse_oem_policy(data)
