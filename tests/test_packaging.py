# SPDX-License-Identifier: Apache-2.0
"""The sdist holds every tracked file and no build product (scripts/wheel_sdist_check.py): the
cheap part of the release check that runs with the tests. The wheels themselves are built and
smoke-tested by scripts/build_wheels.sh (docs/packaging.md), in CI as a step of tests/run_all.sh
(the cp311 x86_64 and aarch64 wheels)."""

from __future__ import annotations

import importlib.util
import io
import sys
import tarfile
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _check() -> ModuleType:
    spec = importlib.util.spec_from_file_location("wheel_sdist_check",
                                                  ROOT / "scripts" / "wheel_sdist_check.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["wheel_sdist_check"] = mod
    spec.loader.exec_module(mod)
    return mod


def _tar(path: Path, names: list[str]) -> Path:
    with tarfile.open(path, "w:gz") as t:
        for n in names:
            info = tarfile.TarInfo(f"fwassist-0.1.0/{n}")
            info.size = 1
            t.addfile(info, io.BytesIO(b"x"))
    return path


def test_sdist_holds_every_tracked_file_and_no_build_product(tmp_path, monkeypatch):
    # The build backend itself (what `python -m build --sdist` calls), without an isolated env.
    skb = pytest.importorskip("scikit_build_core.build",
                              reason="scikit-build-core (the build backend) is not installed")
    monkeypatch.chdir(ROOT)
    name = skb.build_sdist(str(tmp_path))
    check = _check()
    assert check.problems(str(tmp_path / name), ROOT) == []


def test_sdist_check_names_missing_files_and_build_products(tmp_path):
    check = _check()
    complete = list(check.REQUIRED)
    assert check.problems(str(_tar(tmp_path / "ok.tar.gz", complete))) == []
    bad = [p for p in complete if p != "LICENSE"] + ["build-native/x.o", "sdk/fwassist/_core.so",
                                                       "csrc/__pycache__/a.pyc"]
    assert check.problems(str(_tar(tmp_path / "bad.tar.gz", bad))) == [
        "missing: LICENSE", "build product: build-native/x.o",
        "build product: csrc/__pycache__/a.pyc", "build product: sdk/fwassist/_core.so"]
    # csrc/cmake/build_info.cmake is not a build tree: an unanchored "build*" dropped it once.
    assert check.problems(str(_tar(tmp_path / "c.tar.gz", complete + ["csrc/cmake/build_info.cmake"]))) == []
