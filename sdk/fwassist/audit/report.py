# SPDX-License-Identifier: Apache-2.0
"""Builds the audit report of one change (docs/audit-report.md): two artifacts, optionally
their signatures with a trust policy and an OEM policy, in; one JSON-ready dict out.

The report is deterministic (no clock, no absolute paths): the same inputs give the same
bytes, so the report itself can be hashed, archived and signed as a configuration record.
"""

from __future__ import annotations

import os
import shlex
from typing import Any, Optional, Union

from .. import __version__
from ..artifact.diff import DIFF_CLASSES, diff
from ..artifact import pyverify
from ..artifact.pyverify import VerifiedArtifact
from ..errors import ArtifactError, ReleaseError
from ..release import TrustPolicy, load_policy
from ..textsafe import printable
from . import logits as logits_mod
from .compare import json_differences, sbom_difference
from .policy import CHECKED_EVIDENCE, METADATA_SECTIONS, AuditError, OemPolicy

__all__ = ["build_report", "REPORT_FORMAT", "REPORT_VERSION"]

REPORT_FORMAT = "fwassist.audit-report"
REPORT_VERSION = (1, 0)

PathLike = Union[str, "os.PathLike[str]"]


def _manifest(path: str, pin: str) -> VerifiedArtifact:
    try:
        return pyverify.read_manifest(path, pin=pin)
    except pyverify.PyArtifactError as e:
        raise ArtifactError(e.status, e.message, path) from None


def _obj(v: Any) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}


def _str_or_none(v: Any) -> Optional[str]:
    return v if isinstance(v, str) else None


def _identity(art: VerifiedArtifact) -> dict[str, Any]:
    m = art.manifest
    card, prov = _obj(m["model_card"]), _obj(m["provenance"])
    exporter, source = _obj(prov.get("exporter")), _obj(prov.get("source"))
    return {
        "file": os.path.basename(art.path),
        "size": art.file_length,
        "pin": art.pin,
        "format_version": list(m["format_version"]),
        "model_name": _str_or_none(card.get("name")),
        "model_version": _str_or_none(card.get("version")),
        "exporter": {"name": _str_or_none(exporter.get("name")),
                     "version": _str_or_none(exporter.get("version"))},
        "source_sha256": _str_or_none(source.get("sha256")),
        "model_card_sha256": m["sections"]["model_card"],
        "release": None,
    }


def _release(artifact: str, sig: str, trust: TrustPolicy) -> dict[str, Any]:
    """The signature verdict of ``artifact`` by the reference verifier
    (:func:`fwassist.release.verify`), without a rollback counter: the audit compares the two
    releases' versions itself. On a refusal, the version, RXSWIN and signers are those the
    verifier had read when it refused: claims, not verified facts (``status`` says so)."""
    from ..release import ReleaseVerdict, verify as verify_release

    out: dict[str, Any] = {"signature_file": os.path.basename(sig), "status": "unsigned",
                           "message": None, "security_version": None, "rxswin": None,
                           "signers": []}
    if not os.path.lexists(sig):
        out["message"] = "no signature file"
        return out
    try:
        v = verify_release(artifact, sig, trust)
        out["status"] = v.status
    except ReleaseError as e:
        out.update(status=e.status, message=e.message)
        v = e.verdict if isinstance(e.verdict, ReleaseVerdict) else ReleaseVerdict()
    out.update(security_version=v.security_version, rxswin=v.rxswin,
               signers=[{"keyid": s.keyid, "role": s.role, "status": s.status}
                        for s in v.signers])
    return out


def _reproduce(path: str, pin: str) -> dict[str, Any]:
    """Logits digests and a greedy generation of the new artifact, with the commands that
    reproduce them; ``available: false`` with the reason when the runtime cannot run it."""
    from ..runtime import Model

    try:
        model = Model.load(path, pin=pin)
    except ArtifactError as e:
        return {"available": False, "reason": f"{e.status}: {e.message}"}
    ids = logits_mod.probe_ids(model.vocab_size)
    digests = {mode: logits_mod.logits_digest(model, ids, mode) for mode in ("exact", "fast")}
    prompt = ids[:logits_mod.RUN_PROMPT_LENGTH]
    out_ids, text = logits_mod.greedy_ids(model, prompt, "exact")
    name = shlex.quote(os.path.basename(path))
    return {
        "available": True,
        "probe": {"prompt_ids": ids, "logits": "float32 little-endian, every position, "
                                              "row-major [positions, vocab]",
                  "digests": digests,
                  "commands": {mode: f"fwassist logits-digest {name} --pin {pin} --mode {mode}"
                               for mode in digests}},
        "generation": {"prompt_ids": prompt, "max_tokens": logits_mod.RUN_MAX_TOKENS,
                       "mode": "exact", "sampling": "greedy (temperature 0), no stop ids",
                       "expected_ids": out_ids, "expected_text": text,
                       "command": (f"fwassist run {name} --pin {pin} --prompt-ids "
                                   f"{','.join(str(i) for i in prompt)} --max-tokens "
                                   f"{logits_mod.RUN_MAX_TOKENS} --temperature 0 --no-eos "
                                   f"--mode exact")},
    }


def _evidence_item(name: str, new: dict[str, Any], manifest: dict[str, Any],
                   reproduce: dict[str, Any]) -> dict[str, Any]:
    if name == "signed-release":
        rel = new["release"]
        ok = rel is not None and rel["status"] == "ok"
        detail = ("signatures verified against the trust policy" if ok else
                  "no signature checked (pass --sig and --trust)" if rel is None else
                  f"signature status {rel['status']}")
    elif name == "export-equivalence":
        ev = manifest["evidence"]
        ok = isinstance(ev, dict) and ev.get("measured") is True
        detail = ("measured at export" if ok else
                  "the artifact's evidence section does not hold measured equivalence")
    elif name == "logits-reproduction":
        ok = bool(reproduce.get("available"))
        detail = ("digests and commands in this report" if ok else
                  f"the runtime could not run the artifact: {reproduce.get('reason')}")
    else:
        return {"name": name, "status": "external",
                "detail": "kept outside the artifact: the auditor attaches it"}
    return {"name": name, "status": "present" if ok else "missing", "detail": detail}


def _finding(rule: str, result: str, message: str) -> dict[str, Any]:
    return {"rule": rule, "result": result, "message": message}


def _apply_policy(policy: OemPolicy, policy_file: str, change: dict[str, Any],
                  old: dict[str, Any], new: dict[str, Any], manifest: dict[str, Any],
                  reproduce: dict[str, Any]) -> dict[str, Any]:
    sections = sorted({c["section"] for c in change["changes"].get("metadata-only", [])
                       if c.get("section") in METADATA_SECTIONS})
    substantial, reasons = policy.is_substantial(change["class"], sections)
    findings = [_finding("substantial-modification", "pass",
                         "; ".join(reasons) if substantial else
                         f"change class {change['class']!r} and the changed sections "
                         f"({', '.join(sections) or 'none'}) are not substantial under this "
                         f"policy")]
    ro, rn = old["release"], new["release"]
    verified_old = ro is not None and ro["status"] == "ok"
    verified_new = rn is not None and rn["status"] == "ok"
    if policy.require_security_version_increase:
        if not (verified_old and verified_new):
            findings.append(_finding(
                "security-version-increase", "unknown",
                "needs verified releases of both artifacts (--old-sig, --sig and --trust)"))
        else:
            so, sn = ro["security_version"], rn["security_version"]
            findings.append(_finding(
                "security-version-increase", "pass" if sn > so else "fail",
                f"security version {so} -> {sn}"))
    if policy.require_rxswin_change and substantial:
        if not (verified_old and verified_new):
            findings.append(_finding(
                "rxswin-change", "unknown",
                "a substantial modification needs a new RXSWIN; checking it needs verified "
                "releases of both artifacts"))
        else:
            xo, xn = ro["rxswin"], rn["rxswin"]
            findings.append(_finding(
                "rxswin-change", "pass" if xn is not None and xn != xo else "fail",
                f"RXSWIN {xo!r} -> {xn!r}"))
    wanted = policy.evidence_substantial if substantial else policy.evidence_non_substantial
    evidence = [_evidence_item(n, new, manifest, reproduce) for n in wanted]
    results = [f["result"] for f in findings] + [e["status"] for e in evidence]
    verdict = ("fail" if "fail" in results or "missing" in results else
               "open" if "unknown" in results or "external" in results else "pass")
    return {"file": os.path.basename(policy_file), "sha256": policy.sha256,
            "name": policy.name, "policy_version": policy.policy_version,
            "substantial": substantial, "reasons": reasons, "findings": findings,
            "required_evidence": evidence, "verdict": verdict,
            "known_evidence": dict(CHECKED_EVIDENCE)}


def build_report(old: PathLike, new: PathLike, *, sig: Optional[PathLike] = None,
                 old_sig: Optional[PathLike] = None, trust: Optional[PathLike] = None,
                 policy: Optional[OemPolicy] = None, policy_file: Optional[PathLike] = None,
                 reproduce: bool = True) -> dict[str, Any]:
    """The report (see docs/audit-report.md and docs/audit-report.schema.json).

    Both artifacts are verified (every byte; an invalid one raises ArtifactError). With
    ``trust`` (a trust policy file), the new artifact's signatures (``sig``, default
    NEW + ".sig") and the old one's (``old_sig``, default OLD + ".sig") are verified by the
    reference verifier; a missing signature file is reported as ``unsigned``. ``policy``: the
    OEM policy (:func:`load_oem_policy`) applied to the change; ``reproduce``: run the new
    artifact to record its logits digests (False: not run, reported as unavailable)."""
    o, n = os.fspath(old), os.fspath(new)
    if (sig is not None or old_sig is not None) and trust is None:
        raise AuditError("--sig/--old-sig need --trust POLICY.json: the trust policy says "
                         "which keys are trusted in which role")
    if policy is not None and policy_file is None:
        raise AuditError("policy_file names the OEM policy in the report")
    tp, trust_info = None, None
    if trust is not None:
        try:
            tp = load_policy(os.fspath(trust))
        except ReleaseError as e:
            raise AuditError(f"trust policy {printable(os.fspath(trust))}: {e.status}: "
                             f"{e.message}") from None
        trust_info = {"file": os.path.basename(os.fspath(trust)),
                      "policy_version": int(tp.policy_version)}
    res = diff(o, n)  # verifies every byte of both
    # The manifests diff just verified, read again under their pins: the same bytes, or
    # pin_mismatch if a file was replaced meanwhile.
    A, B = _manifest(o, res.a), _manifest(n, res.b)
    ident_old, ident_new = _identity(A), _identity(B)
    if tp is not None:
        ident_new["release"] = _release(n, os.fspath(sig) if sig is not None else n + ".sig",
                                        tp)
        ident_old["release"] = _release(o, os.fspath(old_sig) if old_sig is not None
                                        else o + ".sig", tp)
    change = res.to_dict()
    ma, mb = A.manifest, B.manifest
    rep = (_reproduce(n, B.pin) if reproduce
           else {"available": False, "reason": "not run (--no-reproduce)"})
    report: dict[str, Any] = {
        "format": REPORT_FORMAT,
        "format_version": list(REPORT_VERSION),
        "tool": {"name": "fwassist", "version": __version__},
        "old": ident_old,
        "new": ident_new,
        "trust_policy": trust_info,
        "change": {"class": change["class"], "exit_code": change["exit_code"],
                   "rank": DIFF_CLASSES.index(change["class"]),
                   "changes": change["changes"], "weights": change["weights"],
                   "experts_changed": change["experts_changed"]},
        "oem_policy": None,
        "sbom": sbom_difference(ma["sbom"], mb["sbom"]),
        "model_card": json_differences(ma["model_card"], mb["model_card"]),
        "evidence": json_differences(ma["evidence"], mb["evidence"]),
        "reproduce": rep,
    }
    if policy is not None:
        assert policy_file is not None
        report["oem_policy"] = _apply_policy(policy, os.fspath(policy_file), report["change"],
                                             ident_old, ident_new, mb, rep)
    return report


def summary(report: dict[str, Any]) -> list[str]:
    """A few lines for a terminal, every artifact-supplied string escaped."""
    out = [f"old      {report['old']['pin']}  {printable(report['old']['file'])}",
           f"new      {report['new']['pin']}  {printable(report['new']['file'])}",
           f"change   {report['change']['class']}"]
    for side in ("old", "new"):
        rel = report[side]["release"]
        if rel is not None:
            out.append(f"{side} release  {printable(rel['status'])}, security version "
                       f"{rel['security_version']}, RXSWIN {printable(rel['rxswin'])}")
    pol = report["oem_policy"]
    if pol is not None:
        out.append(f"policy   {printable(pol['name'])} v{pol['policy_version']}: "
                   f"{'substantial' if pol['substantial'] else 'not substantial'}, verdict "
                   f"{pol['verdict']}")
    return out
