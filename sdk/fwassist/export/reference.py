# SPDX-License-Identifier: Apache-2.0
"""A numpy reference forward of an :class:`ImportedModel` (Qwen3-MoE semantics), computed from
the dequantized weights in float64 (default) or float32.

Semantics: embedding; per layer RMSNorm (x * rsqrt(mean(x^2) + eps) * w), attention with
per-head q/k RMSNorm over head_dim, default RoPE (inv_freq = theta^(-2i/d), rotate_half), GQA
(query head h reads kv head h // (heads / kv_heads)), causal softmax; RMSNorm; MoE (router
logits, softmax over all experts, top-k with ties broken by the lower expert index,
renormalised when norm_topk_prob, SwiGLU experts weighted and summed) or a dense SwiGLU MLP;
final RMSNorm; lm_head (the embedding when tied).

It is the export evidence until the C++ runtime exists, and the tests' end-to-end check
against onnxruntime on the QAT ONNX graph.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional, Union

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

from .mapping import is_moe_layer
from ..artifact.model import PackedTensor
from .model import BF16Array, ImportedModel, QuantizedWeight


def dequantize(v: Union[np.ndarray, QuantizedWeight, BF16Array, PackedTensor]) -> np.ndarray:
    """float32 weights: fp32(q - zp) * s with one float32 multiply (QuantizedWeight, or a
    PackedTensor's bytes unpacked by the layout's dequantizer), the exact widening of
    float16/bfloat16, or the float32 array itself."""
    if isinstance(v, PackedTensor):
        from .. import kernels
        data = np.frombuffer(memoryview(v.produce()).cast("B"), dtype=np.uint8)
        return kernels.dequantize(kernels.PackedMatrix(data, v.N, v.K, v.bits, v.block,
                                                       v.has_zero, v.scale))
    if isinstance(v, QuantizedWeight):
        N, K = v.q.shape
        diff = v.q.astype(np.int32)
        if v.zero_points is not None:
            diff = diff - np.repeat(v.zero_points.astype(np.int32), v.block, axis=1)[:, :K]
        s = np.repeat(v.scales.astype(np.float32), v.block, axis=1)[:, :K]
        return np.multiply(diff.astype(np.float32), s, dtype=np.float32)
    if isinstance(v, BF16Array):
        return (v.bits.astype(np.uint32) << 16).view(np.float32)
    return np.asarray(v).astype(np.float32)


@dataclass
class ReferenceResult:
    logits: np.ndarray                        # [T, vocab]
    ambiguous_tokens: list[int] = field(default_factory=list)  # k-th/(k+1)-th router near-tie
    first_ambiguous: Optional[int] = None     # tokens from here on depend on a near-tie
    router_gaps: list[np.ndarray] = field(default_factory=list)  # per MoE layer, [T]


class Reference:
    def __init__(self, model: ImportedModel, dtype: DTypeLike = np.float64) -> None:
        self.c = model.config
        self.dtype = dtype
        self.w: dict[tuple[str, Optional[int], Optional[int]], np.ndarray] = {}
        for t in model.tensors:
            self.w[(t.role, t.layer, t.expert)] = dequantize(t.value).astype(dtype)
        if ("lm_head", None, None) not in self.w:
            self.w[("lm_head", None, None)] = self.w[("embed", None, None)]

    def _rms(self, x: np.ndarray, w: np.ndarray) -> np.ndarray:
        eps = self.c["rms_norm_eps"]
        out: np.ndarray = x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w
        return out

    def forward(self, input_ids: ArrayLike, tie_rel: float = 1e-4,
                kv_round: Optional[Callable[[np.ndarray], np.ndarray]] = None) -> ReferenceResult:
        """kv_round: applied to k (after RoPE) and v of every layer, as a KV cache that stores
        them in a narrower type (the runtime's 16-bit caches) would."""
        c, w, dt = self.c, self.w, self.dtype
        ids = np.asarray(input_ids).reshape(-1)
        if ids.size == 0:
            raise ValueError("empty input")
        if ids.min() < 0 or ids.max() >= c["vocab_size"]:
            raise ValueError("token id out of range")
        T = ids.size
        nh, nkv, hd = c["num_attention_heads"], c["num_key_value_heads"], c["head_dim"]
        h = w[("embed", None, None)][ids].astype(dt)
        inv = 1.0 / (c["rope_theta"] ** (np.arange(0, hd, 2, dtype=np.float64) / hd))
        f = np.arange(T, dtype=np.float64)[:, None] * inv[None, :]
        f = np.concatenate([f, f], axis=-1)
        cos, sin = np.cos(f).astype(dt)[:, None, :], np.sin(f).astype(dt)[:, None, :]
        mask = np.triu(np.full((T, T), -np.inf, dtype=dt), k=1)
        res = ReferenceResult(logits=np.zeros(0))
        amb: set[int] = set()

        def rot(x: np.ndarray) -> np.ndarray:
            return np.concatenate([-x[..., hd // 2:], x[..., : hd // 2]], axis=-1)

        for l in range(c["num_hidden_layers"]):
            x = self._rms(h, w[("input_norm", l, None)])
            q = (x @ w[("q_proj", l, None)].T).reshape(T, nh, hd)
            k = (x @ w[("k_proj", l, None)].T).reshape(T, nkv, hd)
            v = (x @ w[("v_proj", l, None)].T).reshape(T, nkv, hd)
            q = self._rms(q, w[("q_norm", l, None)])
            k = self._rms(k, w[("k_norm", l, None)])
            q = q * cos + rot(q) * sin
            k = k * cos + rot(k) * sin
            if kv_round is not None:
                k, v = kv_round(k), kv_round(v)
            rep = nh // nkv
            kh = np.repeat(k.transpose(1, 0, 2), rep, axis=0)            # [nh, T, hd]
            vh = np.repeat(v.transpose(1, 0, 2), rep, axis=0)
            s = q.transpose(1, 0, 2) @ kh.transpose(0, 2, 1) / np.sqrt(hd) + mask
            s = s - s.max(axis=-1, keepdims=True)
            p = np.exp(s)
            p /= p.sum(axis=-1, keepdims=True)
            o = (p @ vh).transpose(1, 0, 2).reshape(T, nh * hd)
            h = h + o @ w[("o_proj", l, None)].T
            x = self._rms(h, w[("post_attention_norm", l, None)])
            if is_moe_layer(c, l):
                E, K = c["num_experts"], c["num_experts_per_tok"]
                lg = x @ w[("router", l, None)].T
                lg = lg - lg.max(axis=-1, keepdims=True)
                pr = np.exp(lg)
                pr /= pr.sum(axis=-1, keepdims=True)
                order = np.argsort(-pr, axis=-1, kind="stable")             # lower index wins
                top = order[:, :K]
                tv = np.take_along_axis(pr, top, axis=-1)
                if K < E:
                    nxt = np.take_along_axis(pr, order[:, K:K + 1], axis=-1)[:, 0]
                    gap = (tv[:, -1] - nxt) / np.maximum(tv[:, -1], 1e-300)
                    res.router_gaps.append(gap)
                    amb.update(int(t) for t in np.nonzero(gap <= tie_rel)[0])
                if c["norm_topk_prob"]:
                    tv = tv / tv.sum(axis=-1, keepdims=True)
                m = np.zeros_like(h)
                for t in range(T):
                    for j in range(K):
                        e = int(top[t, j])
                        g = x[t] @ w[("expert_gate", l, e)].T
                        u = x[t] @ w[("expert_up", l, e)].T
                        a = g / (1.0 + np.exp(-g)) * u
                        m[t] += tv[t, j] * (a @ w[("expert_down", l, e)].T)
            else:
                g = x @ w[("mlp_gate", l, None)].T
                u = x @ w[("mlp_up", l, None)].T
                m = (g / (1.0 + np.exp(-g)) * u) @ w[("mlp_down", l, None)].T
            h = h + m
        x = self._rms(h, w[("final_norm", None, None)])
        res.logits = x @ w[("lm_head", None, None)].T
        res.ambiguous_tokens = sorted(amb)
        res.first_ambiguous = min(amb) if amb else None
        return res


def reference_logits(model: ImportedModel, input_ids: ArrayLike,
                     dtype: DTypeLike = np.float64) -> np.ndarray:
    """Logits [T, vocab] of the reference forward."""
    return Reference(model, dtype).forward(input_ids).logits
