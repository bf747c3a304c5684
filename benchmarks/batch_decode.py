#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Batched decoding (fwassist.BatchDecoder, docs/runtime.md "Batched decoding"): aggregate
decode tokens/s of N generations stepped together in one forward pass against the same N
generations as N sessions stepped one after the other (N Session.stream iterators,
round-robin: what a server without batching does).

    python benchmarks/batch_decode.py [--json benchmarks/results/batch-decode.json]
        [--n 1,2,4,8,16] [--threads 1,2] [--tokens 32] [--reps 3] [--mode fast]
        [--synthetic quick|full|none] [--medium] [--cache-dir DIR] [--quick]

Models: the bundled fwassist-tiny-coder, and the synthetic model of
benchmarks/llamacpp_compare.py (compare_models.py; "quick": 55 M parameters, 64 experts top-8;
"full": 0.92 B, built into --cache-dir when missing, which takes a while). Both are cache
resident here, so decode is compute-bound and batching saves little. --medium adds
benchmarks/generate.py's "medium" model (0.97 B parameters, 64 experts top-8, 4-bit, ~0.5 GB:
decode streams its weights from DRAM), written directly with random codes (seconds).

Per (model, threads, N): N prompts of 24 random ids (different per generation), greedy, no stop
id, --tokens tokens each. Only the decode is timed (each token sampled and evaluated): for the
batch, the step() calls after every add(); for the sessions, every stream's iterations after
all were started (a stream prefills its prompt when it starts). Aggregate tokens/s = N x tokens / time. The two ways
alternate within each of --reps repetitions (so that load from other processes hits both);
the table gives the medians and their ratio, in wall time and per CPU-second of the process
(tokens / process CPU time: the work a token costs, which load from other processes on a
shared host disturbs less than wall time). Both produce the same tokens (checked).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from typing import Any

import numpy as np

import fwassist
from fwassist.models import tiny_coder_path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from machine import git_commit, write_results  # noqa: E402

PROMPT = 24


def prompts(vocab: int, n: int, seed: int) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [[int(i) for i in rng.integers(0, vocab, size=PROMPT)] for _ in range(n)]


Timing = tuple[float, float]  # (wall seconds, process CPU seconds)


def batched(model: fwassist.Model, ps: list[list[int]], tokens: int, threads: int,
            mode: str) -> tuple[Timing, list[list[int]]]:
    """Wall and CPU seconds of the decode steps, and each generation's tokens."""
    ctx = PROMPT + tokens + 1
    with fwassist.BatchDecoder(model, slots=len(ps), max_context=ctx, mode=mode,
                               threads=threads) as bd:
        slots = [bd.add(p, max_tokens=tokens, stop_ids=()) for p in ps]
        out: dict[int, list[int]] = {s: [] for s in slots}
        t0, c0 = time.perf_counter(), time.process_time()
        while bd.active:
            for slot, tok, _ in bd.step():
                if tok >= 0:
                    out[slot].append(tok)
        dt = (time.perf_counter() - t0, time.process_time() - c0)
    return dt, [out[s] for s in slots]


def sequential(model: fwassist.Model, ps: list[list[int]], tokens: int, threads: int,
               mode: str) -> tuple[Timing, list[list[int]]]:
    ctx = PROMPT + tokens + 1
    sessions = [model.session(max_context=ctx, mode=mode, threads=threads) for _ in ps]
    streams = [s.stream(prompt_ids=p, max_tokens=tokens, stop_ids=())
               for s, p in zip(sessions, ps)]
    out: list[list[int]] = [[] for _ in ps]
    # The prompts are prefilled: each next() samples and evaluates one token.
    t0, c0 = time.perf_counter(), time.process_time()
    live = list(range(len(ps)))
    while live:
        for i in list(live):
            try:
                out[i].append(next(streams[i]).id)
            except StopIteration:
                live.remove(i)
    dt = (time.perf_counter() - t0, time.process_time() - c0)
    for s in sessions:
        s.close()
    return dt, [[t for t in o if t >= 0] for o in out]


def bench(name: str, model: fwassist.Model, ns: list[int], threads: list[int], tokens: int,
          reps: int, mode: str) -> list[dict[str, Any]]:
    rows = []
    for t in threads:
        for n in ns:
            ps = prompts(model.vocab_size, n, 1000 + n)
            b_s, s_s, b_c, s_c = [], [], [], []
            for _ in range(reps):
                db, tb = batched(model, ps, tokens, t, mode)
                ds, ts = sequential(model, ps, tokens, t, mode)
                if tb != ts:
                    raise SystemExit(f"{name} N={n} threads={t}: the batch's tokens differ "
                                     f"from the sessions'")
                b_s.append(n * tokens / db[0])
                s_s.append(n * tokens / ds[0])
                b_c.append(n * tokens / db[1])
                s_c.append(n * tokens / ds[1])
            row: dict[str, Any] = {
                "model": name, "threads": t, "n": n, "tokens": tokens, "mode": mode,
                "batched_tok_s": statistics.median(b_s),
                "sequential_tok_s": statistics.median(s_s),
                "batched_tok_per_cpu_s": statistics.median(b_c),
                "sequential_tok_per_cpu_s": statistics.median(s_c),
                "batched_samples": b_s, "sequential_samples": s_s,
                "batched_cpu_samples": b_c, "sequential_cpu_samples": s_c}
            row["ratio"] = row["batched_tok_s"] / row["sequential_tok_s"]
            row["cpu_ratio"] = row["batched_tok_per_cpu_s"] / row["sequential_tok_per_cpu_s"]
            rows.append(row)
            print(f"[batch] {name} t={t} N={n}: batched {row['batched_tok_s']:.1f} tok/s, "
                  f"sequential {row['sequential_tok_s']:.1f} tok/s, x{row['ratio']:.2f} "
                  f"(per CPU-second x{row['cpu_ratio']:.2f})",
                  file=sys.stderr, flush=True)
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'model':<28} {'thr':>3} {'N':>3} {'batched tok/s':>14} "
             f"{'sequential tok/s':>17} {'ratio':>6} {'batched tok/cpu-s':>18} "
             f"{'sequential tok/cpu-s':>21} {'ratio':>6}"]
    for r in rows:
        lines.append(f"{r['model']:<28} {r['threads']:>3} {r['n']:>3} "
                     f"{r['batched_tok_s']:>14.1f} {r['sequential_tok_s']:>17.1f} "
                     f"{r['ratio']:>6.2f} {r['batched_tok_per_cpu_s']:>18.1f} "
                     f"{r['sequential_tok_per_cpu_s']:>21.1f} {r['cpu_ratio']:>6.2f}")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--json", default=os.path.join(here, "results", "batch-decode.json"))
    ap.add_argument("--n", default="1,2,4,8,16")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--mode", default="fast", choices=["fast", "exact"])
    ap.add_argument("--synthetic", default="quick", choices=["quick", "full", "none"])
    ap.add_argument("--medium", action="store_true", help="add generate.py's 1 B model")
    ap.add_argument("--cache-dir", default=os.path.join(here, ".llamacpp", "models"))
    ap.add_argument("--quick", action="store_true", help="N=1,4; 1 thread; 8 tokens; 1 rep")
    a = ap.parse_args()
    if a.quick:
        a.n, a.threads, a.tokens, a.reps, a.synthetic = "1,4", "1", 8, 1, "none"
    ns = [int(x) for x in a.n.split(",")]
    threads = [int(x) for x in a.threads.split(",")]
    if a.tokens < 2:
        raise SystemExit("--tokens must be >= 2")
    models = [("fwassist-tiny-coder", tiny_coder_path())]
    if a.synthetic != "none":
        import compare_models

        ms = compare_models.ensure_models(a.cache_dir, a.synthetic,
                                          compare_models.moe_config(a.synthetic), [4], None)
        models.append((f"synthetic-{a.synthetic}-4bit", ms.fwa[4]))
    if a.medium:
        import generate

        models.append(("generate-medium-4bit",
                       generate.ensure_artifact(a.cache_dir, "medium", 4, "packed")["path"]))
    rows: list[dict[str, Any]] = []
    load_before = os.getloadavg()
    for name, path in models:
        rows += bench(name, fwassist.Model.load(path), ns, threads, a.tokens, a.reps, a.mode)
    meta = {"host": platform.node(), "machine": platform.machine(),
            "cpus": os.cpu_count(), "commit": git_commit(), "cpu_info": fwassist.cpu_info(),
            "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
            "method": __doc__}
    text = table(rows)
    write_results(a.json, {"meta": meta, "rows": rows}, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
