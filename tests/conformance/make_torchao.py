# SPDX-License-Identifier: Apache-2.0
"""Builds the torchao safetensors conformance fixtures (not needed to run the tests).

Pinned: torch 2.13.0 (CPU), transformers 5.25.0, torchao 0.18.0 (``pip install --no-deps
torchao==0.18.0``), safetensors. Run ``python tests/conformance/make_torchao.py``.

A small random transformers 5.x Qwen3-MoE, its fused experts linearized into per-expert
``nn.Linear`` (torchao's QAT covers only ``nn.Linear``/``nn.Embedding``: fused 3-D experts are
pytorch/ao RFC #4408), then ``quantize_(m, QATConfig(IntxWeightOnlyConfig(...), step="prepare"))``
and ``step="convert"``, which leaves ``IntxUnpackedToInt8Tensor`` weights; saved as transformers
saves torchao models: ``flatten_tensor_state_dict`` -> ``safetensors.save_file`` with the
metadata, and ``TorchAoConfig`` in config.json. ``expected.json`` holds torchao's own
reference: logits of the transformers model with the weights torchao's ``dequantize()`` returns
(float32 model, so float32), sha256 of the codes (``qdata``) and of those weights.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys

import numpy as np
import torch
import torchao
import transformers
from safetensors.torch import save_file
from torchao.prototype.safetensors.safetensors_support import flatten_tensor_state_dict
from torchao.quantization import IntxWeightOnlyConfig, MappingType, quantize_
from torchao.quantization.granularity import PerAxis, PerGroup
from torchao.quantization.qat import QATConfig

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_compressed_tensors as ct  # noqa: E402  (shared model builder and helpers)

PINS = {"torch": "2.13.0", "transformers": "5.25.0", "torchao": "0.18.0"}


def check_pins() -> None:
    got = {"torch": torch.__version__.split("+")[0], "transformers": transformers.__version__,
           "torchao": torchao.__version__}
    if got != PINS:
        sys.exit(f"pinned versions {PINS}, found {got}")


def fixture(name: str, seed: int, bits: int, granularity, mapping) -> None:
    d = os.path.join(ct.OUT, name)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    ref_model = ct.make_model(seed, 32, 64, 32, False)
    model = ct.make_model(seed, 32, 64, 32, False)
    ct.linearize_experts(model)
    base = IntxWeightOnlyConfig(weight_dtype=getattr(torch, f"int{bits}"),
                                granularity=granularity, mapping_type=mapping)
    targets = lambda m, fqn: isinstance(m, torch.nn.Linear) and fqn != "lm_head"  # noqa: E731
    quantize_(model, QATConfig(base, step="prepare"), filter_fn=targets)
    quantize_(model, QATConfig(base, step="convert"), filter_fn=targets)
    sd = model.state_dict()
    data, meta = flatten_tensor_state_dict(sd)
    save_file({k: v.contiguous() for k, v in data.items()}, os.path.join(d, "model.safetensors"),
              metadata={"format": "pt", **meta})
    cfg = model.config
    cfg.quantization_config = transformers.TorchAoConfig(quant_type=base).to_dict()
    cfg.save_pretrained(d)
    codes, weights, deq = {}, {}, {}
    for k, v in sd.items():
        if type(v).__name__ == "IntxUnpackedToInt8Tensor":
            mod = k[: -len(".weight")]
            codes[mod] = hashlib.sha256(v.qdata.numpy().tobytes()).hexdigest()
            deq[mod] = v.dequantize().float()
            weights[mod] = hashlib.sha256(deq[mod].numpy().tobytes()).hexdigest()
    I = ref_model.config.moe_intermediate_size
    with torch.no_grad():
        for li, layer in enumerate(ref_model.model.layers):
            for p in ("q_proj", "k_proj", "v_proj", "o_proj"):
                getattr(layer.self_attn, p).weight.copy_(deq[f"model.layers.{li}.self_attn.{p}"])
            for e in range(ref_model.config.num_experts):
                b = f"model.layers.{li}.mlp.experts.{e}"
                layer.mlp.experts.gate_up_proj[e, :I].copy_(deq[f"{b}.gate_proj"])
                layer.mlp.experts.gate_up_proj[e, I:].copy_(deq[f"{b}.up_proj"])
                layer.mlp.experts.down_proj[e].copy_(deq[f"{b}.down_proj"])
    exp = {"tool": f"torchao {torchao.__version__}, transformers {transformers.__version__}, "
                   f"torch {torch.__version__}",
           "probe": ct.PROBE, "codes_sha256": codes, "dequantized_sha256": weights}
    np.save(os.path.join(d, "expected_logits.npy"), ct.logits(ref_model).astype(np.float32))
    with open(os.path.join(d, "expected.json"), "w") as f:
        json.dump(exp, f)
    ct._card(d)


def main() -> None:
    check_pins()
    fixture("torchao_w4g32_sym", 11, 4, PerGroup(32), MappingType.SYMMETRIC)
    # torchao 0.18's QAT asserts "Only symmetric mapping is supported" for IntxWeightOnlyConfig
    fixture("torchao_w3ch_sym", 12, 3, PerAxis(0), MappingType.SYMMETRIC)
    print(f"torchao fixtures written to {ct.OUT}")


if __name__ == "__main__":
    main()
