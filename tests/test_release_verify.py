# SPDX-License-Identifier: Apache-2.0
"""Signed releases, sign -> verify through the Python API (fwassist.release, the reference
verifier): both key types, co-signatures, thresholds, revocation, roles, untrusted keys,
another artifact's signature, damaged signature files, rollback against the policy and the
counter, the counter store and policy parsing. Each refusal is checked by its status."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess

import pytest

pytest.importorskip("cryptography", reason="the sign extra (cryptography) is not installed")

from release_fixtures import artifact, key, policy  # noqa: E402

from fwassist.errors import ArtifactError, ReleaseError  # noqa: E402
from fwassist.release import (FileCounter, load_policy, parse_policy, read_signatures,  # noqa: E402
                              sign, verify)
from fwassist.release._formats import (MAX_LINES, pae, parse_statement,  # noqa: E402
                                       render_bundle_line)

EC, ED = "ecdsa-p256-sha256", "ed25519"


@pytest.fixture
def setup(tmp_path):
    """An artifact, a supplier and an oem key, and the "supplier AND oem" policy."""
    model = artifact(tmp_path / "model.fwa")
    sup, oem = key(EC), key(ED)
    pol = policy(tmp_path / "policy.json", [("supplier", sup), ("oem", oem)],
                 {"supplier": 1, "oem": 1})
    return tmp_path, model, sup, oem, pol


def refused(status, *args, **kwargs):
    with pytest.raises(ReleaseError) as e:
        verify(*args, **kwargs)
    assert e.value.status == status, e.value
    assert e.value.verdict is not None and e.value.verdict.status == status
    return e.value


def lines(path):
    return path.read_bytes().splitlines(keepends=True)


@pytest.mark.parametrize("sup_alg,oem_alg", [(EC, ED), (ED, EC), (EC, EC), (ED, ED)])
def test_round_trip_both_key_types(tmp_path, sup_alg, oem_alg):
    model = artifact(tmp_path / "model.fwa")
    sup, oem = key(sup_alg), key(oem_alg)
    pol = policy(tmp_path / "p.json", [("supplier", sup), ("oem", oem)],
                 {"supplier": 1, "oem": 1})
    r1 = sign(model, sup, 7, "RXSWIN-A.1")
    r2 = sign(model, oem, 7, "RXSWIN-A.1")
    assert (r1.signers, r2.signers) == (1, 2)
    v = verify(model, None, pol)
    assert v.status == "ok" and v.security_version == 7 and v.rxswin == "RXSWIN-A.1"
    assert v.pin == r1.statement.pin
    assert [(s.keyid, s.role, s.status) for s in v.signers] == [
        (sup.keyid, "supplier", "valid"), (oem.keyid, "oem", "valid")]
    # Both lines carry the same statement; the subject is the artifact's root digest.
    b = read_signatures(str(model) + ".sig")
    assert b[0].payload == b[1].payload
    st = parse_statement(b[0].payload)
    from fwassist.artifact import pyverify

    art = pyverify.verify(model)
    assert st.pin == art.pin and st.model_card_sha256 == art.manifest["sections"]["model_card"]


def test_statement_and_bundle_bytes_follow_the_spec(setup):
    tmp, model, sup, oem, pol = setup
    sign(model, sup, 3)
    raw = (tmp / "model.fwa.sig").read_bytes()
    line = json.loads(raw)
    assert raw == json.dumps(line, sort_keys=True, separators=(",", ":")).encode() + b"\n"
    assert line["mediaType"] == "application/vnd.dev.sigstore.bundle.v0.3+json"
    assert line["verificationMaterial"] == {"publicKey": {"hint": sup.keyid}, "tlogEntries": []}
    env = line["dsseEnvelope"]
    assert env["payloadType"] == "application/vnd.in-toto+json"
    st = json.loads(base64.b64decode(env["payload"]))
    from fwassist.artifact import pyverify

    art = pyverify.verify(model)
    assert st == {"_type": "https://in-toto.io/Statement/v1",
                  "predicate": {"artifact_format": [1, 0],
                                "model_card_sha256": art.manifest["sections"]["model_card"],
                                "rxswin": None, "security_version": 3},
                  "predicateType": "https://fwassist.dev/release/v1",
                  "subject": [{"digest": {"sha256": art.pin[7:]}, "name": "model.fwa"}]}


def test_ecdsa_signature_checks_with_openssl(setup, tmp_path):
    """An independent implementation (the openssl command) accepts the DER signature over the
    DSSE PAE with the supplier's public key."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is not installed")
    _, model, sup, _, _ = setup
    sign(model, sup, 1)
    b = read_signatures(str(model) + ".sig")[0]
    (tmp_path / "pae.bin").write_bytes(pae(b.payload_type, b.payload))
    (tmp_path / "sig.der").write_bytes(b.signature)
    (tmp_path / "pub.pem").write_text(sup.public_key_pem)
    r = subprocess.run([openssl, "dgst", "-sha256", "-verify", str(tmp_path / "pub.pem"),
                        "-signature", str(tmp_path / "sig.der"), str(tmp_path / "pae.bin")],
                       capture_output=True, text=True)
    assert r.returncode == 0 and "Verified OK" in r.stdout, r.stdout + r.stderr


def test_cosign_needs_both_roles(setup):
    _, model, sup, oem, pol = setup
    sign(model, sup, 2)
    e = refused("untrusted", model, None, pol)
    assert "'oem'" in e.message
    sign(model, oem, 2)
    assert verify(model, None, pol).status == "ok"


def test_cosigner_must_sign_the_same_statement(setup):
    _, model, sup, oem, _ = setup
    sign(model, sup, 2, "RX-1")
    before = (model.parent / "model.fwa.sig").read_bytes()
    with pytest.raises(ValueError, match="same statement"):
        sign(model, oem, 3, "RX-1")
    with pytest.raises(ValueError, match="same statement"):
        sign(model, oem, 2, None)
    with pytest.raises(ValueError, match="has signed this already"):
        sign(model, sup, 2, "RX-1")
    assert (model.parent / "model.fwa.sig").read_bytes() == before


def test_threshold_unmet(setup):
    tmp, model, sup, oem, _ = setup
    sup2 = key(EC)
    pol = policy(tmp / "p2.json", [("supplier", sup), ("supplier", sup2), ("oem", oem)],
                 {"supplier": 2, "oem": 1})
    sign(model, sup, 1)
    sign(model, oem, 1)
    e = refused("untrusted", model, None, pol)
    assert "'supplier' needs 2" in e.message
    sign(model, sup2, 1)
    assert verify(model, None, pol).status == "ok"


def test_revoked_key(setup):
    tmp, model, sup, oem, _ = setup
    sup2 = key(EC)
    pol = policy(tmp / "p2.json", [("supplier", sup), ("supplier", sup2), ("oem", oem)],
                 {"supplier": 1, "oem": 1}, revoked_keyids=[sup.keyid])
    sign(model, sup, 1)
    sign(model, oem, 1)
    e = refused("revoked", model, None, pol)
    assert [s.status for s in e.verdict.signers] == ["revoked", "valid"]
    sign(model, sup2, 1)
    assert verify(model, None, pol).status == "ok"


def test_wrong_role_key(setup):
    tmp, model, sup, oem, _ = setup
    oem2 = key(EC)
    pol = policy(tmp / "p2.json", [("supplier", sup), ("oem", oem), ("oem", oem2)],
                 {"supplier": 1, "oem": 1})
    sign(model, oem, 1)
    sign(model, oem2, 1)   # two oem signatures do not make a supplier one
    e = refused("untrusted", model, None, pol)
    assert "'supplier'" in e.message


def test_untrusted_key_is_ignored(setup):
    _, model, sup, oem, pol = setup
    stranger = key(EC)
    sign(model, stranger, 1)
    sign(model, oem, 1)
    e = refused("untrusted", model, None, pol)
    assert [(s.role, s.status) for s in e.verdict.signers] == [(None, "untrusted"),
                                                              ("oem", "valid")]
    sign(model, sup, 1)
    v = verify(model, None, pol)
    assert v.status == "ok" and v.signers[0].status == "untrusted"


def test_signature_over_another_artifact(setup):
    tmp, model, sup, oem, pol = setup
    other = artifact(tmp / "other.fwa", seed=1)
    sign(other, sup, 1)
    sign(other, oem, 1)
    shutil.copy(tmp / "other.fwa.sig", tmp / "model.fwa.sig")
    e = refused("subject_mismatch", model, None, pol)
    assert "not sha256:" in e.message
    with pytest.raises(ReleaseError) as s:      # and co-signing it for this artifact
        sign(model, key(EC), 1)
    assert s.value.status == "subject_mismatch"


def test_invalid_artifact_is_an_artifact_error(setup):
    tmp, model, sup, oem, pol = setup
    sign(model, sup, 1)
    sign(model, oem, 1)
    blob = bytearray(model.read_bytes())
    blob[-1] ^= 1
    model.write_bytes(bytes(blob))
    with pytest.raises(ArtifactError) as e:
        verify(model, None, pol)
    assert not isinstance(e.value, ReleaseError) and e.value.status == "digest_mismatch"


def _resign_line(signer, payload):
    return render_bundle_line("application/vnd.in-toto+json", payload, signer.keyid,
                              signer.sign(pae("application/vnd.in-toto+json", payload))) + b"\n"


def test_tampered_signature_and_payload(setup):
    tmp, model, sup, oem, pol = setup
    sign(model, sup, 1)
    sign(model, oem, 1)
    sig = tmp / "model.fwa.sig"
    good = sig.read_bytes()
    # A flipped signature byte of a trusted key.
    ls = lines(sig)
    line = json.loads(ls[1])
    s = bytearray(base64.b64decode(line["dsseEnvelope"]["signatures"][0]["sig"]))
    s[10] ^= 1
    line["dsseEnvelope"]["signatures"][0]["sig"] = base64.b64encode(bytes(s)).decode()
    sig.write_bytes(ls[0] + json.dumps(line, sort_keys=True, separators=(",", ":")).encode()
                    + b"\n")
    e = refused("signature_invalid", model, None, pol)
    assert e.verdict.signers[-1].status == "invalid"
    # Another security version in every line, the old signatures kept.
    st = json.loads(base64.b64decode(line["dsseEnvelope"]["payload"]))
    st["predicate"]["security_version"] = 99
    p2 = base64.b64encode(json.dumps(st, sort_keys=True, separators=(",", ":")).encode()).decode()
    out = b""
    for raw in lines(tmp / "model.fwa.sig")[:1] + [good.splitlines(keepends=True)[1]]:
        j = json.loads(raw)
        j["dsseEnvelope"]["payload"] = p2
        out += json.dumps(j, sort_keys=True, separators=(",", ":")).encode() + b"\n"
    sig.write_bytes(out)
    refused("signature_invalid", model, None, pol)
    # ... in one line only: the lines no longer sign one statement.
    sig.write_bytes(good.splitlines(keepends=True)[0] + out.splitlines(keepends=True)[1])
    e = refused("signature_malformed", model, None, pol)
    assert "different payload" in e.message


def test_non_der_ecdsa_signature_is_invalid_high_s_is_valid(setup):
    tmp, model, sup, oem, pol = setup
    from cryptography.hazmat.primitives.asymmetric.utils import (decode_dss_signature,
                                                                 encode_dss_signature)

    sign(model, oem, 1)
    sign(model, sup, 1)
    ls = lines(tmp / "model.fwa.sig")
    b = read_signatures(tmp / "model.fwa.sig")[1]
    r, s = decode_dss_signature(b.signature)
    n = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
    high = encode_dss_signature(r, n - s)                   # the other S: valid ECDSA
    (tmp / "model.fwa.sig").write_bytes(ls[0] + render_bundle_line(
        b.payload_type, b.payload, b.keyid, high) + b"\n")
    assert verify(model, None, pol).status == "ok"
    # BER with a long-form length (the same r and s, not DER); a byte after the DER.
    body = b.signature[2:]
    for ber in (b"\x30\x81" + bytes([len(body)]) + body, b.signature + b"\x00"):
        (tmp / "model.fwa.sig").write_bytes(ls[0] + render_bundle_line(
            b.payload_type, b.payload, b.keyid, ber) + b"\n")
        refused("signature_invalid", model, None, pol)


def test_truncated_and_reordered(setup):
    tmp, model, sup, oem, pol = setup
    sign(model, sup, 1)
    sign(model, oem, 1)
    sig = tmp / "model.fwa.sig"
    good = sig.read_bytes()
    for cut in (len(good) - 1, len(good) - 40, len(good.splitlines()[0]) + 1 + 5, 0):
        sig.write_bytes(good[:cut])
        refused("signature_malformed", model, None, pol)
    # The lines in the other order: the order carries no meaning.
    a, b = good.splitlines(keepends=True)
    sig.write_bytes(b + a)
    assert verify(model, None, pol).status == "ok"
    # Keys re-ordered inside a bundle (not canonical), or whitespace added.
    j = json.loads(a)
    reordered = json.dumps({"mediaType": j["mediaType"], "dsseEnvelope": j["dsseEnvelope"],
                            "verificationMaterial": j["verificationMaterial"]},
                           separators=(",", ":")).encode() + b"\n"
    for bad in (reordered, json.dumps(j, sort_keys=True).encode() + b"\n", a.rstrip() + b"\r\n"):
        sig.write_bytes(bad + b)
        refused("signature_malformed", model, None, pol)
    # A line signed twice by the same key; an empty line; an unknown field.
    for bad in (a + a + b, a + b"\n" + b):
        sig.write_bytes(bad)
        refused("signature_malformed", model, None, pol)
    j["verificationMaterial"]["tlogEntries"] = [{}]
    sig.write_bytes(json.dumps(j, sort_keys=True, separators=(",", ":")).encode() + b"\n" + b)
    refused("signature_malformed", model, None, pol)
    j = json.loads(a)
    j["dsseEnvelope"]["extra"] = 1
    sig.write_bytes(json.dumps(j, sort_keys=True, separators=(",", ":")).encode() + b"\n" + b)
    refused("signature_malformed", model, None, pol)


def test_oversized(setup):
    tmp, model, sup, oem, pol = setup
    sign(model, sup, 1)
    sign(model, oem, 1)
    sig = tmp / "model.fwa.sig"
    good = sig.read_bytes()
    a, b = good.splitlines(keepends=True)
    j = json.loads(a)
    # A 257-byte signature, a 16 KiB + 1 payload, a 4 KiB + 1 string, a 64 KiB + 1 line.
    j1 = json.loads(a)
    j1["dsseEnvelope"]["signatures"][0]["sig"] = base64.b64encode(b"\x30" * 257).decode()
    j2 = json.loads(a)
    j2["dsseEnvelope"]["payload"] = base64.b64encode(b" " * (16 * 1024 + 1)).decode()
    j3 = json.loads(a)
    j3["mediaType"] = "x" * 4097
    j4 = json.loads(a)
    j4["dsseEnvelope"]["payload"] = "A" * (64 * 1024)
    for bad in (j1, j2, j3, j4):
        sig.write_bytes(json.dumps(bad, sort_keys=True, separators=(",", ":")).encode() + b"\n"
                        + b)
        refused("cap_exceeded", model, None, pol)
    # 17 lines; a file over 1 MiB.
    others = [_resign_line(key(EC), base64.b64decode(j["dsseEnvelope"]["payload"]))
              for _ in range(MAX_LINES - 1)]
    sig.write_bytes(a + b + b"".join(others))
    refused("cap_exceeded", model, None, pol)
    sig.write_bytes(good + b" " * (1 << 20))
    refused("cap_exceeded", model, None, pol)
    # Signing refuses to grow the file past the cap, and leaves it as it was.
    sig.write_bytes(a + b"".join(others))
    with pytest.raises(ReleaseError) as e:
        sign(model, oem, 1)
    assert e.value.status == "cap_exceeded"
    assert sig.read_bytes() == a + b"".join(others)


def test_rollback_against_policy_and_counter(setup):
    tmp, model, sup, oem, _ = setup
    pol = policy(tmp / "p.json", [("supplier", sup), ("oem", oem)],
                 {"supplier": 1, "oem": 1}, min_security_version=4)
    sign(model, sup, 3)
    sign(model, oem, 3)
    e = refused("rollback", model, None, pol)
    assert "minimum 4" in e.message
    pol = policy(tmp / "p.json", [("supplier", sup), ("oem", oem)], {"supplier": 1, "oem": 1},
                 min_security_version=3)
    ctr = FileCounter.init(tmp / "counter", 3)
    v = verify(model, None, pol, ctr)
    assert (v.status, v.counter) == ("ok", 3)
    ctr.advance(4)                       # a newer release booted: the old one is a replay now
    e = refused("rollback", model, None, pol, ctr)
    assert "counter 4" in e.message and e.verdict.counter == 4


def test_missing_or_bad_counter_is_unavailable_never_zero(setup):
    tmp, model, sup, oem, pol = setup
    sign(model, sup, 0)
    sign(model, oem, 0)
    refused("counter_unavailable", model, None, pol, FileCounter(tmp / "nope"))
    for content in (b"", b"1", b"01\n", b"-1\n", b"1\n\n", b" 1\n", b"9007199254740993\n",
                    b"1e3\n"):
        (tmp / "c").write_bytes(content)
        refused("counter_unavailable", model, None, pol, FileCounter(tmp / "c"))

    class Broken:
        def read(self) -> int:
            raise OSError("RPMB not ready")

    e = refused("counter_unavailable", model, None, pol, Broken())
    assert "RPMB not ready" in e.message


def test_file_counter_contract(tmp_path):
    p = tmp_path / "ctr"
    with pytest.raises(ReleaseError) as e:
        FileCounter(p).read()
    assert e.value.status == "counter_unavailable"
    c = FileCounter.init(p, 5)
    assert p.read_bytes() == b"5\n" and c.read() == 5
    with pytest.raises(ValueError, match="exists already"):
        FileCounter.init(p, 0)
    assert c.advance(5) == 5 and c.advance(9) == 9 and p.read_bytes() == b"9\n"
    with pytest.raises(ReleaseError) as e:
        c.advance(8)
    assert e.value.status == "rollback" and c.read() == 9
    with pytest.raises(ValueError):
        c.advance(-1)
    assert sorted(x.name for x in tmp_path.iterdir()) == ["ctr"]   # no temporary left


def _policy_json(sup, oem, **over):
    from fwassist.release.keys import public_key_info

    keys = []
    for role, s in (("supplier", sup), ("oem", oem)):
        kid, alg, pem = public_key_info(s._key.public_key())
        keys.append({"keyid": kid, "role": role, "algorithm": alg, "public_key": pem})
    p = {"format": "fwassist.trust-policy", "format_version": [1, 0], "policy_version": 1,
         "keys": keys, "revoked_keyids": [], "required_roles": {"supplier": 1, "oem": 1},
         "min_security_version": 0}
    p.update(over)
    return p


def test_policy_parsing(setup):
    _, _, sup, oem, _ = setup
    good = _policy_json(sup, oem)
    assert parse_policy(json.dumps(good, indent=2).encode()).policy_version == 1  # any layout

    def bad(status, raw):
        with pytest.raises(ReleaseError) as e:
            parse_policy(raw if isinstance(raw, bytes) else json.dumps(raw).encode())
        assert e.value.status == status, e.value
        return e.value

    bad("policy_malformed", b'{"format":"fwassist.trust-policy","format":"x"}')
    bad("policy_malformed", b"[]")
    bad("policy_malformed", b"\xff")
    bad("policy_malformed", json.dumps(good).encode().replace(b'"policy_version": 1',
                                                              b'"policy_version": 1.0'))
    bad("policy_malformed", _policy_json(sup, oem, extra=1))
    bad("policy_malformed", _policy_json(sup, oem, policy_version=0))
    bad("policy_malformed", _policy_json(sup, oem, required_roles={}))
    bad("policy_malformed", _policy_json(sup, oem, format_version=[2, 0]))
    wrong_id = _policy_json(sup, oem)
    wrong_id["keys"][0]["keyid"] = oem.keyid
    assert "SHA-256" in bad("policy_malformed", wrong_id).message
    wrong_alg = _policy_json(sup, oem)
    wrong_alg["keys"][0]["algorithm"] = "ed25519"
    bad("policy_malformed", wrong_alg)
    twice = _policy_json(sup, oem)
    twice["keys"].append(dict(twice["keys"][0]))
    bad("policy_malformed", twice)
    bad("policy_unsatisfiable", _policy_json(sup, oem, required_roles={"supplier": 2,
                                                                       "oem": 1}))
    bad("policy_unsatisfiable", _policy_json(sup, oem, revoked_keyids=[oem.keyid]))
    bad("policy_unsatisfiable", _policy_json(sup, oem, required_roles={"auditor": 1}))
    with pytest.raises(ReleaseError) as e:
        load_policy("/nonexistent/policy.json")
    assert e.value.status == "policy_malformed"


def test_policy_file_is_checked_before_the_signatures(setup):
    tmp, model, sup, oem, _ = setup
    (tmp / "bad.json").write_text("{")
    with pytest.raises(ReleaseError) as e:
        verify(model, None, tmp / "bad.json")       # no .sig either: the policy comes first
    assert e.value.status == "policy_malformed"


STATUSES = {"signature_malformed", "cap_exceeded", "subject_mismatch", "signature_invalid",
            "untrusted", "revoked"}


def test_mutated_signature_files_are_refused_never_crash(setup):
    """600 random mutations of a good two-signer file (byte flips, insertions, deletions,
    truncations): each is refused with one of the verifier's statuses, or, if the mutation
    left every signed byte intact (e.g. the lines swapped), accepted with the same verdict."""
    import random

    tmp, model, sup, oem, pol = setup
    sign(model, sup, 1, "RX")
    sign(model, oem, 1, "RX")
    sig = tmp / "model.fwa.sig"
    good = sig.read_bytes()
    policy_obj = load_policy(pol)
    want = verify(model, None, policy_obj)
    rng = random.Random(17)
    seen = set()
    for _ in range(600):
        b = bytearray(good)
        for _ in range(rng.choice((1, 1, 2, 4))):
            op, i = rng.randrange(4), rng.randrange(len(b))
            if op == 0:
                b[i] ^= 1 << rng.randrange(8)
            elif op == 1:
                b.insert(i, rng.choice(b' {}[]",:\\0A=\n'))
            elif op == 2:
                del b[i]
            else:
                del b[i:]
            if not b:
                break
        sig.write_bytes(bytes(b))
        try:
            v = verify(model, None, policy_obj)
        except ReleaseError as e:
            assert e.status in STATUSES, e
            seen.add(e.status)
        else:
            assert (v.pin, v.security_version, v.rxswin) == (want.pin, 1, "RX")
            assert sorted(s.keyid for s in v.signers if s.status == "valid") == \
                sorted((sup.keyid, oem.keyid))
    assert {"signature_malformed", "signature_invalid"} <= seen
