# SPDX-License-Identifier: Apache-2.0
"""Signing with keys inside a PKCS#11 token: SoftHSM2 (Debian ``softhsm2``) through
python-pkcs11. A token is made in a temporary directory, an ECDSA P-256 and an Ed25519 key
pair generated inside it, and ``fwassist sign`` signs with them by URI and by module/labels/PIN
file; the reference verifier accepts the release under a policy built from ``fwassist
pubkey``. Every PKCS#11 step runs in a subprocess: SoftHSM2 reads its configuration once per
process."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("cryptography", reason="the sign extra (cryptography) is not installed")
pytest.importorskip("pkcs11", reason="python-pkcs11 (the sign extra) is not installed")

from release_fixtures import artifact  # noqa: E402

from fwassist.release import make_policy, verify  # noqa: E402

MODULES = ("/usr/lib/softhsm/libsofthsm2.so", "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
           "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so")
GENERATE = """
import sys, pkcs11
from pkcs11 import Attribute, KeyType, Mechanism
from pkcs11.util.ec import encode_named_curve_parameters
tok = pkcs11.lib(sys.argv[1]).get_token(token_label="fwa")
with tok.open(rw=True, user_pin="1234") as s:
    p = s.create_domain_parameters(
        KeyType.EC, {Attribute.EC_PARAMS: encode_named_curve_parameters("secp256r1")}, local=True)
    p.generate_keypair(store=True, label="supplier", id=b"\\x01")
    p = s.create_domain_parameters(
        KeyType.EC_EDWARDS, {Attribute.EC_PARAMS: encode_named_curve_parameters("1.3.101.112")},
        local=True)
    p.generate_keypair(store=True, label="oem", id=b"\\x02",
                       mechanism=Mechanism.EC_EDWARDS_KEY_PAIR_GEN)
"""


@pytest.fixture(scope="module")
def token(tmp_path_factory):
    util = shutil.which("softhsm2-util")
    module = next((m for m in MODULES if os.path.isfile(m)), None)
    if util is None or module is None:
        pytest.skip("SoftHSM2 is not installed (apt-get install softhsm2; "
                    "scripts/install_deps.sh does)")
    d = tmp_path_factory.mktemp("softhsm")
    (d / "tokens").mkdir()
    conf = d / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {d / 'tokens'}\nobjectstore.backend = file\n"
                    f"log.level = ERROR\n")
    env = dict(os.environ, SOFTHSM2_CONF=str(conf))
    subprocess.run([util, "--init-token", "--free", "--label", "fwa", "--pin", "1234",
                    "--so-pin", "5678"], env=env, check=True, capture_output=True, timeout=60)
    subprocess.run([sys.executable, "-c", GENERATE, module], env=env, check=True,
                   capture_output=True, timeout=60)
    (d / "pin").write_text("1234\n")
    return module, env, d / "pin"


def run(env, *argv):
    return subprocess.run([sys.executable, "-m", "fwassist", *argv], env=env,
                          capture_output=True, text=True, timeout=120)


def test_sign_with_token_keys_and_verify(token, tmp_path):
    module, env, pin = token
    model = artifact(tmp_path / "model.fwa")
    uri = f"pkcs11:token=fwa;object=supplier;type=private?module-path={module}" \
          f"&pin-source=file:{pin}"
    r = run(env, "sign", str(model), "--pkcs11-uri", uri, "--security-version", "4",
            "--rxswin", "RX-HSM")
    assert r.returncode == 0, r.stderr
    assert "(ecdsa-p256-sha256); 1 signer(s)" in r.stdout
    r = run(env, "sign", str(model), "--pkcs11-module", module, "--token-label", "fwa",
            "--key-label", "oem", "--pin-file", str(pin), "--security-version", "4",
            "--rxswin", "RX-HSM")
    assert r.returncode == 0, r.stderr
    assert "(ed25519); 2 signer(s)" in r.stdout
    pubs = []
    for label in ("supplier", "oem"):
        r = run(env, "pubkey", "--pkcs11-uri",
                f"pkcs11:token=fwa;object={label}?module-path={module}&pin-value=1234")
        assert r.returncode == 0, r.stderr
        assert r.stdout.startswith("-----BEGIN PUBLIC KEY-----")
        pubs.append(r.stdout)
    (tmp_path / "policy.json").write_bytes(make_policy(
        [("supplier", pubs[0]), ("oem", pubs[1])], {"supplier": 1, "oem": 1}))
    v = verify(model, None, tmp_path / "policy.json")
    assert v.status == "ok" and v.security_version == 4 and v.rxswin == "RX-HSM"
    assert [s.role for s in v.signers] == ["supplier", "oem"]


@pytest.mark.parametrize("uri_tail,message", [
    ("object=supplier?module-path={m}&pin-value=0000", "wrong PIN"),
    ("object=nothere?module-path={m}&pin-value=1234", "no public key object"),
    ("object=supplier?pin-value=1234", "module-path"),
    ("object=supplier;bogus=1?module-path={m}&pin-value=1234", "unknown attribute 'bogus'"),
])
def test_token_errors_are_one_line(token, tmp_path, uri_tail, message):
    module, env, _ = token
    model = artifact(tmp_path / "model.fwa")
    r = run(env, "sign", str(model), "--pkcs11-uri", "pkcs11:token=fwa;" +
            uri_tail.format(m=module), "--security-version", "1")
    assert r.returncode == 2 and r.stdout == "", r.stderr
    assert r.stderr.startswith("fwassist sign: error: ") and len(r.stderr.splitlines()) == 1
    assert message in r.stderr
    assert not Path(str(model) + ".sig").exists()
