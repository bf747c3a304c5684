# SPDX-License-Identifier: Apache-2.0
"""examples/release/sign_and_verify.py runs as a user runs it (a subprocess of this
interpreter): keys, two signers per release, the policy, the counter, the device's verdict and
the rollback refusal; then the files it left are checked independently."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("cryptography", reason="the sign extra (cryptography) is not installed")

import fwassist  # noqa: E402
from fwassist.release import read_signatures, verify  # noqa: E402

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "release" / "sign_and_verify.py"


def test_release_example(tmp_path):
    pkg = str(Path(fwassist.__file__).resolve().parents[1])
    env = dict(os.environ, PYTHONPATH=pkg + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, str(EXAMPLE), str(tmp_path)], capture_output=True,
                       text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "signed by supplier (valid), oem (valid): ok" in r.stdout
    assert "counter " + str(tmp_path / "counter") + ": 0 -> 2" in r.stdout
    assert "release 1 refused: rollback" in r.stdout
    assert (tmp_path / "counter").read_bytes() == b"2\n"
    for v in ("v1", "v2"):
        assert len(read_signatures(tmp_path / v / "model.fwa.sig")) == 2
    policy = json.loads((tmp_path / "policy.json").read_text())
    assert sorted(k["role"] for k in policy["keys"]) == ["oem", "supplier"]
    assert verify(tmp_path / "v2" / "model.fwa", None, tmp_path / "policy.json").status == "ok"
