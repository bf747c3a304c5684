# SPDX-License-Identifier: Apache-2.0
"""A corpus of signed-release cases, one per refusal and a few accepted ones, each with the
status every verifier must give (docs/releases.md §4): the reference verifier's test
(tests/test_release_cases.py) checks them, and a native verifier (C ABI, Model.load(trust=...),
`fwassist verify --trust`) or a fuzzer's seed corpus can take the same files.

    python tests/release_cases.py OUTDIR      # writes OUTDIR/<case>/ and OUTDIR/cases.json

Each case directory holds model.fwa (a small valid artifact), model.fwa.sig, policy.json and,
when the case has one, counter (the file store); cases.json lists
{"name", "dir", "counter": true|false, "status"} with status "ok" or the refusal."""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path
from typing import Any, Callable

from artifact_fixtures import build, small_tensors

from fwassist.release import make_policy, sign
from fwassist.release._formats import PAYLOAD_TYPE, pae, render_bundle_line
from fwassist.release.keys import PemSigner, generate_key


def _canon(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _lines(sig: Path) -> list[bytes]:
    return sig.read_bytes().splitlines(keepends=True)


def _edit_line(sig: Path, n: int, fn: Callable[[dict], None]) -> None:
    ls = _lines(sig)
    j = json.loads(ls[n])
    fn(j)
    ls[n] = _canon(j) + b"\n"
    sig.write_bytes(b"".join(ls))


def write_cases(out: Path, models: tuple[bytes, bytes] | None = None) -> list[dict[str, Any]]:
    """models: two different valid artifacts (default: small ones, which only the artifact
    verifiers open; Model.load needs complete models, tests/test_release_differential.py)."""
    out.mkdir(parents=True, exist_ok=True)
    model_a, model_b = models or (build(small_tensors(seed=0)), build(small_tensors(seed=1)))
    sup: PemSigner = generate_key("ecdsa-p256-sha256")[1]
    oem: PemSigner = generate_key("ed25519")[1]
    sup2: PemSigner = generate_key("ecdsa-p256-sha256")[1]
    stranger: PemSigner = generate_key("ecdsa-p256-sha256")[1]
    both = [("supplier", sup.public_key_pem), ("oem", oem.public_key_pem)]
    req = {"supplier": 1, "oem": 1}
    cases: list[dict[str, Any]] = []

    def case(name: str, status: str, signers: list[PemSigner], *, version: int = 5,
             policy: bytes | None = None, counter: int | None = None, blob: bytes = model_a,
             edit: Callable[[Path], None] | None = None) -> None:
        d = out / name
        d.mkdir(exist_ok=True)
        model = d / "model.fwa"
        model.write_bytes(blob)
        for s in signers:
            sign(model, s, version, "RXSWIN-1")
        if edit is not None:
            edit(d / "model.fwa.sig")
        (d / "policy.json").write_bytes(policy if policy is not None
                                        else make_policy(both, req, min_security_version=2))
        if counter is not None:
            (d / "counter").write_bytes(b"%d\n" % counter)
        cases.append({"name": name, "dir": name, "counter": counter is not None,
                      "status": status})

    case("ok_cosigned", "ok", [sup, oem])
    case("ok_counter_equal", "ok", [sup, oem], counter=5)
    case("ok_lines_swapped", "ok", [sup, oem],
         edit=lambda p: p.write_bytes(b"".join(reversed(_lines(p)))))
    case("ok_untrusted_extra_signer", "ok", [stranger, sup, oem])
    case("untrusted_missing_oem", "untrusted", [sup])
    case("untrusted_stranger_only", "untrusted", [stranger])
    case("untrusted_threshold_2", "untrusted", [sup, oem],
         policy=make_policy(both + [("supplier", sup2.public_key_pem)],
                            {"supplier": 2, "oem": 1}))
    case("revoked_supplier", "revoked", [sup, oem],
         policy=make_policy(both + [("supplier", sup2.public_key_pem)], req,
                            revoked_keyids=[sup.keyid]))
    case("rollback_policy_minimum", "rollback", [sup, oem], version=1)
    case("rollback_counter", "rollback", [sup, oem], counter=6)
    case("counter_unavailable_malformed", "counter_unavailable", [sup, oem], counter=None,
         edit=lambda p: (p.parent / "counter").write_bytes(b"07\n"))
    cases[-1]["counter"] = True
    case("subject_mismatch_other_artifact", "subject_mismatch", [sup, oem], blob=model_b,
         edit=lambda p: p.write_bytes((out / "ok_cosigned" / "model.fwa.sig").read_bytes()))

    def flip_sig(p: Path) -> None:
        def f(j: dict) -> None:
            s = bytearray(base64.b64decode(j["dsseEnvelope"]["signatures"][0]["sig"]))
            s[12] ^= 1
            j["dsseEnvelope"]["signatures"][0]["sig"] = base64.b64encode(bytes(s)).decode()
        _edit_line(p, 1, f)

    case("signature_invalid_flipped", "signature_invalid", [sup, oem], edit=flip_sig)

    def other_version(p: Path) -> None:
        for n in range(2):
            def f(j: dict) -> None:
                st = json.loads(base64.b64decode(j["dsseEnvelope"]["payload"]))
                st["predicate"]["security_version"] = 9
                j["dsseEnvelope"]["payload"] = base64.b64encode(_canon(st)).decode()
            _edit_line(p, n, f)

    case("signature_invalid_payload_changed", "signature_invalid", [sup, oem],
         edit=other_version)
    case("signature_malformed_truncated", "signature_malformed", [sup, oem],
         edit=lambda p: p.write_bytes(p.read_bytes()[:-1]))
    case("signature_malformed_not_canonical", "signature_malformed", [sup, oem],
         edit=lambda p: p.write_bytes(b"".join(
             json.dumps(json.loads(x), sort_keys=True).encode() + b"\n" for x in _lines(p))))
    case("signature_malformed_payloads_differ", "signature_malformed", [sup, oem],
         edit=lambda p: _edit_line(p, 1, lambda j: j["dsseEnvelope"].__setitem__(
             "payload", base64.b64encode(b"{}").decode())))
    case("signature_malformed_hint_differs", "signature_malformed", [sup, oem],
         edit=lambda p: _edit_line(p, 0, lambda j: j["verificationMaterial"]["publicKey"]
                                   .__setitem__("hint", oem.keyid)))
    case("signature_malformed_two_signatures", "signature_malformed", [sup, oem],
         edit=lambda p: _edit_line(p, 0, lambda j: j["dsseEnvelope"]["signatures"].append(
             dict(j["dsseEnvelope"]["signatures"][0]))))

    def seventeen(p: Path) -> None:
        payload = base64.b64decode(json.loads(_lines(p)[0])["dsseEnvelope"]["payload"])
        extra = b""
        for _ in range(15):
            k = generate_key("ed25519")[1]
            extra += render_bundle_line(PAYLOAD_TYPE, payload, k.keyid,
                                        k.sign(pae(PAYLOAD_TYPE, payload))) + b"\n"
        p.write_bytes(p.read_bytes() + extra)

    case("cap_exceeded_17_lines", "cap_exceeded", [sup, oem], edit=seventeen)
    case("cap_exceeded_long_signature", "cap_exceeded", [sup, oem],
         edit=lambda p: _edit_line(p, 0, lambda j: j["dsseEnvelope"]["signatures"][0]
                                   .__setitem__("sig", base64.b64encode(b"0" * 257).decode())))
    bad_policy = json.loads(make_policy(both, req))
    bad_policy["keys"][0]["keyid"] = oem.keyid
    case("policy_malformed_keyid", "policy_malformed", [sup, oem],
         policy=json.dumps(bad_policy).encode())
    unsat = json.loads(make_policy(both, req))
    unsat["required_roles"]["auditor"] = 1
    case("policy_unsatisfiable", "policy_unsatisfiable", [sup, oem],
         policy=json.dumps(unsat).encode())
    (out / "cases.json").write_text(json.dumps(cases, indent=1) + "\n")
    return cases


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: release_cases.py OUTDIR")
    print(f"{len(write_cases(Path(sys.argv[1])))} cases in {sys.argv[1]}")
