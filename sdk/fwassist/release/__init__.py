# SPDX-License-Identifier: Apache-2.0
"""Signed, versioned releases of `.fwa` artifacts (docs/releases.md).

* :func:`sign` — adds one signer's Sigstore bundle (DSSE over an in-toto release statement:
  the artifact's pin, security version, RXSWIN, model-card digest) to ``MODEL.fwa.sig``;
* :func:`verify` — the pure-Python reference verifier: subject, signatures, roles and
  threshold, revocation, minimum version and the rollback counter, with the statuses of the
  C++ verifier;
* :func:`load_policy`, :func:`make_policy` — trust policies, :func:`sign_policy` and
  :func:`verify_policy` — signed ones; :class:`FileCounter` — the file
  counter store; :func:`read_signatures` — the strict signature-file parser;
* :mod:`.keys` (PEM keys, keygen), :mod:`.pkcs11` (keys in a token), :mod:`.model_signing`
  (the OpenSSF model-signing form of the same release).

Signing and verifying need the ``sign`` extra (``cryptography``).
"""

from __future__ import annotations

from ..errors import ReleaseError
from ._formats import Bundle, Statement, parse_statement
from .counter import Counter, FileCounter
from .keys import PemSigner, Signer, generate_key, load_signer
from .policy import TrustedKey, TrustPolicy, load_policy, make_policy, parse_policy
from .sign import SignResult, release_statement, sign, sign_policy
from .verify import (ReleaseVerdict, SignerVerdict, check_signature, read_signatures, verify,
                     verify_policy)

__all__ = ["sign", "verify", "sign_policy", "verify_policy", "load_policy", "parse_policy",
           "make_policy", "read_signatures", "release_statement", "parse_statement", "check_signature", "generate_key",
           "load_signer", "FileCounter", "Counter", "TrustPolicy", "TrustedKey", "Bundle",
           "Statement", "ReleaseVerdict", "SignerVerdict", "SignResult", "Signer", "PemSigner",
           "ReleaseError"]
