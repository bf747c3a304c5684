# SPDX-License-Identifier: Apache-2.0
"""Signing a release: the statement built from the verified artifact, one more signer's bundle
added to ``MODEL.fwa.sig`` atomically (docs/releases.md "Signing").

Co-signers may sign at the same moment (a supplier's and an OEM's pipeline on one share): each
holds an exclusive lock on ``MODEL.fwa.sig.lock`` while it reads the file, signs and replaces
it, so no signer's bundle is lost."""

from __future__ import annotations

import contextlib
import fcntl
import os
from dataclasses import dataclass
from typing import Iterator, Optional, Union

from ..errors import ReleaseError
from ..outpath import write_bytes_atomic
from ._formats import (MAX_POLICY_PAYLOAD, MAX_SIG_FILE, PAYLOAD_TYPE, POLICY_PAYLOAD_TYPE,
                       Bundle, Statement, check_rxswin, check_security_version, pae,
                       parse_bundle_file, parse_statement, read_small, render_bundle_line,
                       render_statement)
from .keys import Signer, load_signer
from .verify import check_signature, read_signatures

__all__ = ["sign", "sign_policy", "SignResult", "release_statement"]


@dataclass(frozen=True)
class SignResult:
    sig_path: str
    keyid: str
    signers: int                     # bundles in the file now, this one included
    statement: Optional[Statement]   # None for a signed policy


def release_statement(artifact_path: str, security_version: int,
                      rxswin: Optional[str]) -> Statement:
    """The statement for the artifact at `artifact_path`, from its verified manifest (every
    byte checked, by the C++ loader when present): root digest, model-card digest and format."""
    from ..artifact.verify import verify as verify_artifact

    check_security_version(security_version)
    check_rxswin(rxswin)
    art = verify_artifact(artifact_path)
    fv = art.manifest["format_version"]
    return Statement(art.pin[len("sha256:"):], os.path.basename(os.path.abspath(artifact_path)),
                     security_version, rxswin, art.manifest["sections"]["model_card"],
                     (int(fv[0]), int(fv[1])))


@contextlib.contextmanager
def _exclusive(out: str) -> Iterator[None]:
    """Holds an exclusive flock on the sidecar ``<out>.lock`` (created when missing). The lock
    file stays: removing it would let a later signer lock a new inode while an earlier one
    still holds the old. Everything that reads ``out`` to extend it runs under this lock."""
    fd = os.open(out + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)       # closing the last descriptor releases the lock


def _add_signature(out: str, payload_type: str, payload: bytes, signer: Signer) -> int:
    """Signs `payload` with `signer` and appends the bundle to the file `out` (which, when it
    exists, MUST hold signatures over the same payload); returns the number of signers. The
    new file is re-parsed with the verifier's parser before it atomically replaces the old."""
    existing = b""
    if os.path.lexists(out):
        bundles = read_signatures(out, payload_type)
        if bundles[0].payload != payload:
            raise ReleaseError("subject_mismatch", "the signatures there sign other bytes", out)
        if any(b.keyid == signer.keyid for b in bundles):
            raise ValueError(f"{out}: key {signer.keyid} has signed this already")
        existing = read_small(out, MAX_SIG_FILE)
    signed = pae(payload_type, payload)
    signature = signer.sign(signed)
    if not check_signature(signer.algorithm, signer.public_key_pem, signed, signature):
        raise ReleaseError("signature_invalid", f"the key {signer.keyid} made a signature "
                                                f"that does not verify with its public key")
    data = existing + render_bundle_line(payload_type, payload, signer.keyid, signature) + b"\n"
    try:
        n = len(parse_bundle_file(data, payload_type))
    except ReleaseError as e:
        raise ReleaseError(e.status, f"adding this signer would exceed the format: {e.message}",
                           out) from None
    write_bytes_atomic(out, data, sync_directory=True)
    return n


def sign(artifact_path: Union[str, "os.PathLike[str]"], key: Union[Signer, str],
         security_version: int, rxswin: Optional[str] = None,
         sig_path: Optional[Union[str, "os.PathLike[str]"]] = None) -> SignResult:
    """Signs the release of the artifact at `artifact_path` with `key` (a :class:`Signer` or a
    PEM private key file) and writes or extends `sig_path` (default: the artifact's path +
    ".sig").

    A new file gets the statement of (`security_version`, `rxswin`); an existing one is
    co-signed: its statement is signed again, byte for byte, and refused (ValueError) if it
    differs in version or RXSWIN or `key` signed it already, or (ReleaseError
    ``subject_mismatch``) if it was made for another artifact."""
    art_path = os.fspath(artifact_path)
    out = os.fspath(sig_path) if sig_path is not None else art_path + ".sig"
    if os.path.exists(out) and os.path.exists(art_path) and os.path.samefile(out, art_path):
        raise ValueError(f"{out} is the artifact itself")
    signer = load_signer(key) if isinstance(key, str) else key
    st = release_statement(art_path, security_version, rxswin)
    with _exclusive(out):  # another signer's bundle written meanwhile is read here
        return _cosign(out, st, signer)


def _cosign(out: str, st: Statement, signer: Signer) -> SignResult:
    """Adds `signer`'s bundle for `st` to `out` (called with the lock held)."""
    payload = render_statement(st)
    if os.path.lexists(out):
        bundles = read_signatures(out)
        old = parse_statement(bundles[0].payload)
        if old.root_digest != st.root_digest:
            raise ReleaseError("subject_mismatch", f"the signatures there are for artifact "
                                                   f"{old.pin}, not {st.pin}", out)
        if (old.security_version, old.rxswin) != (st.security_version, st.rxswin):
            raise ValueError(f"{out}: the existing signatures approve security version "
                             f"{old.security_version} and RXSWIN {old.rxswin!r}; co-signers "
                             f"sign the same statement (asked: {st.security_version}, "
                             f"{st.rxswin!r})")
        if (old.model_card_sha256, old.artifact_format) != (st.model_card_sha256,
                                                            st.artifact_format):
            raise ReleaseError("subject_mismatch", "the existing statement's model card or "
                                                   "format differs from the artifact's", out)
        payload, st = bundles[0].payload, old      # the same bytes (the name may differ)
    n = _add_signature(out, PAYLOAD_TYPE, payload, signer)
    return SignResult(out, signer.keyid, n, st)


def sign_policy(policy_path: Union[str, "os.PathLike[str]"], key: Union[Signer, str],
                sig_path: Optional[Union[str, "os.PathLike[str]"]] = None) -> SignResult:
    """Signs the trust policy file at `policy_path` (checked by the policy parser first) with
    a root `key`, writing or extending `sig_path` (default: the policy's path + ".sig"). The
    payload is the policy file's bytes, at most 32 KiB."""
    from .policy import parse_policy

    p = os.fspath(policy_path)
    out = os.fspath(sig_path) if sig_path is not None else p + ".sig"
    if os.path.exists(out) and os.path.samefile(out, p):
        raise ValueError(f"{out} is the policy itself")
    signer = load_signer(key) if isinstance(key, str) else key
    raw = read_small(p, MAX_POLICY_PAYLOAD)
    if len(raw) > MAX_POLICY_PAYLOAD:
        raise ValueError(f"{p}: a signed policy is at most {MAX_POLICY_PAYLOAD} bytes")
    try:
        parse_policy(raw)
    except ReleaseError as e:
        raise ReleaseError(e.status, e.message, p) from None
    with _exclusive(out):
        n = _add_signature(out, POLICY_PAYLOAD_TYPE, raw, signer)
    return SignResult(out, signer.keyid, n, None)
