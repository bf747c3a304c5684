# SPDX-License-Identifier: Apache-2.0
"""``diff(a, b)``: classifies the change between two artifacts.

Both files are verified first (every byte); an invalid one raises
:class:`fwassist.ArtifactError`. The class is the most severe kind of difference
present, from the manifests alone (tensor digests, formats, shapes, section digests); the
tensor data is then read only to describe weight changes (changed quantization blocks or
elements, max |dequantized delta|).

======================  =====  ==============================================================
class                   exit   when (the most severe present)
======================  =====  ==============================================================
``identical``             0    same pin: the files are byte-identical
``metadata-only``        10    model card, provenance, evidence or SBOM differ (or only the
                               data layout: same tensor bytes at other offsets)
``tokenizer``            20    the tokenizer differs, or its generation metadata (format 1.1:
                               end-of-sequence ids, bos/pad ids, chat template)
``config``               30    a configuration value that does not change the tensor set
                               (``rope_theta``, ``rms_norm_eps``, ``num_experts_per_tok``…)
``weights``              40    some tensor's bytes differ in the same format and shape
``quantization``         50    some tensor's format changed (bits, block, zero points, scale
                               type, or dtype) at the same shape
``architecture``         60    tensor set, shapes, layer/expert assignment, layer or expert
                               count, or a structural config value differ
(usage error)             2
(invalid artifact)        3
======================  =====  ==============================================================

Any change to a weight byte is classified ``weights`` or above: a tensor whose digest differs
is either in the same format (weights), in another format (quantization, which always
rewrites the tensor's bytes and so ranks above weights) or of another shape or identity
(architecture).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Optional, Union

import numpy as np

from .. import kernels
from ..textsafe import printable
from .verify import verify

__all__ = ["diff", "DiffResult", "DIFF_CLASSES", "EXIT_CODES", "EXIT_USAGE", "EXIT_INVALID",
           "ARCHITECTURE_KEYS"]

DIFF_CLASSES = ("identical", "metadata-only", "tokenizer", "config", "weights", "quantization",
                "architecture")
EXIT_CODES = {"identical": 0, "metadata-only": 10, "tokenizer": 20, "config": 30,
              "weights": 40, "quantization": 50, "architecture": 60}
EXIT_USAGE = 2
EXIT_INVALID = 3

# Config keys that determine the tensor set or the graph; the others are "config".
ARCHITECTURE_KEYS = frozenset((
    "architecture", "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "head_dim", "intermediate_size", "moe_intermediate_size",
    "num_experts", "decoder_sparse_step", "mlp_only_layers", "tie_word_embeddings",
))
METADATA_SECTIONS = ("model_card", "provenance", "evidence", "sbom")


@dataclass
class DiffResult:
    """``klass`` (one of :data:`DIFF_CLASSES`), ``exit_code``, the two pins, and ``changes``:
    for every class but identical, the list of differences of that kind found (all kinds are
    listed, not only the most severe). ``weights`` describes each changed tensor;
    ``experts_changed`` the (layer, expert) pairs with a changed weight."""

    klass: str
    a: str
    b: str
    changes: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    weights: list[dict[str, Any]] = field(default_factory=list)
    experts_changed: list[tuple[int, int]] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.klass]

    @property
    def changed_tensors(self) -> list[str]:
        return [w["name"] for w in self.weights]

    def to_dict(self) -> dict[str, Any]:
        return {"class": self.klass, "exit_code": self.exit_code, "a": self.a, "b": self.b,
                "changes": {k: v for k, v in self.changes.items() if v},
                "weights": self.weights,
                "experts_changed": [list(e) for e in self.experts_changed]}

    def render_text(self) -> str:
        out = [f"class     {self.klass} (exit {self.exit_code})", f"a         {self.a}",
               f"b         {self.b}"]
        for k in reversed(DIFF_CLASSES[1:]):
            items = self.changes.get(k) or []
            if not items:
                continue
            out.append(f"{k}: {len(items)} difference(s)")
            if k == "weights":
                if self.experts_changed:
                    out.append("  experts changed (layer, expert): "
                               + ", ".join(f"({l}, {e})" for l, e in self.experts_changed))
                for w in self.weights:
                    where = f" expert ({w['layer']}, {w['expert']})" if w["expert"] is not None \
                        else ""
                    unit = "blocks" if w["dtype"] == "packed" else "elements"
                    delta = w.get("max_abs_delta")
                    out.append(f"  {w['name']}{where}: {w.get('changed', '?')}/"
                               f"{w.get('total', '?')} {unit} differ, max |dequantized "
                               f"delta| {delta if delta is not None else 'n/a'}")
                continue
            for it in items[:50]:
                out.append("  " + ", ".join(f"{a}={_short(v)}" for a, v in it.items()))
            if len(items) > 50:
                out.append(f"  ... {len(items) - 50} more (use --json)")
        if self.klass == "identical":
            out.append("the artifacts are byte-identical")
        return "\n".join(printable(line) for line in out)


def _short(v: Any) -> str:
    s = str(v)
    return s if len(s) <= 100 else s[:97] + "..."


def _fmt(t: dict[str, Any]) -> dict[str, Any]:
    return {"dtype": t["dtype"], "quant": t["quant"]}


def _float_values(t: dict[str, Any], raw: bytes) -> tuple[np.ndarray, np.ndarray]:
    """(bit patterns for equality, float64 values) of a float tensor."""
    if t["dtype"] == "f32":
        bits = np.frombuffer(raw, dtype="<u4")
        vals = bits.view("<f4").astype(np.float64)
    elif t["dtype"] == "f16":
        bits = np.frombuffer(raw, dtype="<u2")
        vals = bits.view("<f2").astype(np.float64)
    else:  # bf16
        bits = np.frombuffer(raw, dtype="<u2")
        vals = (bits.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    return bits, vals


def _packed(t: dict[str, Any], raw: bytes) -> kernels.PackedMatrix:
    q = t["quant"]
    return kernels.PackedMatrix.from_buffer(
        np.frombuffer(raw, dtype=np.uint8).copy(), t["shape"][0], t["shape"][1], bits=q["bits"],
        block=q["block"], has_zero=q["zero_points"], scale_dtype=q["scale"])


def _dequantized(t: dict[str, Any], raw: bytes) -> np.ndarray:
    if t["dtype"] == "packed":
        return kernels.dequantize(_packed(t, raw)).astype(np.float64)
    return _float_values(t, raw)[1].reshape(t["shape"])


def _max_abs(a: np.ndarray, b: np.ndarray) -> Optional[float]:
    with np.errstate(invalid="ignore", over="ignore"):
        d = np.abs(a - b)
    d = d[np.isfinite(d)]
    return float(d.max()) if d.size else None


def _weight_detail(ta: dict[str, Any], tb: dict[str, Any], ra: bytes,
                   rb: bytes) -> dict[str, Any]:
    out: dict[str, Any] = {"name": ta["name"], "role": ta["role"], "layer": ta["layer"],
                           "expert": ta["expert"], "dtype": ta["dtype"]}
    if ta["dtype"] == "packed":
        pa, pb = _packed(ta, ra), _packed(tb, rb)
        ca, sa, za = kernels.unpack(pa)
        cb, sb, zb = kernels.unpack(pb)
        N, K = ca.shape
        block = ta["quant"]["block"]
        codes = np.logical_or.reduceat(ca != cb, np.arange(0, K, block), axis=1)
        sbits = sa.view(np.uint16 if sa.dtype == np.float16 else np.uint32)
        scales = sbits != sb.view(sbits.dtype)
        changed = codes | scales | (za != zb)
        out["changed"] = int(changed.sum())
        out["total"] = int(changed.size)
        out["changed_rows"] = int(changed.any(axis=1).sum())
        da = kernels.dequantize(pa).astype(np.float64)
        db = kernels.dequantize(pb).astype(np.float64)
        out["max_abs_delta"] = _max_abs(da, db)
        if out["changed"] == 0:
            out["note"] = "only padding bytes of the packed layout differ"
    else:
        ba, va = _float_values(ta, ra)
        bb, vb = _float_values(tb, rb)
        out["changed"] = int((ba != bb).sum())
        out["total"] = int(ba.size)
        out["max_abs_delta"] = _max_abs(va, vb)
    return out


def _dict_changes(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    return sorted(k for k in set(a) | set(b) if a.get(k, _MISSING) != b.get(k, _MISSING))


_MISSING = object()


def _tokenizer_change(a: Any, b: Any) -> dict[str, Any]:
    item: dict[str, Any] = {"section": "tokenizer"}
    if a is None or b is None:
        item["change"] = "added" if a is None else "removed"
        return item
    item["keys"] = _dict_changes(a, b)
    va = (a.get("model") or {}).get("vocab") if isinstance(a.get("model"), dict) else None
    vb = (b.get("model") or {}).get("vocab") if isinstance(b.get("model"), dict) else None
    if isinstance(va, dict) and isinstance(vb, dict):
        item["vocab_added"] = len(set(vb) - set(va))
        item["vocab_removed"] = len(set(va) - set(vb))
        item["vocab_reassigned"] = sum(1 for k in set(va) & set(vb) if va[k] != vb[k])
    return item


def _structure(m: dict[str, Any]) -> tuple[int, dict[int, int]]:
    layers = {t["layer"] for t in m["tensors"] if t["layer"] is not None}
    experts: dict[int, set[int]] = {}
    for t in m["tensors"]:
        if t["expert"] is not None:
            experts.setdefault(t["layer"], set()).add(t["expert"])
    return (max(layers) + 1 if layers else 0), {k: len(v) for k, v in sorted(experts.items())}


def diff(a: Union[str, "os.PathLike[str]"], b: Union[str, "os.PathLike[str]"], *,
         details: bool = True) -> DiffResult:
    """Verifies both artifacts and classifies their difference (see the module doc).
    details=False skips reading tensor data (the class does not depend on it)."""
    A, B = verify(a), verify(b)
    res = DiffResult("identical", A.pin, B.pin, {k: [] for k in DIFF_CLASSES[1:]})
    if A.pin == B.pin:
        return res
    ma, mb = A.manifest, B.manifest
    ch = res.changes

    for k in METADATA_SECTIONS:
        if ma["sections"][k] != mb["sections"][k]:
            ch["metadata-only"].append({"section": k, "keys": _dict_changes(ma[k], mb[k])})
    if ma["sections"]["tokenizer"] != mb["sections"]["tokenizer"]:
        ch["tokenizer"].append(_tokenizer_change(ma["tokenizer"], mb["tokenizer"]))
    ga, gb = ma.get("generation"), mb.get("generation")   # None in format 1.0
    if ga != gb:
        item: dict[str, Any] = {"section": "generation"}
        if ga is None or gb is None:
            item["change"] = "added" if ga is None else "removed"
        else:
            item["keys"] = _dict_changes(ga, gb)
        ch["tokenizer"].append(item)
    for k in _dict_changes(ma["config"], mb["config"]):
        item = {"key": k, "a": ma["config"].get(k), "b": mb["config"].get(k)}
        ch["architecture" if k in ARCHITECTURE_KEYS else "config"].append(item)
    if ma["requires"] != mb["requires"]:
        ch["architecture"].append({"key": "requires", "a": ma["requires"], "b": mb["requires"]})
    if ma["format_version"] != mb["format_version"]:
        # The minor version only says which sections exist; those are classified themselves.
        ch["metadata-only"].append({"key": "format_version", "a": ma["format_version"],
                                    "b": mb["format_version"]})

    la, ea = _structure(ma)
    lb, eb = _structure(mb)
    if la != lb:
        ch["architecture"].append({"layers": "count", "a": la, "b": lb})
    if ea != eb:
        ch["architecture"].append({"experts_per_layer": "differ", "a": ea, "b": eb})

    ta = {t["name"]: t for t in ma["tensors"]}
    tb = {t["name"]: t for t in mb["tensors"]}
    for name in sorted(set(ta) - set(tb)):
        ch["architecture"].append({"tensor": name, "change": "removed"})
    for name in sorted(set(tb) - set(ta)):
        ch["architecture"].append({"tensor": name, "change": "added"})
    layout = False
    changed_weights: list[tuple[dict[str, Any], dict[str, Any]]] = []
    for name in sorted(set(ta) & set(tb)):
        x, y = ta[name], tb[name]
        ident = ("role", "layer", "expert", "shape")
        if any(x[k] != y[k] for k in ident):
            ch["architecture"].append({"tensor": name, "change": "identity or shape",
                                       "a": {k: x[k] for k in ident},
                                       "b": {k: y[k] for k in ident}})
        elif _fmt(x) != _fmt(y):
            item = {"tensor": name, "a": _fmt(x), "b": _fmt(y)}
            if details:
                item["max_abs_delta"] = _max_abs(
                    _dequantized(x, A.tensor_bytes(name)).reshape(-1),
                    _dequantized(y, B.tensor_bytes(name)).reshape(-1))
            ch["quantization"].append(item)
        elif x["sha256"] != y["sha256"]:
            changed_weights.append((x, y))
        elif x["offset"] != y["offset"]:
            layout = True
    for x, y in changed_weights:
        ch["weights"].append({"tensor": x["name"]})
        w = {"name": x["name"], "role": x["role"], "layer": x["layer"], "expert": x["expert"],
             "dtype": x["dtype"]}
        if details:
            w = _weight_detail(x, y, A.tensor_bytes(x["name"]), B.tensor_bytes(y["name"]))
        res.weights.append(w)
    res.experts_changed = sorted({(x["layer"], x["expert"]) for x, _ in changed_weights
                                  if x["expert"] is not None})
    if layout or ma["data_length"] != mb["data_length"]:
        ch["metadata-only"].append({"layout": "same tensor bytes at other offsets"})

    res.klass = next((k for k in reversed(DIFF_CLASSES[1:]) if ch[k]), "metadata-only")
    if not any(ch.values()):  # pins differ, yet no section did: cannot happen when verified
        ch["metadata-only"].append({"manifest": "bytes differ"})
    return res
