# SPDX-License-Identifier: Apache-2.0
"""The tiny coder in PyTorch: a Qwen3-MoE decoder with straight-through fake quantization that
reproduces, bit for bit, the codes and scales the exporter derives from the same float weights.

Semantics follow ``fwassist.export.reference`` (and so the C++ runtime): RMSNorm, per-head q/k
RMSNorm, RoPE with rotate_half, GQA, causal softmax; router softmax in float32 over all 64
experts, top-8, renormalised; SwiGLU experts weighted and summed; final RMSNorm; lm_head.

Fake quantization (``fake_quant``) is symmetric, per block of 32 along K (the input dimension),
float16 scales: s = fp16(amax / qmax), q = clamp(rne(w / s), -2^(b-1), 2^(b-1) - 1), w' = q * s,
the exact arithmetic of ``fwassist.export.qat_builder.quant_params`` / ``codes_for`` for
``QuantSpec(bits=b, block=32, symmetric=True, scale_dtype="float16")``. The gradient passes
straight through to the float weight (w + (w' - w).detach()).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

BLOCK = 32


@dataclass(frozen=True)
class TinyConfig:
    vocab_size: int
    hidden_size: int = 192
    num_hidden_layers: int = 4
    num_attention_heads: int = 6
    num_key_value_heads: int = 2
    head_dim: int = 32
    moe_intermediate_size: int = 96
    num_experts: int = 64
    num_experts_per_tok: int = 8
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    max_position_embeddings: int = 1024

    def hf(self) -> dict:
        """The Hugging Face config.json content the exporter reads."""
        return {
            "model_type": "qwen3_moe", "architectures": ["Qwen3MoeForCausalLM"],
            "vocab_size": self.vocab_size, "hidden_size": self.hidden_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads, "head_dim": self.head_dim,
            "intermediate_size": self.moe_intermediate_size * 4,
            "moe_intermediate_size": self.moe_intermediate_size,
            "num_experts": self.num_experts, "num_experts_per_tok": self.num_experts_per_tok,
            "norm_topk_prob": True, "decoder_sparse_step": 1, "mlp_only_layers": [],
            "rms_norm_eps": self.rms_norm_eps, "rope_theta": self.rope_theta,
            "max_position_embeddings": self.max_position_embeddings,
            "tie_word_embeddings": False, "hidden_act": "silu", "attention_bias": False,
            "bos_token_id": 0, "eos_token_id": 0, "torch_dtype": "float32",
        }


@dataclass(frozen=True)
class QuantPlan:
    """Code width per weight family (0 = float). Experts may be given per layer."""

    attention: int = 4
    experts: tuple[int, ...] = (3, 3, 3, 3)
    embed: int = 8
    lm_head: int = 8


def fake_quant(w: torch.Tensor, bits: int) -> torch.Tensor:
    """Straight-through block-32 symmetric fake quantization of w [..., N, K] (K % 32 == 0)."""
    if bits == 0:
        return w
    qmax, qmin = (1 << (bits - 1)) - 1, -(1 << (bits - 1))
    with torch.no_grad():
        wb = w.detach().reshape(*w.shape[:-1], w.shape[-1] // BLOCK, BLOCK)
        amax = wb.abs().amax(dim=-1, keepdim=True)
        s = amax / qmax
        s = torch.where(s == 0, torch.ones_like(s), s).half().float()
        q = torch.clamp(torch.round(wb / s), qmin, qmax)
        deq = (q * s).reshape(w.shape)
    return w + (deq - w).detach()


class RMSNorm(nn.Module):
    def __init__(self, n: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    h = x.shape[-1] // 2
    return torch.cat([-x[..., h:], x[..., :h]], dim=-1)


class Attention(nn.Module):
    def __init__(self, c: TinyConfig):
        super().__init__()
        self.c = c
        H, hd = c.hidden_size, c.head_dim
        self.q_proj = nn.Parameter(torch.empty(c.num_attention_heads * hd, H))
        self.k_proj = nn.Parameter(torch.empty(c.num_key_value_heads * hd, H))
        self.v_proj = nn.Parameter(torch.empty(c.num_key_value_heads * hd, H))
        self.o_proj = nn.Parameter(torch.empty(H, c.num_attention_heads * hd))
        self.q_norm = RMSNorm(hd, c.rms_norm_eps)
        self.k_norm = RMSNorm(hd, c.rms_norm_eps)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                bits: int) -> torch.Tensor:
        c = self.c
        B, T, _ = x.shape
        nh, nkv, hd = c.num_attention_heads, c.num_key_value_heads, c.head_dim
        q = F.linear(x, fake_quant(self.q_proj, bits)).view(B, T, nh, hd)
        k = F.linear(x, fake_quant(self.k_proj, bits)).view(B, T, nkv, hd)
        v = F.linear(x, fake_quant(self.v_proj, bits)).view(B, T, nkv, hd)
        q, k = self.q_norm(q), self.k_norm(k)
        q = (q * cos + _rotate_half(q) * sin).transpose(1, 2)
        k = (k * cos + _rotate_half(k) * sin).transpose(1, 2)
        v = v.transpose(1, 2)
        rep = nh // nkv
        k = k.repeat_interleave(rep, dim=1)
        v = v.repeat_interleave(rep, dim=1)
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return F.linear(o.transpose(1, 2).reshape(B, T, nh * hd), fake_quant(self.o_proj, bits))


class MoE(nn.Module):
    """64 SwiGLU experts, top-8. Training dispatch: the (token, slot) pairs sorted by expert,
    one gathered matmul chain per expert, results scattered back with index_add."""

    def __init__(self, c: TinyConfig):
        super().__init__()
        self.c = c
        E, I, H = c.num_experts, c.moe_intermediate_size, c.hidden_size
        self.router = nn.Parameter(torch.empty(E, H))
        self.gate = nn.Parameter(torch.empty(E, I, H))
        self.up = nn.Parameter(torch.empty(E, I, H))
        self.down = nn.Parameter(torch.empty(E, H, I))

    def forward(self, x: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.c
        shape = x.shape
        x = x.reshape(-1, shape[-1])
        N, E, K = x.shape[0], c.num_experts, c.num_experts_per_tok
        probs = torch.softmax(F.linear(x, self.router).float(), dim=-1)
        topv, topi = torch.topk(probs, K, dim=-1)
        topv = topv / topv.sum(-1, keepdim=True)
        # Switch-style balance loss: fraction of routed slots times mean probability.
        frac = torch.bincount(topi.reshape(-1), minlength=E).float() / (N * K)
        aux = E * torch.sum(frac * probs.mean(0))
        # unbind: one stacked gradient per weight in backward, not one full-size zero tensor
        # per expert as indexing would give.
        gate = fake_quant(self.gate, bits).unbind(0)
        up = fake_quant(self.up, bits).unbind(0)
        down = fake_quant(self.down, bits).unbind(0)
        flat_e = topi.reshape(-1)
        order = torch.argsort(flat_e, stable=True)
        counts = torch.bincount(flat_e, minlength=E).tolist()
        tok = order // K
        wts = topv.reshape(-1)[order]
        out = torch.zeros_like(x)
        start = 0
        for e, n in enumerate(counts):
            if n == 0:
                continue
            idx = tok[start:start + n]
            xs = x.index_select(0, idx)
            a = F.silu(F.linear(xs, gate[e])) * F.linear(xs, up[e])
            y = F.linear(a, down[e]) * wts[start:start + n, None]
            out.index_add_(0, idx, y)
            start += n
        return out.reshape(shape), aux


class Layer(nn.Module):
    def __init__(self, c: TinyConfig):
        super().__init__()
        self.input_norm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.attn = Attention(c)
        self.post_attention_norm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.moe = MoE(c)

    def forward(self, h, cos, sin, attn_bits: int, expert_bits: int):
        h = h + self.attn(self.input_norm(h), cos, sin, attn_bits)
        m, aux = self.moe(self.post_attention_norm(h), expert_bits)
        return h + m, aux


class TinyCoder(nn.Module):
    def __init__(self, c: TinyConfig):
        super().__init__()
        self.c = c
        self.embed = nn.Parameter(torch.empty(c.vocab_size, c.hidden_size))
        self.layers = nn.ModuleList(Layer(c) for _ in range(c.num_hidden_layers))
        self.final_norm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.lm_head = nn.Parameter(torch.empty(c.vocab_size, c.hidden_size))
        self.plan: Optional[QuantPlan] = None   # None: float training

    def init_weights(self, generator: torch.Generator) -> None:
        c = self.c
        with torch.no_grad():
            for name, p in self.named_parameters():
                if p.dim() == 1:
                    continue
                fan_in = p.shape[-1]
                std = 1.0 / math.sqrt(fan_in)
                if name == "embed":
                    std = 1.0
                elif name.endswith(("o_proj", ".down")):
                    std /= math.sqrt(2 * c.num_hidden_layers)
                p.normal_(0.0, std, generator=generator)

    def rope(self, T: int) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.c
        inv = 1.0 / (c.rope_theta ** (torch.arange(0, c.head_dim, 2, dtype=torch.float64)
                                      / c.head_dim))
        f = torch.arange(T, dtype=torch.float64)[:, None] * inv[None, :]
        f = torch.cat([f, f], dim=-1)
        return f.cos().float()[None, :, None, :], f.sin().float()[None, :, None, :]

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """ids [B, T] -> (logits [B, T, V], mean balance loss)."""
        p = self.plan
        eb = 0 if p is None else p.embed
        h = F.embedding(ids, fake_quant(self.embed, eb))
        cos, sin = self.rope(ids.shape[1])
        aux = torch.zeros((), dtype=torch.float32)
        for l, layer in enumerate(self.layers):
            h, a = layer(h, cos, sin, 0 if p is None else p.attention,
                         0 if p is None else p.experts[l])
            aux = aux + a
        h = self.final_norm(h)
        logits = F.linear(h, fake_quant(self.lm_head, 0 if p is None else p.lm_head))
        return logits, aux / len(self.layers)

    def hf_weights(self) -> dict:
        """Float32 numpy weights under Hugging Face names, [N, K] Linear orientation (the
        exporter re-derives the codes from these exactly as fake_quant did)."""
        import numpy as np

        def a(t: torch.Tensor) -> np.ndarray:
            return t.detach().float().numpy().copy()

        w = {"model.embed_tokens.weight": a(self.embed), "model.norm.weight":
             a(self.final_norm.weight), "lm_head.weight": a(self.lm_head)}
        for l, L in enumerate(self.layers):
            pre = f"model.layers.{l}"
            at = L.attn
            for n in ("q_proj", "k_proj", "v_proj", "o_proj"):
                w[f"{pre}.self_attn.{n}.weight"] = a(getattr(at, n))
            w[f"{pre}.self_attn.q_norm.weight"] = a(at.q_norm.weight)
            w[f"{pre}.self_attn.k_norm.weight"] = a(at.k_norm.weight)
            w[f"{pre}.input_layernorm.weight"] = a(L.input_norm.weight)
            w[f"{pre}.post_attention_layernorm.weight"] = a(L.post_attention_norm.weight)
            w[f"{pre}.mlp.gate.weight"] = a(L.moe.router)
            for e in range(self.c.num_experts):
                ex = f"{pre}.mlp.experts.{e}"
                w[f"{ex}.gate_proj.weight"] = a(L.moe.gate[e])
                w[f"{ex}.up_proj.weight"] = a(L.moe.up[e])
                w[f"{ex}.down_proj.weight"] = a(L.moe.down[e])
        return w
