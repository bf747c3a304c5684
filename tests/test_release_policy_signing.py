# SPDX-License-Identifier: Apache-2.0
"""Signed trust policies (docs/releases.md §5): ``fwassist sign-policy`` with root keys, and
the reference check ``fwassist.release.verify_policy`` — root signatures over exactly the
policy's bytes, a threshold of root keys, and no policy older than the device's stored one."""

from __future__ import annotations

import pytest

pytest.importorskip("cryptography", reason="the sign extra (cryptography) is not installed")

from release_fixtures import cli, key, key_file, policy  # noqa: E402

from fwassist.errors import ReleaseError  # noqa: E402
from fwassist.release import read_signatures, sign_policy, verify_policy  # noqa: E402
from fwassist.release._formats import POLICY_PAYLOAD_TYPE  # noqa: E402


@pytest.fixture
def signed_policy(tmp_path):
    pol = policy(tmp_path / "policy.json", [("supplier", key()), ("oem", key("ed25519"))],
                 {"supplier": 1, "oem": 1}, policy_version=3)
    root1, s1 = key_file(tmp_path / "root1.pem")
    root2, s2 = key_file(tmp_path / "root2.pem", "ed25519")
    rc, out, err = cli("sign-policy", str(pol), "--key", str(root1))
    assert rc == 0 and "1 signer(s)" in out, err
    rc, out, err = cli("sign-policy", str(pol), "--key", str(root2))
    assert rc == 0 and "2 signer(s)" in out, err
    return pol, [s1.public_key_pem, s2.public_key_pem], tmp_path


def refused(status, *args, **kwargs):
    with pytest.raises(ReleaseError) as e:
        verify_policy(*args, **kwargs)
    assert e.value.status == status, e.value
    return e.value


def test_signed_policy_round_trip(signed_policy):
    pol, roots, tmp = signed_policy
    b = read_signatures(str(pol) + ".sig", POLICY_PAYLOAD_TYPE)
    assert [x.payload for x in b] == [pol.read_bytes()] * 2
    assert verify_policy(pol, None, roots, threshold=2, stored_policy_version=3) \
        .policy_version == 3
    assert verify_policy(pol, None, roots[1:]).policy_version == 3
    # A release signature file is not a policy signature file (another payloadType).
    with pytest.raises(ReleaseError) as e:
        read_signatures(str(pol) + ".sig")
    assert e.value.status == "signature_malformed"


def test_signed_policy_refusals(signed_policy):
    pol, roots, tmp = signed_policy
    refused("untrusted", pol, None, [key().public_key_pem])
    refused("untrusted", pol, None, roots[:1] + [key().public_key_pem], threshold=2)
    refused("rollback", pol, None, roots, stored_policy_version=4)
    # The policy changed after signing (a key added): the signatures are over other bytes.
    sig = (tmp / "policy.json.sig").read_bytes()
    policy(pol, [("supplier", key()), ("oem", key())], {"supplier": 1, "oem": 1},
           policy_version=3)
    refused("subject_mismatch", pol, None, roots)
    # A bad root signature is an error; a stranger's is ignored.
    pol.write_bytes(read_signatures(tmp / "policy.json.sig", POLICY_PAYLOAD_TYPE)[0].payload)
    lines = sig.splitlines(keepends=True)
    import base64
    import json

    j = json.loads(lines[0])
    s = bytearray(base64.b64decode(j["dsseEnvelope"]["signatures"][0]["sig"]))
    s[8] ^= 1
    j["dsseEnvelope"]["signatures"][0]["sig"] = base64.b64encode(bytes(s)).decode()
    (tmp / "policy.json.sig").write_bytes(
        json.dumps(j, sort_keys=True, separators=(",", ":")).encode() + b"\n" + lines[1])
    refused("signature_invalid", pol, None, roots)
    assert verify_policy(pol, None, roots[1:]).policy_version == 3
    (tmp / "policy.json.sig").write_bytes(sig[:-1])
    refused("signature_malformed", pol, None, roots)


def test_sign_policy_refuses_a_bad_policy_or_a_second_signature(signed_policy, tmp_path):
    pol, roots, tmp = signed_policy
    rc, out, err = cli("sign-policy", str(pol), "--key", str(tmp / "root1.pem"))
    assert rc == 2 and "already" in err and len(err.splitlines()) == 1
    (tmp / "bad.json").write_text('{"format": "fwassist.trust-policy"}')
    rc, out, err = cli("sign-policy", str(tmp / "bad.json"), "--key", str(tmp / "root1.pem"))
    assert rc == 3 and "policy_malformed" in err and len(err.splitlines()) == 1
    assert not (tmp / "bad.json.sig").exists()
    with pytest.raises(ReleaseError) as e:
        sign_policy(tmp / "bad.json", str(tmp / "root1.pem"))
    assert e.value.status == "policy_malformed"
