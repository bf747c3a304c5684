# SPDX-License-Identifier: Apache-2.0
"""Small `.fwa` artifacts built straight from docs/artifact-format.md, for the loader tests and
the fuzz seed corpus (tests/fuzz/make_corpus.py). Test code only: the product writer is
fwassist.artifact.writer; this independent one lets the tests corrupt any field and re-seal
the header, and cross-checks the spec's reading.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass
from typing import Any, Optional, Union

import numpy as np

from fwassist import kernels

MAGIC = b"\x89FWA\r\n\x1a\n"
SECTION_KEYS = ("config", "tokenizer", "tensors", "expert_blocks", "provenance", "model_card",
                "sbom", "evidence")
# Format 1.1 adds `generation` (spec §3.9) at the top level and in `sections`.
GENERATION = {"bos_token_id": None, "chat_template": "{{ messages[0]['content'] }}",
              "eos_token_ids": [1, 30], "pad_token_id": 0,
              "sources": {"chat_template.jinja": None, "generation_config.json": "1" * 64,
                          "tokenizer_config.json": "2" * 64}}


def section_keys(manifest: dict) -> tuple[str, ...]:
    return SECTION_KEYS + (("generation",) if "generation" in manifest else ())


def minor(manifest: dict) -> int:
    """The header's minor version for a manifest: 1 when it has `generation`."""
    return 1 if "generation" in manifest else 0


def canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def roundup(v: int, a: int) -> int:
    return (v + a - 1) // a * a


def header(manifest_len: int, data_len: int, digest: bytes, version=(1, 0)) -> bytearray:
    data_offset = roundup(128 + manifest_len, 4096)
    h = bytearray(128)
    h[0:8] = MAGIC
    struct.pack_into("<HHIQQQQ", h, 8, version[0], version[1], 0, manifest_len, data_offset,
                     data_len, data_offset + data_len)
    h[48:80] = digest
    return h


def assemble(manifest: dict, data: bytes, *, fix_sections: bool = True) -> bytes:
    """The file for `manifest` and the data region; `sections` recomputed unless told not to."""
    if fix_sections:
        manifest["sections"] = {k: sha(canonical(manifest[k])) for k in section_keys(manifest)}
    m = canonical(manifest)
    h = header(len(m), len(data), hashlib.sha256(m).digest(), version=(1, minor(manifest)))
    gap = roundup(128 + len(m), 4096) - 128 - len(m)
    return bytes(h) + m + b"\0" * gap + bytes(data)


def split(blob: bytes) -> tuple[dict, bytes]:
    """(manifest, data region) of a well-formed file."""
    (ml, doff) = struct.unpack_from("<QQ", blob, 16)
    return json.loads(blob[128:128 + ml].decode("utf-8")), bytes(blob[doff:])


def manifest_bytes(blob: bytes) -> bytes:
    (ml,) = struct.unpack_from("<Q", blob, 16)
    return bytes(blob[128:128 + ml])


@dataclass
class T:
    """One tensor: a float32/float16 array, a uint16 array of bf16 bits (bf16=True) or a
    PackedMatrix."""

    name: str
    role: str
    layer: Optional[int]
    expert: Optional[int]
    value: Union[np.ndarray, kernels.PackedMatrix]
    bf16: bool = False

    def entry_and_bytes(self) -> tuple[dict, bytes]:
        v = self.value
        if isinstance(v, kernels.PackedMatrix):
            q = {"bits": v.bits, "block": v.block, "zero_points": v.has_zero,
                 "scale": v.scale_dtype}
            return {"dtype": "packed", "shape": [v.N, v.K], "quant": q}, v.data.tobytes()
        dtype = "bf16" if self.bf16 else {np.dtype(np.float32): "f32",
                                          np.dtype(np.float16): "f16"}[v.dtype]
        le = v.astype(v.dtype.newbyteorder("<"), copy=False)
        return {"dtype": dtype, "shape": list(v.shape), "quant": None}, le.tobytes()


def build(tensors: list[T], *, config: Optional[dict] = None,
          generation: Optional[dict] = None) -> bytes:
    """Lays the tensors out in the given order (consecutive tensors of one (layer, expert) share
    a 4096-aligned block, the others are 64-aligned) and returns the file: format 1.0, or 1.1
    with `generation`."""
    data = bytearray()
    entries: list[dict] = []
    blocks: list[dict] = []
    i = 0
    while i < len(tensors):
        t = tensors[i]
        group = [t]
        if t.expert is not None:
            j = i + 1
            while (j < len(tensors) and tensors[j].expert == t.expert
                   and tensors[j].layer == t.layer):
                group.append(tensors[j])
                j += 1
            data.extend(b"\0" * (roundup(len(data), 4096) - len(data)))
        start = len(data)
        for g in group:
            data.extend(b"\0" * (roundup(len(data), 64) - len(data)))
            e, raw = g.entry_and_bytes()
            e.update(name=g.name, role=g.role, layer=g.layer, expert=g.expert,
                     offset=len(data), length=len(raw), sha256=sha(raw))
            entries.append(e)
            data.extend(raw)
        if t.expert is not None:
            data.extend(b"\0" * (roundup(len(data), 4096) - len(data)))
            blocks.append({"layer": t.layer, "expert": t.expert, "offset": start,
                           "length": len(data) - start,
                           "sha256": sha(bytes(data[start:]))})
        i += len(group)
    data.extend(b"\0" * (roundup(len(data), 64) - len(data)))
    manifest = {
        "format": "fwassist.artifact",
        "format_version": [1, 0],
        "requires": {"endianness": "little", "kernel_layout": 1},
        "data_length": len(data),
        "config": config or {"architecture": "qwen3_moe", "hidden_size": 64, "num_experts": 2,
                             "rms_norm_eps": "1e-06", "rope_theta": "1000000.0"},
        "tokenizer": None,
        "tensors": entries,
        "expert_blocks": blocks,
        "provenance": {"source": {"name": "fixture", "sha256": "0" * 64},
                       "exporter": {"name": "tests/artifact_fixtures.py", "version": "0"}},
        "model_card": {"known_limitations": ["a test fixture, not a model"]},
        "sbom": {"bomFormat": "CycloneDX", "specVersion": "1.6"},
        "evidence": {"note": "none"},
    }
    if generation is not None:
        manifest["format_version"] = [1, 1]
        manifest["generation"] = generation
        manifest["config"] = dict(manifest["config"], vocab_size=32)
    return assemble(manifest, bytes(data))


def small_tensors(seed: int = 0, hidden: int = 64, experts: int = 2) -> list[T]:
    """Embedding (f32), norm (f16), router (bf16), q_proj (packed 4-bit), `experts` experts of
    layer 0 (packed 3-bit gate/up, 2-bit down with zero points), final norm, lm_head (8-bit)."""
    rng = np.random.default_rng(seed)
    f32 = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    q = lambda N, K, **kw: kernels.quantize_rtn(f32(N, K), **kw)  # noqa: E731
    bf16 = (f32(experts, hidden).view(np.uint32) >> 16).astype(np.uint16)
    ts = [
        T("model.embed_tokens.weight", "embed", None, None, f32(32, hidden)),
        T("model.layers.0.input_layernorm.weight", "input_norm", 0, None,
          f32(hidden).astype(np.float16)),
        T("model.layers.0.mlp.gate.weight", "router", 0, None, bf16, bf16=True),
        T("model.layers.0.self_attn.q_proj.weight", "q_proj", 0, None,
          q(hidden, hidden, bits=4, block=32)),
    ]
    for e in range(experts):
        p = f"model.layers.0.mlp.experts.{e}."
        ts += [T(p + "gate_proj.weight", "expert_gate", 0, e, q(32, hidden, bits=3, block=32)),
               T(p + "up_proj.weight", "expert_up", 0, e, q(32, hidden, bits=3, block=32)),
               T(p + "down_proj.weight", "expert_down", 0, e,
                 q(hidden, 32, bits=2, block=64, symmetric=False, scale_dtype=np.float32))]
    ts += [T("model.norm.weight", "final_norm", None, None, f32(hidden)),
           T("lm_head.weight", "lm_head", None, None, q(32, hidden, bits=8, block=128))]
    return ts
