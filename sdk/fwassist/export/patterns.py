# SPDX-License-Identifier: Apache-2.0
"""Weight patterns of QAT ONNX graphs: finds every weight a MatMul/Gemm/MatMulNBits/Gather/norm
consumes and turns it into a :class:`~fwassist.export.model.QuantizedWeight` (Hugging Face
orientation: N output rows, K inputs) or a float array, bit-exactly.

Accepted chains, read backwards from the consumer's weight input::

    MatMul.B / Gemm.B / Gather.data  <-  [Transpose(perm=[1,0])] [Cast] [Identity]  <-  source
    source := float initializer                                   (float weight, kept float)
            | DequantizeLinear(int initializer)                   (b)
            | DequantizeLinear(QuantizeLinear(float W))           (a) fake quant
            | DequantizeLinear(Clip(QuantizeLinear(float W)))     (c) QCDQ, width from Clip
            | qonnx Quant(float W, scale, zeropt, bitwidth)       (d)
    com.microsoft::MatMulNBits(A, B, scales, [zero_points])      (f)

(e) ``DQ -> Transpose -> MatMul`` is the Transpose case of the first line. Codes of fake quant
are ``clamp(rne(fp32(W) / fp32(s)) + zp)`` with an IEEE float32 division (what onnxruntime's
QuantizeLinear computes); the dequantized weight is ``fp32(q - zp) * s``.

Granularity (per-tensor, per-axis, blocked with a short last block) is expanded to one scale
and zero point per element and then re-blocked along K into blocks of 32, 64 or 128: exactly
(the source block is a multiple of the target, or the whole row), or, for other source
granularities, only when every target block happens to have one scale and one zero point.
"""

from __future__ import annotations

import ast
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Optional, Union

import numpy as np

from .model import BF16Array, QuantizedWeight
from .tensors import (BFLOAT16, FLOAT, FLOAT16, INT2, INT4, QUANT_TYPES, UINT2,
                      UINT4, UINT8, Decoded, ExternalData, OnnxImportError, as_float32,
                      decode_tensor, quant_range, type_name, unpack_subbyte)

SUPPORTED_BITS = (2, 3, 4, 8)
TARGET_BLOCKS = (128, 64, 32)
QONNX_DOMAINS = ("qonnx.custom_op.general", "finn.custom_op.general", "onnx.brevitas")
MS_DOMAIN = "com.microsoft"
NAME_SCOPES_KEY = "pkg.torch.onnx.name_scopes"
SCALE_TYPES = (FLOAT, FLOAT16, BFLOAT16)
# Minimum ai.onnx opset for each sub-byte element type in Q/DQ.
MIN_OPSET = {INT4: 21, UINT4: 21, INT2: 25, UINT2: 25}

if TYPE_CHECKING:
    from onnx import AttributeProto, ModelProto, NodeProto, TensorProto

WeightValue = Union[np.ndarray, QuantizedWeight, BF16Array]
# A weight's role: (role, layer, expert); layer and expert are None where they do not apply.
Key = tuple[str, Optional[int], Optional[int]]
# Identity of a weight's source (tie detection): initializer names, chain outputs, and for a
# fused 3-D expert slice its role and expert index.
Source = tuple[Union[str, int], ...]

# onnx.AttributeProto.AttributeType values
_A_FLOAT, _A_INT, _A_STRING, _A_TENSOR, _A_FLOATS, _A_INTS = 1, 2, 3, 4, 6, 7
_A_TYPE_NAMES = {_A_FLOAT: "a float", _A_INT: "an integer", _A_STRING: "a string",
                 _A_TENSOR: "a tensor", _A_FLOATS: "a list of floats",
                 _A_INTS: "a list of integers"}


def attr_names(node: NodeProto) -> set[str]:
    return {a.name for a in node.attribute}


def _attr(node: NodeProto, name: str, kind: int) -> Optional[AttributeProto]:
    """The attribute ``name`` of ``node`` (None if absent); one of another type is refused by
    name instead of being misread."""
    found: Optional[AttributeProto] = None
    for a in node.attribute:
        if a.name == name:
            found = a
            break
    if found is not None and int(found.type) != kind:
        raise OnnxImportError(f"{node.op_type} node '{node.name}': attribute '{name}' must be "
                              f"{_A_TYPE_NAMES[kind]}")
    return found


def attr_int(node: NodeProto, name: str, default: int) -> int:
    a = _attr(node, name, _A_INT)
    return default if a is None else int(a.i)


def attr_float(node: NodeProto, name: str, default: float) -> float:
    a = _attr(node, name, _A_FLOAT)
    return default if a is None else float(a.f)


def attr_str(node: NodeProto, name: str, default: str) -> str:
    a = _attr(node, name, _A_STRING)
    return default if a is None else bytes(a.s).decode("utf-8", "replace")


def attr_ints(node: NodeProto, name: str) -> Optional[list[int]]:
    a = _attr(node, name, _A_INTS)
    return None if a is None else [int(x) for x in a.ints]


def attr_floats(node: NodeProto, name: str) -> Optional[list[float]]:
    a = _attr(node, name, _A_FLOATS)
    return None if a is None else [float(x) for x in a.floats]


def attr_tensor(node: NodeProto, name: str) -> Optional[TensorProto]:
    a = _attr(node, name, _A_TENSOR)
    return None if a is None else a.t


def node_metadata(node: NodeProto) -> dict[str, str]:
    return {p.key: p.value for p in node.metadata_props}


def name_scopes(node: NodeProto) -> list[str]:
    raw = node_metadata(node).get(NAME_SCOPES_KEY)
    if not raw:
        return []
    try:
        v = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return []
    return [s for s in v if isinstance(s, str)] if isinstance(v, (list, tuple)) else []


@dataclass
class WeightRecord:
    """One weight use found in the graph."""

    kind: str                       # "linear", "gather" or "norm"
    node: NodeProto                 # the consumer
    node_index: int
    label: str                      # the consumer, for messages
    activation: str                 # the consumer's activation input
    output: str                     # the consumer's (first) output
    value: Optional[WeightValue]    # HF orientation; None when ``error`` is set
    source: Source                  # identity of the weight's source (tie detection)
    names: list[str]                # initializer names along the chain (source first)
    chain: list[NodeProto]          # nodes between the source and the consumer
    pattern: str = ""
    transposed: bool = False        # stored [K, N] (HF value = stored.T)
    notes: list[str] = field(default_factory=list)
    error: Optional[OnnxImportError] = None
    fused_key: Optional[Key] = None      # the role of a fused 3-D expert slice
    fused_signal: str = ""

    @property
    def shape(self) -> tuple[int, ...]:
        v = self.value
        if isinstance(v, QuantizedWeight):
            return tuple(v.q.shape)
        if isinstance(v, BF16Array):
            return tuple(v.bits.shape)
        return tuple(v.shape) if v is not None else ()

    @property
    def tensor_name(self) -> str:
        return self.names[0] if self.names else "?"

    def what(self) -> str:
        return f"{self.label}, weight '{self.tensor_name}'"

    def weight(self) -> WeightValue:
        """The value; a record whose weight could not be read raises its error."""
        if self.value is None:
            raise self.error or OnnxImportError(f"{self.what()}: no value")
        return self.value


class Graph:
    """Index of a model's main graph: producers, consumers, constants, liveness."""

    def __init__(self, model: ModelProto, base_dir: str):
        self.model = model
        g = model.graph
        self.opsets = {(imp.domain or ""): int(imp.version) for imp in model.opset_import}
        if "ai.onnx" in self.opsets and "" not in self.opsets:
            self.opsets[""] = self.opsets["ai.onnx"]
        self.opset = self.opsets.get("", 0)
        self.nodes = list(g.node)
        self.inits = {t.name: t for t in g.initializer}
        self.external = ExternalData(base_dir)
        self.producer: dict[str, int] = {}
        self.consumers: dict[str, list[tuple[int, int]]] = defaultdict(list)
        for i, n in enumerate(self.nodes):
            for o in n.output:
                if o:
                    self.producer[o] = i
            for j, x in enumerate(n.input):
                if x:
                    self.consumers[x].append((i, j))
        self.graph_inputs = [i.name for i in g.input if i.name not in self.inits]
        self.graph_outputs = [o.name for o in g.output]
        self._const_cache: dict[str, Optional[Decoded]] = {}
        self.order = self._topo_order()
        self.live = self._live_tensors()
        self.constant = self._constant_tensors()

    # -- naming ---------------------------------------------------------------------------
    def label(self, idx: int) -> str:
        n = self.nodes[idx]
        dom = f"{n.domain}::" if n.domain not in ("", "ai.onnx") else ""
        if n.name:
            return f"{dom}{n.op_type} node '{n.name}'"
        out = n.output[0] if n.output else "?"
        return f"{dom}{n.op_type} node #{idx} (output '{out}')"

    # -- structure ------------------------------------------------------------------------
    def _topo_order(self) -> list[int]:
        indeg = [0] * len(self.nodes)
        for i, n in enumerate(self.nodes):
            indeg[i] = len({x for x in n.input if x and x in self.producer})
        ready = deque(i for i, d in enumerate(indeg) if d == 0)
        order: list[int] = []
        seen_edges: dict[int, set[str]] = defaultdict(set)
        while ready:
            i = ready.popleft()
            order.append(i)
            for o in self.nodes[i].output:
                for c, _ in self.consumers.get(o, ()):
                    if o in seen_edges[c]:
                        continue
                    seen_edges[c].add(o)
                    indeg[c] -= 1
                    if indeg[c] == 0:
                        ready.append(c)
        if len(order) != len(self.nodes):
            raise OnnxImportError("graph: the nodes contain a cycle or an undefined input")
        return order

    def _live_tensors(self) -> set[str]:
        """Tensors whose values depend on the graph's inputs (not only on their shapes)."""
        live = set(self.graph_inputs)
        for i in self.order:
            n = self.nodes[i]
            if n.op_type in ("Shape", "Size") and n.domain in ("", "ai.onnx"):
                continue
            if any(x in live for x in n.input if x):
                live.update(o for o in n.output if o)
        return live

    def _constant_tensors(self) -> set[str]:
        """Tensors computed from initializers and Constant nodes only."""
        const = set(self.inits)
        for i in self.order:
            n = self.nodes[i]
            ins = [x for x in n.input if x]
            if n.op_type in ("Shape", "Size") or any(x not in const for x in ins):
                continue
            if not ins and n.op_type != "Constant":
                continue
            const.update(o for o in n.output if o)
        return const

    # -- constants ------------------------------------------------------------------------
    def const(self, name: str, what: str) -> Optional[Decoded]:
        """The value of a constant tensor (initializer, Constant node, Identity of one)."""
        if name in self._const_cache:
            return self._const_cache[name]
        val: Optional[Decoded] = None
        if name in self.inits:
            val = decode_tensor(self.inits[name], f"{what}, tensor '{name}'", self.external)
        elif name in self.producer:
            n = self.nodes[self.producer[name]]
            if n.op_type == "Constant" and n.domain in ("", "ai.onnx"):
                tensor = attr_tensor(n, "value")
                floats = attr_floats(n, "value_floats")
                ints = attr_ints(n, "value_ints")
                has = attr_names(n)
                if tensor is not None:
                    val = decode_tensor(tensor, f"{what}, tensor '{name}'", self.external)
                elif "value_float" in has:
                    val = Decoded(np.array(attr_float(n, "value_float", 0.0), np.float32), FLOAT)
                elif floats is not None:
                    val = Decoded(np.array(floats, np.float32), FLOAT)
                elif "value_int" in has:
                    val = Decoded(np.array(attr_int(n, "value_int", 0), np.int64), 7)
                elif ints is not None:
                    val = Decoded(np.array(ints, np.int64), 7)
                else:
                    raise OnnxImportError(f"{what}: Constant '{name}' has an unsupported value "
                                          f"attribute")
            elif n.op_type == "Identity" and n.domain in ("", "ai.onnx"):
                val = self.const(n.input[0], what)
        self._const_cache[name] = val
        return val

    def need_const(self, name: str, what: str, role: str) -> Decoded:
        v = self.const(name, what)
        if v is None:
            raise OnnxImportError(f"{what}: {role} '{name}' is not a constant initializer")
        return v


# ---------------------------------------------------------------------------------------
# granularity


@dataclass
class _Gran:
    kind: str            # "tensor", "axis", "block", "broadcast"
    axis: int = 0        # stored axis
    block: int = 0


def _expand_param(p: np.ndarray, xshape: tuple[int, ...], axis: int, block: int, what: str,
                  role: str) -> tuple[np.ndarray, _Gran]:
    """ONNX Q/DQ granularity: per-tensor (one element), per-axis (1-D of D[axis]) or blocked
    (same rank, D[axis] replaced by ceil(D[axis]/block)); returns per-element values."""
    r = len(xshape)
    if block == 0 and p.size == 1 and p.ndim <= 1:
        return np.broadcast_to(p.reshape(()), xshape), _Gran("tensor")
    if axis < -r or axis >= r:
        raise OnnxImportError(f"{what}: axis {axis} out of range for a rank-{r} input")
    ax = axis % r
    if block == 0:
        if p.ndim == 1 and p.shape[0] == xshape[ax]:
            shp = [1] * r
            shp[ax] = xshape[ax]
            return np.broadcast_to(p.reshape(shp), xshape), _Gran("axis", ax)
        raise OnnxImportError(f"{what}: {role} shape {list(p.shape)} fits neither per-tensor nor "
                              f"per-axis (axis {axis}) quantization of shape {list(xshape)}")
    if block < 0:
        raise OnnxImportError(f"{what}: negative block_size {block}")
    want = list(xshape)
    want[ax] = -(-xshape[ax] // block)
    if list(p.shape) != want:
        raise OnnxImportError(f"{what}: blocked {role} has shape {list(p.shape)}, expected "
                              f"{want} for shape {list(xshape)}, axis {axis}, block_size {block}")
    e = np.repeat(p, block, axis=ax)
    e = np.take(e, np.arange(xshape[ax]), axis=ax)
    return e, _Gran("block", ax, block)


def _source_block(g: _Gran, k_axis: int, K: int) -> int:
    """Block length along K (stored axis ``k_axis``) that the declared granularity implies."""
    if g.kind == "tensor":
        return K
    if g.kind == "axis":
        return K if g.axis != k_axis else 1
    if g.kind == "block":
        return g.block if g.axis == k_axis else 1
    return 1


def _scale_bits(s: np.ndarray) -> np.ndarray:
    return s.view(np.uint16) if s.dtype.itemsize == 2 else s.view(np.uint32)


def _blocks_constant(a: np.ndarray, b: int) -> bool:
    N, K = a.shape
    nb = -(-K // b)
    pad = nb * b - K
    if pad:
        a = np.concatenate([a, np.repeat(a[:, -1:], pad, axis=1)], axis=1)
    blk = a.reshape(N, nb, b)
    return bool(np.all(blk == blk[:, :, :1]))


def finish_quantized(q: np.ndarray, s_el: np.ndarray, s_type: int, z_el: Optional[np.ndarray],
                     src_block: int, bits: int, signed: bool, lo: int, hi: int, what: str,
                     declared: str) -> tuple[QuantizedWeight, list[str]]:
    """Per-element (N, K) codes, scales (storage dtype; bf16 as uint16 bits) and zero points
    to a QuantizedWeight with blocks of 32/64/128 along K, exactly, or refuse."""
    notes: list[str] = []
    N, K = q.shape
    if bits not in SUPPORTED_BITS:
        raise OnnxImportError(f"{what}: {declared} declares a {bits}-bit weight; supported "
                              f"widths are {', '.join(map(str, SUPPORTED_BITS))}")
    s_f32 = as_float32(Decoded(np.ascontiguousarray(s_el), s_type))
    if not np.all(np.isfinite(s_f32)):
        raise OnnxImportError(f"{what}: scale contains NaN or Inf")
    if src_block >= K:
        b = TARGET_BLOCKS[0]
        fallback = False
    else:
        cand = [t for t in TARGET_BLOCKS if src_block % t == 0]
        b = cand[0] if cand else TARGET_BLOCKS[-1]
        fallback = not cand
    sbits = _scale_bits(np.ascontiguousarray(s_el))
    ok = _blocks_constant(sbits, b) and (z_el is None or _blocks_constant(z_el, b))
    if not ok:
        if fallback:
            raise OnnxImportError(
                f"{what}: quantization block of {src_block} along K cannot be stored: supported "
                f"blocks are {', '.join(map(str, sorted(TARGET_BLOCKS)))} (or multiples of 32, "
                f"or whole rows), and re-blocking to {b} is not exact because the scales or "
                f"zero points differ inside a {b}-wide block")
        raise OnnxImportError(f"{what}: scales differ inside a {b}-wide block along K")
    if fallback:
        notes.append(f"{what}: source granularity (block {src_block} along K) re-blocked to "
                     f"{b}: every {b}-wide block has a single scale and zero point")
    elif src_block != b and src_block < K:
        notes.append(f"{what}: source block {src_block} stored as blocks of {b} (scales "
                     f"replicated)")
    q64 = q.astype(np.int64)
    if q64.size and (q64.min() < lo or q64.max() > hi):
        raise OnnxImportError(f"{what}: codes [{q64.min()}, {q64.max()}] exceed the "
                              f"{bits}-bit range [{lo}, {hi}] declared by {declared}")
    cols = np.arange(0, K, b)
    if s_type == BFLOAT16:
        scales = np.ascontiguousarray(s_f32[:, cols])
        notes.append(f"{what}: bfloat16 scales stored as float32 (exact)")
    elif s_type == FLOAT16:
        scales = np.ascontiguousarray(s_el[:, cols].astype(np.float16))
    else:
        scales = np.ascontiguousarray(s_el[:, cols].astype(np.float32))
    zp = None
    if z_el is not None:
        z64 = np.asarray(z_el, dtype=np.int64)
        if z64.size and (z64.min() < lo or z64.max() > hi):
            raise OnnxImportError(f"{what}: zero points [{z64.min()}, {z64.max()}] exceed the "
                                  f"{bits}-bit range [{lo}, {hi}] declared by {declared}")
        zb = z64[:, cols]
        if not (signed and not np.any(zb)):
            zp = np.ascontiguousarray(zb.astype(np.int8 if signed else np.uint8))
    codes = np.ascontiguousarray(q64.astype(np.int8 if signed else np.uint8))
    return QuantizedWeight(q=codes, scales=scales, zero_points=zp, bits=bits, block=b,
                           signed=signed), notes


def declared_from_range(lo: int, hi: int, what: str, declared: str) -> tuple[int, bool]:
    """Width and signedness a code range [lo, hi] declares (smallest container)."""
    if lo > hi:
        raise OnnxImportError(f"{what}: {declared} is empty ([{lo}, {hi}])")
    signed = lo < 0
    for b in range(1, 33):
        a, c = quant_range(b, signed)
        if a <= lo and hi <= c:
            return b, signed
    raise OnnxImportError(f"{what}: {declared} [{lo}, {hi}] is too wide")


# ---------------------------------------------------------------------------------------
# the resolver


LINEAR_CONSUMERS = {("MatMul", 1), ("Gemm", 1), ("Gather", 0)}


@dataclass
class Details:
    """How a weight was reached from its consumer."""

    names: list[str]                # initializer names along the chain (source first)
    chain: list[NodeProto]          # nodes between the source and the consumer
    pattern: str
    transposed: bool                # stored [K, N]
    notes: list[str]
    out_type: int = FLOAT           # element type the source graph dequantizes to


@dataclass
class DQValues:
    """A DequantizeLinear node's codes and per-element parameters (see Resolver.dq_values)."""

    what: str
    codes: np.ndarray               # int64, the input's shape
    s_el: np.ndarray                # per-element scale, storage dtype
    s_type: int
    z_el: Optional[np.ndarray]      # per-element zero point (int64)
    gran: _Gran
    bits: int
    signed: bool
    lo: int
    hi: int
    declared: str                   # what declared the width, for messages
    out_type: int
    names: list[str]
    chain: list[NodeProto]
    pattern: str
    notes: list[str]
    codes_type: int


class Resolver:
    def __init__(self, graph: Graph):
        self.g = graph

    # Consumers allowed for an intermediate tensor of a weight chain.
    def _check_only_weight_uses(self, t: str, what: str, producer_desc: str) -> None:
        for ci, j in self.g.consumers.get(t, ()):
            n = self.g.nodes[ci]
            if n.domain not in ("", "ai.onnx"):
                ok = False
            elif (n.op_type, j) in LINEAR_CONSUMERS:
                ok = True
            elif n.op_type in ("Transpose", "Cast", "Identity") and j == 0:
                self._check_only_weight_uses(n.output[0], what, producer_desc)
                ok = True
            else:
                ok = False
            if not ok:
                raise OnnxImportError(f"{what}: the output '{t}' of {producer_desc} also feeds "
                                      f"{self.g.label(ci)} (input {j}); a dequantized weight may "
                                      f"only feed MatMul/Gemm weight inputs or Gather")

    def _float_leaf(self, t: str, what: str) -> tuple[Decoded, list[str], list[NodeProto], bool]:
        """A float constant reached through Transpose/Cast/Identity. Returns the value (in the
        orientation seen at ``t``), the source names, the chain, and whether it transposed."""
        chain: list[NodeProto] = []
        casts: list[int] = []
        flips = 0
        cur = t
        while True:
            if cur in self.g.inits:
                break
            if cur not in self.g.producer:
                raise OnnxImportError(f"{what}: '{cur}' is a graph input, not a constant weight")
            n = self.g.nodes[self.g.producer[cur]]
            if n.domain not in ("", "ai.onnx"):
                break
            if n.op_type == "Transpose":
                perm = attr_ints(n, "perm")
                if perm not in (None, [1, 0]):
                    raise OnnxImportError(f"{what}: Transpose with perm {perm} on the weight path")
                flips ^= 1
            elif n.op_type == "Cast":
                casts.append(attr_int(n, "to", 0))
            elif n.op_type != "Identity":
                break
            chain.append(n)
            cur = n.input[0]
        src_node = self.g.nodes[self.g.producer[cur]] if cur in self.g.producer else None
        val = self.g.const(cur, what)
        if val is None:
            op = f"{src_node.op_type}" if src_node is not None else "?"
            raise OnnxImportError(f"{what}: the weight is computed by an unsupported {op} node "
                                  f"('{cur}'); supported: initializer, Transpose, Cast, "
                                  f"QuantizeLinear/DequantizeLinear, Clip, qonnx Quant, "
                                  f"MatMulNBits")
        arr = val.array
        if flips:
            if arr.ndim != 2:
                raise OnnxImportError(f"{what}: Transpose of a rank-{arr.ndim} weight")
            arr = np.ascontiguousarray(arr.T)
        val = Decoded(arr, val.onnx_type)
        for to in reversed(casts):
            val = _apply_cast(val, to, what)
        return val, [cur], chain, bool(flips)

    # -- entry points -----------------------------------------------------------------------
    def resolve(self, t: str, nk: bool, what: str) -> tuple[WeightValue, Details]:
        """Resolves the weight tensor ``t`` that a consumer reads as [N, K] (``nk``) or
        [K, N]. Returns the value in HF orientation and details."""
        chain: list[NodeProto] = []
        names: list[str] = []
        cur = t
        flips = 0
        casts: list[int] = []
        while True:
            if cur in self.g.inits:
                break
            p = self.g.producer.get(cur)
            if p is None:
                raise OnnxImportError(f"{what}: '{cur}' is a graph input, not a constant weight")
            n = self.g.nodes[p]
            if n.domain in ("", "ai.onnx") and n.op_type in ("Transpose", "Identity", "Cast"):
                if n.op_type == "Transpose":
                    perm = attr_ints(n, "perm")
                    if perm not in (None, [1, 0]):
                        raise OnnxImportError(f"{what}: {self.g.label(p)} has perm {perm}; only "
                                              f"a 2-D transpose is supported on a weight path")
                    flips ^= 1
                elif n.op_type == "Cast":
                    casts.append(attr_int(n, "to", 0))
                chain.append(n)
                cur = n.input[0]
                continue
            if n.domain in ("", "ai.onnx") and n.op_type == "DequantizeLinear":
                self._check_only_weight_uses(cur, what, self.g.label(p))
                stored_nk = nk ^ bool(flips)
                qw, det = self.dequantize_linear(p, stored_nk, what)
                for to in casts:
                    if to not in (FLOAT, FLOAT16, BFLOAT16):
                        raise OnnxImportError(f"{what}: Cast to {type_name(to)} after "
                                              f"DequantizeLinear")
                out_t = det.out_type
                narrowed = [t for t in casts if t in (FLOAT16, BFLOAT16)]
                if out_t != FLOAT or narrowed:
                    out_t = out_t if out_t != FLOAT else narrowed[0]
                    det.notes.append(
                        f"{what}: the source graph rounds each dequantized weight to "
                        f"{type_name(out_t)} (DequantizeLinear output type or a Cast); the "
                        f"imported weight is the exact fp32(q - zp) * s")
                det.chain = chain + [n] + det.chain
                return qw, det
            if n.domain in QONNX_DOMAINS and n.op_type == "Quant":
                stored_nk = nk ^ bool(flips)
                qw, det = self.qonnx_quant(p, stored_nk, what)
                det.chain = chain + [n] + det.chain
                return qw, det
            if cur in self.g.producer and self.g.const(cur, what) is not None:
                break
            raise OnnxImportError(f"{what}: unsupported {self.g.label(p)} on the weight path "
                                  f"(supported: Transpose, Cast, Identity, DequantizeLinear, "
                                  f"QuantizeLinear, Clip, qonnx Quant, MatMulNBits)")
        # a float weight
        val = self.g.const(cur, what)
        if val is None:
            raise OnnxImportError(f"{what}: '{cur}' is not a constant")
        names.append(cur)
        if not val.is_float:
            raise OnnxImportError(f"{what}: integer tensor '{cur}' ({val.dtype}) used as a weight "
                                  f"without DequantizeLinear")
        for to in reversed(casts):
            val = _apply_cast(val, to, what)
        arr = val.array
        if arr.ndim != 2:
            raise OnnxImportError(f"{what}: weight '{cur}' has rank {arr.ndim}; only 2-D "
                                  f"weights are supported (stacked experts are not)")
        stored_nk = nk ^ bool(flips)
        if not stored_nk:
            arr = arr.T
        value = _float_value(Decoded(np.ascontiguousarray(arr), val.onnx_type), what)
        return value, Details(names, chain, f"float {val.dtype}", not stored_nk, [])

    # -- DequantizeLinear ---------------------------------------------------------------------
    def _check_type_opset(self, t: int, what: str, op: str) -> None:
        need = MIN_OPSET.get(t)
        if need and self.g.opset < need:
            raise OnnxImportError(f"{what}: {op} with {type_name(t)} needs ai.onnx opset >= "
                                  f"{need}, the model has {self.g.opset}")

    def dequantize_linear(self, p: int, stored_nk: bool,
                          what: str) -> tuple[QuantizedWeight, Details]:
        v = self.dq_values(p, what)
        w = v.what
        codes, s_el, z_el = v.codes, v.s_el, v.z_el
        if codes.ndim != 2:
            raise OnnxImportError(f"{w}: weight has rank {codes.ndim}; only 2-D weights are "
                                  f"supported")
        k_axis = 1 if stored_nk else 0
        K = codes.shape[k_axis]
        src_block = _source_block(v.gran, k_axis, K)
        q, s2, z2 = codes, s_el, z_el
        if not stored_nk:
            q, s2 = q.T, s2.T
            z2 = z2.T if z2 is not None else None
        qw, notes = finish_quantized(np.ascontiguousarray(q), np.ascontiguousarray(s2),
                                     v.s_type, None if z2 is None else np.ascontiguousarray(z2),
                                     src_block, v.bits, v.signed, v.lo, v.hi, w, v.declared)
        return qw, Details(v.names, v.chain, v.pattern, not stored_nk, v.notes + notes,
                           v.out_type)

    def dq_values(self, p: int, what: str) -> DQValues:
        """A DequantizeLinear node's integer codes (any rank; computed for fake quant), its
        per-element scale (storage dtype) and zero point, and the declared width."""
        n = self.g.nodes[p]
        lab = self.g.label(p)
        w = f"{what} ({lab})"
        axis = attr_int(n, "axis", 1)
        block = attr_int(n, "block_size", 0)
        if block and self.g.opset < 21:
            raise OnnxImportError(f"{w}: block_size needs opset >= 21")
        sc = self.g.need_const(n.input[1], w, "scale")
        if sc.onnx_type not in SCALE_TYPES:
            raise OnnxImportError(f"{w}: scale '{n.input[1]}' has type {sc.dtype}; supported "
                                  f"float32, float16, bfloat16")
        zpd = None
        if len(n.input) > 2 and n.input[2]:
            zpd = self.g.need_const(n.input[2], w, "zero point")
        out_t = attr_int(n, "output_dtype", 0) or sc.onnx_type
        if "output_dtype" in attr_names(n) and self.g.opset < 23:
            raise OnnxImportError(f"{w}: output_dtype needs opset >= 23")
        if out_t not in (FLOAT, FLOAT16, BFLOAT16):
            raise OnnxImportError(f"{w}: output type {type_name(out_t)} is not supported")
        x = n.input[0]
        chain: list[NodeProto] = []
        names: list[str] = []
        xp = self.g.producer.get(x)
        clip: Optional[int] = None       # the Clip node of Q -> Clip -> DQ
        codes_d = self.g.const(x, w) if x in self.g.inits or xp is not None else None
        if codes_d is not None:
            names.append(x)
            if codes_d.onnx_type not in QUANT_TYPES:
                raise OnnxImportError(f"{w}: codes '{x}' have type {codes_d.dtype}; supported "
                                      f"int2/uint2/int4/uint4/int8/uint8")
            ctype = codes_d.onnx_type
            codes = codes_d.array.astype(np.int64)
            pattern = "int initializer -> DQ"
        elif xp is not None:
            qn = self.g.nodes[xp]
            if qn.op_type == "Clip" and qn.domain in ("", "ai.onnx"):
                clip = xp
                chain.append(qn)
                self._check_only_q_uses(x, w, self.g.label(xp), ("DequantizeLinear",))
                qx = qn.input[0]
                qp = self.g.producer.get(qx)
                if qp is None or self.g.nodes[qp].op_type != "QuantizeLinear":
                    raise OnnxImportError(f"{w}: Clip '{x}' is not fed by a QuantizeLinear")
                self._check_only_q_uses(qx, w, self.g.label(qp), ("Clip",))
                pattern = "Q -> Clip -> DQ"
            elif qn.op_type == "QuantizeLinear" and qn.domain in ("", "ai.onnx"):
                qp = xp
                self._check_only_q_uses(x, w, self.g.label(qp), ("DequantizeLinear",))
                pattern = "Q -> DQ (fake quant)"
            else:
                raise OnnxImportError(f"{w}: codes come from unsupported {self.g.label(xp)}")
            codes, ctype, qnames, qchain = self.quantize_linear(qp, what)
            names += qnames
            chain += [self.g.nodes[qp]] + qchain
        else:
            raise OnnxImportError(f"{w}: codes '{x}' are a graph input, not a constant")
        w = f"{what} ({lab}, {'codes' if pattern.startswith('int') else 'float weight'} " \
            f"'{names[0]}')"
        self._check_type_opset(ctype, w, "DequantizeLinear")
        if zpd is not None and zpd.onnx_type != ctype:
            raise OnnxImportError(f"{w}: zero point type {zpd.dtype} differs from the codes' "
                                  f"type {type_name(ctype)}")
        bits, signed = QUANT_TYPES[ctype]
        lo, hi = quant_range(bits, signed)
        declared = f"element type {type_name(ctype)}"
        extra: list[str] = []
        if clip is not None:
            clo, chi = self._clip_bounds(self.g.nodes[clip], ctype, w)
            codes = np.clip(codes, clo, chi)
            lo2, hi2 = max(lo, clo), min(hi, chi)
            declared = f"Clip range [{clo}, {chi}] ({self.g.label(clip)})"
            bits, signed = declared_from_range(lo2, hi2, w, declared)
            lo, hi = quant_range(bits, signed)
            if lo2 == -hi2:
                extra.append(f"{what}: narrow range [{lo2}, {hi2}] declared by Clip")
        s_el, gs = _expand_param(sc.array, codes.shape, axis, block, w, "scale")
        z_el = None
        if zpd is not None:
            if sc.array.shape != zpd.array.shape and not (sc.array.size == 1 == zpd.array.size):
                raise OnnxImportError(f"{w}: zero point shape {list(zpd.array.shape)} differs "
                                      f"from the scale shape {list(sc.array.shape)}")
            z_el, _ = _expand_param(zpd.array.astype(np.int64), codes.shape, axis, block, w,
                                    "zero point")
        return DQValues(w, codes, s_el, sc.onnx_type, z_el, gs, bits, signed, lo, hi, declared,
                        out_t, names, chain, pattern, extra, ctype)

    def _check_only_q_uses(self, t: str, what: str, desc: str, allowed: tuple[str, ...]) -> None:
        for ci, j in self.g.consumers.get(t, ()):
            n = self.g.nodes[ci]
            if n.op_type not in allowed or j != 0:
                raise OnnxImportError(f"{what}: the integer output '{t}' of {desc} also feeds "
                                      f"{self.g.label(ci)}")

    def _clip_bounds(self, clip: NodeProto, ctype: int, what: str) -> tuple[int, int]:
        lo, hi = quant_range(*QUANT_TYPES[ctype])
        if attr_names(clip) & {"min", "max"}:
            raise OnnxImportError(f"{what}: Clip with min/max attributes (opset < 11) on codes")
        vals = []
        for idx, default in ((1, lo), (2, hi)):
            if len(clip.input) > idx and clip.input[idx]:
                d = self.g.need_const(clip.input[idx], what, "Clip bound")
                if d.array.size != 1 or d.onnx_type != ctype:
                    raise OnnxImportError(f"{what}: Clip bound '{clip.input[idx]}' must be a "
                                          f"scalar {type_name(ctype)}")
                vals.append(int(d.array.reshape(-1)[0]))
            else:
                vals.append(default)
        return vals[0], vals[1]

    # -- QuantizeLinear -----------------------------------------------------------------------
    def quantize_linear(self, p: int,
                        what: str) -> tuple[np.ndarray, int, list[str], list[NodeProto]]:
        """Codes of a fake-quant QuantizeLinear on a float constant, as onnxruntime computes
        them: clamp(rne(fp32(W) / fp32(s)) + zp), IEEE float32 division."""
        n = self.g.nodes[p]
        lab = self.g.label(p)
        w = f"{what} ({lab}, float weight '{n.input[0]}')"
        axis = attr_int(n, "axis", 1)
        block = attr_int(n, "block_size", 0)
        has = attr_names(n)
        sc = self.g.need_const(n.input[1], w, "scale")
        zpd = None
        if len(n.input) > 2 and n.input[2]:
            zpd = self.g.need_const(n.input[2], w, "zero point")
        if zpd is not None:
            otype = zpd.onnx_type
            if attr_int(n, "output_dtype", 0) not in (0, otype):
                raise OnnxImportError(f"{w}: output_dtype differs from the zero point type")
        else:
            otype = attr_int(n, "output_dtype", 0) or UINT8
        if otype not in QUANT_TYPES:
            raise OnnxImportError(f"{w}: QuantizeLinear to {type_name(otype)} is not supported "
                                  f"(int2/uint2/int4/uint4/int8/uint8)")
        self._check_type_opset(otype, w, "QuantizeLinear")
        if sc.onnx_type != FLOAT:
            raise OnnxImportError(
                f"{w}: QuantizeLinear with a {sc.dtype} scale is refused: onnxruntime and the "
                f"ONNX reference divide in different precisions there, so the codes are "
                f"ambiguous (use float32 scales for fake quant)")
        precision = attr_int(n, "precision", 0)
        if precision not in (0, FLOAT):
            raise OnnxImportError(f"{w}: QuantizeLinear precision {type_name(precision)} "
                                  f"is not supported (float32 only)")
        xval, xnames, xchain, _ = self._float_leaf(n.input[0], w)
        if xval.onnx_type != FLOAT:
            raise OnnxImportError(
                f"{w}: QuantizeLinear input '{n.input[0]}' is {xval.dtype}; only float32 fake "
                f"quant is supported (onnxruntime and the ONNX reference disagree otherwise)")
        W = xval.array.astype(np.float32)
        if not np.all(np.isfinite(W)):
            raise OnnxImportError(f"{w}: weight '{xnames[0]}' contains NaN or Inf")
        s = sc.array.astype(np.float32)
        if not np.all(np.isfinite(s)):
            raise OnnxImportError(f"{w}: scale '{n.input[1]}' contains NaN or Inf")
        if np.any(s == 0):
            raise OnnxImportError(f"{w}: scale '{n.input[1]}' contains zero")
        s_el, _ = _expand_param(s, W.shape, axis, block, w, "scale")
        lo, hi = quant_range(*QUANT_TYPES[otype])
        r = np.divide(W, s_el, dtype=np.float32)          # IEEE float32 division
        r = np.rint(np.clip(r, -(1 << 20), 1 << 20)).astype(np.int64)
        if zpd is not None:
            if zpd.array.shape != sc.array.shape and not (sc.array.size == 1 == zpd.array.size):
                raise OnnxImportError(f"{w}: zero point shape differs from the scale shape")
            z_el, _ = _expand_param(zpd.array.astype(np.int64), W.shape, axis, block, w,
                                    "zero point")
            r = r + z_el
        codes = np.clip(r, lo, hi)
        return codes, otype, xnames, xchain

    # -- qonnx Quant -----------------------------------------------------------------------
    def qonnx_quant(self, p: int, stored_nk: bool,
                    what: str) -> tuple[QuantizedWeight, Details]:
        n = self.g.nodes[p]
        w = f"{what} ({self.g.label(p)}, float weight '{n.input[0]}')"
        signed = bool(attr_int(n, "signed", 1))
        narrow = bool(attr_int(n, "narrow", 0))
        mode = attr_str(n, "rounding_mode", "ROUND").upper()
        if mode != "ROUND":
            raise OnnxImportError(f"{w}: rounding_mode {mode} is not supported (ROUND only)")
        if len(n.input) != 4:
            raise OnnxImportError(f"{w}: Quant needs 4 inputs (x, scale, zeropt, bitwidth)")
        bw = self.g.need_const(n.input[3], w, "bitwidth")
        bwv = as_float32(bw) if bw.is_float else bw.array.astype(np.float64)
        if bwv.size != 1 or not np.isfinite(bwv).all() or float(bwv.reshape(-1)[0]) % 1:
            raise OnnxImportError(f"{w}: bitwidth must be a constant integer scalar")
        bits = int(bwv.reshape(-1)[0])
        declared = f"qonnx bitwidth {bits} (signed={int(signed)}, narrow={int(narrow)})"
        if bits not in SUPPORTED_BITS:
            raise OnnxImportError(f"{w}: {declared} declares a {bits}-bit weight; supported "
                                  f"widths are {', '.join(map(str, SUPPORTED_BITS))}")
        sc = self.g.need_const(n.input[1], w, "scale")
        if sc.onnx_type != FLOAT:
            raise OnnxImportError(f"{w}: qonnx Quant scale must be float32, got {sc.dtype}")
        zd = self.g.need_const(n.input[2], w, "zeropt")
        xval, xnames, xchain, _ = self._float_leaf(n.input[0], w)
        if xval.onnx_type != FLOAT:
            raise OnnxImportError(f"{w}: qonnx Quant input must be float32, got {xval.dtype}")
        W = xval.array.astype(np.float32)
        if W.ndim != 2:
            raise OnnxImportError(f"{w}: weight has rank {W.ndim}; only 2-D weights are supported")
        s = sc.array.astype(np.float32)
        z = as_float32(zd) if zd.is_float else zd.array.astype(np.float32)
        if not np.all(np.isfinite(W)):
            raise OnnxImportError(f"{w}: weight '{xnames[0]}' contains NaN or Inf")
        if not np.all(np.isfinite(s)) or np.any(s == 0):
            raise OnnxImportError(f"{w}: scale contains NaN, Inf or zero")
        if not np.all(np.isfinite(z)) or np.any(z != np.rint(z)):
            raise OnnxImportError(f"{w}: zeropt must be integers")
        try:
            s_el = np.broadcast_to(s, W.shape)
            z_el = np.broadcast_to(z, W.shape)
        except ValueError:
            raise OnnxImportError(f"{w}: scale {list(s.shape)} / zeropt {list(z.shape)} do not "
                                  f"broadcast to the weight {list(W.shape)}") from None
        if signed:
            lo, hi = -(1 << (bits - 1)) + int(narrow), (1 << (bits - 1)) - 1
        else:
            lo, hi = 0, (1 << bits) - 1 - int(narrow)
        y = np.divide(W, s_el, dtype=np.float32) + z_el          # float32, as qonnx computes
        q = np.rint(np.clip(y, lo, hi)).astype(np.int64)
        k_axis = 1 if stored_nk else 0
        K = W.shape[k_axis]
        s2 = s.reshape((1,) * (2 - s.ndim) + s.shape) if s.ndim <= 2 else s
        if s.ndim > 2:
            raise OnnxImportError(f"{w}: scale rank {s.ndim} > 2")
        src_block = K if (s.size == 1 or s2.shape[k_axis] == 1) else 1
        zi = z_el.astype(np.int64)
        qq, ss, zz = q, np.asarray(s_el, np.float32), zi
        if not stored_nk:
            qq, ss, zz = qq.T, ss.T, zz.T
        qlo, qhi = quant_range(bits, signed)
        qw, notes = finish_quantized(np.ascontiguousarray(qq), np.ascontiguousarray(ss), FLOAT,
                                     np.ascontiguousarray(zz) if np.any(zz) or not signed else None,
                                     src_block, bits, signed, qlo, qhi, w, declared)
        if narrow:
            notes.append(f"{what}: narrow range [{lo}, {hi}] declared by qonnx Quant")
        return qw, Details(xnames, xchain, "qonnx Quant", not stored_nk, notes)

    # -- MatMulNBits -----------------------------------------------------------------------
    def matmul_nbits(self, p: int) -> tuple[QuantizedWeight, Details]:
        n = self.g.nodes[p]
        w = self.g.label(p)
        known = {"K", "N", "bits", "block_size", "accuracy_level"}
        has = attr_names(n)
        extra = has - known
        if extra:
            raise OnnxImportError(f"{w}: unsupported MatMulNBits attributes {sorted(extra)}")
        for req in ("K", "N", "block_size"):
            if req not in has:
                raise OnnxImportError(f"{w}: MatMulNBits needs attribute '{req}'")
        K, N, bs = attr_int(n, "K", 0), attr_int(n, "N", 0), attr_int(n, "block_size", 0)
        bits = attr_int(n, "bits", 4)
        if bits not in (2, 4, 8):
            raise OnnxImportError(f"{w}: MatMulNBits with bits={bits} is not supported (2, 4, 8)")
        if bs <= 0 or (bs * bits) % 8:
            raise OnnxImportError(f"{w}: invalid block_size {bs}")
        if len(n.input) > 4 and n.input[4]:
            raise OnnxImportError(f"{w}: g_idx input '{n.input[4]}' (act-order) is not supported")
        if len(n.input) > 5 and n.input[5]:
            raise OnnxImportError(f"{w}: bias input '{n.input[5]}' is not supported")
        kb = -(-K // bs)
        blob = bs * bits // 8
        what = f"{w}, weight '{n.input[1]}'"
        B = self.g.need_const(n.input[1], what, "B")
        if B.onnx_type != UINT8 or list(B.array.shape) != [N, kb, blob]:
            raise OnnxImportError(f"{what}: B must be uint8 [{N}, {kb}, {blob}], got "
                                  f"{B.dtype} {list(B.array.shape)}")
        sc = self.g.need_const(n.input[2], what, "scales")
        if sc.onnx_type not in SCALE_TYPES or sc.array.size != N * kb:
            raise OnnxImportError(f"{what}: scales must be float [{N}, {kb}], got {sc.dtype} "
                                  f"{list(sc.array.shape)}")
        per = 8 // bits
        if bits == 8:
            u = B.array.reshape(N, kb * blob).astype(np.int64)
        else:
            u = unpack_subbyte(B.array.reshape(-1), N * kb * bs, bits, False)
            u = u.reshape(N, kb * bs).astype(np.int64)
        u = u[:, :K]
        zp = None
        signed = True
        if len(n.input) > 3 and n.input[3]:
            zd = self.g.need_const(n.input[3], what, "zero_points")
            if zd.onnx_type != UINT8:
                raise OnnxImportError(f"{what}: zero_points of type {zd.dtype} are not supported "
                                      f"(packed uint8 only)")
            zb = -(-kb // per)
            if zd.array.size != N * zb:
                raise OnnxImportError(f"{what}: zero_points must have {N} x {zb} bytes, got "
                                      f"{list(zd.array.shape)}")
            zrows = zd.array.reshape(N, zb)
            if bits == 8:
                zp = zrows.astype(np.int64)[:, :kb]
            else:
                zp = unpack_subbyte(zrows.reshape(-1), N * zb * per, bits, False)
                zp = zp.reshape(N, zb * per)[:, :kb].astype(np.int64)
            signed = False
            q = u
        else:
            q = u - (1 << (bits - 1))
        lo, hi = quant_range(bits, signed)
        s = sc.array.reshape(N, kb)
        s_el = np.repeat(s, bs, axis=1)[:, :K]
        z_el = np.repeat(zp, bs, axis=1)[:, :K] if zp is not None else None
        qw, notes = finish_quantized(q, s_el, sc.onnx_type, z_el, bs, bits, signed, lo, hi,
                                     what, f"MatMulNBits bits={bits}")
        if "accuracy_level" in has:
            notes.append(f"{w}: accuracy_level {attr_int(n, 'accuracy_level', 0)} ignored (a "
                         f"compute hint)")
        return qw, Details([n.input[1]], [], f"MatMulNBits {bits}-bit", False, notes)


def _apply_cast(val: Decoded, to: int, what: str) -> Decoded:
    if not val.is_float:
        raise OnnxImportError(f"{what}: Cast of a {val.dtype} tensor on the weight path")
    if to == FLOAT:
        if val.onnx_type == 11:
            return Decoded(val.array.astype(np.float32), FLOAT)
        return val  # widening float16/bfloat16 is exact: keep the source dtype
    if to == FLOAT16:
        return Decoded(as_float32(val).astype(np.float16), FLOAT16)
    if to == BFLOAT16:
        if val.onnx_type == BFLOAT16:
            return val
        raise OnnxImportError(f"{what}: Cast to bfloat16 on the weight path is not supported")
    raise OnnxImportError(f"{what}: Cast to {type_name(to)} on the weight path")


def _float_value(d: Decoded, what: str) -> WeightValue:
    if d.onnx_type == FLOAT:
        v = d.array.astype(np.float32)
    elif d.onnx_type == FLOAT16:
        v = d.array.astype(np.float16)
    elif d.onnx_type == BFLOAT16:
        return BF16Array(np.ascontiguousarray(d.array.astype(np.uint16)))
    else:
        raise OnnxImportError(f"{what}: float weights must be float32, float16 or bfloat16, got "
                              f"{d.dtype}")
    if not np.all(np.isfinite(v)):
        raise OnnxImportError(f"{what}: weight contains NaN or Inf")
    return np.ascontiguousarray(v)


# Integer-activation matrix products (their quantization is not weight-only) and the
# position of their weight input.
INT_ACTIVATION_OPS = {("", "MatMulInteger"): 1, ("", "QLinearMatMul"): 3, ("", "ConvInteger"): 1,
                      (MS_DOMAIN, "DynamicQuantizeMatMul"): 1,
                      (MS_DOMAIN, "MatMulIntegerToFloat"): 1, (MS_DOMAIN, "QGemm"): 3}

NORM_OPS = {("", "Mul"), ("ai.onnx", "Mul"), ("", "RMSNormalization"),
            ("ai.onnx", "RMSNormalization"), (MS_DOMAIN, "SimplifiedLayerNormalization"),
            ("", "SimplifiedLayerNormalization")}


def find_weights(g: Graph) -> list[WeightRecord]:
    """Every weight use of the graph, in topological order. Linear weights that cannot be
    resolved raise; Gather and norm candidates keep their error (they may be unrelated)."""
    res = Resolver(g)
    out: list[WeightRecord] = []
    live = g.live
    for i in g.order:
        n = g.nodes[i]
        dom = n.domain if n.domain != "ai.onnx" else ""
        op = n.op_type
        lab = g.label(i)
        ins = list(n.input)
        if dom == "" and op in ("MatMul", "Gemm") and len(ins) >= 2:
            if ins[0] not in live or ins[1] not in g.constant:
                continue
            what = f"{lab}, weight '{ins[1]}'"
            nk = False
            if op == "Gemm":
                if attr_int(n, "transA", 0):
                    raise OnnxImportError(f"{what}: Gemm with transA=1 is not supported")
                if len(ins) > 2 and ins[2]:
                    raise OnnxImportError(f"{what}: Gemm bias input '{ins[2]}' is not supported "
                                          f"(Qwen3-MoE linears have no bias)")
                alpha = attr_float(n, "alpha", 1.0)
                if alpha != 1.0:
                    raise OnnxImportError(f"{what}: Gemm alpha {alpha} != 1")
                nk = bool(attr_int(n, "transB", 0))
            value, det = res.resolve(ins[1], nk, what)
            out.append(_record("linear", g, i, ins[0], value, det, ins[1]))
        elif ((dom, op) in INT_ACTIVATION_OPS and len(ins) > INT_ACTIVATION_OPS[(dom, op)]
              and ins[INT_ACTIVATION_OPS[(dom, op)]] in g.constant):
            raise OnnxImportError(
                f"{lab}, weight '{ins[INT_ACTIVATION_OPS[(dom, op)]]}': {op} multiplies integer activations (onnxruntime's "
                f"quantize_dynamic / quantize_static, optimum's ORTQuantizer): only weight-only "
                f"quantization is supported (MatMulNBits, DequantizeLinear -> MatMul, Q/DQ fake "
                f"quant); export the float model or quantize its weights only")
        elif dom == MS_DOMAIN and op == "MatMulNBits":
            if ins[0] not in live:
                continue
            value, det = res.matmul_nbits(i)
            out.append(_record("linear", g, i, ins[0], value, det, ins[1]))
        elif dom == "" and op == "Gather" and len(ins) == 2:
            if ins[0] not in g.constant or ins[1] not in live:
                continue
            what = f"{lab}, table '{ins[0]}'"
            try:
                if attr_int(n, "axis", 0) != 0:
                    raise OnnxImportError(f"{what}: Gather axis must be 0 for an embedding")
                value, det = res.resolve(ins[0], True, what)
                out.append(_record("gather", g, i, ins[1], value, det, ins[0]))
            except OnnxImportError as e:
                out.append(_failed("gather", g, i, ins[1], ins[0], e))
        elif (dom, op) in NORM_OPS:
            if op == "Mul":
                if len(ins) != 2:
                    continue
                if ins[0] in live and ins[1] in g.constant:
                    act, wt = ins[0], ins[1]
                elif ins[1] in live and ins[0] in g.constant:
                    act, wt = ins[1], ins[0]
                else:
                    continue
            else:
                if len(ins) < 2 or ins[0] not in live or ins[1] not in g.constant:
                    continue
                act, wt = ins[0], ins[1]
            what = f"{lab}, weight '{wt}'"
            try:
                val, names, chain, _ = res._float_leaf(wt, what)
            except OnnxImportError:
                continue          # a constant subgraph (e.g. a scale computed from constants)
            try:
                arr = val.array
                if (not val.is_float or arr.size < 2 or arr.shape[-1] == 1
                        or sum(1 for s in arr.shape if s != 1) != 1):
                    continue
                value = _float_value(Decoded(val.array.reshape(-1), val.onnx_type), what)
                det = Details(names, chain, f"float {val.dtype}", False, [])
                out.append(_record("norm", g, i, act, value, det, wt))
            except OnnxImportError as e:
                out.append(_failed("norm", g, i, act, wt, e))
    return out


def _record(kind: str, g: Graph, i: int, act: str, value: WeightValue, det: Details,
            wname: str) -> WeightRecord:
    n = g.nodes[i]
    names = list(det.names or [wname])
    chain = det.chain
    src: Source = tuple(names) + tuple(str(c.output[0]) for c in chain if c.op_type not in
                                       ("Transpose", "Identity"))
    r = WeightRecord(kind=kind, node=n, node_index=i, label=g.label(i), activation=act,
                     output=n.output[0] if n.output else "", value=value, source=src,
                     names=names, chain=chain, pattern=det.pattern,
                     transposed=det.transposed, notes=list(det.notes))
    return r


def _failed(kind: str, g: Graph, i: int, act: str, wname: str, e: OnnxImportError) -> WeightRecord:
    n = g.nodes[i]
    return WeightRecord(kind=kind, node=n, node_index=i, label=g.label(i), activation=act,
                        output=n.output[0] if n.output else "", value=None, source=(wname,),
                        names=[wname], chain=[], error=e)
