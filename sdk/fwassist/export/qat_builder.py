# SPDX-License-Identifier: Apache-2.0
"""Builds QAT ONNX graphs of a Qwen3-MoE decoder from float weights, for tests and examples.

``build_qat_onnx(path, weights, config, quant)`` writes a full forward graph (input_ids [1, T]
int64 -> logits [1, T, vocab]): embedding; per layer RMSNorm, attention with q/k/v/o projections,
per-head q/k RMSNorm, RoPE (config theta), GQA, causal mask; RMSNorm; MoE (router, float32
softmax over all experts, top-k, renormalisation when norm_topk_prob, every expert computed
(SwiGLU) and weighted by its dense routing weight, zero when not selected) or a dense MLP
(mlp_only_layers / decoder_sparse_step); final norm; lm_head (tied or not).

Each weight is emitted in the pattern its :class:`QuantSpec` asks for: float, fake quant
``Q -> DQ``, integer initializer ``-> DQ``, ``Q -> Clip -> DQ`` (any width 2..8 declared by the
Clip range), ``DQ -> Transpose -> MatMul`` ([N, K] storage), ``com.microsoft::MatMulNBits`` or
qonnx ``Quant``; per-tensor, per-channel or blocked; symmetric or with zero points; float32,
float16 or bfloat16 scales; raw_data or int32_data encoding. Names: Hugging Face names
(``naming="hf"``), torch-dynamo style ``val_N`` with ``pkg.torch.onnx.name_scopes`` metadata
(``"dynamo"``), or none at all (``"none"``). The graphs run in onnxruntime with
``ORT_DISABLE_ALL`` (needed anyway: ORT's int2 constant folding fails at higher levels), except
qonnx ``Quant`` and bfloat16-scale DequantizeLinear, which onnxruntime has no kernel for.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Callable, Optional, Union

import numpy as np
from numpy.typing import ArrayLike

from ..errors import require
from .mapping import hf_name, is_moe_layer, normalize_config
from .tensors import pack_subbyte

PATTERNS = ("float", "qdq", "dq", "qcdq", "dq_transpose", "matmulnbits", "qonnx")
QONNX_DOMAIN = "qonnx.custom_op.general"


@dataclass(frozen=True)
class QuantSpec:
    """How one weight is emitted.

    pattern: one of PATTERNS. bits: code width (qdq/dq/dq_transpose: 2, 4, 8; qcdq/qonnx:
    2..8; matmulnbits: 2, 4, 8). block: block length along K; None = per output channel;
    0 = per tensor. symmetric: no zero point (else asymmetric min/max with zero points).
    signed: signed code type (default: symmetric). scale_dtype: "float32", "float16",
    "bfloat16". encoding: "raw" or "int32" (int32_data) for integer initializers. narrow:
    narrow signed range (qcdq/qonnx). container_bits: qcdq storage width (8 or 4).
    gemm: Gemm(transB=1) with the weight stored [N, K] instead of MatMul with [K, N].
    negative_scales: flip the sign of every other scale. float_dtype: for "float".
    scale_round: "float16" rounds the scales to float16 values before storing them at
    scale_dtype (float32 scales that are exactly float16, as a QAT trainer with float16 scales
    writes them for QuantizeLinear, which refuses float16 scales).
    """

    pattern: str = "qdq"
    bits: int = 4
    block: Optional[int] = 32
    symmetric: bool = True
    signed: Optional[bool] = None
    scale_dtype: str = "float32"
    encoding: str = "raw"
    narrow: bool = False
    container_bits: int = 8
    gemm: bool = False
    negative_scales: bool = False
    float_dtype: str = "float32"
    scale_round: Optional[str] = None

    @property
    def is_signed(self) -> bool:
        return self.symmetric if self.signed is None else bool(self.signed)


FLOAT_SPEC = QuantSpec(pattern="float")
QuantArg = Union[None, QuantSpec, dict[str, QuantSpec], Callable[[str, str], Optional[QuantSpec]]]


def tiny_config(**overrides: Any) -> dict[str, Any]:
    """A small Qwen3-MoE config (Hugging Face keys) for tests."""
    c = {"model_type": "qwen3_moe", "vocab_size": 128, "hidden_size": 64,
         "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
         "head_dim": 16, "intermediate_size": 96, "moe_intermediate_size": 32,
         "num_experts": 8, "num_experts_per_tok": 2, "norm_topk_prob": True,
         "decoder_sparse_step": 1, "mlp_only_layers": [], "rms_norm_eps": 1e-6,
         "rope_theta": 10000.0, "max_position_embeddings": 512, "tie_word_embeddings": False,
         "hidden_act": "silu"}
    c.update(overrides)
    return c


def random_weights(config: dict[str, Any], seed: int = 0) -> dict[str, np.ndarray]:
    """Random float32 weights with Hugging Face names and [N, K] Linear orientation."""
    c, _ = normalize_config(config)
    rng = np.random.default_rng(seed)
    H, hd = c["hidden_size"], c["head_dim"]
    w: dict[str, np.ndarray] = {}

    def lin(name: str, n: int, k: int, gain: float = 1.0) -> None:
        w[name] = (rng.standard_normal((n, k)) * gain / np.sqrt(k)).astype(np.float32)

    def norm(name: str, n: int) -> None:
        w[name] = (1.0 + 0.2 * rng.standard_normal(n)).astype(np.float32)

    w[hf_name("embed", None, None)] = rng.standard_normal((c["vocab_size"], H)).astype(np.float32)
    for l in range(c["num_hidden_layers"]):
        lin(hf_name("q_proj", l, None), c["num_attention_heads"] * hd, H)
        lin(hf_name("k_proj", l, None), c["num_key_value_heads"] * hd, H)
        lin(hf_name("v_proj", l, None), c["num_key_value_heads"] * hd, H)
        lin(hf_name("o_proj", l, None), H, c["num_attention_heads"] * hd)
        norm(hf_name("q_norm", l, None), hd)
        norm(hf_name("k_norm", l, None), hd)
        norm(hf_name("input_norm", l, None), H)
        norm(hf_name("post_attention_norm", l, None), H)
        if is_moe_layer(c, l):
            lin(hf_name("router", l, None), c["num_experts"], H, gain=3.0)
            I = c["moe_intermediate_size"]
            for e in range(c["num_experts"]):
                lin(hf_name("expert_gate", l, e), I, H)
                lin(hf_name("expert_up", l, e), I, H)
                lin(hf_name("expert_down", l, e), H, I)
        else:
            I = c["intermediate_size"]
            lin(hf_name("mlp_gate", l, None), I, H)
            lin(hf_name("mlp_up", l, None), I, H)
            lin(hf_name("mlp_down", l, None), H, I)
    norm(hf_name("final_norm", None, None), H)
    if not c["tie_word_embeddings"]:
        lin(hf_name("lm_head", None, None), c["vocab_size"], H)
    return w


# ---------------------------------------------------------------------------------------
# quantization arithmetic (numpy, float32)


def _to_scale_dtype(s: np.ndarray, dt: str) -> tuple[np.ndarray, np.ndarray]:
    """(stored array, exact float32 values): float32 / float16 / bfloat16 (uint16 bits)."""
    s = s.astype(np.float32)
    if dt == "float32":
        return s, s
    if dt == "float16":
        h = s.astype(np.float16)
        return h, h.astype(np.float32)
    if dt == "bfloat16":
        u = s.view(np.uint32).astype(np.uint64)
        r = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)   # round to nearest even
        return r, (r.astype(np.uint32) << 16).view(np.float32)
    raise ValueError(f"scale_dtype {dt!r}")


def quant_params(W: np.ndarray, spec: QuantSpec) -> dict[str, Any]:
    """Scales and zero points of W [N, K] (HF orientation) at the spec's granularity.
    Returns dict(b: block along K (K for per-channel/tensor), scales (N, nb) stored dtype,
    s32 (N, nb) float32, zp (N, nb) int64 or None, lo, hi (code range))."""
    N, K = W.shape
    bits = spec.bits
    if spec.block == 0:
        b, per_tensor = K, True
    elif spec.block is None:
        b, per_tensor = K, False
    else:
        b, per_tensor = spec.block, False
    nb = -(-K // b)
    Wp = np.zeros((N, nb * b), np.float32)
    Wp[:, :K] = W
    mask = np.zeros((N, nb * b), bool)
    mask[:, :K] = True
    blk = Wp.reshape(N, nb, b)
    m = mask.reshape(N, nb, b)
    signed = spec.is_signed
    if signed:
        lo, hi = -(1 << (bits - 1)) + int(spec.narrow), (1 << (bits - 1)) - 1
    else:
        lo, hi = 0, (1 << bits) - 1 - int(spec.narrow)
    if spec.symmetric:
        amax = np.where(m, np.abs(blk), 0).max(axis=2)
        if per_tensor:
            amax = np.full_like(amax, amax.max())
        s = amax / max(hi, 1)
        s = np.where(s == 0, 1.0, s).astype(np.float32)
        zp = None
    else:
        mn = np.minimum(np.where(m, blk, np.inf).min(axis=2), 0)
        mx = np.maximum(np.where(m, blk, -np.inf).max(axis=2), 0)
        if per_tensor:
            mn, mx = np.full_like(mn, mn.min()), np.full_like(mx, mx.max())
        levels = (1 << bits) - 1 - int(spec.narrow)
        s = ((mx - mn) / levels).astype(np.float32)
        s = np.where(s == 0, 1.0, s).astype(np.float32)
        zp = None
    if spec.scale_round == "float16":
        s = s.astype(np.float16).astype(np.float32)
    elif spec.scale_round is not None:
        raise ValueError(f"scale_round {spec.scale_round!r}")
    if spec.negative_scales:
        if not spec.symmetric:
            raise ValueError("negative_scales needs symmetric quantization")
        sign = np.where((np.arange(N)[:, None] + np.arange(nb)[None, :]) % 2 == 1, -1, 1)
        s = (s * sign).astype(np.float32)
    stored, s32 = _to_scale_dtype(s, spec.scale_dtype)
    if not spec.symmetric:
        zpu = np.clip(np.rint(-mn / s32), 0, levels).astype(np.int64)
        zp = zpu + (lo if signed else 0)
    return {"b": b, "scales": stored, "s32": s32, "zp": zp, "lo": lo, "hi": hi, "nb": nb,
            "per_tensor": per_tensor}


def codes_for(W: np.ndarray, p: dict[str, Any]) -> np.ndarray:
    """clamp(rne(W / s) + zp) with an IEEE float32 division, per (row, block)."""
    N, K = W.shape
    s_el = np.repeat(p["s32"], p["b"], axis=1)[:, :K]
    r = np.rint(np.divide(W.astype(np.float32), s_el, dtype=np.float32)).astype(np.int64)
    if p["zp"] is not None:
        r = r + np.repeat(p["zp"], p["b"], axis=1)[:, :K]
    out: np.ndarray = np.clip(r, p["lo"], p["hi"])
    return out


# ---------------------------------------------------------------------------------------
# the graph builder


def _onnx() -> ModuleType:
    return require("onnx", "export", "building an ONNX graph")


class _Builder:
    def __init__(self, naming: str, encoding_default: str = "raw") -> None:
        onnx = _onnx()
        self.onnx = onnx
        self.TP = onnx.TensorProto
        self.naming = naming
        self.nodes: list[Any] = []
        self.inits: list[Any] = []
        self.counter = 0
        self.scope_path = ""
        self.opset_need = 21
        self.domains: dict[str, int] = {}
        self.cache: dict[Any, str] = {}

    # -- names ------------------------------------------------------------------------------
    def _n(self) -> int:
        self.counter += 1
        return self.counter

    def tname(self, hint: str) -> str:
        k = self._n()
        if self.naming == "hf":
            base = f"/{self.scope_path.replace('.', '/')}" if self.scope_path else ""
            return f"{base}/{hint}_{k}"
        if self.naming == "dynamo":
            return f"val_{k}"
        return f"t{k}"

    def wname(self, hf: str, suffix: str = "") -> str:
        """Name of a weight-bearing initializer."""
        if self.naming == "hf":
            return hf + suffix
        return self.tname("w")

    def node(self, op: str, inputs: list[str], n_out: int = 1, domain: str = "",
             outputs: Optional[list[str]] = None, **attrs: Any) -> list[str]:
        helper = self.onnx.helper
        outs = outputs or [self.tname(f"{op}_output") for _ in range(n_out)]
        k = self._n()
        name = ""
        if self.naming == "hf":
            base = f"/{self.scope_path.replace('.', '/')}" if self.scope_path else ""
            name = f"{base}/{op}_{k}"
        elif self.naming == "dynamo":
            name = f"node_{op}_{k}"
        n = helper.make_node(op, inputs, outs, name=name, domain=domain or None, **attrs)
        if self.naming == "dynamo":
            parts = self.scope_path.split(".") if self.scope_path else []
            scopes = [""]
            for i in range(len(parts)):
                if i + 1 < len(parts) and parts[i + 1].isdigit():
                    continue
                scopes.append(".".join(parts[: i + 1]))
            scopes.append(f"{op.lower()}_{k}")
            p = n.metadata_props.add()
            p.key = "pkg.torch.onnx.name_scopes"
            p.value = repr(scopes)
            p = n.metadata_props.add()
            p.key = "pkg.torch.onnx.class_hierarchy"
            p.value = repr(["Qwen3MoeForCausalLM"] + ["torch.nn.Module"] * (len(scopes) - 2)
                           + [f"aten.{op.lower()}.default"])
        self.nodes.append(n)
        return outs

    def op(self, op: str, *inputs: str, domain: str = "", **attrs: Any) -> str:
        return self.node(op, list(inputs), 1, domain=domain, **attrs)[0]

    class _Scope:
        def __init__(self, b: _Builder, path: str) -> None:
            self.b, self.path = b, path

        def __enter__(self) -> None:
            self.old = self.b.scope_path
            self.b.scope_path = self.path

        def __exit__(self, *a: Any) -> None:
            self.b.scope_path = self.old

    def scope(self, path: str) -> _Builder._Scope:
        return self._Scope(self, path)

    # -- initializers ---------------------------------------------------------------------
    def init_array(self, arr: np.ndarray, name: Optional[str] = None) -> str:
        nh = self.onnx.numpy_helper
        name = name or self.tname("const")
        self.inits.append(nh.from_array(np.array(arr, order="C"), name))
        return name

    def init_bf16(self, bits: np.ndarray, name: str) -> str:
        t = self.onnx.TensorProto()
        t.name = name
        t.data_type = self.TP.BFLOAT16
        t.dims.extend(bits.shape)
        t.raw_data = np.ascontiguousarray(bits.astype("<u2")).tobytes()
        self.inits.append(t)
        return name

    def init_scale(self, arr: np.ndarray, dt: str, name: str) -> str:
        if dt == "bfloat16":
            return self.init_bf16(arr, name)
        return self.init_array(arr.astype(np.float16 if dt == "float16" else np.float32), name)

    def init_int(self, vals: np.ndarray, bits: int, signed: bool, name: str,
                 encoding: str = "raw") -> str:
        TP = self.TP
        ty = {(2, True): TP.INT2, (2, False): TP.UINT2, (4, True): TP.INT4,
              (4, False): TP.UINT4, (8, True): TP.INT8, (8, False): TP.UINT8}[(bits, signed)]
        if bits == 2:
            self.opset_need = max(self.opset_need, 25)
        vals = np.asarray(vals, dtype=np.int64)
        if encoding == "int32":
            t = self.onnx.helper.make_tensor(name, ty, list(vals.shape),
                                             vals.reshape(-1).tolist(), raw=False)
        else:
            t = self.onnx.TensorProto()
            t.name = name
            t.data_type = ty
            t.dims.extend(vals.shape)
            if bits < 8:
                t.raw_data = pack_subbyte(vals.reshape(-1), bits)
            else:
                t.raw_data = vals.astype(np.int8 if signed else np.uint8).tobytes()
        self.inits.append(t)
        return name

    def const_i64(self, vals: ArrayLike) -> str:
        key = ("i64", tuple(np.asarray(vals).reshape(-1).tolist()), np.asarray(vals).shape)
        if key not in self.cache:
            self.cache[key] = self.init_array(np.asarray(vals, dtype=np.int64))
        return self.cache[key]

    def const_f32(self, vals: ArrayLike) -> str:
        a = np.asarray(vals, dtype=np.float32)
        key = ("f32", a.tobytes(), a.shape)
        if key not in self.cache:
            self.cache[key] = self.init_array(a)
        return self.cache[key]


class _Model:
    def __init__(self, weights: dict[str, np.ndarray], config: dict[str, Any], quant: QuantArg,
                 naming: str, moe_combine: str, opset: Optional[int]) -> None:
        self.c, _ = normalize_config(config)
        self.raw_config = config
        self.w = weights
        self.quant = quant
        self.b = _Builder(naming)
        self.moe_combine = moe_combine
        self.opset = opset
        self.weight_tensors: dict[str, str] = {}

    def spec_for(self, name: str, role: str) -> QuantSpec:
        q = self.quant
        spec = None
        if q is None:
            spec = None
        elif isinstance(q, QuantSpec):
            spec = q if role not in ("router", "embed", "lm_head") else None
        elif isinstance(q, dict):
            dflt = q.get("default") if role not in ("router", "embed", "lm_head") else None
            spec = q.get(name, q.get(role, dflt))
        else:
            spec = q(name, role)
        return spec or FLOAT_SPEC

    # -- weights ------------------------------------------------------------------------------
    def weight(self, name: str, role: str, consumer: str) -> tuple[str, QuantSpec]:
        """Emits the weight (HF [N, K] in self.w[name]) for ``consumer`` ("matmul", "gemm" or
        "gather"); returns the tensor the consumer reads and the spec."""
        b = self.b
        TP = b.TP
        W = np.asarray(self.w[name], dtype=np.float32)
        spec = self.spec_for(name, role)
        if spec.pattern not in PATTERNS:
            raise ValueError(f"{name}: unknown pattern {spec.pattern!r}")
        nk = consumer in ("gemm", "gather") or spec.pattern == "dq_transpose"
        N, K = W.shape
        if spec.pattern == "float":
            arr = W if nk else W.T
            if spec.float_dtype == "float32":
                return b.init_array(arr.astype(np.float32), b.wname(name)), spec
            if spec.float_dtype == "float16":
                t = b.init_array(arr.astype(np.float16), b.wname(name))
            else:
                bf16, _ = _to_scale_dtype(np.ascontiguousarray(arr), "bfloat16")
                t = b.init_bf16(bf16, b.wname(name))
            return b.op("Cast", t, to=TP.FLOAT), spec
        p = quant_params(W, spec)
        bits, signed = spec.bits, spec.is_signed
        # scale/zp tensors in stored orientation
        if spec.pattern == "matmulnbits":
            raise ValueError(f"{name}: matmulnbits weights are built by linear()")
        if spec.block == 0:
            s_st, z_st, axis, block = p["scales"][0, 0], (None if p["zp"] is None
                                                          else p["zp"][0, 0]), 0, 0
        elif spec.block is None:
            s_st = p["scales"][:, 0]
            z_st = None if p["zp"] is None else p["zp"][:, 0]
            axis, block = (0 if nk else 1), 0
        else:
            s_st = p["scales"] if nk else p["scales"].T
            z_st = None if p["zp"] is None else (p["zp"] if nk else p["zp"].T)
            axis, block = (1 if nk else 0), spec.block
        s_st = np.ascontiguousarray(s_st)
        if spec.scale_dtype != "float32":
            b.opset_need = max(b.opset_need, 23)
        attrs: dict[str, Any] = {"axis": axis}
        if block:
            attrs["block_size"] = block
        if spec.pattern == "qonnx":
            b.domains[QONNX_DOMAIN] = 1
            Wst = W if nk else W.T
            w_t = b.init_array(np.ascontiguousarray(Wst), b.wname(name))
            s_q = np.asarray(p["s32"], np.float32)
            if spec.block not in (None, 0):
                raise ValueError("qonnx Quant has no blocked granularity")
            s_b = (s_q[0, 0] if spec.block == 0 else (s_q[:, :1] if nk else s_q[:, 0][None, :]))
            z = p["zp"]
            z_b = (np.zeros((), np.float32) if z is None else
                   np.asarray(z[0, 0] if spec.block == 0 else (z[:, :1] if nk else
                                                                z[:, 0][None, :]), np.float32))
            s_t = b.init_array(np.asarray(s_b, np.float32), b.wname(name, "_scale"))
            z_t = b.init_array(np.asarray(z_b, np.float32), b.wname(name, "_zeropt"))
            bw = b.init_array(np.asarray(float(bits), np.float32), b.wname(name, "_bitwidth"))
            out = b.op("Quant", w_t, s_t, z_t, bw, domain=QONNX_DOMAIN, signed=int(signed),
                       narrow=int(spec.narrow), rounding_mode="ROUND")
            return out, spec
        s_t = b.init_scale(s_st, spec.scale_dtype, b.wname(name, "_scale"))
        dq_attrs = dict(attrs)
        if spec.scale_dtype != "float32":
            dq_attrs["output_dtype"] = TP.FLOAT
        cbits = spec.container_bits if spec.pattern == "qcdq" else bits
        if spec.pattern in ("qdq", "qcdq"):
            if spec.pattern == "qdq" and bits not in (2, 4, 8):
                raise ValueError(f"{name}: qdq needs bits 2, 4 or 8 (use qcdq for {bits})")
            Wst = W if nk else W.T
            w_t = b.init_array(np.ascontiguousarray(Wst), b.wname(name))
            zp_vals = z_st if z_st is not None else np.zeros(np.shape(s_st), np.int64)
            z_t = b.init_int(np.asarray(zp_vals), cbits, signed, b.wname(name, "_zero_point"),
                             spec.encoding)
            q = b.op("QuantizeLinear", w_t, s_t, z_t, **attrs)
            if spec.pattern == "qcdq":
                lo_t = b.init_int(np.asarray(p["lo"]), cbits, signed, b.wname(name, "_clip_min"),
                                  spec.encoding)
                hi_t = b.init_int(np.asarray(p["hi"]), cbits, signed, b.wname(name, "_clip_max"),
                                  spec.encoding)
                q = b.op("Clip", q, lo_t, hi_t)
            out = b.op("DequantizeLinear", q, s_t, z_t, **dq_attrs)
        else:  # dq, dq_transpose
            if bits not in (2, 4, 8):
                raise ValueError(f"{name}: {spec.pattern} needs bits 2, 4 or 8")
            codes = codes_for(W, p)
            c_st = codes if nk else codes.T
            c_t = b.init_int(np.ascontiguousarray(c_st), bits, signed, b.wname(name),
                             spec.encoding)
            ins = [c_t, s_t]
            if z_st is not None:
                ins.append(b.init_int(np.asarray(z_st), bits, signed,
                                      b.wname(name, "_zero_point"), spec.encoding))
            out = b.op("DequantizeLinear", *ins, **dq_attrs)
        if spec.scale_dtype != "float32" and "output_dtype" not in dq_attrs:
            out = b.op("Cast", out, to=TP.FLOAT)
        if spec.pattern == "dq_transpose" and consumer == "matmul":
            out = b.op("Transpose", out, perm=[1, 0])
        return out, spec

    def linear(self, x: str, name: str, role: str) -> str:
        """y = x @ W.T for x [T, K]."""
        b = self.b
        spec = self.spec_for(name, role)
        W = np.asarray(self.w[name], dtype=np.float32)
        N, K = W.shape
        if spec.pattern == "matmulnbits":
            b.domains["com.microsoft"] = 1
            if spec.block is None or spec.block <= 0 or spec.bits not in (2, 4, 8):
                raise ValueError(f"{name}: matmulnbits needs bits 2/4/8 and a block size")
            p = quant_params(W, spec)
            codes = codes_for(W, p)
            bs, bits = spec.block, spec.bits
            kb = -(-K // bs)
            u = codes - (0 if not spec.is_signed else p["lo"])
            if spec.is_signed and p["zp"] is not None:
                raise ValueError(f"{name}: matmulnbits with zero points needs unsigned codes")
            up = np.zeros((N, kb * bs), np.int64)
            up[:, :K] = u
            if bits == 8:
                Bb = up.astype(np.uint8).reshape(N, kb, bs)
            else:
                Bb = np.frombuffer(pack_subbyte(up.reshape(-1), bits), np.uint8).reshape(
                    N, kb, bs * bits // 8)
            ins = [x, b.init_array(Bb, b.wname(name)),
                   b.init_array(p["s32"].astype(np.float32), b.wname(name, "_scales"))]
            if p["zp"] is not None:
                per = 8 // bits
                zb = -(-kb // per)
                zz = np.zeros((N, zb * per), np.int64)
                zz[:, :kb] = p["zp"]
                if bits == 8:
                    zbytes = zz.astype(np.uint8)
                else:
                    zbytes = np.frombuffer(pack_subbyte(zz.reshape(-1), bits), np.uint8)
                ins.append(b.init_array(zbytes.reshape(N, zb), b.wname(name, "_zero_points")))
            if spec.scale_dtype != "float32":
                raise ValueError(f"{name}: matmulnbits with float32 activations needs float32 "
                                 f"scales")
            return b.node("MatMulNBits", ins, 1, domain="com.microsoft", K=K, N=N, bits=bits,
                          block_size=bs, accuracy_level=0)[0]
        if spec.gemm:
            w, _ = self.weight(name, role, "gemm")
            return b.op("Gemm", x, w, transB=1)
        w, _ = self.weight(name, role, "matmul")
        return b.op("MatMul", x, w)

    def norm_weight(self, name: str) -> str:
        b = self.b
        return b.init_array(np.asarray(self.w[name], np.float32), b.wname(name))

    # -- blocks ---------------------------------------------------------------------------
    def rms(self, x: str, wname: str) -> str:
        b = self.b
        sq = b.op("Mul", x, x)
        m = b.op("ReduceMean", sq, b.const_i64([-1]), keepdims=1)
        e = b.op("Add", m, b.const_f32(self.c["rms_norm_eps"]))
        r = b.op("Reciprocal", b.op("Sqrt", e))
        return b.op("Mul", b.op("Mul", x, r), self.norm_weight(wname))

    def rope(self, x: str, cos: str, sin: str) -> str:
        b = self.b
        hd = self.c["head_dim"]
        x1 = b.op("Slice", x, b.const_i64([0]), b.const_i64([hd // 2]), b.const_i64([-1]))
        x2 = b.op("Slice", x, b.const_i64([hd // 2]), b.const_i64([hd]), b.const_i64([-1]))
        rot = b.op("Concat", b.op("Neg", x2), x1, axis=-1)
        return b.op("Add", b.op("Mul", x, cos), b.op("Mul", rot, sin))

    def attention(self, l: int, x: str, cos: str, sin: str, mask: str) -> str:
        b, c = self.b, self.c
        nh, nkv, hd = c["num_attention_heads"], c["num_key_value_heads"], c["head_dim"]
        pre = f"model.layers.{l}.self_attn"
        heads = {}
        for role, n in (("q_proj", nh), ("k_proj", nkv), ("v_proj", nkv)):
            with b.scope(f"{pre}.{role}"):
                y = self.linear(x, hf_name(role, l, None), role)
            with b.scope(pre):
                heads[role] = b.op("Reshape", y, b.const_i64([-1, n, hd]))
        with b.scope(f"{pre}.q_norm"):
            q = self.rms(heads["q_proj"], hf_name("q_norm", l, None))
        with b.scope(f"{pre}.k_norm"):
            k = self.rms(heads["k_proj"], hf_name("k_norm", l, None))
        with b.scope(pre):
            q = b.op("Transpose", self.rope(q, cos, sin), perm=[1, 0, 2])    # [nh, T, hd]
            k = b.op("Transpose", self.rope(k, cos, sin), perm=[1, 0, 2])    # [nkv, T, hd]
            v = b.op("Transpose", heads["v_proj"], perm=[1, 0, 2])
            rep = nh // nkv
            if rep > 1:
                def repeat(t: str) -> str:
                    t = b.op("Unsqueeze", t, b.const_i64([1]))
                    t = b.op("Tile", t, b.const_i64([1, rep, 1, 1]))
                    return b.op("Reshape", t, b.const_i64([nh, -1, hd]))
                k, v = repeat(k), repeat(v)
            s = b.op("MatMul", q, b.op("Transpose", k, perm=[0, 2, 1]))
            s = b.op("Add", b.op("Mul", s, b.const_f32(1.0 / np.sqrt(hd))), mask)
            p = b.op("Softmax", s, axis=-1)
            o = b.op("MatMul", p, v)                                          # [nh, T, hd]
            o = b.op("Reshape", b.op("Transpose", o, perm=[1, 0, 2]), b.const_i64([-1, nh * hd]))
        with b.scope(f"{pre}.o_proj"):
            return self.linear(o, hf_name("o_proj", l, None), "o_proj")

    def mlp(self, x: str, l: int, e: Optional[int], pre: str) -> str:
        b = self.b
        roles = ("expert_gate", "expert_up", "expert_down") if e is not None else (
            "mlp_gate", "mlp_up", "mlp_down")
        with b.scope(f"{pre}.gate_proj"):
            g = self.linear(x, hf_name(roles[0], l, e), roles[0])
        with b.scope(f"{pre}.up_proj"):
            u = self.linear(x, hf_name(roles[1], l, e), roles[1])
        with b.scope(f"{pre}.act_fn"):
            a = b.op("Mul", b.op("Mul", g, b.op("Sigmoid", g)), u)
        with b.scope(f"{pre}.down_proj"):
            return self.linear(a, hf_name(roles[2], l, e), roles[2])

    def moe(self, l: int, x: str) -> str:
        b, c = self.b, self.c
        E, k = c["num_experts"], c["num_experts_per_tok"]
        pre = f"model.layers.{l}.mlp"
        with b.scope(f"{pre}.gate"):
            logits = self.linear(x, hf_name("router", l, None), "router")
        with b.scope(pre):
            probs = b.op("Softmax", logits, axis=-1)
            topv, topi = b.node("TopK", [probs, b.const_i64([k])], 2, axis=-1, largest=1,
                                sorted=1)
            if c["norm_topk_prob"]:
                topv = b.op("Div", topv, b.op("ReduceSum", topv, b.const_i64([-1]), keepdims=1))
            zeros = b.op("ConstantOfShape", b.op("Shape", probs),
                         value=b.onnx.helper.make_tensor("v", b.TP.FLOAT, [1], [0.0]))
            rw = b.op("ScatterElements", zeros, topi, topv, axis=1)            # [T, E]
        ys = []
        acc = None
        for e in range(E):
            y = self.mlp(x, l, e, f"{pre}.experts.{e}")
            with b.scope(pre):
                if self.moe_combine == "concat":
                    ys.append(b.op("Unsqueeze", y, b.const_i64([0])))
                else:
                    col = b.op("Gather", rw, b.const_i64([e]), axis=1)          # [T, 1]
                    t = b.op("Mul", y, col)
                    acc = t if acc is None else b.op("Add", acc, t)
        if self.moe_combine == "concat":
            with b.scope(pre):
                st = b.op("Concat", *ys, axis=0)                                 # [E, T, H]
                w = b.op("Unsqueeze", b.op("Transpose", rw, perm=[1, 0]), b.const_i64([2]))
                acc = b.op("ReduceSum", b.op("Mul", st, w), b.const_i64([0]), keepdims=0)
        if acc is None:
            raise ValueError(f"layer {l}: a MoE layer needs at least one expert")
        return acc

    def build(self) -> Any:
        b, c = self.b, self.c
        TP = b.TP
        helper = b.onnx.helper
        H, hd, V = c["hidden_size"], c["head_dim"], c["vocab_size"]
        ids = "input_ids"
        with b.scope("model.embed_tokens"):
            emb_w, _ = self.weight(hf_name("embed", None, None), "embed", "gather")
            h = b.op("Gather", emb_w, ids, axis=0)
        with b.scope("model"):
            h = b.op("Reshape", h, b.const_i64([-1, H]))
        with b.scope("model.rotary_emb"):
            T = b.op("Gather", b.op("Shape", ids), b.const_i64(1), axis=0)
            pos = b.op("Cast", b.op("Range", b.const_i64(0), T, b.const_i64(1)), to=TP.FLOAT)
            inv = (1.0 / (c["rope_theta"] ** (np.arange(0, hd, 2, dtype=np.float64) / hd)))
            f = b.op("Mul", b.op("Unsqueeze", pos, b.const_i64([1])),
                     b.const_f32(inv.astype(np.float32)))
            f = b.op("Concat", f, f, axis=-1)
            cos = b.op("Unsqueeze", b.op("Cos", f), b.const_i64([1]))
            sin = b.op("Unsqueeze", b.op("Sin", f), b.const_i64([1]))
        with b.scope("model"):
            TT = b.op("Concat", b.op("Unsqueeze", T, b.const_i64([0])),
                      b.op("Unsqueeze", T, b.const_i64([0])), axis=0)
            full = b.op("ConstantOfShape", TT,
                        value=helper.make_tensor("v", TP.FLOAT, [1], [-np.inf]))
            mask = b.op("Trilu", full, b.const_i64(1), upper=1)
        for l in range(c["num_hidden_layers"]):
            with b.scope(f"model.layers.{l}.input_layernorm"):
                x = self.rms(h, hf_name("input_norm", l, None))
            a = self.attention(l, x, cos, sin, mask)
            with b.scope(f"model.layers.{l}"):
                h = b.op("Add", h, a)
            with b.scope(f"model.layers.{l}.post_attention_layernorm"):
                x = self.rms(h, hf_name("post_attention_norm", l, None))
            if is_moe_layer(c, l):
                m = self.moe(l, x)
            else:
                m = self.mlp(x, l, None, f"model.layers.{l}.mlp")
            with b.scope(f"model.layers.{l}"):
                h = b.op("Add", h, m)
        with b.scope("model.norm"):
            x = self.rms(h, hf_name("final_norm", None, None))
        with b.scope("lm_head"):
            if c["tie_word_embeddings"]:
                lg = b.op("Gemm", x, emb_w, transB=1)
            else:
                lg = self.linear(x, hf_name("lm_head", None, None), "lm_head")
            b.node("Unsqueeze", [lg, b.const_i64([0])], outputs=["logits"])
        opset = self.opset or b.opset_need
        imports = [helper.make_opsetid("", opset)]
        imports += [helper.make_opsetid(d, v) for d, v in sorted(b.domains.items())]
        graph = helper.make_graph(
            b.nodes, "qwen3_moe_qat",
            [helper.make_tensor_value_info(ids, TP.INT64, [1, "T"])],
            [helper.make_tensor_value_info("logits", TP.FLOAT, [1, "T", V])], b.inits)
        return helper.make_model(graph, opset_imports=imports, producer_name="fwassist.qat_builder")


def _shuffle_topo(model: Any, seed: int) -> None:
    """Rewrites the node list in a random topological order and shuffles initializers."""
    g = model.graph
    nodes = list(g.node)
    prod = {o: i for i, n in enumerate(nodes) for o in n.output}
    deps = [{prod[x] for x in n.input if x in prod} for n in nodes]
    users: dict[int, list[int]] = {}
    for i, d in enumerate(deps):
        for j in d:
            users.setdefault(j, []).append(i)
    rnd = random.Random(seed)
    indeg = [len(d) for d in deps]
    ready = [i for i, d in enumerate(indeg) if d == 0]
    order = []
    while ready:
        i = ready.pop(rnd.randrange(len(ready)))
        order.append(i)
        for u in users.get(i, ()):
            indeg[u] -= 1
            if indeg[u] == 0:
                ready.append(u)
    new = [nodes[i] for i in order]
    del g.node[:]
    g.node.extend(new)
    inits = list(g.initializer)
    rnd.shuffle(inits)
    del g.initializer[:]
    g.initializer.extend(inits)


def build_qat_onnx(path: Optional[str], weights: dict[str, np.ndarray], config: dict[str, Any],
                   quant: QuantArg = None, *,
                   naming: str = "hf", opset: Optional[int] = None, external_data: bool = False,
                   config_metadata: Optional[bool] = None, config_json: bool = False,
                   moe_combine: str = "gather", shuffle_seed: Optional[int] = None) -> Any:
    """Builds (and, when ``path`` is given, writes) a QAT ONNX Qwen3-MoE decoder.

    weights: Hugging Face names -> float32 arrays ([N, K] for Linear weights), e.g. from
    :func:`random_weights`. config: Hugging Face config dict (4.x or 5.x keys). quant: a
    QuantSpec for every projection (not router/embed/lm_head), a dict keyed by HF name, role or
    "default" (projections only), or a callable (name, role) -> QuantSpec or None (None/unspecified = float).
    naming: "hf", "dynamo" or "none". config_metadata: store the config JSON in the model's
    metadata_props (default: unless naming == "none"). config_json: write config.json beside.
    moe_combine: "gather" (per-expert routing-weight column, summed) or "concat" (stacked
    expert outputs times routing weights, reduced). shuffle_seed: random topological node order
    and initializer order. Returns the ModelProto.
    """
    if naming not in ("hf", "dynamo", "none"):
        raise ValueError(f"naming must be hf, dynamo or none, got {naming!r}")
    if moe_combine not in ("gather", "concat"):
        raise ValueError(f"moe_combine must be gather or concat, got {moe_combine!r}")
    onnx = _onnx()
    m = _Model(weights, config, quant, naming, moe_combine, opset)
    model = m.build()
    if config_metadata is None:
        config_metadata = naming != "none"
    if config_metadata:
        p = model.metadata_props.add()
        p.key = "config"
        p.value = json.dumps(config, sort_keys=True)
    if shuffle_seed is not None:
        _shuffle_topo(model, shuffle_seed)
    if path is not None:
        path = os.fspath(path)
        d = os.path.dirname(os.path.abspath(path))
        os.makedirs(d, exist_ok=True)
        if external_data:
            loc = os.path.basename(path) + ".data"
            if os.path.exists(os.path.join(d, loc)):
                os.remove(os.path.join(d, loc))
            onnx.save_model(model, path, save_as_external_data=True,
                            all_tensors_to_one_file=True, location=loc, size_threshold=256)
        else:
            onnx.save_model(model, path)
        if config_json:
            with open(os.path.join(d, "config.json"), "w", encoding="utf-8") as f:
                json.dump(config, f, indent=1, sort_keys=True)
    return model
