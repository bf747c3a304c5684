# SPDX-License-Identifier: Apache-2.0
"""Regenerates the kept seed corpus of tests/fuzz/fuzz_artifact.cpp: a few valid tiny artifacts
(float tensors, a packed tensor, expert blocks) and near-misses of each kind, every file under
16 KB. Deterministic; run from anywhere with the fwassist package importable:

    python tests/fuzz/make_corpus.py
"""

from __future__ import annotations

import struct
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import artifact_fixtures as fx  # noqa: E402
from fwassist import kernels  # noqa: E402

T = fx.T


def valid() -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    f32 = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    return {
        "valid_one_f32": fx.build([T("w", "embed", None, None, f32(4))]),
        "valid_floats": fx.build([
            T("model.embed_tokens.weight", "embed", None, None, f32(4, 8)),
            T("model.norm.weight", "final_norm", None, None, f32(8).astype(np.float16)),
            T("model.layers.0.mlp.gate.weight", "router", 0, None,
              (f32(2, 8).view(np.uint32) >> 16).astype(np.uint16), bf16=True),
        ]),
        "valid_packed": fx.build([
            T("lm_head.weight", "lm_head", None, None,
              kernels.quantize_rtn(f32(16, 32), bits=2, block=32, symmetric=False)),
        ]),
        "valid_expert": fx.build([
            T("model.norm.weight", "final_norm", None, None, f32(8)),
            T("model.layers.0.mlp.experts.0.up_proj.weight", "expert_up", 0, 0,
              kernels.quantize_rtn(f32(16, 32), bits=4, block=32)),
            T("model.layers.0.mlp.experts.0.down_proj.weight", "expert_down", 0, 0, f32(4)),
        ]),
        "valid_two_experts": fx.build([
            T("model.layers.0.mlp.experts.0.up_proj.weight", "expert_up", 0, 0, f32(8)),
            T("model.layers.0.mlp.experts.1.up_proj.weight", "expert_up", 0, 1, f32(8)),
        ]),
        "valid_empty": fx.build([]),
    }


def near_misses(good: dict[str, bytes]) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    one, exp, two = good["valid_one_f32"], good["valid_expert"], good["valid_two_experts"]
    m, data = fx.split(exp)
    doff = len(exp) - len(data)

    def flip(b: bytes, at: int, mask: int = 1) -> bytes:
        x = bytearray(b)
        x[at] ^= mask
        return bytes(x)

    def reseal(blob: bytes, edit) -> bytes:
        mm, dd = fx.split(blob)
        edit(mm)
        return fx.assemble(mm, dd)

    out["miss_truncated"] = one[:-1]
    out["miss_trailing"] = one + b"\0"
    out["miss_magic"] = flip(one, 3)
    out["miss_version"] = one[:8] + struct.pack("<H", 2) + one[10:]
    out["miss_manifest_digest"] = flip(one, 48)
    out["miss_manifest_byte"] = flip(one, 140)
    out["miss_gap_padding"] = flip(one, 4000)
    up = next(e for e in m["tensors"] if e["expert"] is not None)
    out["miss_expert_weight"] = flip(exp, doff + up["offset"] + 3)
    blk = m["expert_blocks"][0]
    out["miss_block_padding"] = flip(exp, doff + blk["offset"] + blk["length"] - 1)
    out["miss_overlap"] = reseal(exp, lambda mm: mm["tensors"][1].update(
        offset=mm["tensors"][1]["offset"] - 4096))
    out["miss_out_of_bounds"] = reseal(two, lambda mm: mm["expert_blocks"][1].update(
        offset=mm["expert_blocks"][1]["offset"] + 4096))
    out["miss_requires"] = reseal(one, lambda mm: mm["requires"].update(kernel_layout=2))
    out["miss_bits"] = reseal(good["valid_packed"],
                              lambda mm: mm["tensors"][0]["quant"].update(bits=5))
    mm, dd = fx.split(one)
    mm["sections"]["sbom"] = "0" * 64
    out["miss_sections"] = fx.assemble(mm, dd, fix_sections=False)
    return out


def main() -> None:
    good = valid()
    files = {**good, **near_misses(good)}
    for name, blob in sorted(files.items()):
        assert len(blob) < 16 * 1024, (name, len(blob))
        (HERE / "corpus" / name).write_bytes(blob)
    print(f"wrote {len(files)} files to {HERE / 'corpus'}")


if __name__ == "__main__":
    main()
