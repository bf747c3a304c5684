# SPDX-License-Identifier: Apache-2.0
"""scripts/wheel_sbom.py: the CycloneDX SBOM of a wheel, here of a wheel made from the installed
package (its METADATA, WHEEL, extension module, build info and bundled model), validated
against the CycloneDX 1.6 schema."""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import sys
import zipfile
from pathlib import Path
from types import ModuleType
from typing import Optional

import pytest

import fwassist
from fwassist.models import TINY_CODER_PIN

ROOT = Path(__file__).resolve().parent.parent


def _wheel_sbom() -> ModuleType:
    spec = importlib.util.spec_from_file_location("wheel_sbom", ROOT / "scripts" / "wheel_sbom.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["wheel_sbom"] = mod
    spec.loader.exec_module(mod)
    return mod


def _make_wheel(path: Path, skip: str = "", build_info: Optional[dict] = None) -> Path:
    """A wheel-shaped zip of the installed package's files the SBOM reads (build_info replaces
    fwassist/_build_info.json)."""
    pkg = Path(fwassist.__file__).parent
    dist = importlib.metadata.distribution("fwassist")
    info_dir = f"fwassist-{dist.version}.dist-info"
    whl = path / f"fwassist-{dist.version}-cp311-cp311-linux_x86_64.whl"
    with zipfile.ZipFile(whl, "w") as z:
        z.writestr(f"{info_dir}/METADATA", dist.read_text("METADATA") or "")
        z.writestr(f"{info_dir}/WHEEL", dist.read_text("WHEEL") or "")
        for p in sorted(pkg.rglob("*")):
            rel = p.relative_to(pkg.parent).as_posix()
            if p.is_file() and "__pycache__" not in rel and not (skip and rel.endswith(skip)):
                if build_info is not None and rel == "fwassist/_build_info.json":
                    z.writestr(rel, json.dumps(build_info))
                else:
                    z.write(p, rel)
    return whl


def test_wheel_sbom_is_valid_cyclonedx_16_and_records_what_the_wheel_holds(tmp_path):
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    ws = _wheel_sbom()
    whl = _make_wheel(tmp_path)
    out = tmp_path / "sbom.json"
    assert ws.main([str(whl), "-o", str(out)]) == 0
    text = out.read_text("utf-8")
    err = JsonStrictValidator(SchemaVersion.V1_6).validate_str(text)
    assert err is None, err
    bom = json.loads(text)
    assert ws.build_sbom(str(whl)) == bom  # deterministic: no timestamp
    main = bom["metadata"]["component"]
    assert main["name"] == "fwassist"
    assert main["hashes"][0]["content"] == hashlib.sha256(whl.read_bytes()).hexdigest()
    by_name = {c["name"]: c for c in bom["components"]}
    props = {n: {p["name"]: p["value"] for p in c.get("properties", [])} for n, c in by_name.items()}
    # Python: numpy, with the requirement of pyproject.toml; the extras are not dependencies.
    assert props["numpy"]["fwassist:requirement"].startswith("numpy")
    assert "onnx" not in by_name
    # Native: nanobind (static), the C++ runtime, glibc with the floor read from the ELF file.
    build_info = json.loads((Path(fwassist.__file__).parent / "_build_info.json").read_text())
    assert by_name["nanobind"]["version"] == build_info["nanobind_version"] != ""
    assert build_info["cxx_runtime"] in by_name
    floor = props["glibc"]["fwassist:glibc-floor"]
    running = os.confstr("CS_GNU_LIBC_VERSION").split()[1]  # type: ignore[union-attr]
    assert tuple(map(int, floor.split("."))) <= tuple(map(int, running.split(".")))
    assert "libc.so.6" in props["glibc"]["fwassist:needed"]
    # The bundled model: the file's SHA-256 and its pin.
    model = by_name["tiny-coder"]
    assert model["type"] == "machine-learning-model"
    model_file = Path(fwassist.__file__).parent / "models" / "tiny-coder.fwa"
    assert model["hashes"][0]["content"] == hashlib.sha256(model_file.read_bytes()).hexdigest()
    assert props["tiny-coder"]["fwassist:pin"] == TINY_CODER_PIN
    # The compiler that built the extension.
    tool = bom["metadata"]["tools"]["components"][0]
    assert (tool["name"], tool["version"]) == (build_info["compiler"]["id"],
                                              build_info["compiler"]["version"])
    deps = {d["ref"]: d.get("dependsOn", []) for d in bom["dependencies"]}
    assert set(deps[main["bom-ref"]]) == {c["bom-ref"] for c in bom["components"]}
    # The schema check can fail: a hash that is not hex is refused.
    bom["components"][-1]["hashes"][0]["content"] = "not-hex"
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(json.dumps(bom)) is not None


def test_wheel_sbom_of_a_zig_build_is_valid_too(tmp_path):
    """The wheels of scripts/build_wheels.sh: Clang with a static libc++ (its licence an SPDX
    expression with an exception) and the glibc the toolchain targets."""
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    ws = _wheel_sbom()
    info = {"compiler": {"id": "Clang", "version": "22.1.8"}, "cxx_runtime": "libc++",
            "toolchain": "ziglang 0.17.1: zig cc -target x86_64-linux-gnu.2.31",
            "glibc_target": "2.31", "nanobind_version": "3.1.0"}
    bom = ws.build_sbom(str(_make_wheel(tmp_path, build_info=info)))
    err = JsonStrictValidator(SchemaVersion.V1_6).validate_str(json.dumps(bom))
    assert err is None, err
    rt = next(c for c in bom["components"] if c["name"] == "libc++")
    assert rt["licenses"] == [{"expression": "Apache-2.0 WITH LLVM-exception"}]
    assert rt["version"] == "22.1.8"
    glibc = next(c for c in bom["components"] if c["name"] == "glibc")
    assert {"name": "fwassist:glibc-target", "value": "2.31"} in glibc["properties"]
    assert bom["metadata"]["tools"]["components"][0]["description"].startswith("ziglang")


def test_wheel_sbom_names_what_is_missing(tmp_path, capsys):
    ws = _wheel_sbom()
    whl = _make_wheel(tmp_path, skip="_build_info.json")
    assert ws.main([str(whl)]) == 1
    assert "no fwassist/_build_info.json" in capsys.readouterr().err
    with pytest.raises(ws.SbomError, match="not a 64-bit little-endian ELF"):
        ws.elf_facts(b"\x7fELF\x01\x01" + bytes(60))


def test_glibc_floor_is_the_newest_glibc_version_needed():
    ws = _wheel_sbom()
    assert ws.glibc_floor(["GLIBC_2.2.5", "GLIBC_2.17", "GLIBC_2.3.4", "GLIBCXX_3.4.30",
                           "GLIBC_PRIVATE"]) == "2.17"
    assert ws.glibc_floor([]) is None
