# SPDX-License-Identifier: Apache-2.0
"""The release commands of the command line: keygen, sign (new and co-signed), pubkey,
trust-policy and counter; each failure one line on stderr with the CLI's exit code (2 usage
or input, 1 the work failed, 3 an invalid artifact or a refused release)."""

from __future__ import annotations

import json
import os
import stat
import sys

import pytest

pytest.importorskip("cryptography", reason="the sign extra (cryptography) is not installed")

from release_fixtures import artifact, cli, key_file  # noqa: E402

from fwassist.release import FileCounter, load_policy, verify  # noqa: E402


def one_line_error(rc, out, err, code, command):
    assert rc == code, (rc, err)
    assert out == "" and len(err.splitlines()) == 1, err
    assert err.startswith(f"fwassist {command}: error: "), err


def test_keygen(tmp_path):
    for alg in ("ecdsa-p256", "ed25519"):
        k = tmp_path / f"{alg}.pem"
        rc, out, err = cli("keygen", "--algorithm", alg, "-o", str(k))
        assert rc == 0, err
        assert stat.S_IMODE(os.stat(k).st_mode) == 0o600
        pub = tmp_path / f"{alg}.pub.pem"
        assert pub.read_text().startswith("-----BEGIN PUBLIC KEY-----")
        from fwassist.release.keys import load_signer

        s = load_signer(str(k))
        assert out.split()[2] == s.keyid and s.public_key_pem == pub.read_text()
        # Never over an existing key.
        rc, out, err = cli("keygen", "--algorithm", alg, "-o", str(k))
        one_line_error(rc, out, err, 2, "keygen")
        assert "exists" in err


def test_sign_cosign_policy_counter_end_to_end(tmp_path):
    model = artifact(tmp_path / "model.fwa")
    for name, alg in (("supplier", "ecdsa-p256"), ("oem", "ed25519")):
        assert cli("keygen", "--algorithm", alg, "-o", str(tmp_path / f"{name}.pem"))[0] == 0
    rc, out, err = cli("sign", str(model), "--key", str(tmp_path / "supplier.pem"),
                       "--security-version", "3", "--rxswin", "RXSWIN 1.0")
    assert rc == 0, err
    assert "security_version 3 rxswin RXSWIN 1.0" in out and "1 signer(s)" in out
    rc, out, err = cli("sign", str(model), "--key", str(tmp_path / "oem.pem"),
                       "--security-version", "3", "--rxswin", "RXSWIN 1.0")
    assert rc == 0 and "2 signer(s)" in out, err
    rc, out, err = cli("trust-policy", "--key", f"supplier={tmp_path / 'supplier.pub.pem'}",
                       "--key", f"oem={tmp_path / 'oem.pub.pem'}", "--min-security-version",
                       "2", "-o", str(tmp_path / "policy.json"))
    assert rc == 0, err
    assert "requires 1 oem and 1 supplier" in out
    pol = load_policy(tmp_path / "policy.json")
    assert dict(pol.required_roles) == {"supplier": 1, "oem": 1}
    assert pol.min_security_version == 2
    assert verify(model, None, pol).status == "ok"
    # The counter: init, read, advance to the verified release, never down.
    ctr = str(tmp_path / "counter")
    assert cli("counter", "init", ctr, "--value", "1")[0] == 0
    rc, out, err = cli("counter", "read", ctr)
    assert (rc, out) == (0, "1\n")
    rc, out, err = cli("counter", "advance", ctr, "--release", str(model), "--trust",
                       str(tmp_path / "policy.json"))
    assert rc == 0 and out.endswith(": 1 -> 3\n"), err
    rc, out, err = cli("counter", "advance", ctr, "--value", "2")
    one_line_error(rc, out, err, 3, "counter")
    assert "rollback" in err and FileCounter(ctr).read() == 3
    rc, out, err = cli("counter", "init", ctr)
    one_line_error(rc, out, err, 2, "counter")
    rc, out, err = cli("counter", "read", str(tmp_path / "missing"))
    one_line_error(rc, out, err, 3, "counter")
    assert "counter_unavailable" in err
    # A release older than the counter is refused when advancing through it.
    assert cli("counter", "advance", ctr, "--value", "4")[0] == 0
    rc, out, err = cli("counter", "advance", ctr, "--release", str(model), "--trust",
                       str(tmp_path / "policy.json"))
    one_line_error(rc, out, err, 3, "counter")
    assert "rollback" in err and FileCounter(ctr).read() == 4


def test_trust_policy_revocation_and_requirements(tmp_path):
    for n in ("a", "b", "c"):
        assert cli("keygen", "-o", str(tmp_path / f"{n}.pem"))[0] == 0
    rc, out, err = cli("trust-policy", "--key", f"supplier={tmp_path / 'a.pub.pem'}",
                       "--key", f"supplier={tmp_path / 'b.pub.pem'}",
                       "--key", f"oem={tmp_path / 'c.pub.pem'}",
                       "--require", "supplier=1", "--require", "oem=1",
                       "--revoke", str(tmp_path / "a.pub.pem"), "--policy-version", "7",
                       "-o", str(tmp_path / "p.json"))
    assert rc == 0, err
    p = json.loads((tmp_path / "p.json").read_text())
    from fwassist.release.keys import load_signer

    assert p["revoked_keyids"] == [load_signer(str(tmp_path / "a.pem")).keyid]
    assert p["policy_version"] == 7
    # Unsatisfiable: every supplier key revoked.
    rc, out, err = cli("trust-policy", "--key", f"supplier={tmp_path / 'a.pub.pem'}",
                       "--revoke", str(tmp_path / "a.pub.pem"), "-o", str(tmp_path / "q.json"))
    one_line_error(rc, out, err, 3, "trust-policy")
    assert "policy_unsatisfiable" in err and not (tmp_path / "q.json").exists()
    rc, out, err = cli("trust-policy", "--key", f"supplier={tmp_path / 'a.pem'}",
                       "-o", str(tmp_path / "q.json"))
    one_line_error(rc, out, err, 2, "trust-policy")
    assert "not a PEM public key" in err


def test_sign_errors_are_one_line(tmp_path):
    model = artifact(tmp_path / "model.fwa")
    other = artifact(tmp_path / "other.fwa", seed=1)
    k, _ = key_file(tmp_path / "k.pem")
    k2, _ = key_file(tmp_path / "k2.pem", "ed25519")
    base = ["sign", str(model), "--security-version", "1"]
    cases = [
        (base, 2, "exactly one key"),
        (base + ["--key", str(k), "--pkcs11-uri", "pkcs11:token=x"], 2, "exactly one key"),
        (base + ["--key", str(tmp_path / "nope.pem")], 2, "nope.pem"),
        (base + ["--key", str(model)], 2, "not a usable PEM private key"),
        (base + ["--key", str(k), "--rxswin", "caf\u00e9"], 2, "printable ASCII"),
        (base + ["--key", str(k), "--rxswin", "x" * 129], 2, "printable ASCII"),
        (["sign", str(model), "--key", str(k), "--security-version", "-1"], 2, "outside"),
        (["sign", str(model), "--key", str(k)], 2, "--security-version"),
        (["sign", str(tmp_path / "missing.fwa"), "--key", str(k), "--security-version", "1"], 2,
         "missing.fwa"),
    ]
    for argv, code, msg in cases:
        rc, out, err = cli(*argv)
        one_line_error(rc, out, err, code, "sign")
        assert msg in err, (argv, err)
    assert not (tmp_path / "model.fwa.sig").exists()
    # Co-signing: another version, the same key twice, another artifact's signatures.
    assert cli(*base, "--key", str(k))[0] == 0
    sig = (tmp_path / "model.fwa.sig").read_bytes()
    rc, out, err = cli("sign", str(model), "--key", str(k2), "--security-version", "2")
    one_line_error(rc, out, err, 2, "sign")
    assert "same statement" in err
    rc, out, err = cli(*base, "--key", str(k))
    one_line_error(rc, out, err, 2, "sign")
    assert "already" in err
    rc, out, err = cli("sign", str(other), "--key", str(k2), "--security-version", "1",
                       "-o", str(tmp_path / "model.fwa.sig"))
    one_line_error(rc, out, err, 3, "sign")
    assert "subject_mismatch" in err
    assert (tmp_path / "model.fwa.sig").read_bytes() == sig
    # An invalid artifact is exit 3 with its status; the signature is never the artifact.
    blob = bytearray(other.read_bytes())
    blob[200] ^= 1
    other.write_bytes(bytes(blob))
    rc, out, err = cli("sign", str(other), "--key", str(k), "--security-version", "1")
    one_line_error(rc, out, err, 3, "sign")
    assert not (tmp_path / "other.fwa.sig").exists()
    rc, out, err = cli("sign", str(model), "--key", str(k2), "--security-version", "1",
                       "-o", str(model))
    one_line_error(rc, out, err, 2, "sign")


def test_missing_sign_extra_is_one_line(tmp_path, monkeypatch):
    model = artifact(tmp_path / "model.fwa")
    monkeypatch.setitem(sys.modules, "cryptography", None)
    rc, out, err = cli("keygen", "-o", str(tmp_path / "k.pem"))
    one_line_error(rc, out, err, 1, "keygen")
    assert "pip install 'fwassist[sign]'" in err and not (tmp_path / "k.pem").exists()
    (tmp_path / "k.pem").write_text("x")
    rc, out, err = cli("sign", str(model), "--key", str(tmp_path / "k.pem"),
                       "--security-version", "1")
    one_line_error(rc, out, err, 1, "sign")
    assert "fwassist[sign]" in err


def test_encrypted_key_needs_its_password(tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    model = artifact(tmp_path / "model.fwa")
    k = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "enc.pem").write_bytes(k.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"s3cret")))
    base = ["sign", str(model), "--key", str(tmp_path / "enc.pem"), "--security-version", "1"]
    rc, out, err = cli(*base)
    one_line_error(rc, out, err, 2, "sign")
    assert "--key-password-file" in err
    (tmp_path / "pw").write_text("wrong\n")
    rc, out, err = cli(*base, "--key-password-file", str(tmp_path / "pw"))
    one_line_error(rc, out, err, 2, "sign")
    (tmp_path / "pw").write_text("s3cret\n")
    rc, out, err = cli(*base, "--key-password-file", str(tmp_path / "pw"))
    assert rc == 0, err
    # Another curve is refused by name.
    (tmp_path / "p384.pem").write_bytes(ec.generate_private_key(ec.SECP384R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    rc, out, err = cli("sign", str(model), "--key", str(tmp_path / "p384.pem"),
                       "--security-version", "1")
    one_line_error(rc, out, err, 2, "sign")
    assert "only P-256" in err
