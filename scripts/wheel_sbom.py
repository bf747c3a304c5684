#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""The CycloneDX 1.6 SBOM of a built fwassist wheel, from the wheel alone.

usage: python scripts/wheel_sbom.py WHEEL [-o OUT.cdx.json]

What it records, and where each fact comes from:

* the package (``metadata.component``): name, version, licence from the wheel's METADATA, its
  wheel tags from WHEEL, SHA-256 of the wheel file;
* Python dependencies: every unconditional ``Requires-Dist`` (numpy), with the requirement;
* the native side of ``fwassist/_core*.so``, read from its ELF headers: the shared libraries
  it needs (``DT_NEEDED``) and the newest glibc symbol version it uses (the real glibc floor);
  the C++ runtime (libc++ or libstdc++) and whether it is linked statically (not needed as a
  shared library) or shared;
* from ``fwassist/_build_info.json`` (written by csrc/cmake/build_info.cmake): the compiler and
  toolchain (``metadata.tools``), nanobind's version (compiled in statically);
* the bundled model ``fwassist/models/tiny-coder.fwa``: SHA-256 of the file and its pin (the
  artifact's root digest, ``TINY_CODER_PIN``). The artifact carries its own ML-BOM
  (``fwassist sbom``); this one only places it in the package.

No timestamp; the serial number is the UUIDv5 of the wheel's SHA-256, so the same wheel always
gives the same SBOM. tests/test_wheel_sbom.py validates it against the CycloneDX schema.
"""

from __future__ import annotations

import argparse
import email.parser
import hashlib
import json
import re
import struct
import sys
import uuid
import zipfile
from pathlib import PurePosixPath
from typing import Any, Dict, List, Optional, Tuple

SPEC_VERSION = "1.6"
_MACHINES = {62: "x86_64", 183: "aarch64"}


class SbomError(Exception):
    """The wheel lacks something the SBOM needs (named in the message)."""


def elf_facts(data: bytes) -> Dict[str, Any]:
    """Machine, DT_NEEDED libraries, glibc symbol versions and .comment strings of an ELF64
    little-endian shared object."""
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise SbomError("the extension module is not a 64-bit little-endian ELF file")
    (e_machine,) = struct.unpack_from("<H", data, 18)
    e_shoff, = struct.unpack_from("<Q", data, 40)
    e_shentsize, e_shnum = struct.unpack_from("<HH", data, 58)
    sections = []
    for i in range(e_shnum):
        off = e_shoff + i * e_shentsize
        name, typ, _flags, _addr, offset, size, link, _info, _align, entsize = struct.unpack_from(
            "<IIQQQQIIQQ", data, off)
        sections.append((name, typ, offset, size, link, entsize))
    (shstrndx,) = struct.unpack_from("<H", data, 62)
    shstr = sections[shstrndx]

    def cstr(table: Tuple[int, ...], at: int) -> str:
        start = table[2] + at
        return data[start:data.index(b"\0", start)].decode("utf-8", "replace")

    needed: List[str] = []
    versions: List[str] = []
    comments: List[str] = []
    for sec in sections:
        name, typ, offset, size, link, entsize = sec
        sname = cstr(shstr, name)
        if typ == 6:  # SHT_DYNAMIC
            strtab = sections[link]
            for off in range(offset, offset + size, 16):
                tag, val = struct.unpack_from("<qQ", data, off)
                if tag == 0:
                    break
                if tag == 1:  # DT_NEEDED
                    needed.append(cstr(strtab, val))
        elif typ == 0x6FFFFFFE:  # SHT_GNU_verneed
            strtab = sections[link]
            off = offset
            while True:
                _ver, cnt, _file, aux, nxt = struct.unpack_from("<HHIII", data, off)
                a = off + aux
                for _ in range(cnt):
                    _hash, _fl, _other, vname, anext = struct.unpack_from("<IHHII", data, a)
                    versions.append(cstr(strtab, vname))
                    a += anext
                if nxt == 0:
                    break
                off += nxt
        elif sname == ".comment":
            comments += [s.decode("utf-8", "replace")
                         for s in data[offset:offset + size].split(b"\0") if s]
    return {"machine": _MACHINES.get(e_machine, f"e_machine {e_machine}"), "needed": needed,
            "versions": versions, "comments": sorted(set(comments))}


def _version_key(v: str) -> Tuple[int, ...]:
    return tuple(int(x) for x in v.split("."))


def glibc_floor(versions: List[str]) -> Optional[str]:
    """The newest GLIBC_x.y the object needs: it runs on that glibc and newer."""
    found = [v[len("GLIBC_"):] for v in versions if re.fullmatch(r"GLIBC_\d+(\.\d+)*", v)]
    return max(found, key=_version_key) if found else None


def _prop(name: str, value: str) -> Dict[str, str]:
    return {"name": name, "value": value}


def build_sbom(wheel_path: str) -> Dict[str, Any]:
    """The SBOM dict of the wheel at wheel_path."""
    with open(wheel_path, "rb") as f:
        wheel_bytes = f.read()
    wheel_sha = hashlib.sha256(wheel_bytes).hexdigest()
    with zipfile.ZipFile(wheel_path) as z:
        names = z.namelist()

        def one(pattern: str, what: str) -> str:
            hits = [n for n in names if re.fullmatch(pattern, n)]
            if len(hits) != 1:
                raise SbomError(f"{wheel_path}: expected one {what} ({pattern}), found {hits}")
            return hits[0]

        meta = email.parser.Parser().parsestr(
            z.read(one(r"fwassist-[^/]+\.dist-info/METADATA", "METADATA")).decode("utf-8"))
        wheel_meta = email.parser.Parser().parsestr(
            z.read(one(r"fwassist-[^/]+\.dist-info/WHEEL", "WHEEL")).decode("utf-8"))
        core_name = one(r"fwassist/_core\.[^/]*so", "extension module fwassist/_core*.so")
        elf = elf_facts(z.read(core_name))
        try:
            info = json.loads(z.read("fwassist/_build_info.json"))
        except KeyError:
            raise SbomError(f"{wheel_path}: no fwassist/_build_info.json (a wheel built "
                            "before csrc/cmake/build_info.cmake existed?)") from None
        model_name = one(r"fwassist/models/[^/]+\.fwa", "bundled model")
        model_sha = hashlib.sha256(z.read(model_name)).hexdigest()
        pin_match = re.search(r'TINY_CODER_PIN = "(sha256:[0-9a-f]{64})"',
                              z.read("fwassist/models/__init__.py").decode("utf-8"))
        if not pin_match:
            raise SbomError(f"{wheel_path}: no TINY_CODER_PIN in fwassist/models/__init__.py")

    name, version = meta["Name"], meta["Version"]
    lic = meta.get("License-Expression") or meta.get("License")
    tags = wheel_meta.get_all("Tag") or []
    pkg_ref = f"pkg:pypi/{name}@{version}"
    components: List[Dict[str, Any]] = []
    deps: List[str] = []

    for req in meta.get_all("Requires-Dist") or []:
        if "extra ==" in req:
            continue  # optional extras are not dependencies of the installed wheel
        m = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", req)
        assert m is not None
        dname = m.group(1).lower()
        ref = f"pkg:pypi/{dname}"
        components.append({"type": "library", "bom-ref": ref, "name": dname, "purl": ref,
                           "scope": "required",
                           "properties": [_prop("fwassist:requirement", req.strip()),
                                          _prop("fwassist:linkage", "python import")]})
        deps.append(ref)

    nb = info.get("nanobind_version") or ""
    nb_ref = f"pkg:pypi/nanobind@{nb}" if nb else "pkg:pypi/nanobind"
    components.append({"type": "library", "bom-ref": nb_ref, "name": "nanobind",
                       **({"version": nb} if nb else {}), "purl": nb_ref,
                       "licenses": [{"license": {"id": "BSD-3-Clause"}}],
                       "properties": [_prop("fwassist:linkage", "static (NB_STATIC, compiled into "
                                            + PurePosixPath(core_name).name + ")")]})
    deps.append(nb_ref)

    runtime = info.get("cxx_runtime", "unknown")
    runtime_shared = [n for n in elf["needed"] if n.startswith(("libc++", "libstdc++"))]
    compiler = info.get("compiler", {})
    rt_ref = f"native:{runtime}"
    rt_props = [_prop("fwassist:linkage", "shared: " + ", ".join(runtime_shared)
                      if runtime_shared else "static (no shared C++ runtime needed)")]
    rt: Dict[str, Any] = {"type": "library", "bom-ref": rt_ref, "name": runtime,
                          "properties": rt_props}
    if runtime == "libc++" and compiler.get("id") == "Clang":
        rt["version"] = compiler.get("version", "")  # libc++ ships with its clang
        rt["licenses"] = [{"expression": "Apache-2.0 WITH LLVM-exception"}]
    components.append(rt)
    deps.append(rt_ref)

    floor = glibc_floor(elf["versions"])
    libc_ref = "native:glibc"
    libc_props = [_prop("fwassist:needed", ", ".join(elf["needed"])),
                  _prop("fwassist:linkage", "shared (the system's)")]
    if floor:
        libc_props.append(_prop("fwassist:glibc-floor", floor))
    if info.get("glibc_target"):
        libc_props.append(_prop("fwassist:glibc-target", info["glibc_target"]))
    components.append({"type": "operating-system", "bom-ref": libc_ref, "name": "glibc",
                       "description": "the C library the extension links dynamically; it needs "
                                      f"GLIBC {floor or 'unversioned'} or newer",
                       "properties": libc_props})
    deps.append(libc_ref)

    model_ref = f"fwassist:model:{model_name}"
    components.append({"type": "machine-learning-model", "bom-ref": model_ref,
                       "name": PurePosixPath(model_name).stem,
                       "hashes": [{"alg": "SHA-256", "content": model_sha}],
                       "properties": [_prop("fwassist:path", model_name),
                                      _prop("fwassist:pin", pin_match.group(1)),
                                      _prop("fwassist:ml-bom", "embedded in the artifact: "
                                            "fwassist sbom " + PurePosixPath(model_name).name)]})
    deps.append(model_ref)

    tool_props = [_prop("fwassist:target-arch", elf["machine"])]
    tool_props += [_prop("fwassist:elf-comment", c) for c in elf["comments"]]
    tool: Dict[str, Any] = {"type": "application", "name": compiler.get("id", "unknown"),
                            "version": compiler.get("version", ""), "properties": tool_props}
    if info.get("toolchain"):
        tool["description"] = info["toolchain"]
    main: Dict[str, Any] = {
        "type": "library", "bom-ref": pkg_ref, "name": name, "version": version,
        "purl": pkg_ref, "hashes": [{"alg": "SHA-256", "content": wheel_sha}],
        "properties": [_prop("fwassist:wheel", PurePosixPath(wheel_path).name)]
                      + [_prop("fwassist:wheel-tag", t) for t in tags]}
    if lic:
        main["licenses"] = [{"expression": lic}]
    return {
        "bomFormat": "CycloneDX", "specVersion": SPEC_VERSION,
        "serialNumber": "urn:uuid:" + str(uuid.uuid5(uuid.NAMESPACE_URL,
                                                     "fwassist.wheel:" + wheel_sha)),
        "version": 1,
        "metadata": {"component": main, "tools": {"components": [tool]}},
        "components": components,
        "dependencies": [{"ref": pkg_ref, "dependsOn": deps}] + [{"ref": d} for d in deps],
    }


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description="CycloneDX SBOM of a built fwassist wheel")
    ap.add_argument("wheel")
    ap.add_argument("-o", "--output", help="output file (default: standard output)")
    args = ap.parse_args(argv)
    try:
        bom = build_sbom(args.wheel)
    except (SbomError, OSError, zipfile.BadZipFile) as e:
        print(f"wheel_sbom: {e}", file=sys.stderr)
        return 1
    text = json.dumps(bom, indent=2, sort_keys=True) + "\n"
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
