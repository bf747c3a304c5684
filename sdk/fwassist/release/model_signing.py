# SPDX-License-Identifier: Apache-2.0
"""The OpenSSF model-signing form of a release (the ``model-signing`` package, 1.1.1, key
mode), written beside fwassist's own ``.sig`` so the PC-side tools can check the same file:
``model_signing verify key MODEL.fwa --signature MODEL.fwa.sigstore.json --public-key KEY``.

Their format, for a model that is one file: a Sigstore bundle v0.3 whose DSSE envelope holds
an in-toto Statement with predicateType ``https://model_signing/signature/v1.0``; the predicate
lists each file (here the one resource named ``.``, the model path itself) with its SHA-256 and
the serialization used (``files``, sha256, no symlinks); the subject digest is the SHA-256 of
the concatenated file digests. Their key mode takes EC keys only, signs the DSSE PAE with
ECDSA (DER) and names the key by the SHA-256 of its PEM SubjectPublicKeyInfo (``hint``).
Unlike fwassist's own statement this one hashes the whole file: it is for PC-side tools.
"""

from __future__ import annotations

import hashlib
import os
from typing import Union

from ._formats import BUNDLE_MEDIA_TYPE, PAYLOAD_TYPE, STATEMENT_TYPE, b64encode, canonical, pae
from .keys import ECDSA_P256, Signer

__all__ = ["MODEL_SIGNING_PREDICATE", "model_signing_bundle", "write_model_signing"]

MODEL_SIGNING_PREDICATE = "https://model_signing/signature/v1.0"


def _file_sha256(path: str) -> bytes:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            chunk = f.read(1 << 20)
            if not chunk:
                return h.digest()
            h.update(chunk)


def model_signing_bundle(artifact_path: str, signer: Signer) -> bytes:
    """The model-signing bundle (JSON, with a final newline) for the single-file model at
    `artifact_path`, signed by `signer` (an ECDSA P-256 key)."""
    if signer.algorithm != ECDSA_P256:
        raise ValueError("model-signing's key mode verifies EC keys only: sign with an ECDSA "
                         "P-256 key to write its form")
    digest = _file_sha256(artifact_path)
    statement = {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": os.path.basename(os.path.abspath(artifact_path)),
                     "digest": {"sha256": hashlib.sha256(digest).hexdigest()}}],
        "predicateType": MODEL_SIGNING_PREDICATE,
        "predicate": {
            "serialization": {"method": "files", "hash_type": "sha256", "allow_symlinks": False},
            "resources": [{"name": ".", "algorithm": "sha256", "digest": digest.hex()}]}}
    payload = canonical(statement)
    sig = signer.sign(pae(PAYLOAD_TYPE, payload))
    hint = hashlib.sha256(signer.public_key_pem.encode("ascii")).hexdigest()
    return canonical({
        "mediaType": BUNDLE_MEDIA_TYPE,
        "verificationMaterial": {"publicKey": {"hint": hint}, "tlogEntries": []},
        "dsseEnvelope": {"payload": b64encode(payload), "payloadType": PAYLOAD_TYPE,
                         "signatures": [{"keyid": "", "sig": b64encode(sig)}]}}) + b"\n"


def write_model_signing(artifact_path: Union[str, "os.PathLike[str]"], signer: Signer,
                        out: Union[str, "os.PathLike[str]"]) -> str:
    """Writes :func:`model_signing_bundle` to `out` atomically; returns `out`."""
    from ..outpath import write_bytes_atomic

    o = os.fspath(out)
    write_bytes_atomic(o, model_signing_bundle(os.fspath(artifact_path), signer),
                       sync_directory=True)
    return o
