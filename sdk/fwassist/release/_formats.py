# SPDX-License-Identifier: Apache-2.0
"""The byte formats of signed releases (docs/releases.md): the release statement, DSSE's
pre-authentication encoding, one Sigstore bundle line per signer, keyids and strict JSON.

Every parser here is strict and bounded: caps are checked before the work they bound, and a
departure from the canonical form is refused, never repaired.
"""

from __future__ import annotations

import base64
import binascii
import errno
import hashlib
import json
import os
import re
import stat
from dataclasses import dataclass
from typing import Any, Optional

from ..errors import ReleaseError

__all__ = ["Bundle", "Statement", "read_small", "pae", "keyid_of_der", "canonical",
           "parse_bundle_file", "render_bundle_line", "parse_statement", "render_statement",
           "b64encode", "strict_json", "check_rxswin", "check_security_version",
           "STATEMENT_TYPE", "PREDICATE_TYPE", "PAYLOAD_TYPE", "POLICY_PAYLOAD_TYPE",
           "BUNDLE_MEDIA_TYPE", "MAX_SIG_FILE", "MAX_LINES", "MAX_LINE", "MAX_PAYLOAD",
           "MAX_POLICY_PAYLOAD", "MAX_SIGNATURE", "MAX_STRING", "MAX_SECURITY_VERSION"]

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://fwassist.dev/release/v1"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
POLICY_PAYLOAD_TYPE = "application/vnd.fwassist.trust-policy+json"
BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"

MAX_SIG_FILE = 1 << 20          # the whole .sig file
MAX_LINES = 16                  # signers
MAX_LINE = 64 << 10             # one bundle line, without its "\n"
MAX_PAYLOAD = 16 << 10          # decoded DSSE payload: a release statement
MAX_POLICY_PAYLOAD = 32 << 10   # decoded DSSE payload: a signed trust policy (64 keys fit)
MAX_SIGNATURE = 256             # decoded signature
MAX_STRING = 4 << 10            # every other string (the payload's base64 has its own cap)
MAX_SECURITY_VERSION = 1 << 53
MAX_RXSWIN = 128

_HEX64 = re.compile(r"[0-9a-f]{64}\Z")
_RXSWIN = re.compile(r"[\x20-\x7e]{1,%d}\Z" % MAX_RXSWIN)
_B64 = re.compile(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?\Z")


def read_small(path: str, cap: int) -> bytes:
    """At most `cap` + 1 bytes of the regular file `path` (the caller refuses more than `cap`).
    Opened without blocking and checked to be a regular file, so a FIFO or a device named
    instead of a policy, signature, key or counter file is an error, not a hang; OSError."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", path)
        with os.fdopen(fd, "rb") as f:
            fd = -1
            return f.read(cap + 1)
    finally:
        if fd >= 0:
            os.close(fd)


def canonical(value: Any) -> bytes:
    """Canonical JSON (docs/artifact-format.md §3.1): sorted keys, no whitespace, UTF-8."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def keyid_of_der(spki_der: bytes) -> str:
    """The keyid of a public key: lowercase hex SHA-256 of its DER SubjectPublicKeyInfo."""
    return hashlib.sha256(spki_der).hexdigest()


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding: the bytes a signature covers."""
    t = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(payload), payload)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def strict_json(raw: bytes, status: str, what: str) -> Any:
    """The value of `raw`, valid UTF-8 JSON with no duplicate keys, no non-integer numbers and
    integers within +-2^53; else ReleaseError(status)."""
    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        obj = dict(items)
        if len(obj) != len(items):
            raise ValueError("duplicate key")
        return obj

    def no_float(s: str) -> Any:
        raise ValueError(f"non-integer number {s[:20]}")

    try:
        value = json.loads(raw.decode("utf-8"), object_pairs_hook=pairs, parse_float=no_float,
                           parse_constant=no_float)
    except RecursionError:
        raise ReleaseError(status, f"{what}: nested too deeply") from None
    except UnicodeDecodeError:
        raise ReleaseError(status, f"{what}: not valid UTF-8") from None
    except ValueError as e:
        raise ReleaseError(status, f"{what}: not valid JSON ({e})") from None
    _check_ints(value, status, what)
    return value


def _check_ints(value: Any, status: str, what: str) -> None:
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, dict):
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
        elif _is_int(v) and not -MAX_SECURITY_VERSION <= v <= MAX_SECURITY_VERSION:
            raise ReleaseError(status, f"{what}: integer outside [-2^53, 2^53]")


def _strings_within(value: Any, cap: int, skip: frozenset[int] = frozenset()) -> bool:
    """No string (key or value) longer than `cap` UTF-8 bytes, except values whose id() is in
    `skip` (the fields with caps of their own)."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, dict):
            for k, x in v.items():
                if len(k.encode("utf-8")) > cap:
                    return False
                stack.append(x)
        elif isinstance(v, list):
            stack.extend(v)
        elif isinstance(v, str) and id(v) not in skip and len(v.encode("utf-8")) > cap:
            return False
    return True


def _exact(obj: Any, keys: set[str], where: str) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise ReleaseError("signature_malformed", f"{where} must be an object")
    if set(obj) != keys:
        extra, missing = sorted(set(obj) - keys), sorted(keys - set(obj))
        raise ReleaseError("signature_malformed",
                           f"{where}: " + "; ".join(
                               ([f"unknown keys {extra}"] if extra else [])
                               + ([f"missing keys {missing}"] if missing else [])))
    return obj


def _b64decode(s: Any, cap: int, where: str) -> bytes:
    """Standard, padded, canonical base64 of at most `cap` bytes."""
    if not isinstance(s, str):
        raise ReleaseError("signature_malformed", f"{where} must be a base64 string")
    if len(s) > 4 * -(-cap // 3):
        raise ReleaseError("cap_exceeded", f"{where}: more than {cap} bytes")
    if not _B64.match(s):
        raise ReleaseError("signature_malformed", f"{where}: not standard padded base64")
    try:
        data = base64.b64decode(s, validate=True)
    except binascii.Error:
        raise ReleaseError("signature_malformed", f"{where}: not valid base64") from None
    if base64.b64encode(data).decode("ascii") != s:
        raise ReleaseError("signature_malformed", f"{where}: non-canonical base64 (nonzero "
                                                  f"padding bits)")
    if len(data) > cap:
        raise ReleaseError("cap_exceeded", f"{where}: {len(data)} bytes, more than {cap}")
    return data


@dataclass(frozen=True)
class Bundle:
    """One signer's Sigstore bundle: the DSSE payload (bytes), its type, the keyid and the
    signature (bytes), and the canonical line it was read from."""

    payload: bytes
    payload_type: str
    keyid: str
    signature: bytes
    line: bytes


def render_bundle_line(payload_type: str, payload: bytes, keyid: str, signature: bytes) -> bytes:
    """The canonical JSON line (without "\\n") of one signer's Sigstore bundle v0.3."""
    return canonical({
        "dsseEnvelope": {"payload": b64encode(payload), "payloadType": payload_type,
                         "signatures": [{"keyid": keyid, "sig": b64encode(signature)}]},
        "mediaType": BUNDLE_MEDIA_TYPE,
        "verificationMaterial": {"publicKey": {"hint": keyid}, "tlogEntries": []}})


def _parse_bundle_line(line: bytes, n: int, payload_type: str, max_payload: int) -> Bundle:
    where = f"signature line {n}"
    if len(line) > MAX_LINE:
        raise ReleaseError("cap_exceeded", f"{where}: {len(line)} bytes, more than {MAX_LINE}")
    value = strict_json(line, "signature_malformed", where)
    if canonical(value) != line:
        raise ReleaseError("signature_malformed", f"{where}: not canonical JSON (sorted keys, "
                                                  f"no whitespace)")
    b = _exact(value, {"dsseEnvelope", "mediaType", "verificationMaterial"}, where)
    env = _exact(b["dsseEnvelope"], {"payload", "payloadType", "signatures"},
                 f"{where}: dsseEnvelope")
    vm = _exact(b["verificationMaterial"], {"publicKey", "tlogEntries"},
                f"{where}: verificationMaterial")
    pk = _exact(vm["publicKey"], {"hint"}, f"{where}: verificationMaterial.publicKey")
    payload_str = env["payload"]
    skip = frozenset([id(payload_str)]) if isinstance(payload_str, str) else frozenset()
    if not _strings_within(value, MAX_STRING, skip):
        raise ReleaseError("cap_exceeded", f"{where}: a string longer than {MAX_STRING} bytes")
    if b["mediaType"] != BUNDLE_MEDIA_TYPE:
        raise ReleaseError("signature_malformed", f"{where}: mediaType is not "
                                                  f"{BUNDLE_MEDIA_TYPE}")
    if vm["tlogEntries"] != []:
        raise ReleaseError("signature_malformed", f"{where}: tlogEntries must be empty (offline "
                                                  f"keys)")
    if env["payloadType"] != payload_type:
        raise ReleaseError("signature_malformed", f"{where}: payloadType is not {payload_type}")
    sigs = env["signatures"]
    if not isinstance(sigs, list) or len(sigs) != 1:
        raise ReleaseError("signature_malformed", f"{where}: exactly one DSSE signature per "
                                                  f"bundle")
    s = _exact(sigs[0], {"keyid", "sig"}, f"{where}: signature")
    keyid = s["keyid"]
    if not isinstance(keyid, str) or not _HEX64.match(keyid):
        raise ReleaseError("signature_malformed", f"{where}: keyid must be 64 lowercase hex "
                                                  f"digits")
    if pk["hint"] != keyid:
        raise ReleaseError("signature_malformed", f"{where}: publicKey.hint differs from the "
                                                  f"signature's keyid")
    payload = _b64decode(payload_str, max_payload, f"{where}: payload")
    sig = _b64decode(s["sig"], MAX_SIGNATURE, f"{where}: signature")
    if not sig:
        raise ReleaseError("signature_malformed", f"{where}: empty signature")
    return Bundle(payload, payload_type, keyid, sig, line)


def parse_bundle_file(data: bytes, payload_type: str = PAYLOAD_TYPE) -> list[Bundle]:
    """The bundles of a signature file's bytes: JSON Lines, each line a canonical bundle ending
    in "\\n", every payload byte-identical, every keyid distinct. `payload_type` is that of
    release statements or of signed trust policies (which have a larger payload cap)."""
    max_payload = MAX_POLICY_PAYLOAD if payload_type == POLICY_PAYLOAD_TYPE else MAX_PAYLOAD
    if len(data) > MAX_SIG_FILE:
        raise ReleaseError("cap_exceeded", f"signature file of {len(data)} bytes, more than "
                                           f"{MAX_SIG_FILE}")
    if not data:
        raise ReleaseError("signature_malformed", "the signature file is empty")
    if not data.endswith(b"\n"):
        raise ReleaseError("signature_malformed", "the last line does not end with a newline "
                                                  "(truncated?)")
    lines = data[:-1].split(b"\n")
    if len(lines) > MAX_LINES:
        raise ReleaseError("cap_exceeded", f"{len(lines)} signature lines, more than "
                                           f"{MAX_LINES}")
    for n, line in enumerate(lines, 1):  # every cap before any line is parsed (as the core)
        if len(line) > MAX_LINE:
            raise ReleaseError("cap_exceeded", f"signature line {n}: {len(line)} bytes, more "
                                               f"than {MAX_LINE}")
    bundles = []
    for n, line in enumerate(lines, 1):
        if not line:
            raise ReleaseError("signature_malformed", f"signature line {n} is empty")
        bundles.append(_parse_bundle_line(line, n, payload_type, max_payload))
    first = bundles[0].payload
    seen: set[str] = set()
    for n, b in enumerate(bundles, 1):
        if b.payload != first:
            raise ReleaseError("signature_malformed", f"signature line {n} signs a different "
                                                      f"payload than line 1")
        if b.keyid in seen:
            raise ReleaseError("signature_malformed", f"signature line {n}: key {b.keyid} "
                                                      f"signed twice")
        seen.add(b.keyid)
    return bundles


@dataclass(frozen=True)
class Statement:
    """The release statement: what a signer approves."""

    root_digest: str                 # hex, the artifact's pin without "sha256:"
    name: str                        # the file's basename at signing (informative only)
    security_version: int
    rxswin: Optional[str]
    model_card_sha256: str
    artifact_format: tuple[int, int]

    @property
    def pin(self) -> str:
        return "sha256:" + self.root_digest


def check_rxswin(rxswin: Optional[str]) -> Optional[str]:
    """`rxswin` if None or 1..128 printable ASCII characters, else ValueError."""
    if rxswin is not None and (not isinstance(rxswin, str) or not _RXSWIN.match(rxswin)):
        raise ValueError(f"RXSWIN must be 1..{MAX_RXSWIN} printable ASCII characters, got "
                         f"{rxswin!r}")
    return rxswin


def check_security_version(v: int) -> int:
    if not _is_int(v) or not 0 <= v <= MAX_SECURITY_VERSION:
        raise ValueError(f"security version must be an integer in [0, 2^53], got {v!r}")
    return v


def render_statement(st: Statement) -> bytes:
    return canonical({
        "_type": STATEMENT_TYPE,
        "predicate": {"artifact_format": list(st.artifact_format),
                      "model_card_sha256": st.model_card_sha256, "rxswin": st.rxswin,
                      "security_version": st.security_version},
        "predicateType": PREDICATE_TYPE,
        "subject": [{"digest": {"sha256": st.root_digest}, "name": st.name}]})


def parse_statement(payload: bytes) -> Statement:
    """The statement in a DSSE payload: canonical JSON of exactly the statement's keys."""
    bad = "signature_malformed"
    value = strict_json(payload, bad, "statement")
    if canonical(value) != payload:
        raise ReleaseError(bad, "statement: not canonical JSON")
    if not _strings_within(value, MAX_STRING):
        raise ReleaseError("cap_exceeded", f"statement: a string longer than {MAX_STRING} "
                                           f"bytes")
    st = _exact(value, {"_type", "predicate", "predicateType", "subject"}, "statement")
    if st["_type"] != STATEMENT_TYPE:
        raise ReleaseError(bad, f"statement: _type is not {STATEMENT_TYPE}")
    if st["predicateType"] != PREDICATE_TYPE:
        raise ReleaseError(bad, f"statement: predicateType is not {PREDICATE_TYPE}")
    subjects = st["subject"]
    if not isinstance(subjects, list) or len(subjects) != 1:
        raise ReleaseError(bad, "statement: exactly one subject")
    subj = _exact(subjects[0], {"digest", "name"}, "statement: subject")
    digest = _exact(subj["digest"], {"sha256"}, "statement: subject.digest")["sha256"]
    if not isinstance(digest, str) or not _HEX64.match(digest):
        raise ReleaseError(bad, "statement: subject digest must be 64 lowercase hex digits")
    if not isinstance(subj["name"], str) or not subj["name"]:
        raise ReleaseError(bad, "statement: subject name must be a non-empty string")
    pred = _exact(st["predicate"], {"artifact_format", "model_card_sha256", "rxswin",
                                    "security_version"}, "statement: predicate")
    fmt = pred["artifact_format"]
    if not (isinstance(fmt, list) and len(fmt) == 2 and all(_is_int(x) and 0 <= x < 65536
                                                            for x in fmt)):
        raise ReleaseError(bad, "statement: artifact_format must be [major, minor]")
    mc = pred["model_card_sha256"]
    if not isinstance(mc, str) or not _HEX64.match(mc):
        raise ReleaseError(bad, "statement: model_card_sha256 must be 64 lowercase hex digits")
    sv = pred["security_version"]
    if not _is_int(sv) or not 0 <= sv <= MAX_SECURITY_VERSION:
        raise ReleaseError(bad, "statement: security_version must be an integer in [0, 2^53]")
    rx = pred["rxswin"]
    if rx is not None and (not isinstance(rx, str) or not _RXSWIN.match(rx)):
        raise ReleaseError(bad, f"statement: rxswin must be null or 1..{MAX_RXSWIN} printable "
                                f"ASCII characters")
    return Statement(digest, subj["name"], sv, rx, mc, (fmt[0], fmt[1]))
