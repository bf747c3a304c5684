#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""End-to-end generation benchmark: prefill and decode speed, time to first token, peak RSS and
decode vs the memory roofline, on synthetic Qwen3-MoE models.

    python benchmarks/generate.py --json OUT [--quick] [--sizes tiny,medium] [--bits 4,3,2]
                                  [--threads 1,2] [--modes fast,exact] [--reps 8]
                                  [--embed packed|f16] [--cache-dir DIR]

Models are made here, not exported from ONNX: an ImportedModel with random integer codes and
sane scales (every projection, the embedding and the lm_head quantized at the given bits,
block 32, fp16 scales; router and norms float32) is written with the artifact writer and cached
in --cache-dir under a name keyed by its configuration, so reruns skip the build (~6 s for
the 1 B model). "tiny" (30 M parameters, cache resident) measures compute and per-token
overheads, "medium" (1 B, 64 experts top-8) the memory-bound decode.

Each (model, bits, threads, mode) runs in a fresh subprocess, so that its peak RSS (VmHWM)
covers one model and one configuration: load, checks (finite logits, greedy token = argmax),
a warm-up, then rounds of prefill 128 and 512 tokens (fresh session and random prompt each,
generate with max_tokens=1) and a greedy decode of 64 tokens from a 16-token prompt. The
configurations take turns over --passes (2): each runs once per pass, its samples pooled, so
load bursts from other jobs hit all of them. Speeds are the runtime's own stats
(prefill_tokens_per_s, decode_tokens_per_s, ttft_ms), cross-checked against wall clocks, as
medians. Decode is related to the read bandwidth measured at the same thread count
(_core.bench_read_bandwidth) via the bytes of weights one decoded token reads (from the
artifact's tensor table); peak RSS to the artifact size and to an estimate (weights + KV cache
+ buffers). Also: the tiny model's logits vs the numpy reference forward, and a lazy-load
decode-only run per model (peak RSS when only the routed experts are read).

Writes {"meta": ..., "models": ..., "rows": [...]} to OUT (meta.method: how each number is
computed) and the table, also printed, to OUT with .txt. --quick (CI): tiny, 4-bit, 1 thread,
1 round, a few seconds.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, replace
from typing import Any, Optional

import numpy as np

import fwassist
from fwassist import _core
from machine import git_commit, llc_bytes, read_probe, write_results

MiB = 1 << 20
GENERATOR_VERSION = 1  # bump when the synthetic weights change: part of the cache key
SEED = 20240611
BLOCK = 32

# Qwen3-MoE shapes (Hugging Face config keys). "medium": 0.97 B parameters (experts 0.91 B),
# 64 experts top-8, so that one decoded token reads ~1/6 of the weights and the artifact
# (0.4-0.55 GB) is >> the LLC: decode streams from DRAM. "tiny": ~30 M parameters, cache
# resident, measures the compute and per-token overheads.
SIZES: dict[str, dict[str, Any]] = {
    "tiny": dict(vocab_size=8192, hidden_size=256, num_hidden_layers=4,
                 num_attention_heads=4, num_key_value_heads=2, head_dim=64,
                 moe_intermediate_size=128, intermediate_size=512, num_experts=64,
                 num_experts_per_tok=8),
    "medium": dict(vocab_size=32768, hidden_size=1024, num_hidden_layers=12,
                   num_attention_heads=16, num_key_value_heads=4, head_dim=64,
                   moe_intermediate_size=384, intermediate_size=2048, num_experts=64,
                   num_experts_per_tok=8),
}
COMMON_CONFIG = dict(model_type="qwen3_moe", norm_topk_prob=True, decoder_sparse_step=1,
                     mlp_only_layers=[], rms_norm_eps=1e-6, rope_theta=1000000.0,
                     max_position_embeddings=4096, tie_word_embeddings=False,
                     hidden_act="silu")


@dataclass(frozen=True)
class Plan:
    sizes: tuple[str, ...]
    bits: tuple[int, ...]
    threads: tuple[int, ...]
    modes: tuple[str, ...]
    reps: int                       # timed rounds per configuration (fewer if over budget)
    passes: int                     # the configurations are run in turn this many times
    prefill_lens: tuple[int, ...]
    decode_prompt: int
    decode_tokens: int
    max_context: int                # every session's max_context (sizes the KV cache)
    prefill_chunk: int
    probe_bytes: int
    config_budget_s: float          # per configuration: no new round after this


FULL = Plan(sizes=("tiny", "medium"), bits=(4, 3, 2), threads=(1, 2), modes=("fast",),
            reps=8, passes=2, prefill_lens=(128, 512), decode_prompt=16, decode_tokens=64,
            max_context=1024, prefill_chunk=128, probe_bytes=512 * MiB, config_budget_s=60.0)
QUICK = Plan(sizes=("tiny",), bits=(4,), threads=(1,), modes=("fast",), reps=1, passes=1,
             prefill_lens=(128, 512), decode_prompt=16, decode_tokens=32, max_context=1024,
             prefill_chunk=128, probe_bytes=128 * MiB, config_budget_s=20.0)


# ----------------------------------------------------------------------------- models

def hf_config(size: str) -> dict[str, Any]:
    return {**COMMON_CONFIG, **SIZES[size]}


def model_key(size: str, bits: int, embed: str) -> str:
    blob = json.dumps({"v": GENERATOR_VERSION, "seed": SEED, "config": hf_config(size),
                       "bits": bits, "block": BLOCK, "embed": embed}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def code_rms(bits: int) -> float:
    """RMS of codes uniform over the narrow symmetric range [-(2^(b-1)-1), 2^(b-1)-1]."""
    hi = (1 << (bits - 1)) - 1
    return math.sqrt(sum(k * k for k in range(-hi, hi + 1)) / (2 * hi + 1))


class Synth:
    """Random weights for one model, tensor by tensor, seeded.

    Codes: uniform over the narrow symmetric range [-(2^(b-1)-1), 2^(b-1)-1] (zero mean, as
    round-to-nearest with s = amax / (2^(b-1)-1) produces; the full range's -0.5 mean would
    add a common-mode component that RMSNorm turns into identical hidden states and routing).
    To keep RAM and time small, each tensor's codes are a window at a random offset into one
    pool of random codes (distinct windows: every tensor has its own codes, every expert block
    its own bytes). Scales: fp16, per (row, block) uniform in [0.75, 1.25] x the mean that
    gives W a standard deviation of gain / sqrt(K) (1 for the embedding), so activations keep
    unit scale through the layers."""

    def __init__(self, bits: int, max_elems: int, seed: int) -> None:
        from fwassist.export.model import QuantizedWeight
        self.QW = QuantizedWeight
        self.bits, self.rng = bits, np.random.default_rng(seed)
        hi = (1 << (bits - 1)) - 1
        self.pool = self.rng.integers(-hi, hi + 1, size=max_elems + (1 << 22), dtype=np.int8)
        self.rms = code_rms(bits)

    def qweight(self, n: int, k: int, std: float) -> Any:
        off = int(self.rng.integers(0, self.pool.size - n * k + 1))
        q = self.pool[off:off + n * k].reshape(n, k)
        mean_s = std / self.rms
        s = (self.rng.uniform(0.75, 1.25, size=(n, -(-k // BLOCK))) * mean_s).astype(np.float16)
        return self.QW(q, s, None, self.bits, BLOCK, True)

    def norm(self, n: int) -> np.ndarray:
        return (1.0 + 0.2 * self.rng.standard_normal(n)).astype(np.float32)

    def router(self, e: int, k: int) -> np.ndarray:
        # gain 3 (as qat_builder.random_weights): peaked but token-dependent routing
        return (self.rng.standard_normal((e, k), dtype=np.float32) * (3.0 / math.sqrt(k)))


def build_model(size: str, bits: int, embed: str) -> Any:
    """The ImportedModel of (size, bits); embed "packed" (embedding and lm_head quantized at
    bits) or "f16"."""
    from fwassist.export.mapping import hf_name, normalize_config
    from fwassist.export.model import ImportedModel, ModelTensor
    cfg, notes = normalize_config(hf_config(size))
    H, V, hd = cfg["hidden_size"], cfg["vocab_size"], cfg["head_dim"]
    nh, nkv, E, I = (cfg["num_attention_heads"], cfg["num_key_value_heads"],
                     cfg["num_experts"], cfg["moe_intermediate_size"])
    syn = Synth(bits, V * H, SEED + bits)
    t: list[Any] = []

    def add(role: str, layer: Optional[int], expert: Optional[int], value: Any) -> None:
        t.append(ModelTensor(hf_name(role, layer, expert), role, layer, expert, value))

    def lin(role: str, layer: Optional[int], expert: Optional[int], n: int, k: int) -> None:
        add(role, layer, expert, syn.qweight(n, k, 1.0 / math.sqrt(k)))

    if embed == "packed":
        add("embed", None, None, syn.qweight(V, H, 1.0))
    else:
        add("embed", None, None, syn.rng.standard_normal((V, H), dtype=np.float32)
            .astype(np.float16))
    for L in range(cfg["num_hidden_layers"]):
        lin("q_proj", L, None, nh * hd, H)
        lin("k_proj", L, None, nkv * hd, H)
        lin("v_proj", L, None, nkv * hd, H)
        lin("o_proj", L, None, H, nh * hd)
        add("q_norm", L, None, syn.norm(hd))
        add("k_norm", L, None, syn.norm(hd))
        add("input_norm", L, None, syn.norm(H))
        add("post_attention_norm", L, None, syn.norm(H))
        add("router", L, None, syn.router(E, H))
        for e in range(E):
            lin("expert_gate", L, e, I, H)
            lin("expert_up", L, e, I, H)
            lin("expert_down", L, e, H, I)
    add("final_norm", None, None, syn.norm(H))
    if embed == "packed":
        lin("lm_head", None, None, V, H)
    else:
        add("lm_head", None, None, (syn.rng.standard_normal((V, H), dtype=np.float32)
                                    / math.sqrt(H)).astype(np.float16))
    src = model_key(size, bits, embed)
    return ImportedModel(cfg, t, None, f"synthetic-{size}-{bits}bit", src,
                         notes + ["synthetic random weights (benchmarks/generate.py)"])


def ensure_artifact(cache_dir: str, size: str, bits: int, embed: str) -> dict[str, Any]:
    """The cached artifact of (size, bits, embed), built if missing."""
    from fwassist.artifact.writer import write_artifact
    key = model_key(size, bits, embed)
    path = os.path.join(cache_dir, f"{size}-{bits}bit-{embed}-{key[:16]}.fwa")
    if os.path.exists(path):
        return {"path": path, "cached": True, "build_s": None}
    os.makedirs(cache_dir, exist_ok=True)
    t0 = time.monotonic()
    model = build_model(size, bits, embed)
    card = {"name": f"synthetic {size} {bits}-bit", "known_limitations": [
        "synthetic random weights for benchmarking: the outputs are meaningless"]}
    write_artifact(path, model, model_card=card,
                   options={"generator": "benchmarks/generate.py",
                            "generator_version": GENERATOR_VERSION, "seed": SEED,
                            "embed": embed},
                   evidence={"measured": False}, exporter_version=fwassist.__version__)
    del model
    return {"path": path, "cached": False, "build_s": time.monotonic() - t0}


# ----------------------------------------------------------------------------- roofline

def tensor_table(path: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(config, tensor table) from the manifest (lazy open: no expert hashing)."""
    with fwassist.load_artifact(path, lazy=True) as art:
        m = art.manifest
        return m["config"], m["tensors"]


def bytes_per_token(config: dict[str, Any], tensors: list[dict[str, Any]]) -> dict[str, Any]:
    """Weight bytes one decoded token reads, from the stored tensor lengths: per layer every
    non-expert tensor (q/k/v/o, norms, router) + top_k x the mean (gate + up + down) of the
    layer's experts; final norm + lm_head + one embedding row (length / vocab)."""
    k = int(config["num_experts_per_tok"])
    per_layer: dict[int, dict[str, int]] = {}
    experts: dict[tuple[int, int], int] = {}
    top: dict[str, int] = {}
    for t in tensors:
        n = int(t["length"])
        if t["expert"] is not None:
            experts[(t["layer"], t["expert"])] = experts.get((t["layer"], t["expert"]), 0) + n
        elif t["layer"] is not None:
            d = per_layer.setdefault(t["layer"], {})
            d[t["role"]] = d.get(t["role"], 0) + n
        else:
            top[t["role"]] = top.get(t["role"], 0) + n
    attn = sum(v for d in per_layer.values() for r, v in d.items()
               if r in ("q_proj", "k_proj", "v_proj", "o_proj"))
    router = sum(d.get("router", 0) for d in per_layer.values())
    norms = sum(v for d in per_layer.values() for r, v in d.items() if r.endswith("norm"))
    dense_mlp = sum(v for d in per_layer.values() for r, v in d.items()
                    if r in ("mlp_gate", "mlp_up", "mlp_down"))
    by_layer: dict[int, list[int]] = {}
    for (L, _), n in experts.items():
        by_layer.setdefault(L, []).append(n)
    expert = sum(k * sum(v) / len(v) for v in by_layer.values())
    embed_row = top.get("embed", 0) / int(config["vocab_size"])
    head = top.get("lm_head", 0) or top.get("embed", 0)  # tied: lm_head reads the embedding
    total = attn + router + norms + dense_mlp + expert + head + embed_row + top.get(
        "final_norm", 0)
    all_bytes = sum(int(t["length"]) for t in tensors)
    return {"total": total, "non_expert": all_bytes - sum(experts.values()),
            "expert_mean": sum(experts.values()) / max(1, len(experts)),
            "attention": attn, "router": router, "norms": norms,
            "dense_mlp": dense_mlp, "experts_topk": expert, "lm_head": head,
            "embed_row": embed_row, "all_tensors": all_bytes,
            "expert_all": sum(experts.values()), "fraction_of_weights": total / all_bytes}


def kv_cache_bytes(config: dict[str, Any], max_context: int) -> int:
    """layers x 2 (K, V) x kv_heads x head_dim x 4 bytes (float32) x max_context."""
    return (config["num_hidden_layers"] * 2 * config["num_key_value_heads"] *
            config["head_dim"] * 4 * max_context)


def buffer_bytes(config: dict[str, Any], plan: Plan) -> dict[str, int]:
    """Our estimate of a session's buffers besides the KV cache, after the buffer list of
    csrc/model/session.h (float32 unless stated; C = prefill_chunk, ctx = max_context):
    x, xn, tmp [C, H]; xe, down [C*k, H] (a row per routed token); q, attn [C, nh*hd]; k, v
    [C, nkv*hd]; scores [nh, ctx]; RoPE tables 2 x [ctx, hd/2]; router [C, E]; top-k weights/ids
    and groups 4 x [C, k]; gate, up [C*k, I]; last logits [V]; the matmul workspace for C rows of
    the widest K plus the batched experts' (fast mode: int8 copy + 2 x int32/float per 32; taken
    as rows x K x 1.25 bytes). The KV cache is counted apart (its pages are touched as the
    context grows, so this is an upper bound)."""
    H, hd, V = config["hidden_size"], config["head_dim"], config["vocab_size"]
    nh, nkv = config["num_attention_heads"], config["num_key_value_heads"]
    E, k, I = (config["num_experts"], config["num_experts_per_tok"],
               config["moe_intermediate_size"])
    C, ctx = plan.prefill_chunk, plan.max_context
    f = 4
    acts = f * (3 * C * H + 2 * C * k * H + 2 * C * nh * hd + 2 * C * nkv * hd + C * E
                + 4 * C * k + 2 * C * k * I)
    rest = f * (nh * ctx + ctx * hd + V)
    ws = int(C * max(H, I, nh * hd) * 1.25) + int(2 * C * k * max(H, I) * 1.25)
    return {"activations": acts, "scores_rope_logits": rest, "workspace": ws,
            "total": acts + rest + ws}


# ----------------------------------------------------------------------------- reference

def reference_check(size: str, bits: int, embed: str, path: str,
                    modes: tuple[str, ...]) -> dict[str, Any]:
    """Runtime logits of a 24-token prompt vs the numpy reference forward (float64) of the
    same ImportedModel (tiny models only: the reference dequantizes every weight)."""
    from fwassist.export.reference import Reference
    model = build_model(size, bits, embed)
    ids = np.random.default_rng(SEED).integers(0, model.config["vocab_size"], 24)
    ref = Reference(model, dtype=np.float64).forward(ids).logits
    del model
    m = fwassist.Model.load(path)
    out: dict[str, Any] = {"size": size, "bits": bits, "tokens": int(ids.size)}
    for mode in modes:
        s = m.session(max_context=64, mode=mode, threads=1)
        try:
            got = np.asarray(s.logits(ids.tolist()), dtype=np.float64)
        finally:
            s.close()
        out[mode] = {"max_rel_err": float(np.abs(got - ref).max() / np.abs(ref).max()),
                     "argmax_agree": float(np.mean(got.argmax(1) == ref.argmax(1)))}
    return out


# ----------------------------------------------------------------------------- worker

def proc_status() -> dict[str, int]:
    """VmHWM, VmRSS, RssAnon, RssFile, VmSwap in bytes (/proc/self/status)."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile", "RssShmem", "VmSwap"):
                out[key] = int(rest.split()[0]) * 1024
    return out


def norm_stats(stats: Any) -> dict[str, Any]:
    """generate's stats as a JSON-able dict; experts_activated (distinct experts per layer in
    the call) becomes its mean over the MoE layers, the list kept as *_per_layer."""
    st = dict(stats)
    ea = st.get("experts_activated")
    if isinstance(ea, (list, tuple)):
        st["experts_activated_per_layer"] = [int(x) for x in ea]
        moe = [int(x) for x in ea if x]
        st["experts_activated"] = sum(moe) / len(moe) if moe else 0.0
    return st


def cpu_busy_s() -> Optional[float]:
    """Seconds of CPU time used by everything on the machine (/proc/stat, all CPUs)."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    # user nice system idle iowait irq softirq steal ...: busy = all but idle and iowait
    return (sum(v[:8]) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")


def worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Runs in a fresh process: loads one model and measures one (threads, mode)."""
    t_start = time.monotonic()
    rss_base = proc_status()
    t0 = time.perf_counter()
    model = fwassist.Model.load(spec["path"])
    load_s = time.perf_counter() - t0
    rss_loaded = proc_status()
    V = int(model.vocab_size)
    rng = np.random.default_rng(spec["seed"])
    kw = dict(max_context=spec["max_context"], mode=spec["mode"], threads=spec["threads"],
              prefill_chunk=spec["prefill_chunk"])
    notes: list[str] = []

    def run(prompt: list[int], max_tokens: int) -> tuple[dict[str, Any], list[int], float]:
        s = model.session(**kw)
        try:
            t = time.perf_counter()
            g = s.generate(prompt_ids=prompt, max_tokens=max_tokens, temperature=0.0)
            wall = time.perf_counter() - t
            return norm_stats(g.stats), [int(x) for x in g.token_ids], wall
        finally:
            s.close()

    def ids(n: int) -> list[int]:
        return rng.integers(0, V, size=n).tolist()

    decode_prompt = ids(spec["decode_prompt"])
    # checks: finite logits, and generate's greedy token == argmax of logits (same mode)
    s = model.session(**kw)
    try:
        lg = np.asarray(s.logits(decode_prompt))
    finally:
        s.close()
    checks = {"logits_shape": list(lg.shape), "logits_finite": bool(np.isfinite(lg).all()),
              "logits_std": float(np.std(lg[-1])) if lg.size else None}
    st, tok, _ = run(decode_prompt, 1)
    checks["greedy_matches_argmax"] = bool(tok and tok[0] == int(np.argmax(lg[-1])))
    del lg
    # warm-up (untimed): one prefill of the longest length and a short decode
    run(ids(max(spec["prefill_lens"])), 1)
    run(decode_prompt, 8)

    samples: dict[str, list[dict[str, Any]]] = {f"prefill{n}": [] for n in spec["prefill_lens"]}
    samples["decode"] = []
    decode_tokens: list[list[int]] = []
    rounds = 0
    t_rounds = time.monotonic()
    ru0, busy0 = resource.getrusage(resource.RUSAGE_SELF), cpu_busy_s()
    while rounds < spec["reps"]:
        for n in spec["prefill_lens"]:
            st, tok, wall = run(ids(n), 1)
            samples[f"prefill{n}"].append({**st, "wall_s": wall})
        st, tok, wall = run(decode_prompt, spec["decode_tokens"])
        samples["decode"].append({**st, "wall_s": wall})
        decode_tokens.append(tok)
        rounds += 1
        per_round = (time.monotonic() - t_rounds) / rounds
        if rounds < spec["reps"] and time.monotonic() - t_rounds + per_round > spec["budget_s"]:
            notes.append(f"stopped after {rounds} of {spec['reps']} rounds (budget "
                         f"{spec['budget_s']:.0f} s)")
            break
    ru1, busy1 = resource.getrusage(resource.RUSAGE_SELF), cpu_busy_s()
    wall = time.monotonic() - t_rounds
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    # Contention from the other jobs of the shared machine: the CPU time all processes used
    # during the rounds minus ours, in cores (0: the machine was ours).
    usage = {"wall_s": wall, "cpu_s": cpu, "cpu_util": cpu / (wall * spec["threads"]),
             "other_cores": (max(0.0, (busy1 - busy0) - cpu) / wall
                             if busy0 is not None and busy1 is not None else None),
             "involuntary_ctx_switches": ru1.ru_nivcsw - ru0.ru_nivcsw}
    checks["decode_deterministic"] = all(t == decode_tokens[0] for t in decode_tokens)
    end = proc_status()
    model_close = getattr(model, "close", None)
    if callable(model_close):
        model_close()
    # The read bandwidth right after the rounds, at the worker's thread count (after VmHWM was
    # read, so the probe's buffer is not in the peak): what the memory system offered then.
    probe = read_probe(spec["probe_bytes"], (spec["threads"],), 5)[str(spec["threads"])] \
        if spec.get("probe_bytes") else None
    return {"load_s": load_s, "rounds": rounds, "samples": samples, "checks": checks,
            "decode_token_ids": decode_tokens[0] if decode_tokens else [],
            "rss_base": rss_base, "rss_loaded": rss_loaded, "rss_end": end,
            "peak_rss": end["VmHWM"], "notes": notes, "usage": usage,
            "probe_gbps": probe, "core_mtime": os.path.getmtime(_core.__file__),
            "worker_s": time.monotonic() - t_start}


def lazy_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Decode only, lazy load (experts verified, hence read, on first use): the peak RSS of a
    device that never prefills long prompts. Fresh process; one generation."""
    rss_base = proc_status()
    t0 = time.perf_counter()
    model = fwassist.Model.load(spec["path"], lazy=True)
    load_s = time.perf_counter() - t0
    rng = np.random.default_rng(spec["seed"])
    prompt = rng.integers(0, model.vocab_size, size=spec["decode_prompt"]).tolist()
    s = model.session(max_context=spec["max_context"], mode=spec["mode"],
                      threads=spec["threads"], prefill_chunk=spec["prefill_chunk"])
    try:
        g = s.generate(prompt_ids=prompt, max_tokens=spec["decode_tokens"], temperature=0.0)
        st = norm_stats(g.stats)
        end = proc_status()
    finally:
        s.close()
    return {"load_s": load_s, "stats": st, "rss_base": rss_base, "rss_end": end,
            "peak_rss": end["VmHWM"]}


def run_worker(spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(spec)]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if p.returncode != 0 or not lines:
        tail = (p.stderr or p.stdout).strip().splitlines()[-6:]
        return {"error": f"worker exit {p.returncode}: " + " | ".join(tail)[-800:]}
    return json.loads(lines[-1])


# ----------------------------------------------------------------------------- rows

def merge_results(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The passes of one configuration: samples pooled, peak RSS the largest, checks and-ed
    (plus: the same greedy tokens in every pass, i.e. in separate processes)."""
    errors = [r["error"] for r in results if "error" in r]
    ok = [r for r in results if "error" not in r]
    if not ok:
        return {"error": errors[0] if errors else "no result"}
    out = dict(ok[0])
    out["samples"] = {k: [x for r in ok for x in r["samples"][k]] for k in ok[0]["samples"]}
    out["rounds"] = sum(r["rounds"] for r in ok)
    out["load_s"] = statistics.median(r["load_s"] for r in ok)
    best = max(ok, key=lambda r: r["peak_rss"])
    out["peak_rss"], out["rss_end"] = best["peak_rss"], best["rss_end"]
    out["rss_base"], out["rss_loaded"] = best["rss_base"], best["rss_loaded"]
    out["checks"] = {k: (all(r["checks"].get(k) for r in ok)
                         if isinstance(v, bool) else v) for k, v in ok[0]["checks"].items()}
    out["checks"]["same_tokens_across_processes"] = all(
        r["decode_token_ids"] == ok[0]["decode_token_ids"] for r in ok)
    out["notes"] = [n for r in ok for n in r["notes"]] + [f"a pass failed: {e}" for e in errors]
    out["usage"] = [r.get("usage") for r in ok]
    out["probe_gbps"] = [r.get("probe_gbps") for r in ok]
    out["core_mtimes"] = sorted({r.get("core_mtime") for r in ok if r.get("core_mtime")})
    return out


def med(xs: list[Optional[float]]) -> Optional[float]:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def stat(samples: list[dict[str, Any]], key: str) -> list[Optional[float]]:
    return [float(s[key]) if s.get(key) is not None else None for s in samples]


def make_row(model: dict[str, Any], bits: int, threads: int, mode: str, res: dict[str, Any],
             plan: Plan) -> dict[str, Any]:
    row: dict[str, Any] = {"model": model["size"], "bits": bits, "threads": threads,
                           "mode": mode, "artifact_bytes": model["artifact_bytes"][bits]}
    if "error" in res:
        return {**row, "status": "error", "reason": res["error"]}
    smp = res["samples"]
    for n in plan.prefill_lens:
        s = smp[f"prefill{n}"]
        row[f"prefill{n}_tok_s"] = med(stat(s, "prefill_tokens_per_s"))
        # wall clock minus the decode step of the one generated token (decode_ms)
        row[f"prefill{n}_wall_tok_s"] = med([n / (x["wall_s"] - (x.get("decode_ms") or 0) / 1e3)
                                             for x in s])
        row[f"ttft{n}_ms"] = med(stat(s, "ttft_ms"))
        row[f"prefill{n}_experts_activated"] = med(stat(s, "experts_activated"))
        row[f"prefill{n}_cached_tokens"] = max((x.get("cached_tokens") or 0) for x in s) \
            if s else None
    d = smp["decode"]
    row["decode_tok_s"] = med(stat(d, "decode_tokens_per_s"))
    row["decode_generated_tokens"] = med(stat(d, "generated_tokens"))
    row["decode_ttft_ms"] = med(stat(d, "ttft_ms"))
    # wall-clock cross-check: generated tokens (each one sampling + one decode step, as the
    # runtime's decode_tokens_per_s counts them) over the wall time after the prefill
    walls = [x["generated_tokens"] / (x["wall_s"] - x["prefill_ms"] / 1e3)
             for x in d if x.get("prefill_ms") is not None and x.get("generated_tokens")
             and x["wall_s"] > x["prefill_ms"] / 1e3]
    row["decode_wall_tok_s"] = med(walls)
    row["decode_experts_activated"] = med(stat(d, "experts_activated"))
    row["rounds"] = res["rounds"]
    row["load_s"] = res["load_s"]
    row["peak_rss_bytes"] = res["peak_rss"]
    row["rss"] = {"base": res["rss_base"], "loaded": res["rss_loaded"], "end": res["rss_end"]}
    row["rss_over_artifact"] = res["peak_rss"] / row["artifact_bytes"]
    for n in plan.prefill_lens:
        p = row.get(f"prefill{n}_tok_s")
        row[f"prefill{n}_over_decode"] = p / row["decode_tok_s"] if p and row["decode_tok_s"] \
            else None
    row["prefill_over_decode"] = row[f"prefill{max(plan.prefill_lens)}_over_decode"]
    row["checks"] = res["checks"]
    row["decode_token_ids"] = res["decode_token_ids"]
    row["notes"] = res["notes"]
    row["usage_per_pass"] = res.get("usage")
    row["worker_probe_gbps"] = res.get("probe_gbps")
    row["core_mtimes"] = res.get("core_mtimes")
    others = [u["other_cores"] for u in res.get("usage") or [] if u and
              u.get("other_cores") is not None]
    row["other_cores"] = max(others) if others else None
    row["samples"] = smp
    row["status"] = "ok"
    return row


def add_roofline(row: dict[str, Any], model: dict[str, Any], probe: dict[str, float]) -> None:
    if row.get("status") != "ok":
        return
    bpt = model["bytes_per_token"][row["bits"]]["total"]
    bw = probe[str(row["threads"])] * 1e9
    row["bytes_per_token"] = bpt
    row["probe_gbps"] = probe[str(row["threads"])]
    row["decode_gbps"] = bpt * row["decode_tok_s"] / 1e9 if row["decode_tok_s"] else None
    row["pct_roofline"] = 100.0 * bpt * row["decode_tok_s"] / bw if row["decode_tok_s"] \
        else None
    row["roofline_tok_s"] = bw / bpt
    # vs the probe the worker took right after its rounds (median over passes)
    now = med(row.get("worker_probe_gbps") or [])
    row["pct_roofline_now"] = 100.0 * bpt * row["decode_tok_s"] / (now * 1e9) \
        if now and row["decode_tok_s"] else None


def add_rss_estimate(row: dict[str, Any], model: dict[str, Any], plan: Plan) -> None:
    """Expected peak = baseline process (python + numpy + fwassist imported, before the load)
    + weights touched (the whole artifact mapped: a full verify reads every byte, and prefill
    of 512 tokens activates nearly every expert) + KV cache + buffers (our estimate)."""
    if row.get("status") != "ok":
        return
    kv = model["kv_cache_bytes"]
    buf = model["buffer_bytes"]["total"]
    base = row["rss"]["base"]["VmRSS"]
    expect = base + row["artifact_bytes"] + kv + buf
    row["rss_expected_bytes"] = expect
    row["rss_expected_parts"] = {"baseline_process": base, "weights": row["artifact_bytes"],
                                 "kv_cache": kv, "buffers": buf}
    row["peak_rss_over_expected"] = row["peak_rss_bytes"] / expect


# ----------------------------------------------------------------------------- probe, info

def mem_total() -> Optional[int]:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None



# ----------------------------------------------------------------------------- output

def fmt(v: Optional[float], spec: str) -> str:
    width = int(spec.split(".")[0])
    return format(v, spec) if v is not None else "-".rjust(width)


def table(rows: list[dict[str, Any]], models: dict[str, Any], meta: dict[str, Any],
          plan: Plan) -> str:
    p1, p2 = plan.prefill_lens[0], plan.prefill_lens[-1]
    head = (f"{'model':<7} {'bits':>4} {'thr':>3} {'mode':<5} | {f'pf{p1} t/s':>9} "
            f"{f'pf{p2} t/s':>9} {'dec t/s':>8} {f'TTFT{p1} ms':>11} | {'%roof':>6} {'%now':>5} "
            f"{'MB/tok':>7} | {'peakRSS MiB':>11} {'RSS/art':>7} {'RSS/est':>7} | "
            f"{f'pf{p2}/dec':>9}")
    out = [head, "-" * len(head)]
    for r in rows:
        lead = f"{r['model']:<7} {r['bits']:>4} {r['threads']:>3} {r['mode']:<5} | "
        if r["status"] != "ok":
            out.append(lead + r["reason"][:120])
            continue
        out.append(
            lead + f"{fmt(r.get(f'prefill{p1}_tok_s'), '9.1f')} "
            f"{fmt(r.get(f'prefill{p2}_tok_s'), '9.1f')} {fmt(r['decode_tok_s'], '8.1f')} "
            f"{fmt(r.get(f'ttft{p1}_ms'), '11.1f')} | {fmt(r.get('pct_roofline'), '5.1f')}"
            f"{'*' if r['artifact_bytes'] < (meta['llc_bytes'] or 0) else ' '} "
            f"{fmt(r.get('pct_roofline_now'), '5.1f')} "
            f"{fmt(r['bytes_per_token'] / 1e6, '7.2f')} | "
            f"{fmt(r['peak_rss_bytes'] / MiB, '11.1f')} {fmt(r['rss_over_artifact'], '7.2f')} "
            f"{fmt(r.get('peak_rss_over_expected'), '7.2f')} | "
            f"{fmt(r['prefill_over_decode'], '9.2f')}")
    out.append("%roof: decode bytes/s vs the best read probe of the run at that thread count; "
               "%now: vs the probe the worker took right after its rounds")
    out.append("* the whole artifact fits in the LLC: decode reads cache, not DRAM; %roof is "
               "not a DRAM roofline there")
    out.append("")
    out.append("models (artifact MiB by bits; weight MB read per decoded token; KV cache at "
               f"max_context {plan.max_context}):")
    for size, m in models.items():
        c = m["config"]
        arts = ", ".join(f"{b}-bit {m['artifact_bytes'][b] / MiB:.1f}"
                         for b in sorted(m["artifact_bytes"], reverse=True))
        bpt = ", ".join(f"{b}-bit {m['bytes_per_token'][b]['total'] / 1e6:.2f}"
                        for b in sorted(m["bytes_per_token"], reverse=True))
        out.append(f"  {size}: {m['params'] / 1e6:.0f} M params (experts "
                   f"{m['expert_params'] / 1e6:.0f} M, active/token {m['active_params'] / 1e6:.1f}"
                   f" M), hidden {c['hidden_size']}, layers {c['num_hidden_layers']}, heads "
                   f"{c['num_attention_heads']}/{c['num_key_value_heads']}x{c['head_dim']}, "
                   f"experts {c['num_experts']} top-{c['num_experts_per_tok']} x "
                   f"{c['moe_intermediate_size']}, vocab {c['vocab_size']}, embed/lm_head "
                   f"{m['embed']}")
        out.append(f"    artifact MiB: {arts}; MB/token: {bpt}; KV cache "
                   f"{m['kv_cache_bytes'] / MiB:.1f} MiB; buffers (est.) "
                   f"{m['buffer_bytes']['total'] / MiB:.1f} MiB")
    lazy_lines = []
    for size, m in models.items():
        for b, res in sorted(m.get("lazy_decode", {}).items(), key=lambda kv: -int(kv[0])):
            if "error" in res:
                lazy_lines.append(f"  {size} {b}-bit: {res['error'][:100]}")
                continue
            st = res["stats"]
            lazy_lines.append(
                f"  {size} {b}-bit: peak RSS {res['peak_rss'] / MiB:.1f} MiB = "
                f"{res['peak_rss_over_artifact']:.2f} x artifact, "
                f"{res['peak_rss_over_expected']:.2f} x expected "
                f"({res['rss_expected_bytes'] / MiB:.1f} MiB: weights touched "
                f"{res['weights_touched_bytes'] / MiB:.1f}); experts/layer "
                f"{st.get('experts_activated', 0):.1f}; decode {st.get('decode_tokens_per_s', 0):.1f}"
                f" tok/s (first use: verifies each expert)")
    if lazy_lines:
        out.append("")
        out.append(f"lazy load, decode only ({plan.decode_prompt}-token prompt + "
                   f"{plan.decode_tokens} tokens, threads {plan.threads[0]}, {plan.modes[0]}):")
        out += lazy_lines
    out.append("")
    out.append(f"probe GB/s (threads: GB/s) start {fmt_dict(meta['probe_gbps_start'])}, end "
               f"{fmt_dict(meta['probe_gbps_end'])}, used {fmt_dict(meta['probe_gbps'])}; "
               f"llc {(meta['llc_bytes'] or 0) / MiB:.0f} MiB")
    out.append(f"kernels {meta['cpu_info']['kernels']}; load average start "
               f"{meta['loadavg_start'][0]:.2f}, end {meta['loadavg_end'][0]:.2f}")
    for r in rows:
        flags = []
        if r["status"] != "ok":
            continue
        ch = r["checks"]
        for k in ("logits_finite", "greedy_matches_argmax", "decode_deterministic",
                  "same_tokens_across_processes"):
            if ch.get(k) is False:
                flags.append(f"{k}=false")
        for n in plan.prefill_lens:
            if r.get(f"prefill{n}_cached_tokens"):
                flags.append(f"prefill{n} cached_tokens={r[f'prefill{n}_cached_tokens']}")
            a, b = r.get(f"prefill{n}_tok_s"), r.get(f"prefill{n}_wall_tok_s")
            if a and b and not 0.8 < b / a < 1.25:
                flags.append(f"prefill{n} stats {a:.0f} vs wall {b:.0f} tok/s")
        a, b = r.get("decode_tok_s"), r.get("decode_wall_tok_s")
        if a and b and not 0.8 < b / a < 1.25:
            flags.append(f"decode stats {a:.1f} vs wall {b:.1f} tok/s")
        if r.get("decode_generated_tokens") not in (None, plan.decode_tokens):
            flags.append(f"decode generated {r['decode_generated_tokens']} of "
                         f"{plan.decode_tokens}")
        if r.get("other_cores") is not None and r["other_cores"] > 0.25:
            flags.append(f"contended: other jobs used {r['other_cores']:.2f} cores meanwhile")
        flags += r["notes"]
        if flags:
            out.append(f"  ! {r['model']} {r['bits']}-bit {r['threads']}t {r['mode']}: "
                       + "; ".join(flags))
    for c in meta.get("cross_checks", []):
        out.append(f"  ! {c}")
    for c in meta.get("reference_checks", []):
        if "error" in c:
            out.append(f"  ! reference check {c['size']} {c['bits']}-bit: {c['error']}")
            continue
        out.append(f"reference check ({c['size']} {c['bits']}-bit, {c['tokens']} tokens, logits "
                   "vs numpy float64): " + ", ".join(
                       f"{k} max rel err {v['max_rel_err']:.2g}, argmax agree "
                       f"{100 * v['argmax_agree']:.0f}%" for k, v in c.items()
                       if isinstance(v, dict)))
    return "\n".join(out)


def fmt_dict(d: dict[str, float]) -> str:
    return ", ".join(f"{k}: {v:.1f}" for k, v in d.items())


METHOD = {
    "models": "synthetic Qwen3-MoE (benchmarks/generate.py SIZES): random codes uniform over "
              "the narrow symmetric range, fp16 block-32 scales giving W std gain/sqrt(K); "
              "every projection, the embedding and lm_head quantized at the row's bits "
              "(embed 'packed') or fp16 (embed 'f16'); router and norms float32",
    "runs": "one fresh subprocess per (model, bits, threads, mode): Model.load, checks, an "
            "untimed warm-up (longest prefill, 8-token decode), then rounds of: prefill of "
            "each length (fresh session, new random prompt, generate max_tokens=1), greedy "
            "decode of decode_tokens from a fixed decode_prompt-token prompt (fresh session)",
    "speeds": "medians over rounds of the runtime's stats: prefill_tokens_per_s, ttft_ms "
              "(prefill + first sampling), decode_tokens_per_s (generated tokens / decode_ms, "
              "each a sampling + a decode step); *_wall_* are the same from perf_counter "
              "around generate (prefill: n / (wall - decode_ms); decode: generated / (wall - "
              "prefill_ms))",
    "bytes_per_token": "from the artifact's tensor table: per layer q/k/v/o + norms + router + "
                       "top_k x mean expert (gate+up+down) packed bytes, + final norm + lm_head "
                       "+ one embedding row (embed bytes / vocab); KV-cache reads not included "
                       "(< 1 % at these contexts)",
    "pct_roofline": "bytes_per_token x decode tok/s / probe GB/s at the same thread count (the "
                    "better of the probes at the start and end of the run); tiny models are "
                    "cache resident, so their % is not a DRAM roofline. pct_roofline_now: vs "
                    "the probe (half the buffer, 5 reps) each worker takes right after its "
                    "rounds, median over passes: on this VM the 2-thread read bandwidth is "
                    "bimodal (~35 or ~61 GB/s, vCPU placement), so it can change mid-run",
    "rss": "VmHWM of the worker at its end; expected = the worker's VmRSS before the load + "
           "artifact bytes (all weights mapped and touched) + KV cache (layers x 2 x kv_heads "
           "x head_dim x 4 B x max_context) + buffers (see buffer_bytes)",
    "prefill_over_decode": "prefill tok/s at the longest prompt / decode tok/s",
    "noise": "the machine is shared: configurations take turns over plan.passes passes "
             "(samples pooled), medians of rounds, probe best of start/end, loadavg per pass; "
             "other_cores = CPU time of every other process during the worker's rounds "
             "(/proc/stat busy minus the worker's rusage) / wall, the worst pass, flagged "
             "above 0.25; a configuration stops adding rounds after config_budget_s",
}


# ----------------------------------------------------------------------------- main

def parse_list(s: Optional[str], conv: Any, default: tuple) -> tuple:
    return tuple(conv(x) for x in s.split(",") if x) if s else default


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", help="output file (the table goes to the same name with .txt)")
    ap.add_argument("--quick", action="store_true", help="tiny, 4-bit, 1 thread, 1 round (CI)")
    ap.add_argument("--sizes", help=f"comma list of {','.join(SIZES)}")
    ap.add_argument("--bits", help="comma list of 4,3,2")
    ap.add_argument("--threads", help="comma list, e.g. 1,2")
    ap.add_argument("--modes", help="comma list of fast,exact")
    ap.add_argument("--reps", type=int, help="rounds per configuration (all passes)")
    ap.add_argument("--passes", type=int, help="run the configurations in turn this often")
    ap.add_argument("--embed", choices=("packed", "f16"), default="packed",
                    help="embedding and lm_head quantized (default) or float16")
    ap.add_argument("--cache-dir", default="/tmp/fwassist-bench-models")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        spec = json.loads(args.worker)
        print(json.dumps(lazy_worker(spec) if spec.get("lazy") else worker(spec)))
        return 0
    if not args.json:
        ap.error("--json is required")
    base = QUICK if args.quick else FULL
    plan = replace(base, sizes=parse_list(args.sizes, str, base.sizes),
                   bits=parse_list(args.bits, int, base.bits),
                   threads=parse_list(args.threads, int, base.threads),
                   modes=parse_list(args.modes, str, base.modes),
                   reps=args.reps or base.reps, passes=args.passes or base.passes)
    for s in plan.sizes:
        if s not in SIZES:
            ap.error(f"unknown size {s!r} (one of {', '.join(SIZES)})")
    if not hasattr(fwassist, "Model"):
        print("fwassist.Model is not available in this build", file=sys.stderr)
        return 2
    t_start = time.monotonic()
    info = fwassist.cpu_info()
    load_start = list(os.getloadavg())
    probe_reps = 3 if args.quick else 7
    probe_start = read_probe(plan.probe_bytes, plan.threads, probe_reps)

    models: dict[str, dict[str, Any]] = {}
    todo = []
    for size in plan.sizes:
        m: dict[str, Any] = {"size": size, "embed": args.embed, "artifacts": {},
                             "artifact_bytes": {}, "bytes_per_token": {}}
        for bits in plan.bits:
            a = ensure_artifact(args.cache_dir, size, bits, args.embed)
            print(f"  {size} {bits}-bit: {'cached' if a['cached'] else 'built'} "
                  f"{a['path']}" + (f" in {a['build_s']:.1f} s" if a["build_s"] else ""),
                  file=sys.stderr, flush=True)
            cfg, tensors = tensor_table(a["path"])
            m["config"] = cfg
            m["artifacts"][bits] = a
            m["artifact_bytes"][bits] = os.path.getsize(a["path"])
            m["bytes_per_token"][bits] = bytes_per_token(cfg, tensors)
            params = [int(np.prod(t["shape"])) for t in tensors]
            m["params"] = sum(params)
            m["expert_params"] = sum(p for p, t in zip(params, tensors) if t["expert"] is not None)
            todo += [(size, bits, t, mode) for t in plan.threads for mode in plan.modes]
        c = m["config"]
        per_expert = m["expert_params"] / (c["num_experts"] * c["num_hidden_layers"])
        m["active_params"] = (m["params"] - m["expert_params"] - c["vocab_size"] *
                              c["hidden_size"] + c["hidden_size"] +
                              per_expert * c["num_experts_per_tok"] * c["num_hidden_layers"])
        m["kv_cache_bytes"] = kv_cache_bytes(c, plan.max_context)
        m["buffer_bytes"] = buffer_bytes(c, plan)
        models[size] = m

    ref_checks = []
    if "tiny" in models:
        b = max(plan.bits)
        try:
            ref_checks.append(reference_check("tiny", b, args.embed,
                                              models["tiny"]["artifacts"][b]["path"],
                                              plan.modes))
        except Exception as e:  # reported, not fatal
            ref_checks.append({"size": "tiny", "bits": b, "error": f"{type(e).__name__}: {e}"})
        print(f"  reference check: {ref_checks[-1]}", file=sys.stderr, flush=True)

    # Every configuration runs once per pass (reps / passes rounds each), in turn, so that a
    # burst of load from other jobs spreads over all of them; the samples are pooled.
    results: dict[tuple, list[dict[str, Any]]] = {k: [] for k in todo}
    loads: dict[tuple, list[float]] = {k: [] for k in todo}
    per_pass = -(-plan.reps // plan.passes)
    n_runs = len(todo) * plan.passes
    for p in range(plan.passes):
        for i, key in enumerate(todo):
            size, bits, threads, mode = key
            m = models[size]
            spec = {"path": m["artifacts"][bits]["path"], "threads": threads, "mode": mode,
                    "reps": per_pass, "prefill_lens": list(plan.prefill_lens),
                    "decode_prompt": plan.decode_prompt, "decode_tokens": plan.decode_tokens,
                    "max_context": plan.max_context, "prefill_chunk": plan.prefill_chunk,
                    "budget_s": plan.config_budget_s / plan.passes,
                    "probe_bytes": plan.probe_bytes // 2,
                    "seed": SEED}  # the same prompts for every configuration and pass
            loads[key].append(os.getloadavg()[0])
            t0 = time.monotonic()
            res = run_worker(spec, timeout=max(120.0, 6 * plan.config_budget_s))
            res["config_s"] = time.monotonic() - t0
            results[key].append(res)
            msg = res.get("error") or (
                f"pf{plan.prefill_lens[-1]} "
                f"{med(stat(res['samples'][f'prefill{plan.prefill_lens[-1]}'], 'prefill_tokens_per_s')) or 0:.1f}"
                f" tok/s, decode {med(stat(res['samples']['decode'], 'decode_tokens_per_s')) or 0:.1f}"
                " tok/s")
            print(f"  [{p * len(todo) + i + 1}/{n_runs}] {size} {bits}-bit {threads}t {mode}: "
                  f"{msg} ({res['config_s']:.0f} s, total {time.monotonic() - t_start:.0f} s)",
                  file=sys.stderr, flush=True)
    # Lazy load + decode only, per (model, bits) at the first thread count and mode.
    lazy: dict[tuple[str, int], dict[str, Any]] = {}
    for size in plan.sizes:
        for bits in plan.bits:
            m = models[size]
            spec = {"lazy": True, "path": m["artifacts"][bits]["path"],
                    "threads": plan.threads[0], "mode": plan.modes[0],
                    "decode_prompt": plan.decode_prompt, "decode_tokens": plan.decode_tokens,
                    "max_context": plan.max_context, "prefill_chunk": plan.prefill_chunk,
                    "seed": SEED}
            res = run_worker(spec, timeout=300.0)
            if "error" not in res:
                bpt = m["bytes_per_token"][bits]
                per_layer = res["stats"].get("experts_activated_per_layer") or []
                touched = bpt["non_expert"] + sum(per_layer) * bpt["expert_mean"]
                base = res["rss_base"]["VmRSS"]
                expect = base + touched + m["kv_cache_bytes"] + m["buffer_bytes"]["total"]
                res.update(weights_touched_bytes=touched, rss_expected_bytes=expect,
                           peak_rss_over_expected=res["peak_rss"] / expect,
                           peak_rss_over_artifact=res["peak_rss"] / m["artifact_bytes"][bits])
            lazy[(size, bits)] = res
            m.setdefault("lazy_decode", {})[str(bits)] = res
            print(f"  lazy decode {size} {bits}-bit: "
                  + (res.get("error") or f"peak RSS {res['peak_rss'] / MiB:.0f} MiB, "
                     f"expected {res['rss_expected_bytes'] / MiB:.0f} MiB"),
                  file=sys.stderr, flush=True)

    rows = []
    for key in todo:
        size, bits, threads, mode = key
        row = make_row(models[size], bits, threads, mode, merge_results(results[key]), plan)
        row["loadavg_per_pass"] = loads[key]
        row["config_s"] = sum(r.get("config_s", 0.0) for r in results[key])
        rows.append(row)

    probe_end = read_probe(plan.probe_bytes, plan.threads, probe_reps)
    probe = {t: max(probe_start[t], probe_end[t]) for t in probe_start}
    for r in rows:
        add_roofline(r, models[r["model"]], probe)
        add_rss_estimate(r, models[r["model"]], plan)
    # The same greedy tokens are expected across thread counts (the kernels are bit-identical
    # across thread counts); a difference is reported, not fatal.
    cross = []
    for size in plan.sizes:
        for bits in plan.bits:
            for mode in plan.modes:
                seqs = {r["threads"]: r["decode_token_ids"] for r in rows
                        if r["status"] == "ok" and (r["model"], r["bits"], r["mode"]) ==
                        (size, bits, mode)}
                if len(set(map(tuple, seqs.values()))) > 1:
                    cross.append(f"{size} {bits}-bit {mode}: greedy tokens differ between "
                                 f"thread counts {sorted(seqs)}")
    mtimes = {t for r in rows for t in (r.get("core_mtimes") or [])}
    mtimes.add(os.path.getmtime(_core.__file__))
    if len(mtimes) > 1:
        cross.append(f"fwassist._core changed during the run ({len(mtimes)} builds: "
                     "reinstalled meanwhile); the rows mix builds")
    meta = {
        "command": " ".join(["python"] + sys.argv), "quick": args.quick,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "git": git_commit(),
        "fwassist_version": getattr(fwassist, "__version__", None), "cpu_info": info,
        "fwassist_core": {"path": _core.__file__, "mtime": time.strftime(
            "%Y-%m-%dT%H:%M:%S%z", time.localtime(os.path.getmtime(_core.__file__)))},
        "numpy_version": np.__version__, "python": platform.python_version(),
        "machine": platform.machine(), "cpus": os.cpu_count(), "llc_bytes": llc_bytes(),
        "mem_total_bytes": mem_total(), "loadavg_start": load_start,
        "loadavg_end": list(os.getloadavg()), "probe_gbps": probe,
        "probe_gbps_start": probe_start, "probe_gbps_end": probe_end,
        "cache_dir": args.cache_dir, "cross_checks": cross, "reference_checks": ref_checks,
        "plan": asdict(plan),
        "method": METHOD,
    }
    meta["run_seconds"] = time.monotonic() - t_start
    models_out = {k: {**v, "artifacts": {str(b): a for b, a in v["artifacts"].items()},
                      "artifact_bytes": {str(b): n for b, n in v["artifact_bytes"].items()},
                      "bytes_per_token": {str(b): d for b, d in v["bytes_per_token"].items()}}
                  for k, v in models.items()}
    txt = write_results(args.json, {"meta": meta, "models": models_out, "rows": rows},
                        table(rows, models, meta, plan))
    print(f"\nwrote {len(rows)} rows to {args.json} and {txt} in {meta['run_seconds']:.0f} s")
    return 0 if all(r["status"] == "ok" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
