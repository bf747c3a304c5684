# SPDX-License-Identifier: Apache-2.0
"""Writes the signed-release fixtures tests/capi/release_walk.c checks through the C ABI
(natively and under qemu-aarch64), for one artifact, signed by the independent test signer
(tests/release_signer.py, on ``cryptography``):

  policy.json          supplier (P-256) AND oem (Ed25519), min_security_version 2
  policy-revoked.json  the same with the supplier key revoked and a second supplier
  policy-min9.json     min_security_version 9
  ok.sig               security_version 5, RXSWIN, signed by both
  old.sig              security_version 3, signed by both (a replay once the counter is 5)
  other.sig            a valid co-signed release of another artifact (subject mismatch)
  oem-only.sig         the supplier's signature missing (untrusted)
  forged.sig           the oem signature replaced by one over other bytes (signature_invalid)
  root.pub.pem, root2.pub.pem   root keys (P-256, Ed25519) that sign policies (§5)
  policy.json.sig      policy.json (policy_version 1) signed by root
  policy-v2.json       policy.json's keys, policy_version 2; policy-v2.json.sig: by both roots
  policy-v2-forged.sig root's signature over other bytes (signature_invalid)
  policy-v2-stranger.sig  signed by a key that is not a root (untrusted)
  hsm-table.txt        "<spki hex> <message hex> <signature hex>" for every signature in the
                       fixtures that verifies (checked here with ``cryptography``): the
                       verification callback of a build without crypto (the aarch64 cross
                       build) answers from it, like an HSM that knows these keys.

Usage: python tests/capi/make_release_fixtures.py MODEL.fwa OUT_DIR
"""

from __future__ import annotations

import base64
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from cryptography.exceptions import InvalidSignature  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec, ed25519  # noqa: E402

from release_signer import (STATEMENT_TYPE, Key, artifact_identity, bundle_line,  # noqa: E402
                            pae, policy, sign_file, statement)

POLICY_TYPE = "application/vnd.fwassist.trust-policy+json"


def valid(spki: bytes, message: bytes, sig: bytes) -> bool:
    key = serialization.load_der_public_key(spki)
    try:
        if isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(sig, message)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(sig, message, ec.ECDSA(hashes.SHA256()))
        else:
            return False
    except InvalidSignature:
        return False
    return True


def main(model: str, out: str) -> None:
    os.makedirs(out, exist_ok=True)
    root, card = artifact_identity(model)
    supplier, oem = Key.generate("ecdsa-p256-sha256"), Key.generate("ed25519")
    supplier2 = Key.generate("ecdsa-p256-sha256")
    keys = {"supplier": [supplier, supplier2], "oem": [oem]}
    need = {"supplier": 1, "oem": 1}
    files = {
        "policy.json": policy(keys, need, min_security_version=2),
        "policy-revoked.json": policy(keys, need, revoked=(supplier.keyid,),
                                      min_security_version=2),
        "policy-min9.json": policy(keys, need, min_security_version=9),
    }
    st5 = statement(root, card, 5, rxswin="RXSWIN-CAPI-5")
    files["ok.sig"] = sign_file(st5, [supplier, oem])
    files["old.sig"] = sign_file(statement(root, card, 3, rxswin="RXSWIN-CAPI-3"), [supplier, oem])
    other = statement("ab" * 32, card, 5)
    files["other.sig"] = sign_file(other, [supplier, oem])
    files["oem-only.sig"] = sign_file(st5, [oem])
    files["forged.sig"] = (bundle_line(st5, supplier) +
                           bundle_line(st5, oem, oem.sign(b"other bytes")))
    # Signed policies: root keys of both types, signatures of roots and of a stranger.
    root, root2, stranger = Key.generate("ecdsa-p256-sha256"), Key.generate("ed25519"), \
        Key.generate("ecdsa-p256-sha256")
    files["root.pub.pem"], files["root2.pub.pem"] = root.pem.encode(), root2.pem.encode()
    files["policy-v2.json"] = policy(keys, need, min_security_version=2, policy_version=2)

    def sign_policy(raw: bytes, signers: list[Key]) -> bytes:
        return b"".join(bundle_line(raw, k, payload_type=POLICY_TYPE) for k in signers)
    files["policy.json.sig"] = sign_policy(files["policy.json"], [root])
    files["policy-v2.json.sig"] = sign_policy(files["policy-v2.json"], [root, root2])
    files["policy-v2-forged.sig"] = bundle_line(files["policy-v2.json"], root,
                                                root.sign(b"other bytes"), POLICY_TYPE)
    files["policy-v2-stranger.sig"] = sign_policy(files["policy-v2.json"], [stranger])
    spki = {k.keyid: k.der for ks in keys.values() for k in ks}
    spki.update({k.keyid: k.der for k in (root, root2, stranger)})
    table = []
    for name, data in files.items():
        if not name.endswith(".sig"):
            continue
        for line in data.splitlines():
            b = json.loads(line)
            env = b["dsseEnvelope"]
            msg = pae(env["payloadType"], base64.b64decode(env["payload"]))
            s = env["signatures"][0]
            sig = base64.b64decode(s["sig"])
            if valid(spki[s["keyid"]], msg, sig):
                table.append(f"{spki[s['keyid']].hex()} {msg.hex()} {sig.hex()}\n")
    files["hsm-table.txt"] = "".join(sorted(set(table))).encode()
    for name, data in files.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: make_release_fixtures.py MODEL.fwa OUT_DIR")
    main(sys.argv[1], sys.argv[2])
