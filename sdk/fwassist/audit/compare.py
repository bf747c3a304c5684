# SPDX-License-Identifier: Apache-2.0
"""Differences between two manifest sections: a path-by-path difference of two JSON values
(model card, evidence) and the component difference of two CycloneDX BOMs.

Paths are JSON Pointers (RFC 6901): ``/known_limitations/0``. A list is compared element by
element at the same index, so an inserted element shows as changes from there on plus one
addition: simple, and exact about what a reader of either version sees.
"""

from __future__ import annotations

from typing import Any, Optional

__all__ = ["json_differences", "sbom_components", "sbom_difference", "MAX_DIFFERENCES"]

# A report lists at most this many differences per section (and says how many there were):
# two tokenizers or BOMs can differ in 10^5 places, and the report is read by people.
MAX_DIFFERENCES = 500


def _pointer(path: tuple[str, ...]) -> str:
    return "".join("/" + p.replace("~", "~0").replace("/", "~1") for p in path)


def _walk(a: Any, b: Any, path: tuple[str, ...], out: list[dict[str, Any]]) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if k not in b:
                out.append({"path": _pointer(path + (k,)), "change": "removed", "old": a[k]})
            elif k not in a:
                out.append({"path": _pointer(path + (k,)), "change": "added", "new": b[k]})
            else:
                _walk(a[k], b[k], path + (k,), out)
    elif isinstance(a, list) and isinstance(b, list):
        for i in range(max(len(a), len(b))):
            p = path + (str(i),)
            if i >= len(b):
                out.append({"path": _pointer(p), "change": "removed", "old": a[i]})
            elif i >= len(a):
                out.append({"path": _pointer(p), "change": "added", "new": b[i]})
            else:
                _walk(a[i], b[i], p, out)
    elif type(a) is not type(b) or a != b:
        out.append({"path": _pointer(path), "change": "changed", "old": a, "new": b})


def json_differences(a: Any, b: Any) -> dict[str, Any]:
    """``{"changed": bool, "count": n, "differences": [...], "truncated": bool}``; each
    difference ``{"path", "change": added|removed|changed, "old"?, "new"?}``."""
    out: list[dict[str, Any]] = []
    _walk(a, b, (), out)
    return {"changed": bool(out), "count": len(out), "differences": out[:MAX_DIFFERENCES],
            "truncated": len(out) > MAX_DIFFERENCES}


def _hash(c: dict[str, Any]) -> Optional[str]:
    for h in c.get("hashes") or []:
        if isinstance(h, dict) and h.get("alg") == "SHA-256" and isinstance(h.get("content"),
                                                                            str):
            return str(h["content"])
    return None


def _licenses(c: dict[str, Any]) -> list[str]:
    out = []
    for lic in c.get("licenses") or []:
        if not isinstance(lic, dict):
            continue
        if isinstance(lic.get("expression"), str):
            out.append(lic["expression"])
        inner = lic.get("license")
        if isinstance(inner, dict):
            v = inner.get("id", inner.get("name"))
            if isinstance(v, str):
                out.append(v)
    return out


def _summary(key: str, where: str, c: dict[str, Any]) -> dict[str, Any]:
    def s(k: str) -> Optional[str]:
        v = c.get(k)
        return v if isinstance(v, str) else None
    return {"ref": key, "where": where, "type": s("type"), "name": s("name"),
            "version": s("version"), "sha256": _hash(c), "licenses": _licenses(c)}


def sbom_components(bom: Any) -> dict[str, tuple[str, dict[str, Any]]]:
    """Every component of a CycloneDX BOM by key: ``metadata.component``, the tools in
    ``metadata.tools.components`` and ``components`` (nested ones included), keyed by bom-ref,
    else ``type:name@version`` (``#2``, ``#3``... appended to a repeated key). Value: (where it was found, the component)."""
    found: dict[str, tuple[str, dict[str, Any]]] = {}

    def add(c: Any, where: str, depth: int) -> None:
        if not isinstance(c, dict) or depth > 16:
            return
        ref, kind, name, version = (c.get(k) for k in ("bom-ref", "type", "name", "version"))
        key = ref if isinstance(ref, str) and ref else (
            f"{kind if isinstance(kind, str) else 'component'}:"
            f"{name if isinstance(name, str) else '?'}"
            + (f"@{version}" if isinstance(version, str) else ""))
        n, k = 2, key
        while k in found:  # a BOM with a repeated key keeps both, in document order
            k, n = f"{key}#{n}", n + 1
        found[k] = (where, c)
        for i, sub in enumerate(c.get("components") or []):
            add(sub, f"{where}.components[{i}]", depth + 1)

    if not isinstance(bom, dict):
        return found
    meta = bom.get("metadata")
    if isinstance(meta, dict):
        add(meta.get("component"), "metadata.component", 0)
        tools = meta.get("tools")
        if isinstance(tools, dict):
            for i, t in enumerate(tools.get("components") or []):
                add(t, f"metadata.tools.components[{i}]", 0)
    for i, c in enumerate(bom.get("components") or []):
        add(c, f"components[{i}]", 0)
    return found


def sbom_difference(a: Any, b: Any) -> dict[str, Any]:
    """Components added, removed and changed between two BOMs (each summarised: type, name,
    version, SHA-256, licenses); a changed one lists its changed fields as JSON Pointers."""
    ca, cb = sbom_components(a), sbom_components(b)
    changed = []
    for k in sorted(set(ca) & set(cb)):
        x, y = ca[k][1], cb[k][1]
        if x != y:
            d = json_differences(x, y)
            changed.append({"old": _summary(k, ca[k][0], x), "new": _summary(k, cb[k][0], y),
                            "fields": [e["path"] for e in d["differences"]],
                            "truncated": d["truncated"]})

    def serial(bom: Any) -> Optional[str]:
        v = bom.get("serialNumber") if isinstance(bom, dict) else None
        return v if isinstance(v, str) else None

    return {"old_serial": serial(a), "new_serial": serial(b),
            "added": [_summary(k, cb[k][0], cb[k][1]) for k in sorted(set(cb) - set(ca))],
            "removed": [_summary(k, ca[k][0], ca[k][1]) for k in sorted(set(ca) - set(cb))],
            "changed": changed}
