# SPDX-License-Identifier: Apache-2.0
"""Helpers of the signed-release tests (tests/test_release_*.py): artifacts, keys, policies
and the command line run in-process."""

from __future__ import annotations

import io
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

from artifact_fixtures import build, small_tensors

from fwassist.cli import main
from fwassist.release import make_policy
from fwassist.release.keys import PemSigner, generate_key


def artifact(path: Path, seed: int = 0) -> Path:
    """A small valid `.fwa` at `path` (different bytes per `seed`)."""
    path.write_bytes(build(small_tensors(seed=seed)))
    return path


def key(algorithm: str = "ecdsa-p256-sha256") -> PemSigner:
    return generate_key(algorithm)[1]


def key_file(path: Path, algorithm: str = "ecdsa-p256-sha256") -> tuple[Path, PemSigner]:
    pem, signer = generate_key(algorithm)
    path.write_bytes(pem)
    return path, signer


def policy(path: Path, keys: list[tuple[str, Any]], required: dict[str, int],
           **kwargs: Any) -> Path:
    """Writes a policy over (role, signer) pairs to `path`."""
    path.write_bytes(make_policy([(r, s.public_key_pem) for r, s in keys], required, **kwargs))
    return path


def cli(*argv: str) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of ``fwassist argv...`` run in this process."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            rc = main(list(argv))
        except SystemExit as e:          # argparse's usage errors
            rc = int(e.code or 0)
    return rc, out.getvalue(), err.getvalue()
