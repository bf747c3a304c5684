# SPDX-License-Identifier: Apache-2.0
"""The synthetic models of benchmarks/llamacpp_compare.py: one set of seeded float weights per
model, written both as a QAT ONNX (exported to ``.fwa`` by our exporter) and as a GGUF
(quantized by ``llama-quantize``), so both runtimes run the same weights.

* Weights: ``fwassist.export.qat_builder.random_weights(config, seed)`` (float32, Hugging Face
  names), made once per model and only when some file is missing.
* Ours: ``build_qat_onnx`` with :func:`quant_scheme` (every projection quantized symmetric,
  round to nearest, block 32, at 2/3/4 bits: integer codes -> DQ with float16 scales, or
  Q -> Clip -> DQ at 3 bits with float32 scales holding float16 values (which the importer
  stores as float16); the embedding and lm_head at 8 bits, block
  32; router and norms float), external data, then
  ``fwassist.export.pipeline.export_onnx`` (what ``fwassist export`` runs) to ``.fwa``.
  The ONNX (float weights, ~4 B/param) is deleted after the export unless kept.
* llama.cpp: the same float weights as an F16 GGUF (benchmarks/gguf_qwen3moe.py), then
  ``llama-quantize --pure --output-tensor-type q8_0 --token-embedding-type q8_0`` to Q4_0
  (vs our 4-bit), Q3_K_S (3-bit) and Q2_K (2-bit): every projection at the named type (no
  k-quant mixture, so the bits match ours), lm_head and embedding at 8 bits like ours.
* Tokenizer (both): the byte-level BPE of ``fwassist.export.synthetic.byte_tokenizer`` (256
  byte tokens, ``<|endoftext|>`` = 256) extended with merges of byte pairs up to the model's
  vocabulary, since llama.cpp needs one token per embedding row and at least one merge.
* A dense twin of each MoE config: every layer a SwiGLU MLP of width top_k x
  moe_intermediate_size, so the active parameters per token equal the MoE's (router aside).

Files go to ``<cache>/<size>-<key>/`` where the key hashes the config, seed and recipe.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np

import gguf_qwen3moe

GENERATOR_VERSION = 1   # bump when the weights or the GGUF recipe change (all files)
# Per bit width, bump when quant_scheme changes for that width (the .fwa files only).
FWA_RECIPE = {2: 2, 3: 3, 4: 2}
SEED = 20251126
BLOCK = 32
LLAMA_QUANT = {4: "Q4_0", 3: "Q3_K_S", 2: "Q2_K"}

COMMON = dict(model_type="qwen3_moe", norm_topk_prob=True, decoder_sparse_step=1,
              mlp_only_layers=[], rms_norm_eps=1e-6, rope_theta=1000000.0,
              max_position_embeddings=4096, tie_word_embeddings=False, hidden_act="silu",
              num_experts=64, num_experts_per_tok=8)
# "full": OLMoE-like depth, 0.92 B parameters (experts 0.81 B), 177 M active per token.
# Every K (hidden 1024, expert width 256) is a multiple of 256, so the K-quants (Q2_K, Q3_K)
# apply to every projection without llama-quantize's fallback types.
# "quick": 55 M parameters, for a smoke run.
SIZES: dict[str, dict[str, Any]] = {
    "full": dict(vocab_size=32768, hidden_size=1024, num_hidden_layers=16,
                 num_attention_heads=16, num_key_value_heads=4, head_dim=64,
                 moe_intermediate_size=256, intermediate_size=2048),
    "quick": dict(vocab_size=8192, hidden_size=256, num_hidden_layers=4,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=64,
                  moe_intermediate_size=256, intermediate_size=2048),
}


def log(msg: str) -> None:
    print(f"[models] {msg}", file=sys.stderr, flush=True)


def moe_config(size: str) -> dict[str, Any]:
    return {**COMMON, **SIZES[size]}


def dense_config(size: str) -> dict[str, Any]:
    """Same shapes, every layer a dense MLP as wide as the top_k routed experts together."""
    c = moe_config(size)
    c["intermediate_size"] = c["num_experts_per_tok"] * c["moe_intermediate_size"]
    c["mlp_only_layers"] = list(range(c["num_hidden_layers"]))
    return c


def count_params(config: dict[str, Any]) -> dict[str, int]:
    """Total and active (per decoded token: routed experts, attention, router, norms, lm_head;
    the embedding row aside) parameters."""
    c = config
    H, hd, V, n = c["hidden_size"], c["head_dim"], c["vocab_size"], c["num_hidden_layers"]
    attn = (2 * c["num_attention_heads"] + 2 * c["num_key_value_heads"]) * hd * H
    norms = 2 * H + 2 * hd
    dense = set(c.get("mlp_only_layers") or [])
    total = active = 0
    for L in range(n):
        if L in dense:
            mlp = 3 * c["intermediate_size"] * H
            total += attn + norms + mlp
            active += attn + norms + mlp
        else:
            e = 3 * c["moe_intermediate_size"] * H
            router = c["num_experts"] * H
            total += attn + norms + router + c["num_experts"] * e
            active += attn + norms + router + c["num_experts_per_tok"] * e
    total += 2 * V * H + H
    active += V * H + H
    return {"total": total, "active": active}


def tokenizer(vocab_size: int) -> dict[str, Any]:
    """tokenizer.json content with exactly ``vocab_size`` tokens (see the module docstring)."""
    from fwassist.export.synthetic import byte_tokenizer
    tok = byte_tokenizer()
    chars = sorted(tok["model"]["vocab"], key=lambda s: tok["model"]["vocab"][s])
    n_merge = vocab_size - 257
    if not 1 <= n_merge <= 256 * 256:
        raise ValueError(f"vocab_size {vocab_size} outside [258, {257 + 65536}]")
    merges, vocab = [], dict(tok["model"]["vocab"])
    for i in range(n_merge):
        a, b = chars[i // 256], chars[i % 256]
        merges.append(f"{a} {b}")
        vocab[a + b] = 257 + i
    tok["model"]["vocab"] = vocab
    tok["model"]["merges"] = merges
    return tok


def quant_scheme(bits: int) -> dict[str, Any]:
    """Role-keyed QuantSpecs for build_qat_onnx (see the module docstring): integer codes ->
    DequantizeLinear with float16 scales (4.5 bits/weight at 4 bits, like Q4_0), except at
    3 bits, which no ONNX integer type declares: Q -> Clip -> DQ, whose QuantizeLinear takes
    float32 scales; they are rounded to float16 values, which the importer stores as float16
    (3.5 bits/weight, vs Q3_K_S's 3.44)."""
    from fwassist.export.qat_builder import QuantSpec
    if bits == 3:
        proj = QuantSpec(pattern="qcdq", bits=3, block=BLOCK, scale_round="float16")
    else:
        proj = QuantSpec(pattern="dq", bits=bits, block=BLOCK, scale_dtype="float16")
    eight = QuantSpec(pattern="dq", bits=8, block=BLOCK, scale_dtype="float16")
    return {"default": proj, "embed": eight, "lm_head": eight}


def model_key(config: dict[str, Any]) -> str:
    blob = json.dumps({"v": GENERATOR_VERSION, "seed": SEED, "config": config,
                       "block": BLOCK, "quant": LLAMA_QUANT}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass
class ModelSet:
    """One model's files: ours by bits, llama.cpp's by quant type."""
    name: str
    config: dict[str, Any]
    directory: str
    fwa: dict[int, str]
    gguf: dict[int, str]
    build_seconds: dict[str, float]
    f16_gguf: Optional[str] = None

    def describe(self) -> dict[str, Any]:
        sizes = {f"fwa_{b}bit": os.path.getsize(p) for b, p in self.fwa.items()}
        sizes.update({f"gguf_{LLAMA_QUANT[b]}": os.path.getsize(p) for b, p in self.gguf.items()})
        return {"name": self.name, "config": self.config, "directory": self.directory,
                "params": count_params(self.config), "file_bytes": sizes,
                "fwa": {str(b): p for b, p in self.fwa.items()},
                "gguf": {LLAMA_QUANT[b]: p for b, p in self.gguf.items()},
                "gguf_tensor_types": {LLAMA_QUANT[b]: gguf_qwen3moe.tensor_types(p)
                                      for b, p in self.gguf.items()},
                "build_seconds": self.build_seconds}


class _Weights:
    """The float weights, made on first use."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self._w: Optional[dict[str, np.ndarray]] = None

    def get(self) -> dict[str, np.ndarray]:
        if self._w is None:
            from fwassist.export.qat_builder import random_weights
            t0 = time.monotonic()
            self._w = random_weights(self.config, seed=SEED)
            log(f"random weights: {sum(v.size for v in self._w.values()) / 1e6:.0f} M "
                f"in {time.monotonic() - t0:.0f} s")
        return self._w


def _timed(what: str, times: dict[str, float], fn: Callable[[], None]) -> None:
    t0 = time.monotonic()
    fn()
    times[what] = round(time.monotonic() - t0, 1)
    log(f"{what}: {times[what]} s")


def _export_fwa(d: str, weights: _Weights, config: dict[str, Any], bits: int, out: str,
                keep_onnx: bool) -> None:
    from fwassist.export.pipeline import export_onnx
    from fwassist.export.qat_builder import build_qat_onnx
    onnx_path = os.path.join(d, f"model-{bits}bit.onnx")
    build_qat_onnx(onnx_path, weights.get(), config, quant_scheme(bits), external_data=True)
    tmp = out + ".part"
    export_onnx(onnx_path, tmp, config_path=os.path.join(d, "config.json"),
                tokenizer_path=os.path.join(d, "tokenizer.json"),
                card_path=os.path.join(d, "card.json"), evidence=False, quiet=True)
    os.replace(tmp, out)
    if not keep_onnx:
        for p in (onnx_path, onnx_path + ".data"):
            if os.path.exists(p):
                os.remove(p)


def reference_logits(config: dict[str, Any], ids: list[int]) -> np.ndarray:
    """float64 logits [len(ids), vocab] of the float weights (fwassist.export.reference):
    the model both files were made from, before any quantization."""
    from fwassist.export.mapping import normalize_config, role_from_string
    from fwassist.export.model import ImportedModel, ModelTensor
    from fwassist.export.reference import Reference
    w = _Weights(config).get()
    tensors = [ModelTensor(name, *role_from_string(name), value) for name, value in w.items()]
    return Reference(ImportedModel(normalize_config(config)[0], tensors)).forward(
        np.asarray(ids, np.int64)).logits


def ensure_models(cache: str, name: str, config: dict[str, Any], bits: list[int],
                  llama_quantize: Optional[str], keep_onnx: bool = False) -> ModelSet:
    """Builds whatever of the model's files is missing (``llama_quantize`` None: no GGUF)."""
    d = os.path.join(cache, f"{name}-{model_key(config)}")
    os.makedirs(d, exist_ok=True)
    tok = tokenizer(int(config["vocab_size"]))
    for fname, content in (("config.json", config), ("tokenizer.json", tok),
                           ("card.json", {"name": f"synthetic {name}", "known_limitations": [
                               "synthetic random weights for benchmarking: the outputs are "
                               "meaningless"]})):
        with open(os.path.join(d, fname), "w", encoding="utf-8") as f:
            json.dump(content, f, indent=1, sort_keys=True)
    weights = _Weights(config)
    times: dict[str, float] = {}
    fwa, gg = {}, {}
    for b in bits:
        fwa[b] = os.path.join(d, f"model-{b}bit-r{FWA_RECIPE[b]}.fwa")
        if not os.path.exists(fwa[b]):
            _timed(f"{name} {b}-bit onnx+export", times,
                   lambda: _export_fwa(d, weights, config, b, fwa[b], keep_onnx))
    f16 = os.path.join(d, "model-f16.gguf")
    if llama_quantize is not None:
        need = [b for b in bits if not os.path.exists(os.path.join(d, f"model-{LLAMA_QUANT[b]}.gguf"))]
        if (need or not bits) and not os.path.exists(f16):
            _timed(f"{name} f16 gguf", times,
                   lambda: gguf_qwen3moe.write_gguf(f16, weights.get(), config, tok))
        for b in bits:
            gg[b] = os.path.join(d, f"model-{LLAMA_QUANT[b]}.gguf")
            if b in need:
                _timed(f"{name} llama-quantize {LLAMA_QUANT[b]}", times,
                       lambda: gguf_qwen3moe.quantize(
                           llama_quantize, f16, gg[b], LLAMA_QUANT[b],
                           log_path=gg[b] + ".log"))
    return ModelSet(name, config, d, fwa, gg, times, f16 if os.path.exists(f16) else None)
