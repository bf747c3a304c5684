# SPDX-License-Identifier: Apache-2.0
"""Builds the safetensors conformance fixtures with the real tools (not needed to run the tests).

Pinned: torch 2.13.0 (CPU), transformers 5.25.0, compressed-tensors 0.20.1, safetensors.
Install them in a scratch virtualenv (``pip install torch==2.13.0`` takes the CPU wheel;
never a CUDA build) and run ``python tests/conformance/make_compressed_tensors.py``.

Each fixture is a small random Qwen3-MoE made by transformers 5.x:

* float: ``save_pretrained`` (hub layout: per-expert 2-D keys), and
  ``save_pretrained(save_original_format=False)`` (transformers 5.x fused 3-D experts);
* compressed-tensors ``pack-quantized``, the way llm-compressor does it: the fused experts are
  linearized into per-expert ``nn.Linear`` modules (``experts.N.{gate,up,down}_proj``, the
  calibration form), ``apply_quantization_config`` attaches the schemes, min-max weight
  observers give the scales and zero points (``calculate_qparams``), ``ModelCompressor``
  compresses and writes ``quantization_config``.

Beside each fixture, ``expected.json`` holds the tool's own reference: the logits of the
transformers model whose weights are compressed-tensors' own decompression (float32 scales,
so dequantized in float32), on fixed probe ids, the sha256 of the codes compressed-tensors'
``unpack_from_int32`` returns for every packed weight (int8, row-major) and of the float32
weight its decompressor returns (scales widened to float32 first).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys

import numpy as np
import torch
import transformers
from safetensors.torch import save_file

import compressed_tensors
from compressed_tensors.compressors import ModelCompressor
from compressed_tensors.compressors.pack_quantized import unpack_from_int32
from compressed_tensors.quantization import QuantizationConfig, apply_quantization_config
from compressed_tensors.quantization.utils.helpers import calculate_qparams

# transformers 5.25.0 makes the 5.x fixtures; run again under transformers 4.57.6 (the last 4.x,
# per-expert nn.Linear experts: no linearization needed) for the tf4_ fixtures.
PINS = {"torch": "2.13.0", "transformers": ("5.25.0", "4.57.6"), "compressed_tensors": "0.20.1"}
TF4 = transformers.__version__.startswith("4.")
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "safetensors")
PROBE = [3, 17, 42, 5, 60, 11, 29, 8, 51, 33, 2, 47, 19, 38, 24, 14]


def check_pins() -> None:
    got = {"torch": torch.__version__.split("+")[0], "transformers": transformers.__version__,
           "compressed_tensors": compressed_tensors.__version__}
    if (got["torch"], got["compressed_tensors"]) != (PINS["torch"], PINS["compressed_tensors"]) \
            or got["transformers"] not in PINS["transformers"]:
        sys.exit(f"pinned versions {PINS}, found {got}")


def make_model(seed: int, hidden: int, inter: int, moe_inter: int, tie: bool, layers: int = 2,
               experts: int = 4, top_k: int = 2):
    from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM

    cfg = Qwen3MoeConfig(vocab_size=64, hidden_size=hidden, intermediate_size=inter,
                         moe_intermediate_size=moe_inter, num_hidden_layers=layers,
                         num_attention_heads=2, num_key_value_heads=1, head_dim=hidden // 2,
                         num_experts=experts, num_experts_per_tok=top_k, norm_topk_prob=True,
                         tie_word_embeddings=tie, max_position_embeddings=64, rope_theta=10000.0)
    torch.manual_seed(seed)
    m = Qwen3MoeForCausalLM(cfg).eval()
    with torch.no_grad():
        for n, p in m.named_parameters():
            if n.endswith("norm.weight") or "layernorm" in n:
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            else:
                p.copy_(torch.randn_like(p) / p.shape[-1] ** 0.5)
    return m


def logits(model) -> np.ndarray:
    with torch.no_grad():
        out = model(torch.tensor([PROBE]), use_cache=False).logits[0]
    return out.double().numpy()


class _Expert(torch.nn.Module):
    def __init__(self, gate, up, down):
        super().__init__()
        dt = gate.dtype
        self.gate_proj = torch.nn.Linear(gate.shape[1], gate.shape[0], bias=False, dtype=dt)
        self.up_proj = torch.nn.Linear(up.shape[1], up.shape[0], bias=False, dtype=dt)
        self.down_proj = torch.nn.Linear(down.shape[1], down.shape[0], bias=False, dtype=dt)
        with torch.no_grad():
            self.gate_proj.weight.copy_(gate)
            self.up_proj.weight.copy_(up)
            self.down_proj.weight.copy_(down)


def linearize_experts(model) -> None:
    """transformers 5.x fused experts -> per-expert nn.Linear modules (what llm-compressor's
    MoE calibration does so that compressed-tensors can target them)."""
    I = model.config.moe_intermediate_size
    for layer in model.model.layers:
        ex = layer.mlp.experts
        gu, dn = ex.gate_up_proj.detach(), ex.down_proj.detach()
        layer.mlp.experts = torch.nn.ModuleList(
            [_Expert(gu[e, :I], gu[e, I:], dn[e]) for e in range(gu.shape[0])])


def calibrate(model) -> None:
    """Min-max weight observer (llm-compressor's default for weights)."""
    for _, mod in model.named_modules():
        scheme = getattr(mod, "quantization_scheme", None)
        if scheme is None or scheme.weights is None:
            continue
        a = scheme.weights
        w = mod.weight.detach()
        if a.strategy == "group":
            g = w.reshape(w.shape[0], -1, a.group_size)
            lo, hi = g.amin(-1), g.amax(-1)
        elif a.strategy == "channel":
            lo, hi = w.amin(1, keepdim=True), w.amax(1, keepdim=True)
        else:
            raise ValueError(a.strategy)
        s, z = calculate_qparams(lo, hi, a)
        with torch.no_grad():
            mod.weight_scale.data = s.to(mod.weight_scale.dtype).reshape(mod.weight_scale.shape)
            if hasattr(mod, "weight_zero_point"):
                mod.weight_zero_point.data = z.to(mod.weight_zero_point.dtype).reshape(
                    mod.weight_zero_point.shape)


def write_state(model, d: str, shards: int) -> None:
    sd = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    if model.config.tie_word_embeddings:
        sd.pop("lm_head.weight", None)
    names = sorted(sd)
    if shards == 1:
        save_file(sd, os.path.join(d, "model.safetensors"), metadata={"format": "pt"})
        return
    wm = {}
    per = -(-len(names) // shards)
    for i in range(shards):
        fn = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = {n: sd[n] for n in names[i * per:(i + 1) * per]}
        save_file(part, os.path.join(d, fn), metadata={"format": "pt"})
        wm.update({n: fn for n in part})
    total = sum(v.numel() * v.element_size() for v in sd.values())
    with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": wm}, f, indent=2)


def quantized_fixture(name: str, seed: int, hidden: int, moe_inter: int, groups: dict,
                      shards: int = 1, tie: bool = False, bf16: bool = False,
                      ignore: tuple = ("lm_head", "re:.*mlp\\.gate$"), **shape) -> None:
    """bf16: the model (and so the scales compressed-tensors computes) in bfloat16; the
    reference still dequantizes in float32 (scales widened exactly), as the contract says."""
    d = os.path.join(OUT, name)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    ref_model = make_model(seed, hidden, 64, moe_inter, tie, **shape)
    model = make_model(seed, hidden, 64, moe_inter, tie, **shape)
    if bf16:
        model = model.to(torch.bfloat16)
        with torch.no_grad():   # parameters only: rotary buffers stay float32
            for p in ref_model.parameters():
                p.copy_(p.to(torch.bfloat16).float())
    if not TF4:
        linearize_experts(model)
    qc = QuantizationConfig(config_groups=groups, ignore=list(ignore), format="pack-quantized")
    apply_quantization_config(model, qc)
    calibrate(model)
    comp = ModelCompressor.from_pretrained_model(model, quantization_format="pack-quantized")
    comp.compress_model(model)
    write_state(model, d, shards)
    model.config.save_pretrained(d)
    comp.update_config(d)
    # the tool's own unpacking and dequantization
    codes, deq, weights = {}, {}, {}
    for mn, mod in model.named_modules():
        if hasattr(mod, "weight_packed"):
            a = mod.quantization_scheme.weights
            q = unpack_from_int32(mod.weight_packed.data, a.num_bits, mod.weight_shape.data)
            codes[mn] = hashlib.sha256(q.numpy().astype(np.int8).tobytes()).hexdigest()
            from compressed_tensors.compressors.pack_quantized import (
                PackedQuantizationCompressor)
            st = {k: v for k, v in mod.state_dict().items()}
            st["weight_scale"] = st["weight_scale"].float()      # dequantize in float32
            deq[mn] = PackedQuantizationCompressor.decompress(st, mod.quantization_scheme)[
                "weight"].float()
            weights[mn] = hashlib.sha256(deq[mn].numpy().tobytes()).hexdigest()
    I = moe_inter
    with torch.no_grad():
        if "lm_head" in deq:
            ref_model.lm_head.weight.copy_(deq["lm_head"])
        for li, layer in enumerate(ref_model.model.layers):
            for p in ("q_proj", "k_proj", "v_proj", "o_proj"):
                key = f"model.layers.{li}.self_attn.{p}"
                if key in deq:
                    getattr(layer.self_attn, p).weight.copy_(deq[key])
            for e in range(ref_model.config.num_experts):
                base = f"model.layers.{li}.mlp.experts.{e}"
                if TF4 and f"{base}.gate_proj" in deq:
                    for p in ("gate_proj", "up_proj", "down_proj"):
                        getattr(layer.mlp.experts[e], p).weight.copy_(deq[f"{base}.{p}"])
                elif f"{base}.gate_proj" in deq:
                    layer.mlp.experts.gate_up_proj[e, :I].copy_(deq[f"{base}.gate_proj"])
                    layer.mlp.experts.gate_up_proj[e, I:].copy_(deq[f"{base}.up_proj"])
                    layer.mlp.experts.down_proj[e].copy_(deq[f"{base}.down_proj"])
    exp = {"tool": f"compressed-tensors {compressed_tensors.__version__}, transformers "
                   f"{transformers.__version__}, torch {torch.__version__}",
           "probe": PROBE, "codes_sha256": codes, "dequantized_sha256": weights,
           "transformers_load": transformers_load_check(d, logits(ref_model))}
    np.save(os.path.join(d, "expected_logits.npy"), logits(ref_model).astype(np.float32))
    with open(os.path.join(d, "expected.json"), "w") as f:
        json.dump(exp, f)
    _card(d)


def transformers_load_check(d: str, want: np.ndarray) -> str:
    """Cross-check: transformers' own loading of the written checkpoint (compressed-tensors
    decompresses on load) against the reference. transformers 5.25 cannot load asymmetric
    pack-quantized checkpoints (packed zero points); that is recorded, not hidden."""
    try:
        m = transformers.AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
    except Exception as e:  # noqa: BLE001 - the reason is the record
        return f"not loadable by transformers {transformers.__version__}: " + \
            str(e).strip().splitlines()[0][:200]
    rel = float(np.abs(logits(m) - want).max() / np.abs(want).max())
    if rel > 1e-6:
        sys.exit(f"{d}: transformers' loading differs from the reference by {rel:.2e}")
    return f"transformers {transformers.__version__} loads it: max rel {rel:.2e}"


def float_fixture(name: str, seed: int, fused: bool, dtype: torch.dtype) -> None:
    d = os.path.join(OUT, name)
    shutil.rmtree(d, ignore_errors=True)
    m = make_model(seed, 32, 32, 24, tie=False).to(dtype)
    m.save_pretrained(d, safe_serialization=True, save_original_format=not fused)
    # the tool's own reading of the checkpoint, computed in float32
    ref = transformers.Qwen3MoeForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
    exp = {"tool": f"transformers {transformers.__version__}, torch {torch.__version__}",
           "probe": PROBE, "codes_sha256": {}, "dequantized_sha256": {}}
    np.save(os.path.join(d, "expected_logits.npy"), logits(ref).astype(np.float32))
    with open(os.path.join(d, "expected.json"), "w") as f:
        json.dump(exp, f)
    _card(d)


def _card(d: str) -> None:
    with open(os.path.join(d, "card.json"), "w") as f:
        json.dump({"known_limitations": ["random weights: a conformance fixture"]}, f)


def _scheme(targets, bits, strategy, group=None, symmetric=True):
    w = {"num_bits": bits, "type": "int", "symmetric": symmetric, "strategy": strategy}
    if group:
        w["group_size"] = group
    return {"targets": targets, "weights": w}


def main() -> None:
    check_pins()
    os.makedirs(OUT, exist_ok=True)
    experts = ["re:.*mlp\\.experts\\.\\d+\\.(gate|up|down)_proj$"]
    attn = ["re:.*self_attn\\.[qkvo]_proj$"]
    if TF4:
        # transformers 4.x: the router mlp.gate is an nn.Linear too (ignored, as users do)
        quantized_fixture("ct_tf4_w4g32_asym", 8, 32, 32, {
            "group_0": _scheme(["Linear"], 4, "group", 32, symmetric=False)})
        quantized_fixture("ct_tf4_w2g32_sym", 9, 32, 32, {
            "group_0": _scheme(["Linear"], 2, "group", 32)})
        return
    # mixed widths per role: 8-bit channel attention, 4-bit group-32 experts
    quantized_fixture("ct_w4g32_sym_mixed", 1, 32, 32, {
        "group_0": _scheme(attn, 8, "channel"),
        "group_1": _scheme(experts, 4, "group", 32)})
    # 3-bit group 32 with zero points, sharded, bfloat16 model and scales
    quantized_fixture("ct_w3g32_asym_sharded", 2, 32, 32, {
        "group_0": _scheme(["Linear"], 3, "group", 32, symmetric=False)}, shards=2, bf16=True)
    # 2-bit channel-wise, K % (32 / bits) != 0 for down_proj (K = 36); lm_head quantized too
    quantized_fixture("ct_w2ch_sym_k36", 3, 32, 36, {
        "group_0": _scheme(["Linear"], 2, "channel")}, ignore=("re:.*mlp\\.gate$",))
    # 3-bit channel-wise with zero points, K = 36: 108 bits, dense and 10-per-word layouts
    # both need 4 words (the version in quantization_config decides)
    quantized_fixture("ct_w3ch_asym_k36", 4, 32, 36, {
        "group_0": _scheme(["Linear"], 3, "channel", symmetric=False)})
    # 4-bit group 128 with zero points, tied embeddings
    quantized_fixture("ct_w4g128_asym_tied", 5, 128, 128, {
        "group_0": _scheme(experts + attn, 4, "group", 128, symmetric=False)}, tie=True,
        layers=1, experts=2, top_k=1)
    float_fixture("float_bf16_per_expert", 6, fused=False, dtype=torch.bfloat16)
    float_fixture("float_f16_fused3d", 7, fused=True, dtype=torch.float16)
    total = 0
    for root, _, files in os.walk(OUT):
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    print(f"fixtures written to {OUT}: {total} bytes")


if __name__ == "__main__":
    main()
