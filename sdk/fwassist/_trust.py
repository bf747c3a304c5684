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
* a signed policy (docs/releases.md §5): ``root_keys`` (PEM public keys: text, bytes or
  ``.pem`` paths) provisioned on the device make the core refuse the policy unless
  ``policy_signature`` (a path or bytes; None is the policy's path + ".sig" when ``trust`` is
  a path) holds ``root_threshold`` valid root signatures over its bytes and its
  policy_version is not below ``policy_counter`` (the stored policy version; the same forms
  as ``counter``, required with root keys).

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
    status: str             # "valid", "untrusted" (not in the policy) or "revoked": the words
                            # of fwassist.release.SignerVerdict (the reference verifier)


@dataclass(frozen=True)
class DeviceRelease:
    """What the core verified: the release's versions and its signers."""

    pin: str
    security_version: int
    rxswin: Optional[str]
    policy_version: int
    counter: int            # the counter's value read at load
    signers: tuple[SignerResult, ...]
    policy_signed: bool = False            # the policy's root signatures were verified
    policy_counter: Optional[int] = None   # then: the stored policy version read


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


def _pem_text(key: Any) -> str:
    """A root key as PEM text: the text itself, its bytes, or a ``.pem`` file's path."""
    if isinstance(key, (bytes, bytearray)):
        return bytes(key).decode("ascii", "replace")
    if isinstance(key, str) and key.startswith("-----BEGIN"):
        return key
    if isinstance(key, (str, os.PathLike)):
        return _read(key, "root key").decode("ascii", "replace")
    raise TypeError(f"a root key is PEM text, its bytes or a .pem path, not "
                    f"{type(key).__name__}")


def _policy_signature(trust: Any, policy_signature: Any, root_keys: Any) -> Optional[bytes]:
    """The policy's signature file bytes; None when there is none (the core then refuses a
    policy that root keys require to be signed)."""
    if policy_signature is not None:
        return _read(policy_signature, "policy signature file")
    if root_keys and isinstance(trust, (str, os.PathLike)) and \
            os.path.lexists(os.fspath(trust) + ".sig"):
        return _read(os.fspath(trust) + ".sig", "policy signature file")
    return None


def _release_errors(fn: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
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
           verifier: Optional[Verifier] = None, *, root_keys: Any = None,
           policy_signature: Any = None, policy_counter: Any = None,
           root_threshold: int = 1) -> DeviceRelease:
    """Runs the core's release check on a loaded NativeModel (raises ReleaseError).
    verifier: the signature check the core calls instead of its own; None picks libcrypto
    when the build has it, else :func:`cryptography_verifier`. root_keys, policy_signature,
    policy_counter, root_threshold: a signed policy (the module's docstring)."""
    policy = _policy_bytes(trust)
    sig = _read(artifact_path + ".sig" if signature is None else signature, "signature file")
    path, obj = _counter_args(counter)
    roots = [_pem_text(k) for k in root_keys or ()]
    psig = _policy_signature(trust, policy_signature, roots)
    ppath, pobj = _counter_args(policy_counter)
    if not roots and (policy_signature is not None or policy_counter is not None):
        raise ValueError("policy_signature= and policy_counter= need root_keys= (the keys "
                         "that sign the policy)")
    check = verifier if verifier is not None else _default_verifier()
    try:
        (sv, rxswin, policy_version, value, signers, policy_signed,
         policy_value) = _release_errors(
            native.verify_release, policy, sig, path, obj, check, root_keys=roots,
            root_threshold=int(root_threshold), policy_signatures=psig,
            policy_counter_path=ppath, policy_counter=pobj)
    except ReleaseError as e:
        if e.status == "invalid_argument":  # root keys or threshold: the caller's mistake
            raise ValueError(e.message) from None
        if e.status == "no_crypto" and check is None:
            raise ReleaseError("no_crypto", f"{e.message}; this package checks signatures "
                                            f"with the 'cryptography' package: pip install "
                                            f"'fwassist[sign]'") from None
        raise
    return DeviceRelease(str(native.pin()), int(sv), rxswin, int(policy_version), int(value),
                         tuple(SignerResult(k, r, s) for k, r, s in signers),
                         bool(policy_signed), int(policy_value) if policy_signed else None)


def commit(native: Any, counter: Any) -> None:
    path, obj = _counter_args(counter)
    if path is None and obj is None:
        raise ValueError("commit_security_version needs a counter")
    _release_errors(native.commit_security_version, path, obj)


def commit_policy(native: Any, counter: Any) -> None:
    path, obj = _counter_args(counter)
    if path is None and obj is None:
        raise ValueError("commit_policy_version needs a counter")
    _release_errors(native.commit_policy_version, path, obj)


def counter_init(path: PathArg, value: int = 0) -> None:
    """Creates the file counter store at ``path`` holding ``value`` (refuses an existing file:
    ReleaseError "invalid_argument")."""
    _release_errors(_core.counter_file_init, os.fspath(path), int(value))


def counter_read(path: PathArg) -> int:
    """The file store's value (ReleaseError "counter_unavailable" if missing or malformed)."""
    return int(_release_errors(_core.counter_file_read, os.fspath(path)))
