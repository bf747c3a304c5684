# SPDX-License-Identifier: Apache-2.0
"""Fused 3-D expert tensors in ONNX: transformers 5.x Qwen3-MoE with
``experts_implementation="batched_mm"`` exports ``mlp.experts.gate_up_proj`` ``[E, 2I, H]`` and
``mlp.experts.down_proj`` ``[E, H, I]`` as float initializers read by ``GatherND`` (or
``Gather`` on axis 0) with the routed expert ids, whose rows then enter a batched ``MatMul``.

Each such tensor becomes one record per expert (gate_up split into its gate and up halves) in
Hugging Face orientation [N, K]:
- the orientation comes from the MatMul: the weight as its first input computes ``W @ x``
  (stored [E, N, K]); as its second, ``x @ W`` (stored [E, K, N]); a Transpose(perm [0, 2, 1])
  between them flips it;
- gate_up vs down: the product of gate_up is split in two (one Split, as the dynamo exporter
  writes ``chunk``, or two Slices along the last axis, as the TorchScript exporter writes it),
  one half feeding the activation: that half is the gate; down's product is not split;
- the layer comes from the Hugging Face name of the initializer or the name_scopes of the
  GatherND / MatMul (``model.layers.N.mlp.experts``), ``slice(...)`` noise removed.
No tool quantizes fused 3-D experts (onnxruntime's quantizer handles 2-D constant MatMul
weights only), so a quantized source before the GatherND is refused by name.
"""

from __future__ import annotations

import re
from typing import Any, Optional

import numpy as np

from .mapping import _S, ACTIVATION_OPS, normalize_scope
from .patterns import Graph, WeightRecord, _float_value, attr_int, attr_ints, name_scopes
from .tensors import Decoded, OnnxImportError

_LAYER = re.compile(rf"model{_S}layers{_S}(\d+){_S}mlp{_S}experts(?![A-Za-z0-9]|{_S}\d)")
_PASS = ("Reshape", "Squeeze", "Unsqueeze", "Identity", "Cast")


def _follow(g: Graph, t: str) -> list[tuple[int, int]]:
    """Consumers of ``t`` past shape-only ops: (node, input position)."""
    out = []
    todo = [t]
    seen = set()
    while todo:
        x = todo.pop()
        if x in seen:
            continue
        seen.add(x)
        for ci, j in g.consumers.get(x, ()):
            n = g.nodes[ci]
            if n.op_type in _PASS and j == 0:
                todo.extend(o for o in n.output if o)
            else:
                out.append((ci, j))
    return out


def _feeds_activation(g: Graph, t: str) -> bool:
    return any(g.nodes[ci].op_type in ACTIVATION_OPS for ci, _ in _follow(g, t))


def _layer(g: Graph, src: str, nodes: list[int]) -> Optional[tuple[int, str]]:
    m = _LAYER.search(normalize_scope(src))
    if m:
        return int(m.group(1)), "Hugging Face name"
    for i in nodes:
        for s in reversed(name_scopes(g.nodes[i])):
            m = _LAYER.search(normalize_scope(s))
            if m:
                return int(m.group(1)), "node name_scopes"
    return None


def _halves(g: Graph, lab: str, prod: list[tuple[int, int]], n: int) -> Optional[list[str]]:
    """The two halves (first rows, then last rows) a product of ``n`` rows is split into, or
    None when it is not split. Shape reads of the product do not count."""
    uses = [c for c, _ in prod if g.nodes[c].op_type != "Shape"]
    ops = {g.nodes[c].op_type for c in uses}
    if "Split" in ops:
        outs = [o for o in g.nodes[uses[0]].output]
        if len(uses) != 1 or len(outs) != 2 or n % 2:
            raise OnnxImportError(f"{lab}: the fused gate/up product must be split in two "
                                  f"equal halves")
        return outs
    if "Slice" not in ops:
        return None
    if ops != {"Slice"} or len(uses) != 2 or n % 2:
        raise OnnxImportError(f"{lab}: the fused gate/up product is sliced by "
                              f"{[g.label(c) for c in uses][:3]}: two Slices into equal halves "
                              f"are supported")

    def const(t: str) -> Optional[list[int]]:
        d = g.const(t, lab) if t else None
        return None if d is None or d.is_float else [int(x) for x in d.array.reshape(-1)]

    first, second = (g.nodes[c] for c in uses)
    if const(first.input[1]) != [0]:
        first, second = second, first
    for s in (first, second):
        ins = list(s.input) + [""] * (5 - len(s.input))
        if const(ins[3]) != [-1] or (ins[4] and const(ins[4]) != [1]):
            raise OnnxImportError(f"{lab}: {s.op_type} node '{s.name}' does not slice the "
                                  f"product's last axis with step 1")
    # chunk(2): [0, n/2) and [n/2, n); the middle is a constant or the one tensor both use
    mid = const(first.input[2])
    if (const(first.input[1]) != [0] or mid not in (None, [n // 2])
            or (second.input[1] != first.input[2] and const(second.input[1]) != [n // 2])
            or (const(second.input[2]) or [n])[0] < n):
        raise OnnxImportError(f"{lab}: the Slices of the fused gate/up product do not cut it "
                              f"into the halves [0, {n // 2}) and [{n // 2}, {n})")
    return [first.output[0], second.output[0]]


def _rank(g: Graph, t: str) -> int:
    init = g.inits.get(t)
    return len(init.dims) if init is not None else -1


def fused_expert_records(g: Graph, config: dict[str, Any]) -> list[WeightRecord]:
    out: list[WeightRecord] = []
    for i in g.order:
        n = g.nodes[i]
        if n.domain not in ("", "ai.onnx") or n.op_type not in ("GatherND", "Gather"):
            continue
        src, idx = n.input[0], n.input[1] if len(n.input) > 1 else ""
        if idx not in g.live or src in g.live:
            continue
        lab = f"{g.label(i)}, weight '{src}'"
        p = g.producer.get(src)
        if src not in g.inits and p is not None and g.nodes[p].op_type in (
                "DequantizeLinear", "Quant") and _rank(g, g.nodes[p].input[0]) == 3:
            raise OnnxImportError(f"{lab}: quantized fused 3-D expert weights "
                                  f"({g.nodes[p].op_type} before {n.op_type}) are not supported "
                                  f"(no quantization tool produces them; quantize per-expert 2-D "
                                  f"weights instead)")
        d = g.const(src, lab)
        if d is None or d.array.ndim != 3:
            continue
        if n.op_type == "GatherND" and attr_int(n, "batch_dims", 0) != 0:
            raise OnnxImportError(f"{lab}: GatherND batch_dims {attr_int(n, 'batch_dims', 0)} "
                                  f"is not 0")
        if n.op_type == "Gather" and attr_int(n, "axis", 0) != 0:
            raise OnnxImportError(f"{lab}: Gather over a 3-D weight must use axis 0")
        if not d.is_float:
            raise OnnxImportError(f"{lab}: fused 3-D expert weights of type {d.dtype} are not "
                                  f"supported (float only)")
        arr = d.array
        chain = [i]
        uses = _follow(g, n.output[0])
        flip = False
        if len(uses) == 1 and g.nodes[uses[0][0]].op_type == "Transpose":
            t = uses[0][0]
            perm = attr_ints(g.nodes[t], "perm")
            if perm != [0, 2, 1]:
                raise OnnxImportError(f"{lab}: Transpose perm {perm} after {n.op_type} (only "
                                      f"[0, 2, 1])")
            flip = True
            chain.append(t)
            uses = _follow(g, g.nodes[t].output[0])
        if len(uses) != 1 or g.nodes[uses[0][0]].op_type != "MatMul":
            raise OnnxImportError(f"{lab}: a 3-D weight read by {n.op_type} must feed exactly one "
                                  f"MatMul (found {[g.label(c) for c, _ in uses][:3]})")
        mm, pos = uses[0]
        # stored [E, N, K] when the weight is MatMul's first input (W @ x), else [E, K, N]
        if (pos == 1) != flip:
            arr = np.ascontiguousarray(arr.transpose(0, 2, 1))
        lay = _layer(g, src, [i, mm])
        if lay is None:
            raise OnnxImportError(f"{lab}: fused 3-D expert weights without a layer (no Hugging "
                                  f"Face name, no model.layers.N.mlp.experts name_scopes on "
                                  f"{g.label(i)} or {g.label(mm)})")
        layer, how = lay
        prod = _follow(g, g.nodes[mm].output[0])
        E, N, K = arr.shape
        outs = _halves(g, lab, prod, N)
        if outs is not None:
            first, second = (_feeds_activation(g, outs[0]), _feeds_activation(g, outs[1]))
            if first == second:
                raise OnnxImportError(f"{lab}: cannot tell the gate half from the up half "
                                      f"(neither or both feed the activation)")
            h = N // 2
            gate, up = (arr[:, :h], arr[:, h:]) if first else (arr[:, h:], arr[:, :h])
            parts = [("expert_gate", gate), ("expert_up", up)]
            order = "gate rows first" if first else "up rows first"
        else:
            parts = [("expert_down", arr)]
            order = ""
        sig = f"fused 3-D experts ({n.op_type}), layer from {how}" + (f", {order}" if order
                                                                         else "")
        for role, w in parts:
            for e in range(E):
                what = f"{lab} (expert {e}, {role})"
                value = _float_value(Decoded(np.ascontiguousarray(w[e]), d.onnx_type), what)
                out.append(WeightRecord(
                    kind="linear", node=g.nodes[mm], node_index=mm,
                    label=f"{g.label(mm)} via {g.label(i)} (expert {e})",
                    activation=g.nodes[mm].input[1 - pos], output=g.nodes[mm].output[0],
                    value=value, source=(src, role, e), names=[src],
                    chain=[g.nodes[c] for c in chain], pattern=f"fused 3-D float {d.dtype}",
                    transposed=(pos == 1) != flip, fused_key=(role, layer, e),
                    fused_signal=sig))
    return out
