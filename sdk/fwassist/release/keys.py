# SPDX-License-Identifier: Apache-2.0
"""Signing keys: PEM files (ECDSA P-256 and Ed25519), key generation, public keys and keyids.

A signer is anything with ``keyid``, ``algorithm``, ``public_key_pem`` and ``sign(data)``
(:class:`Signer`); :class:`PemSigner` holds a private key from a file, and
:class:`fwassist.release.pkcs11.Pkcs11Signer` a key inside a token (the key never leaves it).
ECDSA signatures are DER (as Sigstore and model-signing write them), Ed25519 ones 64 bytes.
"""

from __future__ import annotations

import os
from typing import Any, Optional, Protocol, Union

from ..errors import require
from ._formats import keyid_of_der

__all__ = ["Signer", "PemSigner", "load_signer", "load_public_key", "public_key_info",
           "generate_key", "ALGORITHMS", "algorithm_of"]

ECDSA_P256 = "ecdsa-p256-sha256"
ED25519 = "ed25519"
ALGORITHMS = (ECDSA_P256, ED25519)
_PURPOSE = "signing releases"


class Signer(Protocol):
    keyid: str
    algorithm: str
    public_key_pem: str

    def sign(self, data: bytes) -> bytes: ...


def crypto() -> Any:
    """Imports `cryptography` or raises MissingExtraError naming the `sign` extra."""
    return require("cryptography", "sign", _PURPOSE)


def algorithm_of(public_key: Any) -> str:
    """The policy algorithm name of a `cryptography` public key; ValueError for any other."""
    crypto()
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519

    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return ED25519
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        if public_key.curve.name != "secp256r1":
            raise ValueError(f"EC key on curve {public_key.curve.name}: only P-256 "
                             f"(secp256r1) is supported")
        return ECDSA_P256
    raise ValueError(f"{type(public_key).__name__}: only ECDSA P-256 and Ed25519 keys are "
                     f"supported")


def public_key_info(public_key: Any) -> tuple[str, str, str]:
    """(keyid, algorithm, PEM SubjectPublicKeyInfo) of a `cryptography` public key."""
    from cryptography.hazmat.primitives import serialization

    alg = algorithm_of(public_key)
    der = public_key.public_bytes(serialization.Encoding.DER,
                                  serialization.PublicFormat.SubjectPublicKeyInfo)
    pem = public_key.public_bytes(serialization.Encoding.PEM,
                                  serialization.PublicFormat.SubjectPublicKeyInfo)
    return keyid_of_der(der), alg, pem.decode("ascii")


def load_public_key(pem: Union[str, bytes]) -> Any:
    """A `cryptography` public key from PEM SubjectPublicKeyInfo; ValueError if it is not one
    (or not an ECDSA P-256 or Ed25519 key)."""
    crypto()
    from cryptography.hazmat.primitives import serialization

    data = pem.encode("ascii", "replace") if isinstance(pem, str) else pem
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as e:
        raise ValueError(f"not a PEM public key: {e}") from None
    except Exception as e:  # noqa: BLE001 - the backend's own parse error types vary
        raise ValueError(f"not a PEM public key: {type(e).__name__}") from None
    algorithm_of(key)
    return key


class PemSigner:
    """A private key held in memory, read from a PEM file (PKCS#8 or traditional)."""

    def __init__(self, private_key: Any) -> None:
        self._key = private_key
        self.keyid, self.algorithm, self.public_key_pem = public_key_info(
            private_key.public_key())

    def sign(self, data: bytes) -> bytes:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec

        if self.algorithm == ED25519:
            sig: bytes = self._key.sign(data)
        else:
            sig = self._key.sign(data, ec.ECDSA(hashes.SHA256()))
        return sig


def load_signer(path: str, password: Optional[bytes] = None) -> PemSigner:
    """A :class:`PemSigner` from the PEM private key file at `path`; ValueError naming the
    problem (not a key, encrypted without a password, unsupported type)."""
    crypto()
    from cryptography.hazmat.primitives import serialization

    with open(path, "rb") as f:
        data = f.read(1 << 16)
    try:
        key = serialization.load_pem_private_key(data, password)
    except TypeError as e:
        if password is None:
            raise ValueError(f"{path}: the key is encrypted; give its password "
                             f"(--key-password-file)") from None
        raise ValueError(f"{path}: {e}") from None
    except ValueError as e:
        raise ValueError(f"{path}: not a usable PEM private key ({e})") from None
    except Exception as e:  # noqa: BLE001 - the backend's own parse error types vary
        raise ValueError(f"{path}: not a usable PEM private key ({type(e).__name__})") from None
    try:
        return PemSigner(key)
    except (ValueError, AttributeError) as e:
        raise ValueError(f"{path}: {e}") from None


def generate_key(algorithm: str) -> tuple[bytes, PemSigner]:
    """A new private key: (its unencrypted PKCS#8 PEM, a signer holding it)."""
    crypto()
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519

    key: Any
    if algorithm == ED25519:
        key = ed25519.Ed25519PrivateKey.generate()
    elif algorithm == ECDSA_P256:
        key = ec.generate_private_key(ec.SECP256R1())
    else:
        raise ValueError(f"unknown algorithm {algorithm!r}: one of {', '.join(ALGORITHMS)}")
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    return pem, PemSigner(key)


def write_private_key(path: str, pem: bytes) -> None:
    """Writes `pem` to a new file `path` readable by its owner only (0600); never replaces an
    existing file."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        os.unlink(path)
        raise
