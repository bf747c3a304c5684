# SPDX-License-Identifier: Apache-2.0
"""Synthetic Qwen3-MoE models written straight to an artifact (no ONNX): random weights
quantized round-to-nearest per block, for the demo and the benchmarks, at any size.

Codes are signed (symmetric, no zero points, mean ~0); scales are float16 and chosen so
activations stay in a sane range: weights of std 1/sqrt(K) (each output's expected square near
its input's mean square), except the embedding (unit weights) and the projections into the
residual stream (o_proj, expert_down, mlp_down: 1/sqrt(2 layers) of that, as GPT-2's
initialisation), so that the token's own embedding stays large next to the sum of the layers'
outputs. Version 1 had every weight at 1/sqrt(K): the attention outputs, near the same average
over the context for every token, drowned the embedding and consecutive tokens routed alike
(default config, 16 random tokens: 17-36 of 64 experts per layer against ~56 for random
routing; now 52-57; benchmarks/synth_30b.py's version 2 fixed the same at the 30B shape).
The tokenizer, when asked for, is a byte-level BPE with the 256 byte tokens and no merges,
plus ``<|endoftext|>``: a valid Hugging Face ``tokenizer.json`` that encodes any text.
"""

from __future__ import annotations

import hashlib
from typing import Any, Optional

import numpy as np

from .mapping import hf_name, is_moe_layer
from .model import ImportedModel, ModelTensor, QuantizedWeight


def synthetic_config(**overrides: Any) -> dict[str, Any]:
    """A small Qwen3-MoE config (64 experts, top-8) in the artifact's normalised form."""
    c: dict[str, Any] = {
        "architecture": "qwen3_moe", "vocab_size": 320, "hidden_size": 256,
        "num_hidden_layers": 4, "num_attention_heads": 8, "num_key_value_heads": 2,
        "head_dim": 32, "intermediate_size": 512, "moe_intermediate_size": 64,
        "num_experts": 64, "num_experts_per_tok": 8, "norm_topk_prob": True,
        "decoder_sparse_step": 1, "mlp_only_layers": [], "rms_norm_eps": 1e-6,
        "rope_theta": 1000000.0, "max_position_embeddings": 4096,
        "tie_word_embeddings": False}
    c.update(overrides)
    return c


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's printable stand-ins for the 256 byte values (the ByteLevel alphabet): a token
    string of a byte-level BPE vocabulary is its bytes written with them."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + \
        list(range(0xAE, 0x100))
    out, extra = {}, 0
    for b in range(256):
        if b in keep:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + extra)
            extra += 1
    return out


def byte_tokenizer() -> dict[str, Any]:
    """tokenizer.json content: ids 0-255 are bytes, 256 is <|endoftext|>."""
    m = bytes_to_unicode()
    return {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [{"id": 256, "content": "<|endoftext|>", "single_word": False,
                          "lstrip": False, "rstrip": False, "normalized": False,
                          "special": True}],
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                          "use_regex": True},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                    "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": {m[b]: b for b in range(256)}, "merges": []},
    }


def _quantize(rng: np.random.Generator, n: int, k: int, bits: int, block: int,
              std: Optional[float] = None) -> QuantizedWeight:
    """Random signed codes (roughly Gaussian, clipped) with float16 scales giving weights of
    standard deviation ~``std`` (default 1/sqrt(k))."""
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    q = np.clip(np.rint(rng.standard_normal((n, k), dtype=np.float32) * (hi / 2.5)), lo, hi)
    nb = -(-k // block)
    w_std = 1.0 / np.sqrt(k) if std is None else std
    s = (rng.uniform(0.8, 1.2, (n, nb)) * 2.5 * w_std / hi).astype(np.float16)
    return QuantizedWeight(q=q.astype(np.int8), scales=s, zero_points=None, bits=bits,
                           block=block, signed=True)


def synthetic_model(config: Optional[dict[str, Any]] = None, *, bits: int = 4, block: int = 32,
                    seed: int = 0, tokenizer: bool = True) -> ImportedModel:
    """Every projection, the router, the embedding and lm_head quantized at ``bits``."""
    c = synthetic_config() if config is None else dict(config)
    rng = np.random.default_rng(seed)
    H, hd = c["hidden_size"], c["head_dim"]
    nh, nkv, V = c["num_attention_heads"], c["num_key_value_heads"], c["vocab_size"]
    tensors: list[ModelTensor] = []

    def add(role: str, layer: Optional[int], expert: Optional[int], value: Any) -> None:
        tensors.append(ModelTensor(hf_name(role, layer, expert), role, layer, expert, value))

    def norm(n: int) -> np.ndarray:
        return (1.0 + 0.1 * rng.standard_normal(n)).astype(np.float32)

    def residual(n: int, k: int) -> QuantizedWeight:
        """A projection into the residual stream: smaller by depth (module docstring)."""
        return _quantize(rng, n, k, bits, block,
                         float(1.0 / np.sqrt(2 * c["num_hidden_layers"] * k)))

    add("embed", None, None, _quantize(rng, V, H, bits, block, 1.0))
    for layer in range(c["num_hidden_layers"]):
        add("input_norm", layer, None, norm(H))
        add("post_attention_norm", layer, None, norm(H))
        add("q_norm", layer, None, norm(hd))
        add("k_norm", layer, None, norm(hd))
        add("q_proj", layer, None, _quantize(rng, nh * hd, H, bits, block))
        add("k_proj", layer, None, _quantize(rng, nkv * hd, H, bits, block))
        add("v_proj", layer, None, _quantize(rng, nkv * hd, H, bits, block))
        add("o_proj", layer, None, residual(H, nh * hd))
        if is_moe_layer(c, layer):
            I = c["moe_intermediate_size"]
            add("router", layer, None, _quantize(rng, c["num_experts"], H, 8, block))
            for e in range(c["num_experts"]):
                add("expert_gate", layer, e, _quantize(rng, I, H, bits, block))
                add("expert_up", layer, e, _quantize(rng, I, H, bits, block))
                add("expert_down", layer, e, residual(H, I))
        else:
            I = c["intermediate_size"]
            add("mlp_gate", layer, None, _quantize(rng, I, H, bits, block))
            add("mlp_up", layer, None, _quantize(rng, I, H, bits, block))
            add("mlp_down", layer, None, residual(H, I))
    add("final_norm", None, None, norm(H))
    add("lm_head", None, None, _quantize(rng, V, H, bits, block))
    # v2: unit-scale embedding and residual projections smaller by depth (module docstring).
    ident = (f"synthetic qwen3_moe v2 bits={bits} block={block} seed={seed} "
             f"config={sorted(c.items())}")
    return ImportedModel(config=c, tensors=tensors,
                         tokenizer=byte_tokenizer() if tokenizer else None,
                         source_name="synthetic",
                         source_sha256=hashlib.sha256(ident.encode()).hexdigest(),
                         notes=["synthetic random weights: not a trained model"])
