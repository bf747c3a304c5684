# SPDX-License-Identifier: Apache-2.0
"""The device side of signed releases for ``Model.load(trust=...)`` (docs/releases.md).

The checks themselves run in the C++ core (csrc/release), after the artifact is verified and
before the model is handed out; this module only turns the Python arguments into bytes, a
counter and the verdict. ``fwassist.release`` holds the signing side and the pure-Python
reference verifier.

Arguments:

* ``trust``: the policy as a path, its JSON bytes, a ``fwassist.release.TrustPolicy`` (its
  ``source`` bytes are what the core parses again), or an object with ``raw`` (bytes) or
  ``path`` (its file);
* ``signature``: the ``.sig`` file (a path, or its bytes); None is ``<artifact>.sig``;
* ``counter``: the monotonic counter. A path (or an object with ``path``) is the file store
  (``"<decimal>\\n"``, created by ``fwassist counter init`` or ``FileCounter.init``); any
  other object must have ``read() -> int`` and ``advance(value: int) -> None`` (an RPMB or HSM
  counter). A ``fwassist.release.FileCounter`` is its file, read by the core's own file store
  (the same format). None is refused (``counter_unavailable``): a missing counter is never
  version 0.

Signature checks: a build with OpenSSL (``_core.have_release_crypto()``) uses libcrypto; the
wheels, built without it (docs/packaging.md), hand the core :func:`cryptography_verifier`,
which checks each signature with the ``cryptography`` package while the core still enforces
subject, threshold, revocation, versions and the counter. Without either the core refuses
every policy (``no_crypto``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Optional, Protocol, Union, runtime_checkable

from . import _core
from .errors import ReleaseError
from .release.counter import FileCounter

__all__ = ["Counter", "CounterArg", "DeviceRelease", "SignerResult", "counter_init",
           "counter_read"]


@runtime_checkable
class Counter(Protocol):
    """An integrator's monotonic counter."""

    def read(self) -> int: ...

    def advance(self, value: int) -> None: ...


PathArg = Union[str, "os.PathLike[str]"]
CounterArg = Union[PathArg, Counter, Any]


@dataclass(frozen=True)
class SignerResult:
    keyid: str
    role: Optional[str]     # None: the key is not in the policy
    status: str             # "ok", "untrusted" (not in the policy) or "revoked"


@dataclass(frozen=True)
class DeviceRelease:
    """What the core verified: the release's versions and its signers."""

    pin: str
    security_version: int
    rxswin: Optional[str]
    policy_version: int
    counter: int            # the counter's value read at load
    signers: tuple[SignerResult, ...]


def _read(arg: Any, what: str) -> bytes:
    if isinstance(arg, (bytes, bytearray, memoryview)):
        return bytes(arg)
    path = os.fspath(arg)
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise ReleaseError("io_error", f"cannot read the {what} {path}: {e.strerror}") from None


def _policy_bytes(trust: Any) -> bytes:
    if isinstance(trust, (str, os.PathLike, bytes, bytearray, memoryview)):
        return _read(trust, "trust policy")
    for attr in ("source", "raw"):  # fwassist.release.TrustPolicy keeps its bytes in source
        raw = getattr(trust, attr, None)
        if isinstance(raw, (bytes, bytearray)) and raw:
            return bytes(raw)
    path = getattr(trust, "path", None)
    if isinstance(path, (str, os.PathLike)):
        return _read(path, "trust policy")
    raise TypeError("trust must be a path, the policy's JSON bytes, or an object with 'raw' "
                    f"bytes or a 'path', not {type(trust).__name__}")


def _counter_args(counter: Any) -> tuple[Optional[str], Any]:
    """(file store path, None) or (None, counter object); (None, None) for no counter."""
    if counter is None:
        return None, None
    if isinstance(counter, (str, os.PathLike)):
        return os.fspath(counter), None
    path = getattr(counter, "path", None)
    if isinstance(counter, FileCounter):
        return counter.path, None  # the same file store, read by the core
    if isinstance(path, (str, os.PathLike)) and not isinstance(counter, Counter):
        return os.fspath(path), None
    if isinstance(counter, Counter):
        return None, counter
    raise TypeError("counter must be a file path, an object with 'path', or an object with "
                    f"read() and advance(value), not {type(counter).__name__}")


def _release_errors(fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except _core.ReleaseFailure as e:
        status, message = e.args
        raise ReleaseError(status, message) from None


Verifier = Callable[[int, bytes, bytes, bytes], bool]

_ALGORITHMS = {1: "ecdsa-p256-sha256", 2: "ed25519"}  # release::Algorithm


def cryptography_verifier() -> Optional[Verifier]:
    """The signature check for a core built without OpenSSL: ``cryptography`` (the reference
    verifier's ``check_signature``: strict DER for ECDSA, 64 bytes for Ed25519), or None when
    the package is missing (the core then refuses the policy: ``no_crypto``)."""
    try:
        import cryptography  # noqa: F401
    except ImportError:
        return None
    from .release.verify import check_signature
    from cryptography.hazmat.primitives.serialization import load_der_public_key

    def verify_one(algorithm: int, spki: bytes, message: bytes, signature: bytes) -> bool:
        name = _ALGORITHMS.get(algorithm)
        if name is None:
            raise ValueError(f"unknown algorithm {algorithm}")
        return check_signature(name, load_der_public_key(spki), message, signature)
    return verify_one


def _default_verifier() -> Optional[Verifier]:
    return None if _core.have_release_crypto() else cryptography_verifier()


def verify(native: Any, artifact_path: str, trust: Any, signature: Any, counter: Any,
           verifier: Optional[Verifier] = None) -> DeviceRelease:
    """Runs the core's release check on a loaded NativeModel (raises ReleaseError).
    verifier: the signature check the core calls instead of its own; None picks libcrypto
    when the build has it, else :func:`cryptography_verifier`."""
    policy = _policy_bytes(trust)
    sig = _read(artifact_path + ".sig" if signature is None else signature, "signature file")
    path, obj = _counter_args(counter)
    check = verifier if verifier is not None else _default_verifier()
    try:
        sv, rxswin, policy_version, value, signers = _release_errors(
            native.verify_release, policy, sig, path, obj, check)
    except ReleaseError as e:
        if e.status == "no_crypto" and check is None:
            raise ReleaseError("no_crypto", f"{e.message}; this package checks signatures "
                                            f"with the 'cryptography' package: pip install "
                                            f"'fwassist[sign]'") from None
        raise
    return DeviceRelease(str(native.pin()), int(sv), rxswin, int(policy_version), int(value),
                         tuple(SignerResult(k, r, s) for k, r, s in signers))


def commit(native: Any, counter: Any) -> None:
    path, obj = _counter_args(counter)
    if path is None and obj is None:
        raise ValueError("commit_security_version needs a counter")
    _release_errors(native.commit_security_version, path, obj)


def counter_init(path: PathArg, value: int = 0) -> None:
    """Creates the file counter store at ``path`` holding ``value`` (refuses an existing file:
    ReleaseError "invalid_argument")."""
    _release_errors(_core.counter_file_init, os.fspath(path), int(value))


def counter_read(path: PathArg) -> int:
    """The file store's value (ReleaseError "counter_unavailable" if missing or malformed)."""
    return int(_release_errors(_core.counter_file_read, os.fspath(path)))
