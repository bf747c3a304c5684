# SPDX-License-Identifier: Apache-2.0
"""End to end: QAT ONNX Qwen3-MoE graphs (built by fwassist.export.qat_builder) imported with
``import_onnx``; the numpy reference forward on the imported model must give the logits
onnxruntime computes on the ONNX graph (ORT_DISABLE_ALL), within float32 rounding.

Tokens whose k-th and (k+1)-th router probabilities tie within float noise in some layer can
route differently in float32 (ORT) and float64 (reference); they, and the tokens after them
(which attend to them), are excluded and counted.
"""

from __future__ import annotations

import numpy as np
import pytest

import onnx
import onnxruntime as ort

from fwassist import kernels  # noqa: E402
from fwassist.export.model import BF16Array, QuantizedWeight  # noqa: E402
from fwassist.export.onnx_import import import_onnx  # noqa: E402
from fwassist.export.qat_builder import (QuantSpec, build_qat_onnx, random_weights,  # noqa: E402
                                         tiny_config)
from fwassist.export.reference import Reference, dequantize  # noqa: E402

REL_TOL = 1e-5
Q = QuantSpec

MIXES = {
    "float": (tiny_config(), None, {}),
    "qdq_int4_b32": (tiny_config(), Q("qdq", 4, 32), {}),
    "qdq_uint4_channel": (tiny_config(), Q("qdq", 4, None, symmetric=False), {}),
    "int2_experts": (tiny_config(), {"expert_gate": Q("dq", 2, 32, symmetric=False),
                                     "expert_up": Q("dq", 2, 32),
                                     "expert_down": Q("qdq", 2, 32, negative_scales=True),
                                     "default": Q("qdq", 4, None)}, {}),
    "qcdq_3bit": (tiny_config(), {"default": Q("qcdq", 3, 32, narrow=True),
                                  "router": Q("qdq", 8, None)}, {}),
    "matmulnbits": (tiny_config(), {"expert_gate": Q("matmulnbits", 2, 32),
                                    "expert_up": Q("matmulnbits", 4, 32, symmetric=False),
                                    "expert_down": Q("matmulnbits", 4, 32),
                                    "default": Q("matmulnbits", 8, 64)}, {}),
    "fp16_bf16_scales": (tiny_config(), {"default": Q("dq", 4, 32, scale_dtype="float16"),
                                         "router": Q("float", float_dtype="float16"),
                                         "lm_head": Q("float", float_dtype="bfloat16")}, {}),
    "dq_transpose_int32": (tiny_config(), Q("dq_transpose", 4, 64, encoding="int32"), {}),
    "dense_tied_quant_embed": (
        tiny_config(num_hidden_layers=3, mlp_only_layers=[1], tie_word_embeddings=True,
                    norm_topk_prob=False),
        {"default": Q("qdq", 4, 32), "embed": Q("dq", 8, None), "router": Q("float", gemm=True)},
        {"moe_combine": "concat"}),
    "per_tensor_external": (tiny_config(), Q("dq", 8, 0, symmetric=False),
                            {"external_data": True}),
    "dynamo_names": (tiny_config(), Q("qdq", 4, 128), {"naming": "dynamo"}),
    "no_names": (tiny_config(), Q("qcdq", 2, 32), {"naming": "none", "config_json": True,
                                                  "shuffle_seed": 5}),
}


def ort_logits(path, ids):
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    s = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return s.run(None, {"input_ids": ids})[0][0]


def compare(path, ids):
    m = import_onnx(path)
    y = ort_logits(path, ids)
    r = Reference(m).forward(ids)
    T = ids.shape[1]
    keep = T if r.first_ambiguous is None else r.first_ambiguous
    d = np.abs(r.logits[:keep] - y[:keep])
    scale = np.abs(r.logits[:keep]).max() if keep else 1.0
    return m, {"max_abs": float(d.max()) if keep else 0.0,
               "max_rel": float(d.max() / scale) if keep else 0.0,
               "excluded_tokens": T - keep, "tokens": T}


@pytest.mark.parametrize("name", list(MIXES))
def test_logits_match_onnxruntime(tmp_path, name, record_property):
    cfg, quant, kw = MIXES[name]
    w = random_weights(cfg, seed=len(name))
    path = tmp_path / "m.onnx"
    build_qat_onnx(path, w, cfg, quant, **kw)
    ids = np.random.default_rng(len(name)).integers(0, cfg["vocab_size"], (1, 24))
    m, st = compare(path, ids.astype(np.int64))
    record_property("agreement", st)
    print(f"{name}: {st}")
    assert st["excluded_tokens"] <= 4, st
    assert st["max_rel"] < REL_TOL, st
    if kw.get("external_data"):
        assert any("external data" in n for n in m.notes)
    if name == "fp16_bf16_scales":
        t = {x.role: x for x in m.tensors}
        assert t["router"].value.dtype == np.float16 and isinstance(t["lm_head"].value, BF16Array)
        assert t["q_proj"].value.scales.dtype == np.float16
    n_q = sum(isinstance(t.value, QuantizedWeight) for t in m.tensors)
    assert n_q > 0 or quant is None
    # the reference dequantizer is the kernels' bit for bit
    for t in m.tensors:
        v = t.value
        if isinstance(v, QuantizedWeight):
            k = kernels.dequantize(kernels.pack(v.q, v.scales, v.zero_points, bits=v.bits,
                                                block=v.block, signed=v.signed))
            assert np.array_equal(k.view(np.uint32), dequantize(v).view(np.uint32)), t.name
        elif isinstance(v, BF16Array):
            assert v.bits.dtype == np.uint16


def test_64_experts_top8(tmp_path):
    cfg = tiny_config(num_experts=64, num_experts_per_tok=8, moe_intermediate_size=32)
    w = random_weights(cfg, seed=64)
    path = tmp_path / "m.onnx"
    quant = {"expert_gate": Q("dq", 2, 32), "expert_up": Q("qcdq", 3, 32),
             "expert_down": Q("qdq", 4, 32), "default": Q("qdq", 4, 64)}
    build_qat_onnx(path, w, cfg, quant)
    ids = np.random.default_rng(64).integers(0, cfg["vocab_size"], (1, 32)).astype(np.int64)
    m, st = compare(path, ids)
    print(f"64 experts top-8: {st}")
    assert sum(t.role == "expert_down" for t in m.tensors) == 128
    assert st["excluded_tokens"] <= 4 and st["max_rel"] < REL_TOL, st


def test_tie_detection_counts_near_ties():
    """A router whose probabilities tie exactly: the lower expert index wins (as in ORT's
    TopK), and the tie is reported so such tokens can be excluded."""
    cfg = tiny_config(num_hidden_layers=1)
    w = random_weights(cfg, seed=9)
    w["model.layers.0.mlp.gate.weight"][:] = 0.0          # uniform probabilities: all tie
    import tempfile
    import os
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "m.onnx")
        build_qat_onnx(p, w, cfg, None)
        ids = np.arange(6, dtype=np.int64).reshape(1, -1)
        m = import_onnx(p)
        r = Reference(m).forward(ids)
        assert r.ambiguous_tokens == list(range(6)) and r.first_ambiguous == 0
        y = ort_logits(p, ids)           # ORT also picks experts 0 and 1: results agree anyway
        assert np.abs(r.logits - y).max() / np.abs(y).max() < REL_TOL
