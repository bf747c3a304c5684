# SPDX-License-Identifier: Apache-2.0
"""Artifact benchmark: write (export) time and verification throughput of a ~1 GB artifact.

Side by side in one run: the artifact writer, our full verify (SHA-256 on the best backend
and forced to scalar), the lazy open a device performs (expert blocks deferred), and Python's
hashlib over the same bytes as a reference. Medians of several runs; writes JSON and a table.

    python benchmarks/artifact.py --json OUT [--size-mb 1000] [--reps 3]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable

import numpy as np

import fwassist
from fwassist.artifact.writer import write_artifact
from fwassist.export.model import ImportedModel, ModelTensor, QuantizedWeight


def synthetic_model(size_mb: int, seed: int = 0) -> ImportedModel:
    """A Qwen3-MoE-shaped model (hidden 1024, 64 experts, 4-bit attention, 3-bit experts)
    with enough layers to reach about size_mb of packed weights."""
    rng = np.random.default_rng(seed)
    H, I, E, V = 1024, 512, 64, 4096

    def qw(n: int, k: int, bits: int) -> QuantizedWeight:
        half = 1 << (bits - 1)
        q = rng.integers(-half, half, size=(n, k), dtype=np.int8)
        s = rng.uniform(0.001, 0.01, size=(n, k // 32)).astype(np.float16)
        return QuantizedWeight(q, s, None, bits, 32, True)

    per_layer_mb = (E * 3 * H * I * (3 / 8 + 2 / 32) + 4 * H * H * (4 / 8 + 2 / 32)) / 1e6
    layers = max(1, int(round(size_mb / per_layer_mb)))
    # One code array per shape, shared by every layer and expert: the writer still packs,
    # hashes and writes each tensor separately, and the benchmark's RAM stays small.
    attn, gate, down = qw(H, H, 4), qw(I, H, 3), qw(H, I, 3)
    t = [ModelTensor("model.embed_tokens.weight", "embed", None, None,
                     rng.standard_normal((V, H)).astype(np.float16))]
    for L in range(layers):
        p = f"model.layers.{L}."
        for r in ("q_proj", "k_proj", "v_proj", "o_proj"):
            t.append(ModelTensor(p + f"self_attn.{r}.weight", r, L, None, attn))
        t.append(ModelTensor(p + "input_layernorm.weight", "input_norm", L, None,
                             np.ones(H, np.float32)))
        t.append(ModelTensor(p + "mlp.gate.weight", "router", L, None,
                             rng.standard_normal((E, H)).astype(np.float32)))
        for e in range(E):
            q = p + f"mlp.experts.{e}."
            t += [ModelTensor(q + "gate_proj.weight", "expert_gate", L, e, gate),
                  ModelTensor(q + "up_proj.weight", "expert_up", L, e, gate),
                  ModelTensor(q + "down_proj.weight", "expert_down", L, e, down)]
    t.append(ModelTensor("model.norm.weight", "final_norm", None, None, np.ones(H, np.float32)))
    cfg = {"architecture": "qwen3_moe", "hidden_size": H, "num_hidden_layers": layers,
           "num_experts": E, "moe_intermediate_size": I, "vocab_size": V}
    return ImportedModel(cfg, t, None, "synthetic", "0" * 64)


def median_time(fn: Callable[[], Any], reps: int) -> float:
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def verify_in_subprocess(path: str, features: str) -> float:
    """Full verify with FWA_CPU_FEATURES=features (fixed at process start), seconds."""
    code = ("import time, fwassist; t=time.perf_counter(); "
            f"fwassist.load_artifact({path!r}).close(); print(time.perf_counter()-t)")
    env = dict(os.environ, FWA_CPU_FEATURES=features)
    out = subprocess.run([sys.executable, "-c", code], env=env, check=True,
                         capture_output=True, text=True).stdout
    return float(out.strip())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", required=True)
    ap.add_argument("--size-mb", type=int, default=1000)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()

    model = synthetic_model(args.size_mb)
    card = {"known_limitations": ["synthetic benchmark weights"]}
    with tempfile.TemporaryDirectory(dir=os.path.dirname(os.path.abspath(args.json)) or ".") as d:
        path = os.path.join(d, "bench.fwa")
        t_write = median_time(lambda: write_artifact(path, model, model_card=card, options={},
                                                     evidence={}, exporter_version="bench"), 1)
        size = os.path.getsize(path)
        gb = size / 1e9
        with open(path, "rb") as f:
            raw = f.read()
        t_hashlib = median_time(lambda: hashlib.sha256(raw).digest(), args.reps)
        del raw
        t_full = median_time(lambda: fwassist.load_artifact(path).close(), args.reps)
        t_lazy = median_time(lambda: fwassist.load_artifact(path, lazy=True).close(), args.reps)
        detected = ",".join(fwassist.cpu_info()["detected"])
        t_full_best = statistics.median(verify_in_subprocess(path, detected)
                                        for _ in range(args.reps))
        t_full_scalar = verify_in_subprocess(path, "none")
    rows = [
        {"impl": "fwassist-writer", "op": "write", "bytes": size, "median_s": t_write,
         "gbps": gb / t_write},
        {"impl": "fwassist-verify", "op": "full-verify", "bytes": size, "median_s": t_full,
         "gbps": gb / t_full, "sha256_backend": fwassist._core.sha256_backend()},
        {"impl": "fwassist-verify (fresh process)", "op": "full-verify", "bytes": size,
         "median_s": t_full_best, "gbps": gb / t_full_best},
        {"impl": "fwassist-verify scalar", "op": "full-verify", "bytes": size,
         "median_s": t_full_scalar, "gbps": gb / t_full_scalar},
        {"impl": "fwassist-lazy-open", "op": "lazy-open", "bytes": size, "median_s": t_lazy,
         "gbps": None},
        {"impl": "hashlib", "op": "sha256 of the file bytes", "bytes": size,
         "median_s": t_hashlib, "gbps": gb / t_hashlib},
    ]
    meta = {"cpu_info": fwassist.cpu_info(), "size_bytes": size, "reps": args.reps,
            "loadavg": os.getloadavg()}
    with open(args.json, "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=2)
    print(f"artifact {size / 1e6:.0f} MB, {len(model.tensors)} tensors")
    print(f"{'impl':<34} {'op':<26} {'median s':>9} {'GB/s':>7}")
    for r in rows:
        g = f"{r['gbps']:.2f}" if r["gbps"] else "-"
        print(f"{r['impl']:<34} {r['op']:<26} {r['median_s']:>9.3f} {g:>7}")
    print(f"verify vs hashlib: {t_hashlib / t_full:.2f}x; lazy open is "
          f"{t_lazy / t_full * 100:.1f}% of a full verify")
    return 0


if __name__ == "__main__":
    sys.exit(main())
