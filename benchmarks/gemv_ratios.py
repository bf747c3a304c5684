#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Sub-4-bit GEMV ratios (issue 18 targets): cold fast-mode GEMV time of 3- and 2-bit weights
relative to 4-bit at the same shape, with their spread over rounds.

    python benchmarks/gemv_ratios.py --json OUT [--variant NAME ...] [--shape KxN ...] [--rounds R]
                                      [--quick] [--hot] [--label TEXT]
    python benchmarks/gemv_ratios.py --compare OLD=a.json,b.json NEW=c.json,d.json

Per (shape, threads), every round times each (variant, bits) in turn, in an order rotated from
round to round, and keeps the median of its samples; the ratios are taken within a round (so a
load change on a shared machine hits both sides of a ratio alike), then summarised over the
rounds: median, min and max. `--variant` forces kernel variants (names of
csrc/kernels/variants.def, "" = the dispatch default), measured side by side in the same rounds,
so an old and a new kernel compare in one run. Targets (block 32, fp16 scales): 3-bit <= 0.86x
and 2-bit <= 0.62x the 4-bit time; "pct_probe" relates the 4-bit rate (weight bytes / median)
to the DRAM read probe at the same thread count. Weights are cold: each call reads the next of
copies totalling >= cold_mb (4x a 32 MiB LLC). `--hot` instead calls the same copy every time
(cache resident: the 4-bit expert shapes fit a 1 MiB L2, the big ones the LLC), which measures
the kernels' compute cost per weight: when the hot 3- or 2-bit time per weight is not well below
the cold 4-bit one, no prefetch can make the cold kernel bandwidth-bound.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from typing import Any, Callable

import numpy as np

import fwassist
from fwassist import _core
from fwassist.kernels import PackedMatrix, quantize_rtn
from machine import git_commit, llc_bytes, read_probe, write_results

SHAPES = ((4096, 4096), (14336, 4096), (2048, 768), (768, 2048))  # (K, N)
THREADS = (1, 2)
BITS = (4, 3, 2)
BLOCK = 32
TARGETS = {3: 0.86, 2: 0.62}
SAMPLE_S = 0.02  # timed calls per (round, variant, bits): about this long, at least MIN_REPS
MIN_REPS = 5


def timer(pm: PackedMatrix, copies: list[np.ndarray], x: np.ndarray, threads: int,
          variant: str) -> Callable[[int], list[float]]:
    y = np.empty((1, pm.N), dtype=np.float32)
    pos = 0

    def run(n: int) -> list[float]:
        nonlocal pos
        p = pos % len(copies)
        pos += n
        ts: list[float] = _core.bench_matmul(copies[p:] + copies[:p], pm.bits, pm.block,
                                             pm.has_zero, pm.scale_dtype, pm.N, x, y, "fast",
                                             threads, n, variant)
        if min(ts) <= 0.0:
            raise RuntimeError(f"bench_matmul failed (variant {variant!r})")
        return ts

    return run


def measure(K: int, N: int, threads: int, variants: list[str], rounds: int,
            cold_bytes: int, hot: bool) -> list[dict[str, Any]]:
    rng = np.random.default_rng(K * 100003 + N)
    W = rng.standard_normal((N, K), dtype=np.float32)
    x = rng.standard_normal((1, K), dtype=np.float32)
    pms = {b: quantize_rtn(W, bits=b, block=BLOCK) for b in BITS}
    copies = {b: [pm.data] if hot else
              [pm.data.copy() for _ in range(max(2, math.ceil(cold_bytes / pm.nbytes)))]
              for b, pm in pms.items()}
    slots = [(v, b) for v in variants for b in BITS]
    timers = {(v, b): timer(pms[b], copies[b], x, threads, v) for v, b in slots}
    reps = {}
    for s in slots:  # one untimed call, then size the sample sets from one more
        timers[s](1)
        reps[s] = max(MIN_REPS, min(2000, int(SAMPLE_S / timers[s](1)[0])))
    medians: dict[tuple[str, int], list[float]] = {s: [] for s in slots}
    for r in range(rounds):
        order = slots[r % len(slots):] + slots[:r % len(slots)]
        for s in order:
            medians[s].append(statistics.median(timers[s](reps[s])) * 1e6)
    rows = []
    for v, b in slots:
        per_round = medians[(v, b)]
        row: dict[str, Any] = {"K": K, "N": N, "threads": threads, "bits": b, "block": BLOCK,
                               "variant": v or "default", "weight_bytes": pms[b].nbytes,
                               "hot": hot, "median_us": statistics.median(per_round),
                               "ns_per_weight": statistics.median(per_round) * 1e3 / (K * N),
                               "round_medians_us": per_round, "samples_per_round": reps[(v, b)]}
        if b != 4:
            ratios = [t / t4 for t, t4 in zip(per_round, medians[(v, 4)])]
            row.update(ratio_vs_4bit=statistics.median(ratios), ratio_min=min(ratios),
                       ratio_max=max(ratios), target=TARGETS[b],
                       meets_target=statistics.median(ratios) <= TARGETS[b])
        rows.append(row)
    return rows


def table(rows: list[dict[str, Any]], hot: bool) -> str:
    # hot: the 4-bit weight bytes per second instead of the share of the DRAM probe
    rate = "GB/s" if hot else "%probe"
    head = (f"{'K x N':>11} {'thr':>3} {'variant':>10} | {'4-bit us':>9} {rate:>6} | "
            f"{'3-bit us':>9} {'3/4 med [min, max]':>22} | {'2-bit us':>9} "
            f"{'2/4 med [min, max]':>22}")
    lines = [head, "-" * len(head)]
    idx = {(r["K"], r["N"], r["threads"], r["variant"], r["bits"]): r for r in rows}
    for K, N, t, v in dict.fromkeys((r["K"], r["N"], r["threads"], r["variant"]) for r in rows):
        r4, r3, r2 = (idx[(K, N, t, v, b)] for b in BITS)

        def ratio(r: dict[str, Any]) -> str:
            mark = " " if r["meets_target"] else "!"
            return (f"{r['ratio_vs_4bit']:.3f} [{r['ratio_min']:.3f}, {r['ratio_max']:.3f}]"
                    f"{mark}")

        r4_rate = r4["weight_bytes"] / (r4["median_us"] * 1e3) if hot else r4["pct_probe"]
        lines.append(f"{K:>5}x{N:<5} {t:>3} {v:>10} | {r4['median_us']:9.1f} "
                     f"{r4_rate:6.1f} | {r3['median_us']:9.1f} {ratio(r3):>22} | "
                     f"{r2['median_us']:9.1f} {ratio(r2):>22}")
    lines.append("ratios: median over rounds [min, max]; ! = misses the target "
                 f"(3-bit <= {TARGETS[3]}, 2-bit <= {TARGETS[2]})")
    if hot:
        lines.append("hot: the same weight copy every call (cache resident), i.e. compute cost")
    return "\n".join(lines)


def compare(builds: list[str]) -> str:
    """Before/after table of several builds, each "NAME=RUN.json[,RUN.json...]" (runs of this
    script, e.g. alternated between an old and a new build): per shape and thread count, the
    median over the runs of each build's 4-bit time and 3/4, 2/4 ratios, and its 4-bit time
    relative to the first build."""
    stats: dict[str, dict[tuple[int, int, int, int], list[dict[str, Any]]]] = {}
    for spec in builds:
        name, paths = spec.split("=", 1)
        for path in paths.split(","):
            with open(path) as f:
                for r in json.load(f)["rows"]:
                    key = (r["K"], r["N"], r["threads"], r["bits"])
                    stats.setdefault(name, {}).setdefault(key, []).append(r)
    names = list(stats)
    head = f"{'K x N':>11} {'thr':>3} " + " | ".join(
        f"{n[:14]:>14}: {'4-bit us':>8} {'vs ' + names[0][:6]:>9} {'3/4':>5} {'2/4':>5}"
        for n in names)
    lines = [head, "-" * len(head)]
    first = stats[names[0]]
    for K, N, t, _ in sorted((k for k in first if k[3] == 4), key=lambda k: (k[0] * k[1], k)):
        def med(n: str, bits: int, field: str) -> float:
            return float(statistics.median(r[field] for r in stats[n][(K, N, t, bits)]))
        base4 = med(names[0], 4, "median_us")
        cells = [f"{n[:14]:>14}: {med(n, 4, 'median_us'):8.1f} "
                 f"{med(n, 4, 'median_us') / base4:9.3f} {med(n, 3, 'ratio_vs_4bit'):5.3f} "
                 f"{med(n, 2, 'ratio_vs_4bit'):5.3f}" for n in names]
        lines.append(f"{K:>5}x{N:<5} {t:>3} " + " | ".join(cells))
    runs = {n: len(next(iter(v.values()))) for n, v in stats.items()}
    lines.append(f"medians over runs {runs}; ratios: within-round medians of each run; targets "
                 f"3/4 <= {TARGETS[3]}, 2/4 <= {TARGETS[2]}")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", help="output file (the table goes beside it)")
    ap.add_argument("--compare", nargs="+", metavar="NAME=RUN.json[,RUN.json]",
                    help="print a before/after table of earlier runs instead of measuring")
    ap.add_argument("--variant", action="append", default=None,
                    help="kernel variant to force (repeatable; default: the dispatch default)")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--quick", action="store_true", help="one expert shape, 3 rounds (smoke)")
    ap.add_argument("--shape", action="append", default=None, metavar="KxN",
                    help="measure only this shape (repeatable; default: all four)")
    ap.add_argument("--label", default="",
                    help="free text stored in the JSON (e.g. which build a baseline run used)")
    ap.add_argument("--hot", action="store_true",
                    help="reuse one weight copy (cache resident): the compute cost per weight")
    args = ap.parse_args()
    if args.compare:
        print(compare(args.compare))
        return 0
    if not args.json:
        ap.error("--json is required to measure")
    variants: list[str] = args.variant or [""]
    shapes: tuple[tuple[int, int], ...] = SHAPES[2:3] if args.quick else SHAPES
    if args.shape:
        shapes = tuple((int(k), int(n)) for k, n in (s.lower().split("x") for s in args.shape))
    rounds = 3 if args.quick else args.rounds
    cold_bytes = 4 * (llc_bytes() or 32 << 20)
    t0 = time.monotonic()
    load_start = list(os.getloadavg())
    probe_start = read_probe(4 * cold_bytes, THREADS, 5)
    rows: list[dict[str, Any]] = []
    for K, N in shapes:
        for t in THREADS:
            rows += measure(K, N, t, variants, rounds, cold_bytes, args.hot)
            print(f"  {K}x{N} {t} thread(s): {time.monotonic() - t0:.0f} s", file=sys.stderr,
                  flush=True)
    probe_end = read_probe(4 * cold_bytes, THREADS, 5)
    probe = {t: max(probe_start[t], probe_end[t]) for t in probe_start}
    for r in rows:
        r["pct_probe"] = 100.0 * r["weight_bytes"] / (r["median_us"] * 1e3) / probe[
            str(r["threads"])]
    meta = {"command": " ".join(["python"] + sys.argv), "git": git_commit(),
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "cpu_info": fwassist.cpu_info(),
            "cpus": os.cpu_count(), "llc_bytes": llc_bytes(), "cold_bytes": cold_bytes,
            "loadavg_start": load_start, "loadavg_end": list(os.getloadavg()),
            "probe_gbps": probe, "probe_gbps_start": probe_start, "probe_gbps_end": probe_end,
            "rounds": rounds, "variants": variants, "targets": TARGETS, "hot": args.hot,
            "run_seconds": time.monotonic() - t0, "label": args.label,
            "module": fwassist.__file__}
    write_results(args.json, {"meta": meta, "rows": rows}, table(rows, args.hot))
    return 0


if __name__ == "__main__":
    sys.exit(main())
