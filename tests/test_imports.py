# SPDX-License-Identifier: Apache-2.0
"""Package structure: the artifact package never imports the export package (the writer's
input model lives in fwassist.artifact.model; export depends on artifact, not the reverse),
the Python verifier is self-contained (the second, independent implementation that checks
the writer: docs/artifact-format.md §5), and every module imports alone in a fresh
interpreter."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import fwassist

PKG = Path(fwassist.__file__).resolve().parent


def module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = sorted(module_name(p) for p in PKG.rglob("*.py") if p.name != "__main__.py")


def imports_of(path: Path) -> set[str]:
    """Every fwassist module or package `path` imports, at module level or inside functions."""
    mod = module_name(path)
    base = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                parent = ".".join(base.split(".")[:len(base.split(".")) - node.level + 1])
                target = parent + ("." + node.module if node.module else "")
            else:
                target = node.module or ""
            out.add(target)
            out.update(f"{target}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return {m for m in out if m == "fwassist" or m.startswith("fwassist.")}


def test_artifact_package_does_not_import_export():
    for path in sorted((PKG / "artifact").glob("*.py")):
        bad = sorted(m for m in imports_of(path) if m.startswith("fwassist.export"))
        assert not bad, f"{path.name} imports {bad}"


def test_pyverify_imports_nothing_of_the_package():
    """Static: pyverify's imports are the standard library's only."""
    assert imports_of(PKG / "artifact" / "pyverify.py") == set()
    tree = ast.parse((PKG / "artifact" / "pyverify.py").read_text(encoding="utf-8"))
    assert not [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level]


def test_pyverify_runs_standalone_in_a_fresh_interpreter():
    """Loaded from its file outside the package, pyverify verifies the bundled model and
    neither the writer, its canonical-JSON module nor the exporter is loaded."""
    code = f"""
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("pyverify_alone",
                                              {str(PKG / 'artifact' / 'pyverify.py')!r})
pv = importlib.util.module_from_spec(spec)
sys.modules["pyverify_alone"] = pv
spec.loader.exec_module(pv)
art = pv.verify({str(PKG / 'models' / 'tiny-coder.fwa')!r})
print(json.dumps({{"pin": art.pin, "loaded": sorted(m for m in sys.modules
                                                   if m.startswith("fwassist"))}}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    assert r["loaded"] == []
    assert r["pin"] == fwassist.load_artifact(PKG / "models" / "tiny-coder.fwa").pin


def test_writer_and_verifier_constants_agree():
    """Two readings of the spec, kept separately on purpose, that must say the same."""
    from fwassist.artifact import pyverify, writer

    for name in ("MAGIC", "VERSION", "ALIGN", "PAGE", "MAX_MANIFEST", "MAX_TENSORS",
                 "MAX_BLOCKS", "MAX_DIM", "SECTION_KEYS", "REQUIRES", "MAX_TOKEN_ID",
                 "MAX_VOCAB_ENTRIES", "MAX_MERGES", "MAX_ADDED_TOKENS", "MAX_EOS_IDS",
                 "MAX_CHAT_TEMPLATE"):
        assert getattr(writer, name) == getattr(pyverify, name), name
    assert writer.HEADER.format == pyverify.HEADER.format
    assert writer.CONFIG_CAPS == dict(pyverify.CONFIG_CAPS)
    assert writer.GENERATION_SOURCES == tuple(sorted(pyverify.GENERATION_SOURCES))
    assert writer.pyverify is pyverify          # the writer checks its output with it
    assert not hasattr(pyverify, "writer") and not hasattr(pyverify, "canonical")


@pytest.mark.parametrize("module", MODULES)
def test_module_imports_alone(module: str):
    out = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
