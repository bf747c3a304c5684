# SPDX-License-Identifier: Apache-2.0
"""Co-signers signing at the same moment (docs/releases.md §2.3): each `fwassist sign` holds an
exclusive lock on ``MODEL.fwa.sig.lock`` while it reads, extends and atomically replaces the
signature file, so racing signers never lose each other's bundle."""

from __future__ import annotations

import multiprocessing
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("cryptography", reason="the sign extra (cryptography) is not installed")

from release_fixtures import artifact, key_file  # noqa: E402

from fwassist.release import read_signatures  # noqa: E402

SIGNERS = 6


def _sign(model: str, key: str, barrier: Any) -> None:
    from fwassist.cli import main

    barrier.wait()  # all signers start together: without the lock most bundles would be lost
    rc = main(["sign", model, "--key", key, "--security-version", "4", "--rxswin", "RX-4"])
    if rc != 0:
        raise SystemExit(rc)


def test_racing_cosigners_keep_every_bundle(tmp_path: Path) -> None:
    model = artifact(tmp_path / "model.fwa")
    keys = [key_file(tmp_path / f"k{i}.pem", "ed25519" if i % 2 else "ecdsa-p256-sha256")
            for i in range(SIGNERS)]
    ctx = multiprocessing.get_context("spawn")  # no fork of a process with native threads
    barrier = ctx.Barrier(SIGNERS)
    procs = [ctx.Process(target=_sign, args=(str(model), str(path), barrier))
             for path, _ in keys]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0] * SIGNERS
    bundles = read_signatures(str(model) + ".sig")
    assert sorted(b.keyid for b in bundles) == sorted(s.keyid for _, s in keys)
    assert len({b.payload for b in bundles}) == 1     # one statement, co-signed
    # The lock file stays (an empty sidecar); no temporary file is left behind.
    assert sorted(x.name for x in tmp_path.iterdir() if x.name.startswith(("model", "."))) == [
        "model.fwa", "model.fwa.sig", "model.fwa.sig.lock"]
