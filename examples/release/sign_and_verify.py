# SPDX-License-Identifier: Apache-2.0
"""A signed release from start to end (docs/releases.md), with the command line a supplier and
an OEM run, then the device-side checks with the reference verifier fwassist.release:

  1. the supplier and the OEM each make a key             fwassist keygen
  2. the supplier signs release 2 of the model            fwassist sign --security-version 2
  3. the OEM co-signs the same statement                  fwassist sign (same options)
  4. the OEM writes the device's trust policy             fwassist trust-policy
  5. the device makes its rollback counter                fwassist counter init
  6. the device verifies the release and, after a good boot, advances the counter
  7. the signatures of release 1 (both valid, here over the same bytes) are then a replay,
     refused as a rollback

Usage: python sign_and_verify.py [WORKDIR] [MODEL.fwa]  (default: a temporary directory and
the bundled tiny-coder model). Needs ``pip install 'fwassist[sign]'``.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import tempfile


def fwassist(*args: str) -> str:
    """Runs ``fwassist args...``, shows the command and its output, and returns the output."""
    print("$ fwassist " + " ".join(shlex.quote(a) for a in args))
    r = subprocess.run([sys.executable, "-m", "fwassist", *args], capture_output=True,
                       text=True)
    sys.stdout.write(r.stdout)
    if r.returncode != 0:
        sys.stderr.write(r.stderr)
        raise SystemExit(f"the command failed (exit {r.returncode})")
    return r.stdout


def main() -> int:
    from fwassist.models import tiny_coder_path
    from fwassist.release import FileCounter, ReleaseError, verify

    work = sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="fwassist-release-")
    source = sys.argv[2] if len(sys.argv) > 2 else tiny_coder_path()
    os.makedirs(work, exist_ok=True)
    j = lambda *p: os.path.join(work, *p)  # noqa: E731
    for name in ("v1", "v2"):
        os.makedirs(j(name), exist_ok=True)
        shutil.copyfile(source, j(name, "model.fwa"))

    # 1-4: the keys, two signatures per release, the policy.
    fwassist("keygen", "--algorithm", "ecdsa-p256", "-o", j("supplier.pem"))
    fwassist("keygen", "--algorithm", "ed25519", "-o", j("oem.pem"))
    for version in ("1", "2"):
        model = j(f"v{version}", "model.fwa")
        for who in ("supplier", "oem"):
            fwassist("sign", model, "--key", j(f"{who}.pem"), "--security-version", version,
                     "--rxswin", f"ECU-ASSIST-{version}.0")
    fwassist("trust-policy", "--key", "supplier=" + j("supplier.pub.pem"),
             "--key", "oem=" + j("oem.pub.pem"), "--require", "supplier=1",
             "--require", "oem=1", "-o", j("policy.json"))
    # 5-6: the device.
    fwassist("counter", "init", j("counter"), "--value", "0")
    counter = FileCounter(j("counter"))
    v = verify(j("v2", "model.fwa"), None, j("policy.json"), counter)
    print(f"device: release {v.pin} security_version {v.security_version} rxswin {v.rxswin} "
          f"signed by " + ", ".join(f"{s.role} ({s.status})" for s in v.signers) + ": "
          + v.status)
    # ... the model boots and works; only then is the counter advanced.
    fwassist("counter", "advance", j("counter"), "--value", str(v.security_version))
    # 7: the older, equally well signed release is a replay now.
    try:
        verify(j("v1", "model.fwa"), None, j("policy.json"), counter)
    except ReleaseError as e:
        print(f"device: release 1 refused: {e.status}: {e.message}")
    else:
        raise SystemExit("release 1 was accepted after the counter moved to 2")
    print(f"files in {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
