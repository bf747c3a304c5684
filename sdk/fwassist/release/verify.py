# SPDX-License-Identifier: Apache-2.0
"""The pure-Python reference verifier of signed releases (docs/releases.md "Verification").

Independent of the C++ verifier in csrc/release/ as artifact/pyverify.py is of the C++
reader: the same order of checks and the same statuses, so the tests compare the two verdicts.
The artifact is verified by pyverify (every byte); its root digest is the statement's subject,
so the file is hashed once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Optional, Sequence, Union

from ..errors import ArtifactError, ReleaseError
from ._formats import (MAX_POLICY_PAYLOAD, MAX_SIG_FILE, PAYLOAD_TYPE, POLICY_PAYLOAD_TYPE,
                       Bundle, pae, parse_bundle_file, parse_statement, read_small)
from .counter import Counter
from .keys import ED25519, crypto, load_public_key, public_key_info
from .policy import MAX_POLICY, TrustPolicy, load_policy, parse_policy

__all__ = ["verify", "verify_policy", "read_signatures", "check_signature", "ReleaseVerdict",
           "SignerVerdict"]


@dataclass(frozen=True)
class SignerVerdict:
    """One bundle's signer: ``status`` is ``valid``, ``revoked`` (its keyid is revoked; the
    signature is not checked), ``untrusted`` (not in the policy; ignored) or ``invalid``."""

    keyid: str
    role: Optional[str]
    status: str


@dataclass(frozen=True)
class ReleaseVerdict:
    """The verdict on a release: ``status`` is ``ok`` or the refusal's status."""

    pin: Optional[str] = None
    security_version: Optional[int] = None
    rxswin: Optional[str] = None
    signers: list[SignerVerdict] = field(default_factory=list)
    status: str = "ok"
    counter: Optional[int] = None          # the counter value read (None: no counter given)
    policy_version: Optional[int] = None


def read_signatures(path: Union[str, "os.PathLike[str]"],
                    payload_type: str = PAYLOAD_TYPE) -> list[Bundle]:
    """The bundles of the signature file at `path`, parsed strictly (ReleaseError
    ``signature_malformed`` / ``cap_exceeded``, with ``path``). `payload_type`: that of release
    statements (default) or of signed trust policies."""
    p = os.fspath(path)
    try:
        data = read_small(p, MAX_SIG_FILE)
    except OSError as e:
        raise ReleaseError("signature_malformed", f"cannot read the signature file: "
                                                  f"{e.strerror or e}", p) from None
    try:
        return parse_bundle_file(data, payload_type)
    except ReleaseError as e:
        raise ReleaseError(e.status, e.message, p) from None


def _strict_der(sig: bytes) -> bool:
    """True if `sig` is the one DER encoding of an ECDSA (r, s) pair."""
    from cryptography.hazmat.primitives.asymmetric.utils import (decode_dss_signature,
                                                                 encode_dss_signature)
    try:
        r, s = decode_dss_signature(sig)
    except ValueError:
        return False
    return r > 0 and s > 0 and encode_dss_signature(r, s) == sig


def check_signature(algorithm: str, public_key: Any, data: bytes, sig: bytes) -> bool:
    """Whether `sig` is `public_key`'s (PEM or key object) signature over `data`: Ed25519 (64
    bytes) or ECDSA P-256 with SHA-256 in strict DER (either S form)."""
    crypto()
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    key = load_public_key(public_key) if isinstance(public_key, (str, bytes)) else public_key
    try:
        if algorithm == ED25519:
            if len(sig) != 64:
                return False
            key.verify(sig, data)
        else:
            if not _strict_der(sig):
                return False
            key.verify(sig, data, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


def verify(artifact_path: Union[str, "os.PathLike[str]"],
           sig_path: Optional[Union[str, "os.PathLike[str]"]],
           policy: Union[TrustPolicy, str, "os.PathLike[str]"],
           counter: Optional[Union[Counter, Callable[[], int]]] = None) -> ReleaseVerdict:
    """Verifies the release of the artifact at `artifact_path` against `policy` (a
    TrustPolicy or a policy file) with the signatures in `sig_path` (default: the artifact's
    path + ".sig") and, when given, the rollback `counter` (an object with ``read() -> int``,
    such as :class:`FileCounter`, or a callable returning the value).

    Returns the verdict (status ``ok``); raises ArtifactError when the artifact itself is
    invalid, ReleaseError (``.status``, ``.verdict``) when the release is refused. A counter
    that cannot be read is ``counter_unavailable``, never 0."""
    from ..artifact import pyverify

    art_path = os.fspath(artifact_path)
    sp = os.fspath(sig_path) if sig_path is not None else art_path + ".sig"
    verdict = ReleaseVerdict()

    def refuse(status: str, message: str, path: Optional[str] = art_path) -> ReleaseError:
        return ReleaseError(status, message, path, replace(verdict, status=status))

    # 1. The artifact, every byte.
    try:
        art = pyverify.verify(art_path)
    except pyverify.PyArtifactError as e:
        raise ArtifactError(e.status, e.message, art_path) from None
    verdict = replace(verdict, pin=art.pin)
    # 2. The policy, then the signature file.
    if not isinstance(policy, TrustPolicy):
        policy = load_policy(policy)
    verdict = replace(verdict, policy_version=policy.policy_version)
    try:
        bundles = read_signatures(sp)
    except ReleaseError as e:
        raise refuse(e.status, e.message, sp) from None
    # 3. The statement (one payload for all lines, checked by the parser) and its subject.
    try:
        st = parse_statement(bundles[0].payload)
    except ReleaseError as e:
        raise refuse(e.status, e.message, sp) from None
    verdict = replace(verdict, security_version=st.security_version, rxswin=st.rxswin)
    m = art.manifest
    if st.root_digest != art.pin[len("sha256:"):]:
        raise refuse("subject_mismatch", f"the signatures are for artifact {st.pin}, not "
                                         f"{art.pin}")
    if st.model_card_sha256 != m["sections"]["model_card"]:
        raise refuse("subject_mismatch", "the statement's model_card_sha256 is not the "
                                         "artifact's model-card digest")
    if list(st.artifact_format) != m["format_version"]:
        raise refuse("subject_mismatch", f"the statement's artifact_format "
                                         f"{list(st.artifact_format)} is not the artifact's "
                                         f"{m['format_version']}")
    # 4. Each signer.
    signed = pae(PAYLOAD_TYPE, bundles[0].payload)
    signers: list[SignerVerdict] = []
    for n, b in enumerate(bundles, 1):
        k = policy.key(b.keyid)
        role = k.role if k is not None else None
        if b.keyid in policy.revoked_keyids:
            signers.append(SignerVerdict(b.keyid, role, "revoked"))
        elif k is None:
            signers.append(SignerVerdict(b.keyid, None, "untrusted"))
        elif check_signature(k.algorithm, k.public_key, signed, b.signature):
            signers.append(SignerVerdict(b.keyid, role, "valid"))
        else:
            signers.append(SignerVerdict(b.keyid, role, "invalid"))
            verdict = replace(verdict, signers=signers)
            raise refuse("signature_invalid", f"signature line {n}: the signature of trusted "
                                              f"key {b.keyid} ({role}) does not verify")
    verdict = replace(verdict, signers=signers)
    # 5. The threshold: distinct valid, non-revoked keys per required role.
    for role, need in sorted(policy.required_roles.items()):
        have = sum(1 for s in signers if s.role == role and s.status == "valid")
        if have < need:
            revoked = sum(1 for s in signers if s.role == role and s.status == "revoked")
            status = "revoked" if have + revoked >= need else "untrusted"
            raise refuse(status, f"role {role!r} needs {need} valid signature(s), has {have}"
                         + (f" ({revoked} by revoked keys)" if revoked else ""))
    # 6. The policy's minimum security version.
    if st.security_version < policy.min_security_version:
        raise refuse("rollback", f"security version {st.security_version} is below the "
                                 f"policy's minimum {policy.min_security_version}")
    # 7. The rollback counter.
    if counter is not None:
        try:
            value = counter.read() if isinstance(counter, Counter) else counter()
        except ReleaseError as e:
            raise refuse("counter_unavailable", e.message, e.path) from None
        except Exception as e:  # noqa: BLE001 - an integrator's counter may fail any way
            raise refuse("counter_unavailable", f"the counter cannot be read: "
                                                f"{type(e).__name__}: {e}") from None
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise refuse("counter_unavailable", f"the counter returned {value!r}, not a "
                                                f"non-negative integer")
        verdict = replace(verdict, counter=value)
        if st.security_version < value:
            raise refuse("rollback", f"security version {st.security_version} is below the "
                                     f"device's counter {value}")
    return verdict


def verify_policy(policy_path: Union[str, "os.PathLike[str]"],
                  sig_path: Optional[Union[str, "os.PathLike[str]"]],
                  root_keys: Sequence[Union[str, bytes]], *, threshold: int = 1,
                  stored_policy_version: Optional[int] = None) -> TrustPolicy:
    """The trust policy at `policy_path` after checking its signatures (`sig_path`, default
    the policy's path + ".sig"): at least `threshold` distinct root keys among `root_keys`
    (PEM public keys provisioned on the device) signed exactly these bytes, and its
    policy_version is not below `stored_policy_version` (the one the device stored).

    Statuses, in this order: ``policy_malformed`` / ``policy_unsatisfiable`` (the policy),
    ``signature_malformed`` / ``cap_exceeded`` (the signature file), ``subject_mismatch`` (the
    signatures are over other bytes), ``signature_invalid`` (a root key's bad signature),
    ``untrusted`` (too few root signatures), ``rollback`` (an older policy)."""
    p = os.fspath(policy_path)
    sp = os.fspath(sig_path) if sig_path is not None else p + ".sig"
    if not isinstance(threshold, int) or threshold < 1:
        raise ValueError(f"threshold must be an integer >= 1, got {threshold!r}")
    roots: dict[str, tuple[str, Any]] = {}
    for pem in root_keys:
        key = load_public_key(pem)
        keyid, alg, _ = public_key_info(key)
        roots[keyid] = (alg, key)
    if len(roots) < threshold:
        raise ValueError(f"{len(roots)} distinct root key(s) cannot meet a threshold of "
                         f"{threshold}")
    try:
        raw = read_small(p, MAX_POLICY)  # the policy's own cap first, then the signed one's
    except OSError as e:
        raise ReleaseError("policy_malformed", f"cannot read the policy: {e.strerror or e}",
                           p) from None
    try:
        policy = parse_policy(raw)
    except ReleaseError as e:
        raise ReleaseError(e.status, e.message, p) from None
    if len(raw) > MAX_POLICY_PAYLOAD:
        raise ReleaseError("cap_exceeded", f"a signed policy is at most {MAX_POLICY_PAYLOAD} "
                                           f"bytes", p)
    bundles = read_signatures(sp, POLICY_PAYLOAD_TYPE)
    if bundles[0].payload != raw:
        raise ReleaseError("subject_mismatch", "the policy signatures sign other bytes than "
                                               "the policy file", sp)
    signed = pae(POLICY_PAYLOAD_TYPE, raw)
    valid = 0
    for n, b in enumerate(bundles, 1):
        if b.keyid not in roots:
            continue
        alg, key = roots[b.keyid]
        if not check_signature(alg, key, signed, b.signature):
            raise ReleaseError("signature_invalid", f"policy signature line {n}: the signature "
                                                    f"of root key {b.keyid} does not verify", sp)
        valid += 1
    if valid < threshold:
        raise ReleaseError("untrusted", f"the policy has {valid} valid root signature(s), "
                                        f"{threshold} needed", sp)
    if stored_policy_version is not None and policy.policy_version < stored_policy_version:
        raise ReleaseError("rollback", f"policy version {policy.policy_version} is below the "
                                       f"device's stored policy version "
                                       f"{stored_policy_version}", p)
    return policy
