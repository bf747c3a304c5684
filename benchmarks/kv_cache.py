#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""KV cache storage: memory per token and the logit difference of the 16-bit caches (f16,
bf16) against the float32 cache (docs/runtime.md, "KV cache storage").

    python benchmarks/kv_cache.py [--json benchmarks/results/kv-cache.json] [--quick]

Memory: bytes of cache per token of context (K and V, every layer and KV head), from the
runtime (Model.kv_bytes_per_token) for the bundled model and the synthetic model, and from the
same formula (2 x layers x KV heads x head_dim x element size, checked against the runtime on
both loaded models) at the Qwen3-Coder-30B-A3B shape (48 layers, 4 KV heads of 128), with the
cache of a 32k-token context.

Logits: every position's logits of a prompt set, each prompt in a fresh session per cache type
(exact mode, 2 threads), compared with the float32 cache's: max |difference|, the max
relative difference (|difference| over the row's largest |f32 logit|), and how often the
argmax (top-1 token) agrees. Bundled model (fwassist-tiny-coder, trained): C snippets through
its tokenizer, plus long prompts (the snippets repeated) where more positions share the
rounding. Synthetic model (sdk/fwassist/export/synthetic.py, random weights, seed 0): seeded
random ids. Also the greedy continuation: the fraction of its tokens before the first one
that differs from the float32 cache's.

Decode speed (bundled model, 1 thread): after a prefill that fills the context to --decode-at
tokens, the median wall time of single-token steps, the three cache types taking turns per
repetition so that load from other processes hits them alike. At this model's size attention
is a large part of a step at long context, so this is where the cache's read bytes show.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from typing import Any

import numpy as np

import fwassist
from fwassist import Model
from fwassist.artifact.writer import write_artifact
from fwassist.export.synthetic import synthetic_config, synthetic_model
from fwassist.models import TINY_CODER_PIN, tiny_coder_path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from machine import git_commit, write_results  # noqa: E402

KV_TYPES = ("f32", "f16", "bf16")
ELEM = {"f32": 4, "f16": 2, "bf16": 2}
# Qwen3-Coder-30B-A3B (config.json): 48 layers, 32 query / 4 KV heads of head_dim 128.
QWEN3_CODER_30B = {"num_hidden_layers": 48, "num_key_value_heads": 4, "head_dim": 128}
SNIPPETS = [
    "int main(void) {\n    int i;\n    for (i = 0; i < 10; i++)\n",
    "#include <stdio.h>\n\nstatic int add(int a, int b) {\n    return a + b;\n}\n",
    "struct node {\n    struct node *next;\n    int value;\n};\n\nvoid push(struct node **h",
    "size_t strlen(const char *s) {\n    const char *p = s;\n    while (*p)\n",
    "/* copy n bytes */\nvoid *memcpy(void *dst, const void *src, size_t n) {\n",
    "if (ptr == NULL) {\n        fprintf(stderr, \"out of memory\\n\");\n        exit(1);\n",
]


def bytes_per_token(cfg: dict[str, Any], kv: str) -> int:
    return int(2 * cfg["num_hidden_layers"] * cfg["num_key_value_heads"] * cfg["head_dim"]
               * ELEM[kv])


def compare(model: Model, prompts: list[list[int]], greedy: int) -> dict[str, Any]:
    """The 16-bit caches' logits against the float32 cache's over `prompts`."""
    out: dict[str, Any] = {"prompts": len(prompts), "positions": sum(len(p) for p in prompts)}
    ref: list[np.ndarray] = []
    ref_text: list[list[int]] = []
    for p in prompts:
        with model.session(max_context=len(p) + greedy, threads=2, kv_cache="f32") as s:
            ref.append(s.logits(p))
        ref_text.append(greedy_ids(model, p, greedy, "f32"))
    for kv in ("f16", "bf16"):
        max_abs = max_rel = sum_abs = 0.0
        agree = total = same_greedy = count = 0
        for p, r, rt in zip(prompts, ref, ref_text):
            with model.session(max_context=len(p) + greedy, threads=2, kv_cache=kv) as s:
                got = s.logits(p)
            d = np.abs(got.astype(np.float64) - r.astype(np.float64))
            scale = np.max(np.abs(r), axis=1, keepdims=True).astype(np.float64)
            max_abs = max(max_abs, float(d.max()))
            sum_abs += float(d.sum())
            count += d.size
            max_rel = max(max_rel, float((d / scale).max()))
            agree += int(np.sum(np.argmax(got, axis=1) == np.argmax(r, axis=1)))
            total += len(p)
            g = greedy_ids(model, p, greedy, kv)
            same_greedy += next((i for i, (a, b) in enumerate(zip(g, rt)) if a != b), greedy)
        out[kv] = {"max_abs": max_abs, "mean_abs": sum_abs / count, "max_rel": max_rel,
                   "top1_agree": agree / total,
                   "greedy_tokens_matching": same_greedy / (greedy * len(prompts))}
    return out


def greedy_ids(model: Model, prompt: list[int], n: int, kv: str) -> list[int]:
    """n greedy tokens after `prompt` (argmax of each step's logits)."""
    with model.session(max_context=len(prompt) + n, threads=2, kv_cache=kv) as s:
        row = s.logits(prompt)[-1]
        ids = []
        for _ in range(n):
            t = int(np.argmax(row))
            ids.append(t)
            row = s.logits([t])[-1]
    return ids


def decode_ms(model: Model, prompt: list[int], steps: int, reps: int) -> dict[str, float]:
    """Median ms per decode step after `prompt`, per cache type, the types interleaved."""
    times: dict[str, list[float]] = {kv: [] for kv in KV_TYPES}
    for _ in range(reps):
        for kv in KV_TYPES:
            with model.session(max_context=len(prompt) + steps, threads=1, kv_cache=kv) as s:
                row = s.logits(prompt)[-1]
                for _ in range(steps):
                    t = int(np.argmax(row))
                    t0 = time.perf_counter()
                    row = s.logits([t])[-1]
                    times[kv].append((time.perf_counter() - t0) * 1e3)
    return {kv: statistics.median(v) for kv, v in times.items()}


def model_row(name: str, model: Model, cfg: dict[str, Any], prompts: list[list[int]],
              greedy: int) -> dict[str, Any]:
    per = {kv: model.kv_bytes_per_token(kv) for kv in KV_TYPES}
    for kv in KV_TYPES:  # the formula used for the shape no model is loaded for
        assert per[kv] == bytes_per_token(cfg, kv), (name, kv, per[kv])
    return {"model": name, "shape": {k: cfg[k] for k in QWEN3_CODER_30B},
            "bytes_per_token": per, "logits": compare(model, prompts, greedy)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                   "results", "kv-cache.json"))
    ap.add_argument("--quick", action="store_true", help="fewer and shorter prompts (CI)")
    ap.add_argument("--decode-at", type=int, default=1024,
                    help="context length of the decode timing (bundled model)")
    args = ap.parse_args()
    greedy = 8 if args.quick else 32
    rows = []

    bundled = Model.load(tiny_coder_path(), pin=TINY_CODER_PIN)
    snippets = SNIPPETS[:2] if args.quick else SNIPPETS
    prompts = [bundled.encode(t) for t in snippets]
    long_len = 128 if args.quick else 1024
    ctx = min(int(bundled.config["max_position_embeddings"]), long_len)
    long_ids = [i for t in SNIPPETS for i in bundled.encode(t)] * 64
    prompts.append(long_ids[: ctx - greedy])
    rows.append(model_row("bundled fwassist-tiny-coder", bundled, bundled.config, prompts,
                          greedy))
    steps = 8 if args.quick else 32
    at = min(args.decode_at, ctx) - steps
    decode = {"context": at, "steps": steps,
              "ms_per_token": decode_ms(bundled, long_ids[:at], steps, 2 if args.quick else 7)}

    cfg = synthetic_config(num_hidden_layers=4, num_key_value_heads=2, head_dim=64,
                           num_attention_heads=8, hidden_size=512)
    rng = np.random.default_rng(1)
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "synthetic.fwa")
        write_artifact(path, synthetic_model(cfg, bits=4, seed=0),
                       model_card={"known_limitations": ["synthetic random weights"]},
                       options={"generator": "benchmarks/kv_cache.py"},
                       evidence={"measured": False}, exporter_version=fwassist.__version__)
        synth = Model.load(path)
        n = 64 if args.quick else 512
        sprompts = [[int(x) for x in rng.integers(0, cfg["vocab_size"], size=m)]
                    for m in ((16, n) if args.quick else (16, 64, 200, n))]
        rows.append(model_row("synthetic (sdk/fwassist/export/synthetic.py, seed 0)", synth,
                              synth.config, sprompts, greedy))

    shapes = {"Qwen3-Coder-30B-A3B": {kv: bytes_per_token(QWEN3_CODER_30B, kv)
                                      for kv in KV_TYPES}}
    payload = {"meta": {"machine": platform.machine(), "python": platform.python_version(),
                        "commit": git_commit(), "cpu_info": fwassist.cpu_info(),
                        "method": __doc__},
               "shapes": shapes, "models": rows, "decode": decode}
    lines = ["KV cache: bytes per token (K and V, all layers) and at 32k tokens"]
    lines.append(f"{'shape':<34}{'f32 B/tok':>11}{'f16 B/tok':>11}{'bf16 B/tok':>11}"
                 f"{'f32 @32k':>11}{'16-bit @32k':>13}")
    table = [(r["model"], r["bytes_per_token"]) for r in rows] + list(shapes.items())
    for name, per in table:
        lines.append(f"{name[:33]:<34}{per['f32']:>11}{per['f16']:>11}{per['bf16']:>11}"
                     f"{per['f32'] * 32768 / 2**30:>9.2f}GiB{per['f16'] * 32768 / 2**30:>11.2f}GiB")
    lines.append("")
    lines.append("Logits vs the float32 cache (exact mode, every position of every prompt)")
    lines.append(f"{'model':<34}{'cache':>6}{'positions':>10}{'max abs':>11}{'mean abs':>11}"
                 f"{'max rel':>11}{'top-1 agree':>13}{'greedy match':>14}")
    for r in rows:
        lg = r["logits"]
        for kv in ("f16", "bf16"):
            x = lg[kv]
            lines.append(f"{r['model'][:33]:<34}{kv:>6}{lg['positions']:>10}"
                         f"{x['max_abs']:>11.3e}{x['mean_abs']:>11.3e}{x['max_rel']:>11.3e}"
                         f"{100 * x['top1_agree']:>12.2f}%{100 * x['greedy_tokens_matching']:>13.1f}%")
    ms = decode["ms_per_token"]
    lines.append("")
    lines.append(f"Decode, bundled model, 1 thread, context {decode['context']}: median ms/token "
                 + ", ".join(f"{kv} {ms[kv]:.3f}" for kv in KV_TYPES)
                 + f" (f16/f32 {ms['f16'] / ms['f32']:.2f}x, bf16/f32 {ms['bf16'] / ms['f32']:.2f}x)")
    write_results(args.json, payload, "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
