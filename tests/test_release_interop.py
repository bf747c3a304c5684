# SPDX-License-Identifier: Apache-2.0
"""Signed releases with the real Sigstore and OpenSSF clients (pinned in the test extra):
every line of MODEL.fwa.sig parses as a Sigstore Bundle v0.3 with ``sigstore-models`` and
``sigstore-protobuf-specs``, and ``fwassist sign --model-signing`` writes the model-signing
1.1.1 form that ``model_signing verify key`` accepts (and refuses for a changed file)."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("cryptography", reason="the sign extra (cryptography) is not installed")

from release_fixtures import artifact, cli, key_file  # noqa: E402

from fwassist.release import read_signatures, sign  # noqa: E402
from fwassist.release.keys import generate_key  # noqa: E402


@pytest.fixture
def signed(tmp_path):
    model = artifact(tmp_path / "model.fwa")
    sign(model, generate_key("ecdsa-p256-sha256")[1], 5, "R156-X")
    sign(model, generate_key("ed25519")[1], 5, "R156-X")
    return model, Path(str(model) + ".sig")


def test_lines_parse_with_sigstore_models(signed):
    models = pytest.importorskip("sigstore_models.bundle.v1",
                                 reason="sigstore-models (test extra) is not installed")
    _, sig = signed
    ours = read_signatures(sig)
    for line, b in zip(sig.read_bytes().splitlines(), ours):
        parsed = models.Bundle.from_json(line)
        assert parsed.media_type == "application/vnd.dev.sigstore.bundle.v0.3+json"
        assert parsed.verification_material.public_key.hint == b.keyid
        assert parsed.verification_material.tlog_entries == []
        env = parsed.dsse_envelope
        assert env.payload == b.payload and env.payload_type == "application/vnd.in-toto+json"
        assert [(s.keyid, s.sig) for s in env.signatures] == [(b.keyid, b.signature)]
        assert json.loads(parsed.to_json()) == json.loads(line)     # nothing lost or added


def test_lines_parse_with_sigstore_protobuf_specs(signed):
    specs = pytest.importorskip("sigstore_protobuf_specs.dev.sigstore.bundle.v1",
                                reason="sigstore-protobuf-specs (test extra) is not installed")
    _, sig = signed
    for line, b in zip(sig.read_bytes().splitlines(), read_signatures(sig)):
        parsed = specs.Bundle.from_dict(json.loads(line))
        assert parsed.media_type == "application/vnd.dev.sigstore.bundle.v0.3+json"
        assert parsed.verification_material.public_key.hint == b.keyid
        env = parsed.dsse_envelope
        assert (env.payload, env.payload_type) == (b.payload, b.payload_type)
        assert [(s.keyid, s.sig) for s in env.signatures] == [(b.keyid, b.signature)]


def _model_signing_cli():
    pytest.importorskip("model_signing", reason="model-signing (test extra) is not installed")
    exe = shutil.which("model_signing", path=os.path.dirname(sys.executable)) \
        or shutil.which("model_signing")
    if exe is None:
        pytest.skip("the model_signing command is not installed")
    return exe


def test_model_signing_verify_key_accepts_our_form(tmp_path):
    exe = _model_signing_cli()
    model = artifact(tmp_path / "model.fwa")
    keyp, signer = key_file(tmp_path / "supplier.pem")
    (tmp_path / "supplier.pub.pem").write_text(signer.public_key_pem)
    rc, out, err = cli("sign", str(model), "--key", str(keyp), "--security-version", "2",
                       "--model-signing")
    assert rc == 0, err
    ms = tmp_path / "model.fwa.sigstore.json"
    assert "model-signing form" in out and ms.is_file()
    payload = json.loads(base64.b64decode(json.loads(ms.read_text())["dsseEnvelope"]["payload"]))
    assert payload["predicateType"] == "https://model_signing/signature/v1.0"

    def verify(path: Path) -> subprocess.CompletedProcess:
        return subprocess.run([exe, "verify", "key", str(path), "--signature", str(ms),
                               "--public_key", str(tmp_path / "supplier.pub.pem")],
                              capture_output=True, text=True, timeout=120)

    r = verify(model)
    assert r.returncode == 0 and "Verification succeeded" in r.stdout + r.stderr, r.stderr
    changed = tmp_path / "changed.fwa"
    blob = bytearray(model.read_bytes())
    blob[-1] ^= 1
    changed.write_bytes(bytes(blob))
    r = verify(changed)
    assert r.returncode != 0 and "Hash mismatch" in r.stdout + r.stderr
    # Another key: refused.
    other = generate_key("ecdsa-p256-sha256")[1]
    (tmp_path / "supplier.pub.pem").write_text(other.public_key_pem)
    assert verify(model).returncode != 0


def test_model_signing_signs_what_we_read(tmp_path):
    """model-signing's own signature of the file names the same resource and digests as ours
    (so our form is theirs, not just something their verifier tolerates)."""
    exe = _model_signing_cli()
    from fwassist.release.model_signing import model_signing_bundle

    model = artifact(tmp_path / "model.fwa")
    keyp, signer = key_file(tmp_path / "k.pem")
    r = subprocess.run([exe, "sign", "key", str(model), "--private_key", str(keyp),
                        "--signature", str(tmp_path / "theirs.json")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    theirs = json.loads((tmp_path / "theirs.json").read_text())
    ours = json.loads(model_signing_bundle(str(model), signer))
    assert theirs["verificationMaterial"] == ours["verificationMaterial"]
    assert theirs["mediaType"] == ours["mediaType"]
    tp = json.loads(base64.b64decode(theirs["dsseEnvelope"]["payload"]))
    op = json.loads(base64.b64decode(ours["dsseEnvelope"]["payload"]))
    assert tp["subject"] == op["subject"] and tp["predicateType"] == op["predicateType"]
    assert tp["predicate"]["resources"] == op["predicate"]["resources"]


def test_model_signing_needs_an_ec_key(tmp_path):
    model = artifact(tmp_path / "model.fwa")
    keyp, _ = key_file(tmp_path / "ed.pem", "ed25519")
    rc, out, err = cli("sign", str(model), "--key", str(keyp), "--security-version", "1",
                       "--model-signing")
    assert rc == 2 and out == "" and len(err.splitlines()) == 1
    assert "EC keys only" in err
    assert not (tmp_path / "model.fwa.sig").exists()
