# SPDX-License-Identifier: Apache-2.0
"""Signed releases enforced by the C++ core, from Python (Model.load(trust=...)) and the CLI
(verify/run --trust): sign -> verify round trips with P-256 and Ed25519 keys and co-signers,
and each refusal with its own status. Releases are signed by the independent test signer
(tests/release_signer.py, on ``cryptography``) for the bundled model, a real artifact."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import fwassist
from fwassist import ArtifactError, Model, ReleaseError
from fwassist._trust import counter_init, counter_read
from fwassist.models import tiny_coder_path

from release_signer import Key, artifact_identity, bundle_line, policy, sign_file, statement

# The core checks signatures with libcrypto or, in a build without it (the wheels), with the
# package's `cryptography` callback (fwassist._trust.cryptography_verifier).
HAVE_CRYPTO = (fwassist._core.have_release_crypto()
               or fwassist._trust.cryptography_verifier() is not None)
needs_crypto = pytest.mark.skipif(not HAVE_CRYPTO, reason="no crypto backend, no cryptography "
                                  "(test_a_build_without_crypto_refuses_every_policy runs)")


class Release:
    """The bundled model copied into tmp, its identity, keys and helpers to sign it."""

    def __init__(self, tmp: Path) -> None:
        self.dir = tmp
        self.model = tmp / "model.fwa"
        shutil.copyfile(tiny_coder_path(), self.model)
        self.root, self.card = artifact_identity(str(self.model))
        self.supplier = Key.generate("ecdsa-p256-sha256")
        self.oem = Key.generate("ed25519")
        self.stranger = Key.generate("ecdsa-p256-sha256")
        self.counter = tmp / "counter"
        counter_init(self.counter, 1)

    def policy(self, name: str = "policy.json", **kw: Any) -> Path:
        p = self.dir / name
        p.write_bytes(policy({"supplier": [self.supplier], "oem": [self.oem]},
                             kw.pop("required", {"supplier": 1, "oem": 1}), **kw))
        return p

    def statement(self, sv: int, **kw: Any) -> bytes:
        return statement(kw.pop("root", self.root), kw.pop("card", self.card), sv,
                         rxswin=kw.pop("rxswin", "RXSWIN-DEMO-1"), **kw)

    def sign(self, sv: int, keys: list[Key], **kw: Any) -> Path:
        sig = Path(str(self.model) + ".sig")
        sig.write_bytes(sign_file(self.statement(sv, **kw), keys))
        return sig

    def load(self, **kw: Any) -> Model:
        if "trust" not in kw:  # (not setdefault: writing the default would replace a policy)
            kw["trust"] = self.policy()
        kw.setdefault("counter", self.counter)
        return Model.load(self.model, **kw)

    def status(self, **kw: Any) -> str:
        with pytest.raises(ReleaseError) as e:
            self.load(**kw)
        assert isinstance(e.value, ArtifactError)
        return str(e.value.status)


@pytest.fixture
def rel(tmp_path: Path) -> Release:
    return Release(tmp_path)


@needs_crypto
def test_cosigned_round_trip_and_commit(rel: Release) -> None:
    rel.sign(5, [rel.supplier, rel.oem])
    m = rel.load()
    r = m.release
    assert r is not None and r.pin == m.pin == "sha256:" + rel.root
    assert (r.security_version, r.rxswin, r.policy_version, r.counter) == (5, "RXSWIN-DEMO-1", 1, 1)
    assert [(s.keyid, s.role, s.status) for s in r.signers] == [
        (rel.supplier.keyid, "supplier", "valid"), (rel.oem.keyid, "oem", "valid")]
    # Loading never advances the counter; the explicit commit does, and a replay of an older
    # release is refused afterwards.
    assert counter_read(rel.counter) == 1
    m.commit_security_version(rel.counter)
    assert counter_read(rel.counter) == 5
    rel.sign(4, [rel.supplier, rel.oem])
    assert rel.status() == "rollback"
    rel.sign(5, [rel.supplier, rel.oem])
    assert rel.load().release.security_version == 5  # type: ignore[union-attr]


@needs_crypto
def test_a_counter_object_and_its_failures(rel: Release) -> None:
    class Rpmb:
        def __init__(self, value: int) -> None:
            self.value = value
            self.advanced: list[int] = []

        def read(self) -> int:
            return self.value

        def advance(self, value: int) -> None:
            self.advanced.append(value)
            self.value = value

    rel.sign(7, [rel.oem, rel.supplier])
    dev = Rpmb(3)
    m = rel.load(counter=dev)
    assert dev.advanced == []
    m.commit_security_version(dev)
    assert dev.advanced == [7]
    assert rel.status(counter=Rpmb(8)) == "rollback"

    class Broken(Rpmb):
        def read(self) -> int:
            raise OSError("RPMB: no response")

    with pytest.raises(ReleaseError, match="RPMB: no response") as e:
        rel.load(counter=Broken(0))
    assert e.value.status == "counter_unavailable"
    assert rel.status(counter=None) == "counter_unavailable"
    assert rel.status(counter=rel.dir / "missing") == "counter_unavailable"
    (rel.dir / "bad").write_text("7")
    assert rel.status(counter=rel.dir / "bad") == "counter_unavailable"


@needs_crypto
def test_refusals_each_with_its_status(rel: Release, build_tiny_model: Any) -> None:
    ok = [rel.supplier, rel.oem]
    rel.sign(5, ok)
    # The policy.
    (rel.dir / "broken.json").write_text('{"format": "fwassist.trust-policy", "format": 1}')
    assert rel.status(trust=rel.dir / "broken.json") == "policy_malformed"
    assert rel.status(trust=rel.policy("two.json", required={"supplier": 2})) == "policy_unsatisfiable"
    # The signature file: tampered payload, truncated, oversized.
    sig = Path(str(rel.model) + ".sig")
    line = json.loads(sig.read_bytes().splitlines()[0])
    stmt = json.loads(base64.b64decode(line["dsseEnvelope"]["payload"]))
    stmt["predicate"]["security_version"] = 99
    tampered = json.dumps(stmt, sort_keys=True, separators=(",", ":")).encode()
    line["dsseEnvelope"]["payload"] = base64.b64encode(tampered).decode()
    other = rel.dir / "tampered.sig"
    other.write_bytes(json.dumps(line, sort_keys=True, separators=(",", ":")).encode() + b"\n")
    assert rel.status(signature=other) == "signature_invalid"  # the supplier key no longer signs it
    other.write_bytes(sig.read_bytes()[:-40])
    assert rel.status(signature=other) == "signature_malformed"
    other.write_bytes(sig.read_bytes() * 9)
    assert rel.status(signature=other) == "cap_exceeded"
    assert rel.status(signature=rel.dir / "absent.sig") == "io_error"
    # A valid signature over another (real) artifact.
    other_root, other_card = artifact_identity(str(build_tiny_model().fwa_path))
    rel.sign(5, ok, root=other_root, card=other_card)
    assert rel.status() == "subject_mismatch"
    rel.sign(5, ok, card=other_card)
    assert rel.status() == "subject_mismatch"
    # Signers: missing role, untrusted key, wrong-role key, revoked key.
    rel.sign(5, [rel.supplier])
    with pytest.raises(ReleaseError, match='role "oem"'):
        rel.load()
    rel.sign(5, [rel.supplier, rel.stranger])
    assert rel.status() == "untrusted"
    # A wrong-role key: a second supplier does not make an oem.
    two = rel.dir / "two-suppliers.json"
    two.write_bytes(policy({"supplier": [rel.supplier, rel.stranger], "oem": [rel.oem]},
                           {"supplier": 1, "oem": 1}))
    assert rel.status(trust=two) == "untrusted"
    rel.sign(5, ok)
    p = rel.dir / "revoked.json"
    p.write_bytes(policy({"supplier": [rel.supplier, rel.stranger], "oem": [rel.oem]},
                         {"supplier": 1, "oem": 1}, revoked=(rel.supplier.keyid,)))
    assert rel.status(trust=p) == "revoked"
    # Versions: below the policy minimum.
    assert rel.status(trust=rel.policy("min6.json", min_security_version=6)) == "rollback"


@needs_crypto
def test_a_bad_signature_of_a_trusted_key_is_an_error_even_with_enough_others(
        rel: Release) -> None:
    payload = rel.statement(5)
    forged = rel.supplier.sign(b"something else")
    sig = Path(str(rel.model) + ".sig")
    sig.write_bytes(bundle_line(payload, rel.supplier) + bundle_line(payload, rel.oem) +
                    bundle_line(payload, Key(rel.stranger.private), forged))
    assert rel.load().release is not None  # the stranger is not in the policy: ignored
    p = rel.dir / "p.json"
    p.write_bytes(policy({"supplier": [rel.supplier, rel.stranger], "oem": [rel.oem]},
                         {"supplier": 1, "oem": 1}))
    assert rel.status(trust=p) == "signature_invalid"


def test_commit_needs_a_trusted_load(rel: Release) -> None:
    m = Model.load(rel.model)
    assert m.release is None
    with pytest.raises(ValueError, match="without trust"):
        m.commit_security_version(rel.counter)
    with pytest.raises(ValueError, match="need trust"):
        Model.load(rel.model, counter=rel.counter)


def fwassist_cli(*args: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fwassist", *map(str, args)],
                          capture_output=True, text=True)


@needs_crypto
def test_cli_verify_and_run_with_trust(rel: Release) -> None:
    rel.sign(3, [rel.supplier, rel.oem], rxswin=None)
    pol = rel.policy()
    r = fwassist_cli("verify", rel.model, "--trust", pol, "--counter", rel.counter, "-q")
    assert r.returncode == 0, r.stderr
    assert "release verified: security_version 3, RXSWIN none" in r.stdout
    assert f"signer {rel.oem.keyid}: oem: valid" in r.stdout
    r = fwassist_cli("verify", rel.model, "--trust", pol, "-q")
    assert r.returncode == 3 and "counter_unavailable" in r.stderr
    assert "Traceback" not in r.stderr
    r = fwassist_cli("verify", rel.model, "--sig", str(rel.model) + ".sig")
    assert r.returncode == 2
    rel.sign(3, [rel.supplier])
    r = fwassist_cli("verify", rel.model, "--trust", pol, "--counter", rel.counter, "-q")
    assert r.returncode == 3 and "RELEASE REFUSED" in r.stderr and "untrusted" in r.stderr
    r = fwassist_cli("run", rel.model, "--prompt", "int", "--max-tokens", "2", "--trust", pol,
                     "--counter", rel.counter)
    assert r.returncode == 3 and "untrusted" in r.stderr
    rel.sign(3, [rel.supplier, rel.oem])
    r = fwassist_cli("run", rel.model, "--prompt", "int", "--max-tokens", "2", "--trust", pol,
                     "--counter", rel.counter)
    assert r.returncode == 0, r.stderr


def test_a_build_without_crypto_refuses_every_policy(rel: Release,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """With OpenSSL, or without it but with the `cryptography` callback, the release loads; a
    build without OpenSSL (FWA_WITH_OPENSSL=OFF) and without `cryptography` refuses the same
    policy with no_crypto instead of skipping the check."""
    rel.sign(5, [rel.supplier, rel.oem])
    if HAVE_CRYPTO:
        assert rel.load().release is not None
    monkeypatch.setattr(fwassist._trust, "cryptography_verifier", lambda: None)
    if fwassist._core.have_release_crypto():
        assert rel.load().release is not None
    else:
        with pytest.raises(ReleaseError) as e:
            rel.load()
        assert e.value.status == "no_crypto" and "fwassist[sign]" in e.value.message


POLICY_TYPE = "application/vnd.fwassist.trust-policy+json"


@needs_crypto
def test_signed_policy_from_python_and_the_cli(rel: Release) -> None:
    """root_keys= / --root-key: the core refuses an unsigned, re-signed-by-a-stranger or older
    policy and loads a signed one; the policy counter moves only by commit_policy_version."""
    rel.sign(5, [rel.supplier, rel.oem])
    root, stranger = Key.generate("ed25519"), Key.generate("ecdsa-p256-sha256")
    root_pem = rel.dir / "root.pub.pem"
    root_pem.write_text(root.pem)
    pol = rel.policy(policy_version=4)
    raw = pol.read_bytes()
    Path(str(pol) + ".sig").write_bytes(bundle_line(raw, root, payload_type=POLICY_TYPE))
    stored = rel.dir / "policy-counter"
    counter_init(stored, 3)
    m = rel.load(trust=pol, root_keys=[root_pem], policy_counter=stored)
    assert m.release is not None and m.release.policy_signed
    assert (m.release.policy_version, m.release.policy_counter) == (4, 3)
    assert counter_read(stored) == 3              # loading never advances it
    m.commit_policy_version(stored)
    assert counter_read(stored) == 4
    with pytest.raises(ValueError, match="signed trust policy"):
        rel.load(trust=pol).commit_policy_version(stored)
    # The same policy unsigned, signed by a stranger, or older than the stored version.
    unsigned = rel.dir / "unsigned" / "policy.json"
    unsigned.parent.mkdir()
    unsigned.write_bytes(raw)
    assert rel.status(trust=unsigned, root_keys=[root.pem], policy_counter=stored) == \
        "signature_malformed"
    by_stranger = rel.dir / "stranger.sig"
    by_stranger.write_bytes(bundle_line(raw, stranger, payload_type=POLICY_TYPE))
    assert rel.status(trust=pol, root_keys=[root.pem], policy_signature=by_stranger,
                      policy_counter=stored) == "untrusted"
    assert rel.status(trust=pol, root_keys=[root.pem]) == "counter_unavailable"
    older = rel.policy("older.json", policy_version=3)
    Path(str(older) + ".sig").write_bytes(bundle_line(older.read_bytes(), root,
                                                      payload_type=POLICY_TYPE))
    assert rel.status(trust=older, root_keys=[root.pem], policy_counter=stored) == "rollback"
    with pytest.raises(ValueError, match="root key"):
        rel.load(trust=pol, root_keys=["-----BEGIN PUBLIC KEY-----\nAAAA\n"],
                 policy_counter=stored)
    with pytest.raises(ValueError, match="need root_keys"):
        rel.load(trust=pol, policy_counter=stored)
    # The CLI.
    base = ["verify", rel.model, "--trust", pol, "--counter", rel.counter, "-q"]
    r = fwassist_cli(*base, "--root-key", root_pem, "--policy-counter", stored)
    assert r.returncode == 0, r.stderr
    assert "policy signed by the root keys: policy version 4, stored policy version 4" in r.stdout
    r = fwassist_cli(*base[:-1], "--trust", older, "--root-key", root_pem, "--policy-counter",
                     stored, "-q")
    assert r.returncode == 3 and "RELEASE REFUSED" in r.stderr and "rollback" in r.stderr
    r = fwassist_cli(*base, "--root-key", root_pem, "--policy-sig", by_stranger,
                     "--policy-counter", stored)
    assert r.returncode == 3 and "untrusted" in r.stderr
    r = fwassist_cli(*base, "--policy-counter", stored)
    assert r.returncode == 2 and "need --root-key" in r.stderr
    r = fwassist_cli(*base, "--root-key", root_pem, "--root-threshold", "2",
                     "--policy-counter", stored)
    assert r.returncode == 2 and "threshold" in r.stderr and "Traceback" not in r.stderr
