# SPDX-License-Identifier: Apache-2.0
"""Writes the small model the C++ runtime tests use (tests/cpp/test_model.cpp and the logits
digest tool, natively and under qemu-aarch64): a Qwen3-MoE decoder with 16 experts (top-4), a
dense layer, mixed weight formats (4-bit block 32 attention with float16 scales; 3-bit block 64
experts with zero points; 2-bit block 128 dense MLP; 8-bit router; float embedding and lm_head), built by the QAT builder and exported like any checkpoint.

Usage: python tests/cross/make_test_model.py OUT.fwa
"""

from __future__ import annotations

import json
import os
import sys
import tempfile

from fwassist.export.pipeline import export_onnx
from fwassist.export.qat_builder import QuantSpec, build_qat_onnx, random_weights, tiny_config

ATTN = QuantSpec(pattern="dq", bits=4, block=32, scale_dtype="float16")
EXPERT = QuantSpec(pattern="qcdq", bits=3, block=64, symmetric=False)
DENSE = QuantSpec(bits=2, block=128)
SPECS = {"q_proj": ATTN, "k_proj": ATTN, "v_proj": ATTN, "o_proj": ATTN,
         "expert_gate": EXPERT, "expert_up": EXPERT, "expert_down": EXPERT,
         "mlp_gate": DENSE, "mlp_up": DENSE, "mlp_down": DENSE,
         "router": QuantSpec(bits=8, block=32)}


def main(out: str) -> None:
    cfg = tiny_config(num_hidden_layers=3, mlp_only_layers=[1], num_experts=16,
                      num_experts_per_tok=4, hidden_size=128, intermediate_size=256,
                      moe_intermediate_size=64, vocab_size=160, max_position_embeddings=256)
    with tempfile.TemporaryDirectory() as d:
        onnx_path = os.path.join(d, "model.onnx")
        build_qat_onnx(onnx_path, random_weights(cfg, seed=7), cfg,
                       lambda name, role: SPECS.get(role), config_json=True)
        with open(os.path.join(d, "card.json"), "w") as f:
            json.dump({"known_limitations": ["random weights: a test model"]}, f)
        pin = export_onnx(onnx_path, out, evidence=False, quiet=True)
    print(pin)


if __name__ == "__main__":
    main(sys.argv[1])
