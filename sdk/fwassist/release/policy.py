# SPDX-License-Identifier: Apache-2.0
"""Trust policies (docs/releases.md "Trust policy"): which public keys play which role, which
are revoked, how many distinct signers each required role needs, and the minimum security
version. Parsed strictly: any JSON object with exactly these keys, duplicate keys refused,
each keyid checked against its key, and a policy its own keys cannot satisfy refused.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Union

from ..errors import ReleaseError
from ._formats import MAX_SECURITY_VERSION, MAX_STRING, canonical, read_small, strict_json
from .keys import ALGORITHMS, algorithm_of, load_public_key, public_key_info

__all__ = ["TrustPolicy", "TrustedKey", "load_policy", "parse_policy", "make_policy",
           "POLICY_FORMAT", "MAX_POLICY", "MAX_KEYS", "MAX_ROLES"]

POLICY_FORMAT = "fwassist.trust-policy"
MAX_POLICY = 1 << 20
MAX_KEYS = 64
MAX_ROLES = 16
_KEYS = {"format", "format_version", "policy_version", "keys", "revoked_keyids",
         "required_roles", "min_security_version"}
_KEY_KEYS = {"keyid", "role", "algorithm", "public_key"}
_HEX64 = re.compile(r"[0-9a-f]{64}\Z")
_ROLE = re.compile(r"[A-Za-z0-9_.-]{1,64}\Z")


@dataclass(frozen=True)
class TrustedKey:
    keyid: str
    role: str
    algorithm: str
    public_key_pem: str
    public_key: Any = None              # the `cryptography` key object


@dataclass(frozen=True)
class TrustPolicy:
    policy_version: int
    keys: tuple[TrustedKey, ...]
    revoked_keyids: frozenset[str]
    required_roles: Mapping[str, int]
    min_security_version: int
    format_version: tuple[int, int] = (1, 0)
    source: bytes = b""                 # the bytes parsed (what a policy signature covers)

    def key(self, keyid: str) -> "TrustedKey | None":
        for k in self.keys:
            if k.keyid == keyid:
                return k
        return None


# The strict PEM form both verifiers accept (the core's pem_to_der): exactly this header,
# base64 lines of 1..64 characters each ending in LF, the footer, an optional final LF.
_PEM = re.compile(r"-----BEGIN PUBLIC KEY-----\n((?:[A-Za-z0-9+/=]{1,64}\n)+)"
                  r"-----END PUBLIC KEY-----\n?\Z")


def _pem_der(lines: str) -> bytes:
    """The DER of the PEM body's base64 lines; b"" unless strict, canonical base64."""
    b64 = lines.replace("\n", "")
    try:
        der = base64.b64decode(b64, validate=True)
    except binascii.Error:
        return b""
    return der if base64.b64encode(der).decode("ascii") == b64 else b""


def public_key_der(key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return bytes(key.public_bytes(serialization.Encoding.DER,
                                  serialization.PublicFormat.SubjectPublicKeyInfo))


def _bad(msg: str) -> ReleaseError:
    return ReleaseError("policy_malformed", msg)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _string(v: Any, where: str) -> str:
    if not isinstance(v, str):
        raise _bad(f"{where} must be a string")
    if len(v.encode("utf-8")) > MAX_STRING:
        raise _bad(f"{where}: longer than {MAX_STRING} bytes")
    return v


def _role(v: Any, where: str) -> str:
    if not isinstance(v, str) or not _ROLE.match(v):
        raise _bad(f"{where}: a role is 1..64 characters of A-Z a-z 0-9 _ . -")
    return v


def parse_policy(raw: bytes) -> TrustPolicy:
    """The policy in `raw` (JSON), or ReleaseError (``policy_malformed``,
    ``policy_unsatisfiable``)."""
    if len(raw) > MAX_POLICY:
        raise _bad(f"policy of {len(raw)} bytes, more than {MAX_POLICY}")
    p = strict_json(raw, "policy_malformed", "policy")
    if not isinstance(p, dict):
        raise _bad("policy must be a JSON object")
    if set(p) != _KEYS:
        extra, missing = sorted(set(p) - _KEYS), sorted(_KEYS - set(p))
        raise _bad("policy: " + "; ".join(([f"unknown keys {extra}"] if extra else [])
                                          + ([f"missing keys {missing}"] if missing else [])))
    if p["format"] != POLICY_FORMAT:
        raise _bad(f"policy: format must be {POLICY_FORMAT!r}")
    fv = p["format_version"]
    if not (isinstance(fv, list) and len(fv) == 2 and all(_is_int(x) for x in fv)
            and fv[0] == 1 and 0 <= fv[1] < 65536):
        raise _bad(f"policy: format_version {fv!r} is not [1, minor]")
    pv = p["policy_version"]
    if not _is_int(pv) or not 1 <= pv <= MAX_SECURITY_VERSION:
        raise _bad("policy: policy_version must be an integer >= 1")
    msv = p["min_security_version"]
    if not _is_int(msv) or not 0 <= msv <= MAX_SECURITY_VERSION:
        raise _bad("policy: min_security_version must be an integer in [0, 2^53]")
    keys_in = p["keys"]
    if not isinstance(keys_in, list):
        raise _bad("policy: keys must be an array")
    if len(keys_in) > MAX_KEYS:
        raise _bad(f"policy: {len(keys_in)} keys, more than {MAX_KEYS}")
    keys: list[TrustedKey] = []
    for i, k in enumerate(keys_in):
        where = f"policy: keys[{i}]"
        if not isinstance(k, dict) or set(k) != _KEY_KEYS:
            raise _bad(f"{where} must be an object with exactly {sorted(_KEY_KEYS)}")
        keyid = _string(k["keyid"], f"{where}.keyid")
        if not _HEX64.match(keyid):
            raise _bad(f"{where}.keyid must be 64 lowercase hex digits")
        role = _role(k["role"], f"{where}.role")
        alg = _string(k["algorithm"], f"{where}.algorithm")
        if alg not in ALGORITHMS:
            raise _bad(f"{where}.algorithm must be one of {', '.join(ALGORITHMS)}")
        pem = _string(k["public_key"], f"{where}.public_key")
        m = _PEM.match(pem)
        if not m:
            raise _bad(f"{where}.public_key is not a PEM PUBLIC KEY (RFC 7468 strict: the "
                       f"header line, base64 lines of at most 64 characters, the footer)")
        try:
            key = load_public_key(pem)
        except ValueError as e:
            raise _bad(f"{where}.public_key: {e}") from None
        if _pem_der(m.group(1)) != public_key_der(key):
            raise _bad(f"{where}.public_key is not the key's canonical DER SubjectPublicKeyInfo "
                       f"in canonical base64")
        real_id, real_alg, _ = public_key_info(key)
        if real_id != keyid:
            raise _bad(f"{where}.keyid is not the SHA-256 of the key's DER (it is {real_id})")
        if real_alg != alg:
            raise _bad(f"{where}: the key is {real_alg}, the policy says {alg}")
        if any(x.keyid == keyid for x in keys):
            raise _bad(f"{where}: key {keyid} listed twice")
        keys.append(TrustedKey(keyid, role, alg, pem, key))
    revoked = p["revoked_keyids"]
    if not isinstance(revoked, list) or not all(isinstance(r, str) and _HEX64.match(r)
                                                for r in revoked):
        raise _bad("policy: revoked_keyids must be an array of 64-hex-digit keyids")
    if len(set(revoked)) != len(revoked):
        raise _bad("policy: revoked_keyids lists a keyid twice")
    req = p["required_roles"]
    if not isinstance(req, dict) or not req:
        raise _bad("policy: required_roles must be a non-empty object (role -> signers)")
    roles = set(req) | {k.role for k in keys}
    if len(roles) > MAX_ROLES:
        raise _bad(f"policy: {len(roles)} roles, more than {MAX_ROLES}")
    for r, n in req.items():
        _role(r, f"policy: required_roles key {r!r}")
        if not _is_int(n) or not 1 <= n <= MAX_KEYS:
            raise _bad(f"policy: required_roles.{r} must be an integer in [1, {MAX_KEYS}]")
    policy = TrustPolicy(pv, tuple(keys), frozenset(revoked), dict(req), msv,
                         (fv[0], fv[1]), bytes(raw))
    for r, n in sorted(req.items()):
        have = sum(1 for k in keys if k.role == r and k.keyid not in policy.revoked_keyids)
        if have < n:
            raise ReleaseError("policy_unsatisfiable",
                               f"role {r!r} needs {n} signer(s) but the policy has {have} "
                               f"non-revoked key(s) for it")
    return policy


def load_policy(path: Union[str, "os.PathLike[str]"]) -> TrustPolicy:
    """The trust policy in the file at `path` (ReleaseError with ``path`` set)."""
    p = os.fspath(path)
    try:
        raw = read_small(p, MAX_POLICY)
    except OSError as e:
        raise ReleaseError("policy_malformed", f"cannot read the policy: {e.strerror or e}",
                           p) from None
    try:
        return parse_policy(raw)
    except ReleaseError as e:
        raise ReleaseError(e.status, e.message, p) from None


def make_policy(keys: Iterable[tuple[str, str]], required_roles: Mapping[str, int], *,
                policy_version: int = 1, min_security_version: int = 0,
                revoked_keyids: Iterable[str] = ()) -> bytes:
    """The canonical JSON (with a final newline) of a policy over `keys`, pairs of
    (role, PEM public key); checked by :func:`parse_policy` before it is returned."""
    entries = []
    for role, pem in keys:
        key = load_public_key(pem)
        keyid, alg, spki = public_key_info(key)
        algorithm_of(key)
        entries.append({"keyid": keyid, "role": role, "algorithm": alg, "public_key": spki})
    raw = canonical({"format": POLICY_FORMAT, "format_version": [1, 0],
                     "policy_version": policy_version, "keys": entries,
                     "revoked_keyids": sorted(set(revoked_keyids)),
                     "required_roles": dict(required_roles),
                     "min_security_version": min_security_version}) + b"\n"
    parse_policy(raw)
    return raw
