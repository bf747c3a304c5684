# SPDX-License-Identifier: Apache-2.0
"""The model an importer produces and the artifact writer consumes: configuration, tokenizer
and every tensor with its role, either float or as integer codes with their quantization."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Union

import numpy as np

# Roles of a Qwen3-MoE decoder's tensors (docs/artifact-format.md, tensor table).
ROLES = (
    "embed", "q_proj", "k_proj", "v_proj", "o_proj", "q_norm", "k_norm", "input_norm",
    "post_attention_norm", "router", "expert_gate", "expert_up", "expert_down",
    "mlp_gate", "mlp_up", "mlp_down", "final_norm", "lm_head",
)
EXPERT_ROLES = ("expert_gate", "expert_up", "expert_down")


@dataclass(frozen=True)
class QuantizedWeight:
    """W[n, k] = (q[n, k] - zero_points[n, k // block]) * scales[n, k // block], shape (N, K):
    N output features, K inputs (the Hugging Face Linear orientation)."""

    q: np.ndarray                       # integer codes in the declared range
    scales: np.ndarray                  # float16 or float32 (N, ceil(K / block))
    zero_points: Optional[np.ndarray]   # same shape as scales, or None (zero)
    bits: int                           # 2, 3, 4 or 8: the declared width
    block: int                          # 32, 64 or 128
    signed: bool                        # q in [-2^(bits-1), 2^(bits-1)) or [0, 2^bits)


@dataclass(frozen=True)
class ModelTensor:
    name: str                           # Hugging Face parameter name
    role: str                           # one of ROLES
    layer: Optional[int]
    expert: Optional[int]
    value: Union[np.ndarray, QuantizedWeight, BF16Array, PackedTensor]  # bf16 as BF16Array


@dataclass(frozen=True)
class PackedTensor:
    """A weight already in the packed layout (docs/kernels.md), made only when the writer
    reaches it: models larger than memory are written one tensor at a time. ``produce``
    returns the layout's bytes (``fwassist.kernels.packed_size`` of them); it may be called
    once per write."""

    N: int                              # output rows
    K: int                              # inputs
    bits: int
    block: int
    has_zero: bool
    scale: str                          # "f16" or "f32"
    produce: Callable[[], Any]          # -> a bytes-like object (bytes, uint8 ndarray, ...)


@dataclass(frozen=True)
class BF16Array:
    """bfloat16 values kept bit-exact as their uint16 patterns."""

    bits: np.ndarray                    # uint16, the tensor's shape


@dataclass
class ImportedModel:
    config: dict[str, Any]              # Hugging Face Qwen3-MoE names; floats as Python floats
    tensors: list[ModelTensor]
    tokenizer: Optional[dict[str, Any]] = None   # tokenizer.json content
    source_name: str = ""
    source_sha256: str = ""             # of the ONNX file (and external data, in order)
    notes: list[str] = field(default_factory=list)  # importer decisions worth recording
    # Generation metadata (docs/artifact-format.md §3.9): bos_token_id, chat_template,
    # eos_token_ids, pad_token_id, sources. None writes a format 1.0 artifact, a dict 1.1.
    generation: Optional[dict[str, Any]] = None
