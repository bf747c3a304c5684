# SPDX-License-Identifier: Apache-2.0
"""``inspect(path)``: what an artifact holds, from its verified manifest.

The verifier fixes the tensor table, the expert blocks and the section types; the contents of
config, tokenizer, provenance, model card and evidence are free JSON that a valid artifact may
shape any way, so they are read with :func:`_at` (never indexed) and every line of the text
report is escaped for the terminal (:func:`fwassist.textsafe.printable`)."""

from __future__ import annotations

import os
from typing import Any, Union

from ..textsafe import printable
from .verify import verify

__all__ = ["inspect", "render_text", "summarize"]


def _at(d: Any, *keys: str) -> Any:
    """``d[k0][k1]...`` of untrusted JSON, None where a key is missing or a value not an
    object."""
    for k in keys:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d


def _count(v: Any) -> Any:
    return len(v) if isinstance(v, (dict, list)) else None


def _params(t: dict[str, Any]) -> int:
    n = 1
    for d in t["shape"]:
        n *= d
    return n


def _fmt_key(t: dict[str, Any]) -> str:
    return f"{t['quant']['bits']}-bit" if t["dtype"] == "packed" else t["dtype"]


def summarize(art: Any) -> dict[str, Any]:
    """The inspect dict of an opened (:mod:`.pyverify`) artifact."""
    m = art.manifest
    tensors = []
    by_role: dict[str, dict[str, int]] = {}
    by_bits: dict[str, dict[str, int]] = {}
    for t in m["tensors"]:
        q = t["quant"] or {}
        tensors.append({
            "name": t["name"], "role": t["role"], "layer": t["layer"], "expert": t["expert"],
            "dtype": t["dtype"], "bits": q.get("bits"), "block": q.get("block"),
            "zero_points": q.get("zero_points"), "scale": q.get("scale"),
            "shape": list(t["shape"]), "offset": t["offset"], "bytes": t["length"],
            "sha256": t["sha256"],
        })
        for table, key in ((by_role, t["role"]), (by_bits, _fmt_key(t))):
            s = table.setdefault(key, {"tensors": 0, "params": 0, "bytes": 0})
            s["tensors"] += 1
            s["params"] += _params(t)
            s["bytes"] += t["length"]
    blocks = m["expert_blocks"]
    tok = m["tokenizer"]
    tok_summary = None
    if tok is not None:
        tok_summary = {"type": _at(tok, "model", "type"),
                       "vocab": _count(_at(tok, "model", "vocab")),
                       "added_tokens": _count(tok.get("added_tokens")) or 0}
    total_params = sum(_params(t) for t in m["tensors"])
    tensor_bytes = sum(t["length"] for t in m["tensors"])
    return {
        "path": art.path,
        "pin": art.pin,
        "format_version": list(m["format_version"]),
        "file_length": art.file_length,
        "data_offset": art.data_offset,
        "data_length": m["data_length"],
        "config": m["config"],
        "tokenizer": tok_summary,
        "tensors": tensors,
        "totals": {
            "tensors": len(tensors), "params": total_params, "bytes": tensor_bytes,
            "bits_per_param": round(8 * tensor_bytes / total_params, 4) if total_params else 0,
            "by_role": dict(sorted(by_role.items())),
            "by_format": dict(sorted(by_bits.items())),
            "expert_blocks": len(blocks),
            "expert_block_bytes": sum(b["length"] for b in blocks),
        },
        "expert_blocks": [dict(b) for b in blocks],
        "sections": dict(m["sections"]),
        "provenance": m["provenance"],
        "model_card": m["model_card"],
        "evidence": m["evidence"],
        # Format 1.1 (§3.9): EOS ids, bos/pad ids, chat template and source digests; None in 1.0.
        "generation": m.get("generation"),
        "verified": "lazy" if art.lazy else "full",
    }


def inspect(path: Union[str, "os.PathLike[str]"], *, lazy: bool = False) -> dict[str, Any]:
    """Verifies the artifact (all of it unless ``lazy``) and describes it: ``pin``, ``config``,
    ``tokenizer`` summary, ``tensors`` (name, role, layer, expert, dtype, bits, block,
    zero_points, scale, shape, offset, bytes, sha256), ``totals`` (by role and by format),
    ``expert_blocks``, ``sections``, ``provenance``, ``model_card``, ``evidence``.
    Raises :class:`fwassist.ArtifactError`."""
    return summarize(verify(path, lazy=lazy))


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)  # pragma: no cover


def render_text(info: dict[str, Any], *, max_tensors: int = 200) -> str:
    """A human-readable report of an :func:`inspect` dict."""
    tot = info["totals"]
    out = [f"artifact  {info['path']}",
           f"pin       {info['pin']}  ({info['verified']} verification)",
           f"format    {'.'.join(map(str, info['format_version']))}   file "
           f"{_size(info['file_length'])}   data at {info['data_offset']}",
           f"tensors   {tot['tensors']}   params {tot['params']:,}   "
           f"{tot['bits_per_param']} bits/param   expert blocks {tot['expert_blocks']} "
           f"({_size(tot['expert_block_bytes'])})"]
    prov = info["provenance"]
    out.append(f"source    {_at(prov, 'source', 'name') or '-'}  "
               f"sha256:{_at(prov, 'source', 'sha256') or '-'}")
    out.append(f"exporter  {_at(prov, 'exporter', 'name') or '-'} "
               f"{_at(prov, 'exporter', 'version') or '-'}")
    if info["tokenizer"]:
        t = info["tokenizer"]
        out.append(f"tokenizer {t['type']}  vocab {t['vocab']}  added {t['added_tokens']}")
    else:
        out.append("tokenizer none")
    gen = info.get("generation")
    if gen is None:
        out.append("generation none pinned (format 1.0)")
    else:
        out.append(f"generation eos {gen['eos_token_ids']}  bos {gen['bos_token_id']}  "
                   f"pad {gen['pad_token_id']}")
        t = gen["chat_template"]
        # The template is untrusted text: one escaped line (newlines as \n), shortened.
        out.append("  chat template " + ("none" if t is None else
                                         f"{len(t.encode('utf-8'))} bytes: "
                                         f"{t if len(t) <= 160 else t[:157] + '...'}"))
        for k, v in gen["sources"].items():
            out.append(f"  {k:<24} {'sha256:' + v if v else '-'}")
    out.append("config")
    for k, v in sorted(info["config"].items()):
        out.append(f"  {k:<26} {v}")
    out.append("totals by format")
    for k, s in tot["by_format"].items():
        out.append(f"  {k:<8} {s['tensors']:>6} tensors {s['params']:>14,} params "
                   f"{_size(s['bytes']):>11}")
    out.append("totals by role")
    for k, s in tot["by_role"].items():
        out.append(f"  {k:<20} {s['tensors']:>6} tensors {s['params']:>14,} params "
                   f"{_size(s['bytes']):>11}")
    out.append("tensors")
    for t in info["tensors"][:max_tensors]:
        fmt = (f"{t['bits']}b/{t['block']}{'z' if t['zero_points'] else ''}/{t['scale']}"
               if t["dtype"] == "packed" else t["dtype"])
        shape = "x".join(map(str, t["shape"]))
        out.append(f"  {t['name']:<48} {t['role']:<19} {fmt:<14} {shape:<12} "
                   f"{t['bytes']:>10}  {t['sha256'][:16]}")
    if len(info["tensors"]) > max_tensors:
        out.append(f"  ... {len(info['tensors']) - max_tensors} more (use --json)")
    out.append("sections")
    for k, v in info["sections"].items():
        out.append(f"  {k:<14} sha256:{v}")
    lim = _at(info, "model_card", "known_limitations")
    out.append("known limitations")
    out += [f"  - {s}" for s in (lim if isinstance(lim, list) else [])]
    return "\n".join(printable(line) for line in out)
