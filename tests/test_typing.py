# SPDX-License-Identifier: Apache-2.0
"""The package is typed (issue 16 item 5): ``mypy --strict`` passes over sdk/fwassist, checked
against the type stubs of the native module that the build generates (``_core.pyi``, nanobind
stubgen) and ships beside it. mypy is pinned in the ``test`` extra (pyproject.toml)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import fwassist

ROOT = Path(__file__).resolve().parents[1]


def test_stub_is_shipped():
    stub = Path(fwassist.__file__).parent / "_core.pyi"
    assert stub.is_file(), f"{stub} missing: the build (csrc/python/CMakeLists.txt) ships it"
    text = stub.read_text(encoding="utf-8")
    for name in ("class ArtifactHandle", "class NativeModel", "class ArtifactFailure",
                 "def matmul("):
        assert name in text


def test_mypy_strict(tmp_path):
    pytest.importorskip("mypy", reason="mypy is not installed (pip install 'fwassist[test]')")
    # The repository's sources with the installed stub beside them (mypy cannot check the
    # installed copy in place: site-packages is no source root).
    pkg = tmp_path / "fwassist"
    shutil.copytree(ROOT / "sdk" / "fwassist", pkg,
                    ignore=shutil.ignore_patterns("__pycache__", "*.so", "*.fwa", "*.json"))
    shutil.copy(Path(fwassist.__file__).parent / "_core.pyi", pkg / "_core.pyi")
    r = subprocess.run([sys.executable, "-m", "mypy", "--config-file",
                        str(ROOT / "pyproject.toml"), "--no-incremental", "fwassist"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith("Success: no issues found"), r.stdout
