# SPDX-License-Identifier: Apache-2.0
"""Maps the weights found in a graph to Qwen3-MoE roles and Hugging Face names, and reads the
model configuration.

Roles are assigned, per weight, from (1) a Hugging Face parameter/module path in the
initializer or node names, else (2) the node metadata ``pkg.torch.onnx.name_scopes`` written by
torch's dynamo exporter, else (3) the graph structure: walking the data flow from ``input_ids``
through the attention blocks (q/k/v feed the score and value products, o follows them), the
router (the projection whose output feeds a Softmax), and the experts (gate feeds the SiLU,
up the product, down consumes it; the expert index is the routing-weight column or Concat slot
that multiplies the expert's output). Where (1)/(2) and (3) both apply they must agree.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections import defaultdict, deque
from typing import TYPE_CHECKING, Any, Callable, Optional

import numpy as np

from .model import ROLES, BF16Array, ModelTensor, QuantizedWeight
from .patterns import Graph, Key, WeightRecord, WeightValue, attr_int, name_scopes
from .jsonfile import MAX_DEPTH, load_file, nesting_depth
from .tensors import OnnxImportError

if TYPE_CHECKING:
    from onnx import ModelProto

# A Hugging Face config.json as parsed (JSON values), or the importer's normalized form of it.
Config = dict[str, Any]

# ---------------------------------------------------------------------------------------
# configuration

CONFIG_METADATA_KEYS = ("config", "hf_config", "config.json", "fwassist.config",
                        "huggingface_config", "model_config")
HF_DEFAULTS: dict[str, Any] = {
    "intermediate_size": 6144, "moe_intermediate_size": 768, "num_experts": 128,
    "num_experts_per_tok": 8, "norm_topk_prob": False, "decoder_sparse_step": 1,
    "mlp_only_layers": [], "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
    "max_position_embeddings": 32768, "tie_word_embeddings": False,
}
CONFIG_INT_KEYS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                   "num_key_value_heads", "head_dim", "intermediate_size",
                   "moe_intermediate_size", "num_experts", "num_experts_per_tok",
                   "decoder_sparse_step", "max_position_embeddings")


def _parse_meta_value(v: str) -> Any:
    if nesting_depth(v) > MAX_DEPTH:
        raise OnnxImportError(f"model metadata value nested deeper than {MAX_DEPTH} levels")
    try:
        return json.loads(v)
    except (ValueError, TypeError):
        return v


def raw_config_from_metadata(model: ModelProto) -> Optional[Config]:
    props = {p.key: p.value for p in model.metadata_props}
    for k in CONFIG_METADATA_KEYS:
        if k in props:
            v = _parse_meta_value(props[k])
            if not isinstance(v, dict):
                raise OnnxImportError(f"model metadata '{k}' is not a JSON object")
            return v
    keys = set(CONFIG_INT_KEYS) | set(HF_DEFAULTS) | {
        "num_local_experts", "rope_parameters", "rope_scaling", "model_type"}
    found = {k: _parse_meta_value(v) for k, v in props.items() if k in keys}
    return found if "hidden_size" in found else None


def _rope(c: Config) -> tuple[float, list[str]]:
    notes: list[str] = []
    theta = c.get("rope_theta")
    rtype = None
    for key in ("rope_parameters", "rope_scaling"):
        rp = c.get(key)
        if not isinstance(rp, dict):
            if rp is not None:
                raise OnnxImportError(f"config: {key} must be an object, got {rp!r}")
            continue
        if rp and all(isinstance(v, dict) for v in rp.values()):   # per layer type
            rp = rp.get("full_attention") or next(iter(rp.values()))
        t = rp.get("rope_type", rp.get("type"))
        if t not in (None, "default"):
            raise OnnxImportError(f"config: {key}.rope_type {t!r} is not supported (only the "
                                  f"default RoPE)")
        rtype = rtype or t
        if rp.get("rope_theta") is not None:
            if theta is not None and float(theta) != float(rp["rope_theta"]):
                raise OnnxImportError(f"config: rope_theta {theta} and {key}.rope_theta "
                                      f"{rp['rope_theta']} disagree")
            theta = rp["rope_theta"]
    if theta is None:
        theta = HF_DEFAULTS["rope_theta"]
        notes.append(f"config: rope_theta missing, Qwen3-MoE default {theta} used")
    return float(theta), notes


def normalize_config(raw: Config) -> tuple[Config, list[str]]:
    """Hugging Face Qwen3-MoE config (transformers 4.x or 5.x keys) to the importer's dict."""
    if not isinstance(raw, dict):
        raise OnnxImportError("config: not a JSON object")
    c = raw
    if "hidden_size" not in c and isinstance(c.get("text_config"), dict):
        c = c["text_config"]
    notes: list[str] = []
    mt = c.get("model_type")
    if mt is not None and mt != "qwen3_moe":
        raise OnnxImportError(f"config: model_type {mt!r} is not qwen3_moe")
    for k in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads"):
        if c.get(k) is None:
            raise OnnxImportError(f"config: {k} is missing")
    if c.get("hidden_act", "silu") != "silu":
        raise OnnxImportError(f"config: hidden_act {c['hidden_act']!r} is not supported (silu)")
    if c.get("attention_bias"):
        raise OnnxImportError("config: attention_bias=true is not supported")
    if c.get("use_sliding_window"):
        raise OnnxImportError("config: use_sliding_window=true is not supported")
    out: dict[str, Any] = {"architecture": "qwen3_moe"}
    for k in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads"):
        out[k] = c[k]
    out["num_key_value_heads"] = c.get("num_key_value_heads") or c["num_attention_heads"]
    hd = c.get("head_dim")
    if hd is None:
        hd = c["hidden_size"] // c["num_attention_heads"]
        notes.append(f"config: head_dim missing, hidden_size/num_attention_heads = {hd} used")
    out["head_dim"] = hd
    ne = c.get("num_experts", c.get("num_local_experts"))
    if ne is not None:
        out["num_experts"] = ne
    for k, d in HF_DEFAULTS.items():
        if k in ("rope_theta",) or k in out:
            continue
        if c.get(k) is None:
            if k in ("intermediate_size", "moe_intermediate_size", "num_experts",
                     "num_experts_per_tok"):
                notes.append(f"config: {k} missing, Qwen3-MoE default {d} used")
            out[k] = d
        else:
            out[k] = c[k]
    out["rope_theta"], n2 = _rope(c)
    notes += n2
    for k in CONFIG_INT_KEYS:
        v = out[k]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or int(v) != v or v < 0:
            raise OnnxImportError(f"config: {k} must be a non-negative integer, got {v!r}")
        out[k] = int(v)
    for k in ("norm_topk_prob", "tie_word_embeddings"):
        if not isinstance(out[k], bool):
            raise OnnxImportError(f"config: {k} must be true or false, got {out[k]!r}")
    for k in ("rms_norm_eps", "rope_theta"):
        v = float(out[k])
        if not math.isfinite(v) or v <= 0:
            raise OnnxImportError(f"config: {k} must be a positive number, got {out[k]!r}")
        out[k] = v
    mol = out["mlp_only_layers"] or []
    if not isinstance(mol, list) or not all(isinstance(i, int) and not isinstance(i, bool)
                                            for i in mol):
        raise OnnxImportError(f"config: mlp_only_layers must be a list of integers, got {mol!r}")
    out["mlp_only_layers"] = sorted(set(mol))
    for k in ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
              "head_dim", "vocab_size", "decoder_sparse_step"):
        if out[k] <= 0:
            raise OnnxImportError(f"config: {k} must be positive")
    if out["num_attention_heads"] % out["num_key_value_heads"]:
        raise OnnxImportError("config: num_attention_heads is not a multiple of "
                              "num_key_value_heads")
    if out["head_dim"] % 2:
        raise OnnxImportError("config: head_dim must be even (RoPE)")
    if out["num_experts"] and not 0 < out["num_experts_per_tok"] <= out["num_experts"]:
        raise OnnxImportError("config: num_experts_per_tok must be in [1, num_experts]")
    return out, notes


def is_moe_layer(config: Config, i: int) -> bool:
    return (i not in config["mlp_only_layers"] and config["num_experts"] > 0
            and (i + 1) % config["decoder_sparse_step"] == 0)


def load_config(model: ModelProto, model_path: str,
                config_path: Optional[str]) -> tuple[Config, list[str]]:
    notes: list[str] = []
    raw = None
    if config_path is not None:
        raw = load_file(config_path, "config")
        notes.append(f"config: from {os.path.basename(config_path)}")
    else:
        raw = raw_config_from_metadata(model)
        if raw is not None:
            notes.append("config: from the ONNX metadata_props")
        else:
            beside = os.path.join(os.path.dirname(os.path.abspath(model_path)), "config.json")
            if os.path.isfile(beside):
                raw = load_file(beside, "config")
                notes.append("config: from config.json beside the model")
    if raw is None:
        raise OnnxImportError("config: none found (no config metadata in the ONNX model, no "
                              "config.json beside it, no config_path given)")
    cfg, n2 = normalize_config(raw)
    return cfg, notes + n2


# ---------------------------------------------------------------------------------------
# roles and names

LINEAR_ROLES = {"q_proj", "k_proj", "v_proj", "o_proj", "router", "expert_gate", "expert_up",
                "expert_down", "mlp_gate", "mlp_up", "mlp_down", "lm_head"}
NORM_ROLES = {"q_norm", "k_norm", "input_norm", "post_attention_norm", "final_norm"}


def hf_name(role: str, layer: Optional[int], expert: Optional[int]) -> str:
    L = f"model.layers.{layer}"
    return {
        "embed": "model.embed_tokens.weight",
        "q_proj": f"{L}.self_attn.q_proj.weight", "k_proj": f"{L}.self_attn.k_proj.weight",
        "v_proj": f"{L}.self_attn.v_proj.weight", "o_proj": f"{L}.self_attn.o_proj.weight",
        "q_norm": f"{L}.self_attn.q_norm.weight", "k_norm": f"{L}.self_attn.k_norm.weight",
        "input_norm": f"{L}.input_layernorm.weight",
        "post_attention_norm": f"{L}.post_attention_layernorm.weight",
        "router": f"{L}.mlp.gate.weight",
        "expert_gate": f"{L}.mlp.experts.{expert}.gate_proj.weight",
        "expert_up": f"{L}.mlp.experts.{expert}.up_proj.weight",
        "expert_down": f"{L}.mlp.experts.{expert}.down_proj.weight",
        "mlp_gate": f"{L}.mlp.gate_proj.weight", "mlp_up": f"{L}.mlp.up_proj.weight",
        "mlp_down": f"{L}.mlp.down_proj.weight",
        "final_norm": "model.norm.weight", "lm_head": "lm_head.weight",
    }[role]


def expected_shape(role: str, c: Config) -> tuple[int, ...]:
    H, hd = c["hidden_size"], c["head_dim"]
    I, Im = c["moe_intermediate_size"], c["intermediate_size"]
    return {
        "embed": (c["vocab_size"], H), "lm_head": (c["vocab_size"], H),
        "q_proj": (c["num_attention_heads"] * hd, H),
        "k_proj": (c["num_key_value_heads"] * hd, H), "v_proj": (c["num_key_value_heads"] * hd, H),
        "o_proj": (H, c["num_attention_heads"] * hd), "q_norm": (hd,), "k_norm": (hd,),
        "input_norm": (H,), "post_attention_norm": (H,), "final_norm": (H,),
        "router": (c["num_experts"], H), "expert_gate": (I, H), "expert_up": (I, H),
        "expert_down": (H, I), "mlp_gate": (Im, H), "mlp_up": (Im, H), "mlp_down": (H, Im),
    }[role]


_S = r"[./_:]"
_NAME_PATTERNS: list[tuple[re.Pattern[str], Callable[[re.Match[str]], Key]]] = [
    (re.compile(rf"model{_S}layers{_S}(\d+){_S}mlp{_S}experts{_S}(\d+){_S}(gate|up|down)_proj"),
     lambda m: (f"expert_{m.group(3)}", int(m.group(1)), int(m.group(2)))),
    (re.compile(rf"model{_S}layers{_S}(\d+){_S}mlp{_S}(gate|up|down)_proj"),
     lambda m: (f"mlp_{m.group(2)}", int(m.group(1)), None)),
    (re.compile(rf"model{_S}layers{_S}(\d+){_S}mlp{_S}gate(?![A-Za-z0-9]|_up|_proj)"),
     lambda m: ("router", int(m.group(1)), None)),
    (re.compile(rf"model{_S}layers{_S}(\d+){_S}self_attn{_S}([qkvo])_proj"),
     lambda m: (f"{m.group(2)}_proj", int(m.group(1)), None)),
    (re.compile(rf"model{_S}layers{_S}(\d+){_S}self_attn{_S}([qk])_norm"),
     lambda m: (f"{m.group(2)}_norm", int(m.group(1)), None)),
    (re.compile(rf"model{_S}layers{_S}(\d+){_S}input_layernorm"),
     lambda m: ("input_norm", int(m.group(1)), None)),
    (re.compile(rf"model{_S}layers{_S}(\d+){_S}post_attention_layernorm"),
     lambda m: ("post_attention_norm", int(m.group(1)), None)),
    (re.compile(rf"model{_S}embed_tokens"), lambda m: ("embed", None, None)),
    (re.compile(rf"(?<![A-Za-z0-9])model{_S}norm(?![A-Za-z0-9])"),
     lambda m: ("final_norm", None, None)),
    (re.compile(r"(?<![A-Za-z0-9])lm_head(?![A-Za-z0-9])"), lambda m: ("lm_head", None, None)),
]

_SLICE = re.compile(r"[./]slice\((None|\d+), ?(None|-?\d+), ?(None|\d+)\)[./](\d+)")
_MODULELIST = re.compile(r"[./]ModuleList(?=[./]\d)")


def normalize_scope(s: str) -> str:
    """Drops the noise tools add to module paths: a sliced layer list
    (``layers.slice(None, 2, None).0`` -> ``layers.0``; ``slice(1, None, 2).1`` -> ``layers.3``)
    and ``ModuleList`` class segments. A slice with a negative start cannot be resolved without
    the list's length and is left as it is (it then matches no role)."""
    def sub(m: re.Match[str]) -> str:
        start = 0 if m.group(1) == "None" else int(m.group(1))
        step = 1 if m.group(3) == "None" else int(m.group(3))
        return f".{start + step * int(m.group(4))}"
    return _MODULELIST.sub("", _SLICE.sub(sub, s))


def role_from_string(s: str) -> Optional[Key]:
    s = normalize_scope(s)
    for pat, f in _NAME_PATTERNS:
        m = pat.search(s)
        if m:
            return f(m)
    return None


def _fit_kind(key: Optional[Key], r: WeightRecord) -> Optional[Key]:
    if key is None:
        return None
    role = key[0]
    if role == "embed":
        if r.kind == "gather":
            return key
        if r.kind == "linear":           # the tied output projection reads the embedding
            return ("lm_head", None, None)
        return None
    if role in LINEAR_ROLES:
        return key if r.kind == "linear" else None
    if role in NORM_ROLES:
        return key if r.kind == "norm" else None
    return None


def role_by_name(r: WeightRecord) -> Optional[Key]:
    cands = list(r.names)
    for n in [r.node] + list(r.chain):
        if n.name:
            cands.append(n.name.replace("/", "."))
    for s in cands:
        k = _fit_kind(role_from_string(s), r)
        if k is not None:
            return k
    return None


def role_by_metadata(r: WeightRecord) -> Optional[Key]:
    for n in [r.node] + list(r.chain):
        for scope in reversed(name_scopes(n)):
            k = _fit_kind(role_from_string(scope), r)
            if k is not None:
                return k
    return None


_EXPERT_SCOPE = re.compile(rf"model{_S}layers{_S}(\d+){_S}mlp{_S}experts{_S}(\d+)(?![0-9])")
PASS_OPS = {"Cast", "Reshape", "Unsqueeze", "Squeeze", "Identity", "Flatten", "Transpose"}


def neighbour_scopes(g: Graph, node_index: int) -> list[str]:
    """The name_scopes of the nodes next to a weight's consumer: the producers of its inputs and
    the consumers of its outputs, looking through shape-only ops. A tool that replaces a node
    (onnxruntime's MatMulNBitsQuantizer) drops the node's own metadata, not its neighbours'."""
    n = g.nodes[node_index]
    out: list[str] = []
    seen = {node_index}
    todo = [(g.producer.get(t), "in") for t in n.input if t]
    todo += [(ci, "out") for t in n.output if t for ci, _ in g.consumers.get(t, ())]
    while todo:
        i, way = todo.pop(0)
        if i is None or i in seen:
            continue
        seen.add(i)
        m = g.nodes[i]
        if m.op_type in PASS_OPS and len(seen) < 16:
            if way == "in":
                todo += [(g.producer.get(t), "in") for t in m.input[:1] if t]
            else:
                todo += [(ci, "out") for t in m.output if t for ci, _ in g.consumers.get(t, ())]
            continue
        out.extend(name_scopes(m))     # module paths, outermost first, then the op's name
    return out


def neighbour_expert(g: Graph, node_index: int) -> Optional[tuple[int, int]]:
    """(layer, expert) when the neighbours' scopes name exactly one expert module."""
    found = set()
    for s in neighbour_scopes(g, node_index):
        m = _EXPERT_SCOPE.search(normalize_scope(s))
        if m:
            found.add((int(m.group(1)), int(m.group(2))))
    return found.pop() if len(found) == 1 else None


# ---------------------------------------------------------------------------------------
# structure

ATTENTION_OPS = {("", "Attention"), ("com.microsoft", "MultiHeadAttention"),
                 ("com.microsoft", "GroupQueryAttention")}
MATMUL_OPS = {"MatMul", "Gemm", "MatMulNBits", "FusedMatMul", "Einsum"}
ACTIVATION_OPS = {"Sigmoid", "Swish", "Silu", "HardSwish", "QuickGelu"}


class Structure:
    """Role assignment from the data flow alone."""

    def __init__(self, g: Graph, records: list[WeightRecord], config: Config):
        self.g = g
        self.recs = records
        self.c = config
        # fused 3-D expert slices share one MatMul each: the structure leaves them alone
        self.rec_at = {r.node_index: i for i, r in enumerate(records)
                       if r.error is None and r.fused_key is None}
        self.lin = {r.node_index for r in records if r.error is None and r.kind == "linear"
                    and r.fused_key is None}
        self.norm = {r.node_index for r in records if r.error is None and r.kind == "norm"}
        self.gather = {r.node_index for r in records if r.error is None and r.kind == "gather"}
        self.expert_signal: dict[int, str] = {}     # node -> where its expert index came from

    def fail(self, msg: str) -> OnnxImportError:
        return OnnxImportError(f"graph structure: {msg} (the weights carry no Hugging Face names "
                               f"or name_scopes metadata, so roles come from the structure)")

    def _op(self, i: int) -> tuple[str, str]:
        n = self.g.nodes[i]
        return (n.domain if n.domain != "ai.onnx" else "", n.op_type)

    def back(self, t: str, pass_norms: bool) -> tuple[list[int], list[int]]:
        """Walks producers from tensor ``t`` over live tensors; stops at weight consumers.
        Returns (linear/gather weight nodes reached, norm nodes met, in BFS order)."""
        lins: list[int] = []
        norms: list[int] = []
        seen = set()
        q = deque([t])
        while q:
            x = q.popleft()
            if x in seen or x not in self.g.live:
                continue
            seen.add(x)
            p = self.g.producer.get(x)
            if p is None:
                continue
            if p in self.lin or p in self.gather:
                if p not in lins:
                    lins.append(p)
                continue
            if p in self.norm:
                if p not in norms:
                    norms.append(p)
                if not pass_norms:
                    continue
                q.append(self.recs[self.rec_at[p]].activation)
                continue
            for y in self.g.nodes[p].input:
                if y:
                    q.append(y)
        return lins, norms

    def forward(self, t: str) -> tuple[list[int], list[int]]:
        """Consumers reachable from ``t`` without passing a linear weight node. Returns
        (linear weight nodes reached, other nodes visited in BFS order)."""
        lins: list[int] = []
        nodes: list[int] = []
        seen_t = set()
        seen_n = set()
        q = deque([t])
        while q:
            x = q.popleft()
            if x in seen_t:
                continue
            seen_t.add(x)
            for ci, _ in self.g.consumers.get(x, ()):
                if ci in seen_n:
                    continue
                seen_n.add(ci)
                if ci in self.lin:
                    lins.append(ci)
                    continue
                nodes.append(ci)
                for o in self.g.nodes[ci].output:
                    if o:
                        q.append(o)
        return lins, nodes

    def _first_matmuls_back(self, t: str) -> list[int]:
        out = []
        seen = set()
        q = deque([t])
        while q:
            x = q.popleft()
            if x in seen or x not in self.g.live:
                continue
            seen.add(x)
            p = self.g.producer.get(x)
            if p is None:
                continue
            if self._op(p)[1] in MATMUL_OPS or p in self.lin:
                out.append(p)
                continue
            q.extend(y for y in self.g.nodes[p].input if y)
        return out

    def _size(self, i: int) -> int:
        v = self.recs[self.rec_at[i]].value
        return int(np.prod(self.recs[self.rec_at[i]].shape)) if v is not None else -1

    def run(self) -> dict[int, Key]:
        g, c = self.g, self.c
        L, hd = c["num_hidden_layers"], c["head_dim"]
        out: dict[int, Key] = {}

        def put(node: int, key: Key) -> None:
            ri = self.rec_at[node]
            if ri in out and out[ri] != key:
                raise self.fail(f"{g.label(node)} is both {out[ri]} and {key}")
            out[ri] = key

        # attention blocks and routers, from the Softmax nodes
        attn: list[tuple[int, Optional[int], int, Optional[int]]] = []   # (qk, softmax, pv, fused)
        routers: list[tuple[int, int]] = []
        for i in g.order:
            dom, op = self._op(i)
            n = g.nodes[i]
            if (dom, op) in ATTENTION_OPS:
                attn.append((i, None, i, i))
            elif op == "Softmax" and dom == "" and n.input[0] in g.live:
                mms = self._first_matmuls_back(n.input[0])
                wl = [m for m in mms if m in self.lin]
                if wl:
                    if len(wl) != 1:
                        raise self.fail(f"{g.label(i)} is fed by several projections")
                    routers.append((i, wl[0]))
                    continue
                act = [m for m in mms if self._op(m)[1] == "MatMul"]
                if len(act) != 1:
                    raise self.fail(f"cannot find the score product feeding {g.label(i)}")
                _, fw = self.forward(n.output[0])
                pvs = [m for m in fw if self._op(m)[1] == "MatMul"
                      and all(x in g.live for x in g.nodes[m].input)]
                if not pvs:
                    raise self.fail(f"no attention-value product after {g.label(i)}")
                attn.append((act[0], i, pvs[0], None))
        pos = {n: k for k, n in enumerate(g.order)}
        attn.sort(key=lambda a: pos[a[0]])
        if len(attn) != L:
            raise self.fail(f"found {len(attn)} attention blocks, the config has {L} layers")

        # layer count of every tensor: attention blocks on the longest path before it
        qk_nodes = {a[0] for a in attn}
        cnt: dict[str, int] = defaultdict(int)
        for i in g.order:
            n = g.nodes[i]
            v = max([cnt[x] for x in n.input if x in g.live] or [0])
            if i in qk_nodes:
                v += 1
            for o in n.output:
                if o:
                    cnt[o] = v

        def one(lst: list[int], what: str) -> int:
            if len(lst) != 1:
                raise self.fail(f"expected one {what}, found {len(lst)}")
            return lst[0]

        def seg(node: int) -> int:
            return cnt[self.recs[self.rec_at[node]].activation]

        assigned_nodes: set[int] = set()
        for layer, (qk, sm, pv, fused) in enumerate(attn):
            qn = g.nodes[qk]
            pvn = g.nodes[pv]
            q_in, k_in, v_in = (qn.input[0], qn.input[1], pvn.input[1] if fused is None
                                else pvn.input[2])
            ql, qnorms = self.back(q_in, True)
            kl, knorms = self.back(k_in, True)
            vl, _ = self.back(v_in, True)
            qp = one([x for x in ql if x in self.lin], f"q projection in layer {layer}")
            kp = one([x for x in kl if x in self.lin], f"k projection in layer {layer}")
            vp = one([x for x in vl if x in self.lin], f"v projection in layer {layer}")
            ol, _ = self.forward(pvn.output[0])
            op_ = one(ol, f"o projection in layer {layer}")
            for node, role in ((qp, "q_proj"), (kp, "k_proj"), (vp, "v_proj"), (op_, "o_proj")):
                put(node, (role, layer, None))
                assigned_nodes.add(node)
            for norms, role, proj in ((qnorms, "q_norm", qp), (knorms, "k_norm", kp)):
                cand = [m for m in norms if self._size(m) == hd
                        and proj in self.back(self.recs[self.rec_at[m]].activation, True)[0]]
                put(one(cand, f"{role} in layer {layer}"), (role, layer, None))
            _, inorm = self.back(self.recs[self.rec_at[qp]].activation, False)
            put(one(inorm, f"input norm in layer {layer}"), ("input_norm", layer, None))

        # the output projection: an unassigned projection after the last attention block
        # whose output reaches a graph output
        outs = set(g.graph_outputs)
        lm = []
        for node in self.lin:
            if node in assigned_nodes or any(node == r[1] for r in routers) or seg(node) != L:
                continue
            _, fw = self.forward(g.nodes[node].output[0])
            reached = {o for m in fw for o in g.nodes[m].output} | {g.nodes[node].output[0]}
            if reached & outs:
                lm.append(node)
        lmh = one(lm, "output projection (lm_head)")
        put(lmh, ("lm_head", None, None))
        assigned_nodes.add(lmh)
        _, fn = self.back(self.recs[self.rec_at[lmh]].activation, False)
        put(one(fn, "final norm"), ("final_norm", None, None))

        # the embedding: a Gather whose indices come from an integer graph input
        emb = []
        for node in self.gather:
            idx = g.nodes[node].input[1]
            if self._from_input(idx):
                emb.append(node)
        put(one(emb, "embedding Gather fed by input_ids"), ("embed", None, None))

        # MoE / MLP blocks
        router_of = {}
        for sm, rnode in routers:
            layer = seg(rnode) - 1
            if not 0 <= layer < L or layer in router_of:
                raise self.fail(f"router {g.label(rnode)} does not fit a layer")
            router_of[layer] = rnode
            put(rnode, ("router", layer, None))
            assigned_nodes.add(rnode)
        rest = defaultdict(list)
        for node in self.lin:
            if node not in assigned_nodes:
                rest[seg(node) - 1].append(node)
        for layer in range(L):
            nodes = rest.pop(layer, [])
            moe = layer in router_of
            downs = []
            for node in nodes:
                lins, _ = self.back(self.recs[self.rec_at[node]].activation, False)
                ins = [x for x in lins if x in nodes]
                if len(ins) == 2:
                    downs.append((node, ins))
            if moe:
                _, pn = self.back(self.recs[self.rec_at[router_of[layer]]].activation, False)
            else:
                if not downs:
                    raise self.fail(f"layer {layer} has neither a router nor an MLP")
                first = downs[0][1][0]
                _, pn = self.back(self.recs[self.rec_at[first]].activation, False)
            put(one(pn, f"post-attention norm in layer {layer}"),
                ("post_attention_norm", layer, None))
            used = set()
            for down, (a, b) in downs:
                ga = self._feeds_activation(a)
                gb = self._feeds_activation(b)
                if ga == gb:
                    raise self.fail(f"cannot tell gate from up for {g.label(down)}")
                gate, up = (a, b) if ga else (b, a)
                if moe:
                    e = self._expert_index(down, (gate, up))
                    keys = (("expert_gate", gate), ("expert_up", up), ("expert_down", down))
                    for role, node in keys:
                        put(node, (role, layer, e))
                else:
                    for role, node in (("mlp_gate", gate), ("mlp_up", up), ("mlp_down", down)):
                        put(node, (role, layer, None))
                used |= {gate, up, down}
            left = [x for x in nodes if x not in used]
            if left:
                raise self.fail(f"{g.label(left[0])} in layer {layer} fits no role")
            if not moe and len(downs) != 1:
                raise self.fail(f"layer {layer} has {len(downs)} MLPs and no router")
        if rest:
            raise self.fail(f"projections outside the decoder layers: "
                            f"{[g.label(x) for v in rest.values() for x in v][:3]}")
        return out

    def _from_input(self, t: str) -> bool:
        ints = {i.name for i in self.g.model.graph.input
                if i.type.tensor_type.elem_type in (6, 7)}
        seen = set()
        q = deque([t])
        while q:
            x = q.popleft()
            if x in seen:
                continue
            seen.add(x)
            if x in ints:
                return True
            p = self.g.producer.get(x)
            if p is None:
                continue
            if self._op(p)[1] in ("Cast", "Reshape", "Unsqueeze", "Squeeze", "Flatten",
                                  "Identity"):
                q.append(self.g.nodes[p].input[0])
        return False

    def _feeds_activation(self, node: int) -> bool:
        _, fw = self.forward(self.g.nodes[node].output[0])
        return any(self._op(m)[1] in ACTIVATION_OPS for m in fw)

    def _const_index(self, t: str) -> Optional[int]:
        d = self.g.const(t, "structure")
        if d is None or d.array.size != 1 or d.is_float:
            return None
        return int(d.array.reshape(-1)[0])

    def _column_index(self, t: str) -> Optional[int]:
        """The constant column a routing-weight tensor was taken from (Gather/Slice)."""
        seen = 0
        while seen < 16:
            seen += 1
            p = self.g.producer.get(t)
            if p is None:
                return None
            n = self.g.nodes[p]
            op = self._op(p)[1]
            if op in ("Unsqueeze", "Reshape", "Cast", "Expand", "Squeeze", "Identity",
                      "Transpose"):
                t = n.input[0]
                continue
            if op == "Gather":
                return self._const_index(n.input[1])
            if op == "Slice":
                return self._const_index(n.input[1])
            return None
        return None

    def _expert_index(self, down: int, gate_up: tuple[int, ...] = ()) -> int:
        try:
            e = self._expert_index_from_flow(down)
            sig = "routing-weight column"
            for x in (down,) + gate_up:
                nb = neighbour_expert(self.g, x)
                if nb is not None and nb[1] != e:
                    raise self.fail(f"{self.g.label(x)}: the routing-weight column says expert "
                                    f"{e} but its neighbours' name_scopes say expert {nb[1]}")
                if nb is not None:
                    sig = "routing-weight column, neighbour name_scopes agree"
        except OnnxImportError as err:
            if str(err).startswith("graph structure:"):
                raise
            # The routing weights reach the expert's output in a form the walk does not know:
            # the neighbours' name_scopes (kept where a tool dropped the node's own) decide.
            got = {nb for x in (down,) + gate_up
                   if (nb := neighbour_expert(self.g, x)) is not None}
            if len(got) != 1:
                raise self.fail(f"{err}; the neighbouring nodes' name_scopes name "
                                f"{'no expert' if not got else sorted(got)}") from None
            e = got.pop()[1]
            sig = "neighbour name_scopes"
        for x in (down,) + gate_up:
            self.expert_signal[x] = sig
        return e

    def _expert_index_from_flow(self, down: int) -> int:
        g = self.g
        start = g.nodes[down].output[0]
        seen = set()
        q = deque([start])
        while q:
            x = q.popleft()
            if x in seen:
                continue
            seen.add(x)
            for ci, j in g.consumers.get(x, ()):
                n = g.nodes[ci]
                op = self._op(ci)[1]
                if op == "Concat":
                    return j
                if op == "Mul":
                    other = n.input[1 - j]
                    e = self._column_index(other)
                    if e is None:
                        e = self._mask_row(other)
                    if e is not None:
                        return e
                if op in ("Unsqueeze", "Reshape", "Cast", "Identity", "Mul", "Expand"):
                    q.extend(o for o in n.output if o)
        raise OnnxImportError(f"cannot find the expert index of {g.label(down)} (no routing-weight "
                              f"column, expert-mask row or Concat slot multiplies its output)")

    def _mask_row(self, t: str) -> Optional[int]:
        """The expert whose routing weights ``t`` holds when they are gathered at the tokens
        routed to it (transformers' expert loop, optimum's export of it):
        ``where(one_hot(selected, E).permute(...)[e])`` indexes the routing weights, so the
        constant row ``e`` taken from the one-hot mask names the expert. None unless exactly
        one such row is found among ``t``'s producers."""
        g = self.g
        rows: set[int] = set()
        seen: set[str] = set()
        q = deque([t])
        while q and len(seen) < 64:
            x = q.popleft()
            if x in seen:
                continue
            seen.add(x)
            p = g.producer.get(x)
            if p is None:
                continue
            n = g.nodes[p]
            if self._op(p)[1] == "Gather" and attr_int(n, "axis", 0) == 0 \
                    and self._from_one_hot(n.input[0]):
                e = self._const_index(n.input[1])
                if e is not None:
                    rows.add(e)
                continue
            q.extend(y for y in n.input if y)
        return rows.pop() if len(rows) == 1 else None

    def _from_one_hot(self, t: str) -> bool:
        for _ in range(8):
            p = self.g.producer.get(t)
            if p is None:
                return False
            op = self._op(p)[1]
            if op == "OneHot":
                return True
            if op not in ("Transpose", "Reshape", "Cast", "Squeeze", "Unsqueeze", "Identity"):
                return False
            t = self.g.nodes[p].input[0]
        return False


# ---------------------------------------------------------------------------------------
# assembly


def _aggregate(notes: list[str]) -> list[str]:
    groups: dict[str, list[str]] = {}
    order: list[str] = []
    for n in notes:
        head, msg = (n.split(": ", 1) if ": " in n else ("", n))
        if msg not in groups:
            groups[msg] = []
            order.append(msg)
        groups[msg].append(head)
    out = []
    for msg in order:
        heads = groups[msg]
        if len(heads) == 1:
            out.append(f"{heads[0]}: {msg}" if heads[0] else msg)
        else:
            out.append(f"{msg} ({len(heads)} weights, e.g. {heads[0]})")
    return out


def _same_value(a: Optional[WeightValue], b: Optional[WeightValue]) -> bool:
    if isinstance(a, QuantizedWeight) and isinstance(b, QuantizedWeight):
        return (a.bits == b.bits and a.block == b.block and a.signed == b.signed
                and np.array_equal(a.q, b.q) and np.array_equal(a.scales, b.scales)
                and a.scales.dtype == b.scales.dtype
                and ((a.zero_points is None and b.zero_points is None)
                     or (a.zero_points is not None and b.zero_points is not None
                         and np.array_equal(a.zero_points, b.zero_points))))
    if isinstance(a, BF16Array) and isinstance(b, BF16Array):
        return np.array_equal(a.bits, b.bits)
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(
            a.view(np.uint8), b.view(np.uint8))
    return False


def load_role_map(path: str) -> dict[str, Key]:
    """``--map mapping.json``: {"<initializer or node name>": "<Hugging Face parameter name>"}."""
    raw = load_file(path, "role map")
    if not isinstance(raw, dict):
        raise OnnxImportError(f"{path}: the role map must be a JSON object of weight or node "
                              f"name -> Hugging Face parameter name")
    out: dict[str, Key] = {}
    for name, hf in raw.items():
        k = role_from_string(hf) if isinstance(hf, str) else None
        if k is None:
            raise OnnxImportError(f"{path}: {name!r} -> {hf!r} is not a Qwen3-MoE parameter name "
                                  f"(e.g. model.layers.0.mlp.experts.3.down_proj.weight)")
        out[name] = k
    return out


def _tried(g: Graph, r: WeightRecord, structure_error: Optional[Exception]) -> str:
    names = [n for n in r.names] + [n.name for n in [r.node] + list(r.chain) if n.name]
    own = [s for n in [r.node] + list(r.chain) for s in name_scopes(n)]
    nb = sorted(set(neighbour_scopes(g, r.node_index)), key=len)[::-1]
    parts = [f"Hugging Face names (none in {names[:4]})",
             f"the node's name_scopes ({'none' if not own else 'no role in ' + repr(own[-1])})",
             f"its neighbours' name_scopes ({'none' if not nb else 'no role in ' + repr(nb[:3])})"]
    parts.append(f"the graph structure ({structure_error})" if structure_error is not None
                 else "the graph structure (complete without it)")
    return "; ".join(parts)


def assign_roles(g: Graph, records: list[WeightRecord], config: Config,
                 strategy: str = "auto", role_map: Optional[dict[str, Key]] = None,
                 explain: Optional[list[dict[str, Any]]] = None
                 ) -> tuple[list[ModelTensor], Config, list[str]]:
    """Assigns roles; returns (tensors, config updated for tying, notes). ``strategy``:
    "auto" (names, then metadata, then structure), or "names", "metadata", "structure" only.
    ``role_map`` (weight or node name -> key) overrides every other signal; ``explain``, if
    given, receives one row per weight: its role, layer, expert and the signal that decided."""
    notes: list[str] = []
    valid = [i for i, r in enumerate(records) if r.error is None]
    assigned: dict[int, Key] = {}
    signal: dict[int, str] = {}
    how: dict[str, int] = defaultdict(int)
    mapped: set[int] = set()
    if role_map:
        used = set()
        for i in valid:
            r = records[i]
            for nm in (r.tensor_name, r.node.name):
                if nm in role_map:
                    k = _fit_kind(role_map[nm], r)
                    if k is None:
                        raise OnnxImportError(f"role map: {nm!r} is a {r.kind} weight, not "
                                              f"{_kname(role_map[nm])}")
                    assigned[i], signal[i] = k, "--map"
                    mapped.add(i)
                    used.add(nm)
                    how["--map"] += 1
                    break
        unknown = sorted(set(role_map) - used)
        if unknown:
            raise OnnxImportError(f"role map: {unknown[0]!r} names no weight or weight-consuming "
                                  f"node of the graph")
    for i in valid:
        r = records[i]
        if r.fused_key is not None and i not in mapped:
            assigned[i], signal[i] = r.fused_key, r.fused_signal
            how["fused 3-D experts"] += 1
    if strategy in ("auto", "names", "metadata"):
        for i in valid:
            if i in mapped or records[i].fused_key is not None:
                continue
            r = records[i]
            k = role_by_name(r) if strategy in ("auto", "names") else None
            if k is not None:
                how["names"] += 1
                signal[i] = "Hugging Face name"
            elif strategy in ("auto", "metadata"):
                k = role_by_metadata(r)
                if k is not None:
                    how["metadata"] += 1
                    signal[i] = "node name_scopes"
            if k is not None:
                assigned[i] = k
    required = _required_keys(config)
    have = set(assigned.values())
    st: Optional[dict[int, Key]] = None
    expert_signal: dict[int, str] = {}
    st_error: Optional[Exception] = None
    if strategy in ("structure", "auto"):
        # The structure is computed whenever it can be: it fills what names and metadata leave
        # open, and cross-checks what they say.
        so = Structure(g, records, config)
        try:
            st = so.run()
            expert_signal = so.expert_signal
        except Exception as e:  # noqa: BLE001 - any failure of the analysis
            st_error = e if isinstance(e, OnnxImportError) else OnnxImportError(
                f"graph structure: analysis failed ({e!r})")
            if strategy == "structure":
                raise st_error from e
            if not required <= have:
                first = next((i for i in valid if records[i].kind == "linear"
                              and i not in assigned), None)
                if first is None:
                    raise st_error from e
                r = records[first]
                raise OnnxImportError(f"{r.what()}: no role found; tried {_tried(g, r, st_error)}"
                                      f". Name it with --map mapping.json") from e
            notes.append(f"roles: graph-structure cross-check not possible ({st_error})")
    if st is not None:
        for i, k in st.items():
            if i in mapped:
                continue
            if i in assigned and assigned[i] != k:
                raise OnnxImportError(
                    f"{records[i].what()}: its name/metadata says {_kname(assigned[i])} but the "
                    f"graph structure says {_kname(k)}")
            if i not in assigned:
                how["structure"] += 1
                sig = "graph structure"
                e_sig = expert_signal.get(records[i].node_index)
                signal[i] = f"{sig} (expert index: {e_sig})" if e_sig else sig
            else:
                signal[i] += " (structure agrees)"
            assigned[i] = k
    if explain is not None:
        for i in valid:
            if i in assigned:
                role, layer, expert = assigned[i]
                explain.append({"weight": records[i].tensor_name, "node": records[i].label,
                                "role": role, "layer": layer, "expert": expert,
                                "signal": signal[i]})
    msg = "roles: " + ", ".join(f"{v} from {k}" for k, v in sorted(how.items()))
    if st is not None and strategy == "auto" and how.get("structure", 0) < len(st):
        msg += f"; the graph structure agrees on {len(st) - how.get('structure', 0)}"
    notes.append(msg)
    # every linear weight must have a role
    for i in valid:
        r = records[i]
        if r.kind == "linear" and i not in assigned:
            raise OnnxImportError(f"{r.what()}: no role found; tried {_tried(g, r, st_error)}. "
                                  f"Name it with --map mapping.json")
    by_key: dict[Key, int] = {}
    for i, k in assigned.items():
        if k in by_key:
            a, b = records[by_key[k]], records[i]
            if k[0] == "lm_head" or not _same_value(a.value, b.value):
                raise OnnxImportError(f"{b.what()}: {_kname(k)} is already {a.what()}")
            continue
        by_key[k] = i
    # completeness and config consistency
    L = config["num_hidden_layers"]
    for k in sorted(by_key, key=_sort_key):
        role, layer, expert = k
        r = records[by_key[k]]
        if layer is not None and not 0 <= layer < L:
            raise OnnxImportError(f"{r.what()}: layer {layer} but num_hidden_layers is {L}")
        moe = layer is not None and is_moe_layer(config, layer)
        if role.startswith("expert_") or role == "router":
            if not moe:
                raise OnnxImportError(f"{r.what()}: {_kname(k)} but layer {layer} is a dense "
                                      f"MLP layer in the config")
            if expert is not None and not 0 <= expert < config["num_experts"]:
                raise OnnxImportError(f"{r.what()}: expert {expert} but num_experts is "
                                      f"{config['num_experts']}")
        if role.startswith("mlp_") and moe:
            raise OnnxImportError(f"{r.what()}: {_kname(k)} but layer {layer} is a MoE layer "
                                  f"in the config")
        want = expected_shape(role, config)
        if r.shape != want:
            orient = ""
            if r.kind == "linear" and r.node.op_type == "Gemm":
                tb = attr_int(r.node, "transB", 0)
                orient = (f" (Gemm transB={tb} reads the weight as "
                          f"{'[N, K]' if tb else '[K, N]'})")
            elif r.kind == "linear" and r.node.op_type == "MatMul":
                orient = " (MatMul reads the weight as [K, N])"
            raise OnnxImportError(f"{r.what()}: shape {list(r.shape)} (as [N, K]) does not match "
                                  f"{_kname(k)} {list(want)} from the config{orient}")
    missing = sorted(required - set(by_key), key=_sort_key)
    if missing:
        raise OnnxImportError(f"graph: missing {', '.join(_kname(k) for k in missing[:6])}"
                              f"{' ...' if len(missing) > 6 else ''}")
    # tied embeddings
    cfg = dict(config)
    emb = records[by_key[("embed", None, None)]]
    lm = records[by_key[("lm_head", None, None)]]
    tied = lm.source[:1] == emb.source[:1] and _same_value(lm.value, emb.value)
    if tied != cfg["tie_word_embeddings"]:
        notes.append(f"config: tie_word_embeddings set to {str(tied).lower()} as in the graph "
                     f"(the config said {str(cfg['tie_word_embeddings']).lower()})")
        cfg["tie_word_embeddings"] = tied
    tensors = []
    for k in sorted(by_key, key=_sort_key):
        if k[0] == "lm_head" and tied:
            continue
        r = records[by_key[k]]
        role, layer, expert = k
        tensors.append(ModelTensor(name=hf_name(role, layer, expert), role=role, layer=layer,
                                   expert=expert, value=r.weight()))
        notes.extend(r.notes)
    return tensors, cfg, _aggregate(notes)


def _kname(k: Key) -> str:
    role, layer, expert = k
    s = role
    if layer is not None:
        s += f" of layer {layer}"
    if expert is not None:
        s += f", expert {expert}"
    return s


def _sort_key(k: Key) -> tuple[int, int, int]:
    role, layer, expert = k
    if layer is None:
        lk = -1 if role == "embed" else 1 << 30
    else:
        lk = layer
    return (lk, ROLES.index(role), -1 if expert is None else expert)


def _required_keys(c: Config) -> set[Key]:
    req: set[Key] = {("embed", None, None), ("final_norm", None, None), ("lm_head", None, None)}
    for l in range(c["num_hidden_layers"]):
        for role in ("q_proj", "k_proj", "v_proj", "o_proj", "q_norm", "k_norm", "input_norm",
                     "post_attention_norm"):
            req.add((role, l, None))
        if is_moe_layer(c, l):
            req.add(("router", l, None))
            for e in range(c["num_experts"]):
                for role in ("expert_gate", "expert_up", "expert_down"):
                    req.add((role, l, e))
        else:
            for role in ("mlp_gate", "mlp_up", "mlp_down"):
                req.add((role, l, None))
    return req
