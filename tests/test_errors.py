# SPDX-License-Identifier: Apache-2.0
"""One exception hierarchy (issue 16 item 5): every bad-artifact failure that reaches user code
is a ``fwassist.ArtifactError`` (and so a ``fwassist.Error``) with the status name, whichever
entry point found it: the native loader, Model.load, a lazily verified expert, the verify,
inspect and diff tools (C++ or pure-Python verifier) and the command line; and the package
defines no other exception class outside that hierarchy but the standalone verifier's carrier."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect as pyinspect
import io
import os
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Callable

import pytest

import fwassist
from fwassist.artifact import diff, inspect, pyverify, verify
from fwassist.cli import main
from fwassist.models import tiny_coder_path

PKG = Path(fwassist.__file__).parent


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory) -> dict[str, Path]:
    """The bundled model with one expert-block byte flipped (digest_mismatch), cut short
    (truncated) and with a wrong magic (bad_magic)."""
    src = Path(tiny_coder_path()).read_bytes()
    art = pyverify.read_manifest(tiny_coder_path())
    block = art.manifest["expert_blocks"][0]
    d = tmp_path_factory.mktemp("bad")
    flipped = bytearray(src)
    flipped[art.data_offset + block["offset"] + 1] ^= 0x01
    out = {"digest_mismatch": bytes(flipped), "truncated": src[:100],
           "bad_magic": b"\x00" + src[1:]}
    paths = {}
    for status, raw in out.items():
        paths[status] = d / f"{status}.fwa"
        paths[status].write_bytes(raw)
    return paths


def _raises(fn: Callable[[], object], status: str) -> fwassist.ArtifactError:
    with pytest.raises(fwassist.Error) as e:
        fn()
    assert isinstance(e.value, fwassist.ArtifactError), type(e.value)
    assert isinstance(e.value, ValueError)  # as before the hierarchy: kept for old callers
    assert e.value.status == status, e.value
    assert e.value.message and status in str(e.value)
    return e.value


ENTRY_POINTS: dict[str, Callable[[Path], object]] = {
    "load_artifact(path)": lambda p: fwassist.load_artifact(p),
    "load_artifact(bytes)": lambda p: fwassist.load_artifact(p.read_bytes()),
    "load_artifact(copy)": lambda p: fwassist.load_artifact(p, copy=True),
    "Model.load": lambda p: fwassist.Model.load(p),
    "verify(native)": lambda p: verify(p, native=True),
    "verify(python)": lambda p: verify(p, native=False),
    "inspect": lambda p: inspect(p),
    "diff": lambda p: diff(tiny_coder_path(), p),
}


@pytest.mark.parametrize("status", ["digest_mismatch", "truncated", "bad_magic"])
@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
def test_every_entry_point_raises_artifact_error(bad_files, entry, status):
    e = _raises(lambda: ENTRY_POINTS[entry](bad_files[status]), status)
    if entry.startswith(("verify", "inspect", "diff")):
        assert e.path == str(bad_files[status])


def test_lazy_expert_failure_is_artifact_error(bad_files):
    p = bad_files["digest_mismatch"]
    block = pyverify.read_manifest(p).manifest["expert_blocks"][0]
    with fwassist.load_artifact(p, lazy=True) as art:
        _raises(lambda: art.verify_expert(block["layer"], block["expert"]), "digest_mismatch")
    _raises(lambda: verify(p, lazy=False, native=False), "digest_mismatch")
    # The pure-Python verifier alone (importable without the package) keeps its own carrier.
    with pytest.raises(pyverify.PyArtifactError):
        pyverify.verify(p)


@pytest.mark.parametrize("cmd", ["verify", "inspect", "sbom", "run"])
def test_cli_bad_artifact_exit_3(bad_files, cmd):
    argv = [cmd, str(bad_files["digest_mismatch"])]
    if cmd == "run":
        argv = ["run", str(bad_files["digest_mismatch"]), "--prompt", "int"]
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        rc = main(argv)
    assert rc == 3, (rc, err.getvalue())
    assert "digest_mismatch" in err.getvalue() and "Traceback" not in err.getvalue()
    assert len(err.getvalue().strip().splitlines()) == 1


# The only exception classes of the package outside fwassist.Error: the pure-Python verifier's
# carrier (pyverify must import without the package; every public entry translates it) and the
# SIGTERM unwinder of the command line (a SystemExit).
OUTSIDE_HIERARCHY = {"fwassist.artifact.pyverify.PyArtifactError", "fwassist.cli.Terminated"}


def _modules() -> list[str]:
    names = []
    for root, _, files in os.walk(PKG):
        for f in files:
            if f.endswith(".py"):
                rel = Path(root, f).relative_to(PKG.parent).with_suffix("")
                parts = [p for p in rel.parts if p != "__init__"]
                if parts[-1] != "__main__":
                    names.append(".".join(parts))
    return sorted(names)


def test_one_exception_hierarchy():
    found = set()
    for name in _modules():
        src = Path(importlib.util.find_spec(name).origin).read_text(encoding="utf-8")
        classes = [n.name for n in ast.walk(ast.parse(src)) if isinstance(n, ast.ClassDef)]
        if not classes:
            continue
        mod = importlib.import_module(name)
        for cls_name in classes:
            cls = getattr(mod, cls_name, None)
            if pyinspect.isclass(cls) and issubclass(cls, BaseException):
                if not issubclass(cls, fwassist.Error):
                    found.add(f"{name}.{cls_name}")
    assert found == OUTSIDE_HIERARCHY
    # The native carrier is private to the bindings: no public name exports it.
    assert not any(getattr(fwassist, n, None) is fwassist._core.ArtifactFailure
                   for n in fwassist.__all__)
    assert fwassist.ArtifactError.__mro__[1:3] == (fwassist.Error, ValueError)


# ---- Extras (issue 16 item 4): a missing optional package is one line naming the extra.

def test_export_without_onnx_names_the_extra(tmp_path, monkeypatch):
    model = tmp_path / "m.onnx"
    model.write_bytes(b"not parsed: onnx is missing")
    (tmp_path / "card.json").write_text('{"known_limitations": ["a test"]}')
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx -> ImportError
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        rc = main(["export", str(model), "-o", str(tmp_path / "o.fwa")])
    assert rc == 1 and out.getvalue() == ""
    assert err.getvalue() == ("fwassist export: error: importing ONNX models needs the 'onnx' "
                              "package: pip install 'fwassist[export]'\n")
    assert not (tmp_path / "o.fwa").exists()
    # An existing output (--force) makes the export list the model's external data first.
    (tmp_path / "o.fwa").write_bytes(b"old")
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        rc = main(["export", str(model), "-o", str(tmp_path / "o.fwa"), "--force"])
    assert rc == 1 and err.getvalue().endswith("pip install 'fwassist[export]'\n"), err.getvalue()
    assert len(err.getvalue().splitlines()) == 1
    assert (tmp_path / "o.fwa").read_bytes() == b"old"


@pytest.mark.parametrize("module,extra", [("onnxruntime", "export"), ("onnx", "export"),
                                          ("cffi", "test")])
def test_require_names_the_extra(monkeypatch, module, extra):
    from fwassist.errors import MissingExtraError, require

    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(MissingExtraError) as e:
        require(module, extra, "this step")
    assert str(e.value) == (f"this step needs the '{module}' package: "
                            f"pip install 'fwassist[{extra}]'")
    assert isinstance(e.value, ImportError) and isinstance(e.value, fwassist.Error)
    assert (e.value.package, e.value.extra) == (module, extra)


def test_cffi_binding_without_cffi_names_the_extra():
    code = ("import sys; sys.modules['cffi'] = None\n"
            "try:\n    import fwassist._cffi\n"
            "except ImportError as e:\n    print(type(e).__name__, e)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout == ("MissingExtraError the C ABI binding fwassist._cffi needs the 'cffi' "
                        "package: pip install 'fwassist[test]'\n")
