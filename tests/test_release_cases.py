# SPDX-License-Identifier: Apache-2.0
"""The signed-release case corpus (tests/release_cases.py) through the reference verifier:
each case gets its stated status. A native verifier takes the same directories."""

from __future__ import annotations

import pytest

pytest.importorskip("cryptography", reason="the sign extra (cryptography) is not installed")

from release_cases import write_cases  # noqa: E402

from fwassist.errors import ReleaseError  # noqa: E402
from fwassist.release import FileCounter, verify  # noqa: E402


def test_release_cases(tmp_path):
    cases = write_cases(tmp_path)
    statuses = {c["status"] for c in cases}
    assert statuses == {"ok", "untrusted", "revoked", "rollback", "counter_unavailable",
                        "subject_mismatch", "signature_invalid", "signature_malformed",
                        "cap_exceeded", "policy_malformed", "policy_unsatisfiable"}
    for c in cases:
        d = tmp_path / c["dir"]
        counter = FileCounter(d / "counter") if c["counter"] else None
        try:
            got = verify(d / "model.fwa", None, d / "policy.json", counter).status
        except ReleaseError as e:
            got = e.status
        assert got == c["status"], c["name"]
