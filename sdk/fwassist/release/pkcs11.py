# SPDX-License-Identifier: Apache-2.0
"""Signing with a key inside a PKCS#11 token (an HSM, a smart card, SoftHSM2 for tests).

The private key never leaves the token: ECDSA P-256 signs the SHA-256 digest with
``CKM_ECDSA`` (the raw r||s becomes DER, as file keys write it), Ed25519 signs the message with
``CKM_EDDSA``. The keyid comes from the token's public-key object with the same label (and
id). The key is named by an RFC 7512 URI
(``pkcs11:token=T;object=K?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:PIN``)
or by module, token label, key label and PIN file. Needs the ``sign`` extra
(``python-pkcs11``).
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from typing import Any, Optional
from urllib.parse import unquote_to_bytes

from ..errors import require
from .keys import ECDSA_P256, ED25519, crypto, public_key_info

__all__ = ["Pkcs11Key", "Pkcs11Signer", "parse_uri"]

_PURPOSE = "signing with a PKCS#11 token"
_PATH_ATTRS = {"token", "object", "id", "type", "serial", "manufacturer", "model",
               "library-manufacturer", "library-description", "library-version", "slot-id",
               "slot-description", "slot-manufacturer"}
_QUERY_ATTRS = {"module-path", "module-name", "pin-value", "pin-source"}
# DER OIDs of the curves in CKA_EC_PARAMS.
_P256_PARAMS = bytes.fromhex("06082a8648ce3d030107")
_ED25519_PARAMS = (bytes.fromhex("06032b6570"), b"\x13\x0cedwards25519")
_PIN_CAP = 256


@dataclass(frozen=True)
class Pkcs11Key:
    """Where a key is: the module (shared library), token label, key label (and id), PIN."""

    module: str
    token: str
    label: Optional[str]
    key_id: Optional[bytes]
    pin: Optional[str]


def read_pin_file(path: str) -> str:
    """The PIN in `path` (one line; a final newline is dropped)."""
    with open(path, "rb") as f:
        raw = f.read(_PIN_CAP + 2)
    if len(raw) > _PIN_CAP + 1:
        raise ValueError(f"{path}: a PIN file holds one short line")
    pin = raw[:-1] if raw.endswith(b"\n") else raw
    if not pin or b"\n" in pin or b"\0" in pin:
        raise ValueError(f"{path}: the PIN file must hold the PIN on one line")
    return pin.decode("utf-8")


def parse_uri(uri: str) -> Pkcs11Key:
    """A :class:`Pkcs11Key` from an RFC 7512 PKCS#11 URI naming a private key; ValueError
    naming what is missing or unknown."""
    if not uri.startswith("pkcs11:"):
        raise ValueError("a PKCS#11 URI starts with 'pkcs11:'")
    path, _, query = uri[len("pkcs11:"):].partition("?")
    attrs: dict[str, bytes] = {}
    for part, sep, known in ((path, ";", _PATH_ATTRS), (query, "&", _QUERY_ATTRS)):
        for item in part.split(sep) if part else []:
            name, eq, value = item.partition("=")
            if not eq or not re.fullmatch(r"[a-z-]+", name):
                raise ValueError(f"PKCS#11 URI: {item!r} is not name=value")
            if name not in known:
                raise ValueError(f"PKCS#11 URI: unknown attribute {name!r}")
            if name in attrs:
                raise ValueError(f"PKCS#11 URI: {name!r} given twice")
            attrs[name] = unquote_to_bytes(value)
    if "type" in attrs and attrs["type"] != b"private":
        raise ValueError("PKCS#11 URI: type must be 'private' (the signing key)")
    if "module-path" not in attrs:
        raise ValueError("PKCS#11 URI: module-path (the PKCS#11 library) is required")
    if "token" not in attrs:
        raise ValueError("PKCS#11 URI: token (the token label) is required")
    if "object" not in attrs and "id" not in attrs:
        raise ValueError("PKCS#11 URI: object (the key label) or id is required")
    pin: Optional[str] = None
    if "pin-value" in attrs and "pin-source" in attrs:
        raise ValueError("PKCS#11 URI: pin-value and pin-source exclude each other")
    if "pin-value" in attrs:
        pin = attrs["pin-value"].decode("utf-8")
    elif "pin-source" in attrs:
        src = attrs["pin-source"].decode("utf-8")
        pin = read_pin_file(src[len("file:"):] if src.startswith("file:") else src)
    label = attrs["object"].decode("utf-8") if "object" in attrs else None
    return Pkcs11Key(attrs["module-path"].decode("utf-8"), attrs["token"].decode("utf-8"),
                     label, attrs.get("id"), pin)


def _unwrap_point(raw: bytes) -> bytes:
    """CKA_EC_POINT is a DER OCTET STRING around the point (some tokens give it bare)."""
    if len(raw) >= 2 and raw[0] == 0x04:
        n, p = raw[1], 2
        if n == 0x81 and len(raw) >= 3:
            n, p = raw[2], 3
        if p + n == len(raw):
            return raw[p:]
    return raw


class Pkcs11Signer:
    """A :class:`fwassist.release.keys.Signer` whose private key stays in a PKCS#11 token."""

    def __init__(self, key: Pkcs11Key) -> None:
        crypto()
        self._pk = require("pkcs11", "sign", _PURPOSE)
        if not os.path.isfile(key.module):
            raise ValueError(f"PKCS#11 module {key.module}: no such file")
        self._key = key
        from cryptography.hazmat.primitives.asymmetric import ec, ed25519

        with self._session() as session:
            pub = self._find(session, self._pk.ObjectClass.PUBLIC_KEY)
            params = bytes(pub[self._pk.Attribute.EC_PARAMS])
            point = _unwrap_point(bytes(pub[self._pk.Attribute.EC_POINT]))
            public: Any
            if params == _P256_PARAMS:
                public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
            elif params in _ED25519_PARAMS:
                public = ed25519.Ed25519PublicKey.from_public_bytes(point)
            else:
                raise ValueError(f"token key {self._name()}: only ECDSA P-256 and Ed25519 keys "
                                 f"are supported (EC_PARAMS {params.hex()})")
            self._find(session, self._pk.ObjectClass.PRIVATE_KEY)
        self.keyid, self.algorithm, self.public_key_pem = public_key_info(public)

    def _name(self) -> str:
        k = self._key
        return f"token {k.token!r} key " + (repr(k.label) if k.label is not None
                                             else f"id {k.key_id.hex() if k.key_id else ''}")

    def _session(self) -> Any:
        pk = self._pk
        try:
            token = pk.lib(self._key.module).get_token(token_label=self._key.token)
        except pk.NoSuchToken:
            raise ValueError(f"PKCS#11: no token labelled {self._key.token!r}") from None
        try:
            return token.open(user_pin=self._key.pin)
        except pk.PinIncorrect:
            raise ValueError(f"PKCS#11 token {self._key.token!r}: wrong PIN") from None
        except pk.PKCS11Error as e:
            raise ValueError(f"PKCS#11 token {self._key.token!r}: cannot log in "
                             f"({type(e).__name__})") from None

    def _find(self, session: Any, cls: Any) -> Any:
        pk = self._pk
        try:
            return session.get_key(object_class=cls, label=self._key.label, id=self._key.key_id)
        except pk.NoSuchKey:
            what = "private" if cls == pk.ObjectClass.PRIVATE_KEY else "public"
            raise ValueError(f"PKCS#11: {self._name()}: no {what} key object") from None
        except pk.MultipleObjectsReturned:
            raise ValueError(f"PKCS#11: {self._name()} names more than one key (add its id)") \
                from None

    def sign(self, data: bytes) -> bytes:
        from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

        pk = self._pk
        with self._session() as session:
            key = self._find(session, pk.ObjectClass.PRIVATE_KEY)
            if self.algorithm == ED25519:
                sig: bytes = key.sign(data, mechanism=pk.Mechanism.EDDSA)
                return sig
            assert self.algorithm == ECDSA_P256
            raw = key.sign(hashlib.sha256(data).digest(), mechanism=pk.Mechanism.ECDSA)
        if len(raw) != 64:
            raise ValueError(f"PKCS#11: {self._name()} returned a {len(raw)}-byte ECDSA "
                             f"signature, not r||s of 64 bytes")
        return encode_dss_signature(int.from_bytes(raw[:32], "big"),
                                    int.from_bytes(raw[32:], "big"))
