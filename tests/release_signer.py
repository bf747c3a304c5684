# SPDX-License-Identifier: Apache-2.0
"""A small, independent test signer for signed releases (the shared design of issue 17),
written with the ``cryptography`` package: keys, trust policies and ``.sig`` files (one
canonical-JSON Sigstore bundle v0.3 per line, DSSE around an in-toto statement). The tests of
the C++ verifier (tests/test_release_device.py, the C ABI fixtures of tests/capi) and
benchmarks/release_verify.py sign with it; the product's signer is ``fwassist sign``."""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from typing import Any, Optional, Union

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

STATEMENT_TYPE = "application/vnd.in-toto+json"
PrivateKey = Union[ec.EllipticCurvePrivateKey, ed25519.Ed25519PrivateKey]


def canonical(obj: Any) -> bytes:
    """Canonical JSON (docs/artifact-format.md §3.1): sorted keys, no whitespace, UTF-8."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def pae(payload_type: str, payload: bytes) -> bytes:
    t = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(payload), payload)


@dataclass
class Key:
    private: PrivateKey

    @classmethod
    def generate(cls, algorithm: str = "ecdsa-p256-sha256") -> "Key":
        if algorithm == "ed25519":
            return cls(ed25519.Ed25519PrivateKey.generate())
        return cls(ec.generate_private_key(ec.SECP256R1()))

    @property
    def algorithm(self) -> str:
        return "ed25519" if isinstance(self.private, ed25519.Ed25519PrivateKey) \
            else "ecdsa-p256-sha256"

    @property
    def der(self) -> bytes:
        return self.private.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)

    @property
    def pem(self) -> str:
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()

    @property
    def keyid(self) -> str:
        return hashlib.sha256(self.der).hexdigest()

    def sign(self, message: bytes) -> bytes:
        if isinstance(self.private, ed25519.Ed25519PrivateKey):
            return self.private.sign(message)
        return self.private.sign(message, ec.ECDSA(hashes.SHA256()))


def statement(root_hex: str, model_card_hex: str, security_version: int,
              rxswin: Optional[str] = None, name: str = "model.fwa",
              artifact_format: tuple[int, int] = (1, 0)) -> bytes:
    return canonical({
        "_type": "https://in-toto.io/Statement/v1",
        "predicate": {"artifact_format": list(artifact_format),
                      "model_card_sha256": model_card_hex, "rxswin": rxswin,
                      "security_version": security_version},
        "predicateType": "https://fwassist.dev/release/v1",
        "subject": [{"digest": {"sha256": root_hex}, "name": name}]})


def bundle_line(payload: bytes, key: Key, signature: Optional[bytes] = None,
                payload_type: str = STATEMENT_TYPE) -> bytes:
    sig = key.sign(pae(payload_type, payload)) if signature is None else signature
    return canonical({
        "dsseEnvelope": {"payload": base64.b64encode(payload).decode(),
                         "payloadType": payload_type,
                         "signatures": [{"keyid": key.keyid,
                                         "sig": base64.b64encode(sig).decode()}]},
        "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
        "verificationMaterial": {"publicKey": {"hint": key.keyid}, "tlogEntries": []}}) + b"\n"


def sign_file(payload: bytes, keys: list[Key]) -> bytes:
    return b"".join(bundle_line(payload, k) for k in keys)


def policy(keys: dict[str, list[Key]], required: dict[str, int], revoked: tuple[str, ...] = (),
           min_security_version: int = 0, policy_version: int = 1) -> bytes:
    """A hand-written-style policy (indented, keys not sorted): the parser accepts any JSON."""
    entries = [{"keyid": k.keyid, "role": role, "algorithm": k.algorithm, "public_key": k.pem}
               for role, ks in keys.items() for k in ks]
    return json.dumps({"format": "fwassist.trust-policy", "format_version": [1, 0],
                       "policy_version": policy_version, "keys": entries,
                       "revoked_keyids": list(revoked), "required_roles": required,
                       "min_security_version": min_security_version}, indent=2).encode()


def artifact_identity(path: str) -> tuple[str, str]:
    """(root digest hex, model-card section digest hex) of an artifact, read with the
    package's independent pure-Python verifier."""
    from fwassist.artifact import pyverify

    art = pyverify.read_manifest(path)
    return art.pin.removeprefix("sha256:"), art.manifest["sections"]["model_card"]
