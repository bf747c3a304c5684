#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Kernel benchmark: fwassist GEMV/GEMM vs onnxruntime MatMulNBits vs a memory-bandwidth probe.

    python benchmarks/kernels.py --json OUT [--quick]

Runs every case side by side (shape K x N, M, threads, cold/hot weights, bits, block), prints a
table and writes {"meta": {...}, "rows": [row, ...]} with one row per (case, implementation):
impl "fwassist" (mode fast/exact) or "ort-acc0"/"ort-acc4" (MatMulNBits accuracy_level 0/4).
Times are medians of per-call samples; "gbps" counts the weight bytes a kernel reads (packed
codes + scales: fp16 scales for us, fp32 for ORT) and "pct_bandwidth" relates it to the read
probe at the same thread count. The implementations of a case are sampled in turn over a few
rounds, so their ratios survive the load changes of a shared machine. benchmarks/README.md
describes the method.

The run is time-boxed (full < 10 min, --quick for CI < 60 s): each measurement gets ~0.3 s
(less when the run falls behind) and at least 5 samples unless single calls are too slow for
that; a case whose single call is estimated above a cap (slow reference kernels, ORT's 2-bit
fallback) is recorded as skipped, with the reason.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Optional, Union

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

import fwassist
from fwassist import _core
from machine import git_commit, llc_bytes, read_probe
from fwassist.kernels import PackedMatrix, dequantize, matmul, quantize_rtn, unpack

MB = 1 << 20
MIN_REPS = 5
MAX_REPS = 20000
WARMUP_BELOW_S = 0.05  # calls cheaper than this get an untimed warm-up call first
MIN_CASE_S = 0.02
IMPL_OURS = "fwassist"


ORT_SPIN_SETTLE_S = 0.02  # pause after ORT samples (see measure_case)


@dataclass(frozen=True)
class Plan:
    shapes: tuple[tuple[int, int], ...]  # (K, N): y[M, N] = x[M, K] @ W[N, K].T
    ms: tuple[int, ...]
    threads: tuple[int, ...]
    our_bits: tuple[int, ...]
    ort_bits: tuple[int, ...]
    blocks: tuple[int, ...]
    modes: tuple[str, ...]
    acc_levels: tuple[int, ...]
    cold_bytes: int  # ours cold: the copies cycled through total at least this
    evict_bytes: int  # ORT cold: bytes read before each call to evict the weight from the caches
    probe_bytes: int  # read-bandwidth probe buffer
    deadline_s: float  # target wall time of the measurements
    max_case_s: float  # time budget of one measurement when the run is on schedule
    call_cap_s: float  # skip a measurement whose single call is estimated above this
    rounds: int  # the implementations of a case are sampled in turn, this many rounds each


FULL = Plan(shapes=((4096, 4096), (2048, 768), (768, 2048), (14336, 4096)), ms=(1, 8, 64),
            threads=(1, 2), our_bits=(4, 3, 2), ort_bits=(4, 2), blocks=(32, 128),
            modes=("fast", "exact"), acc_levels=(0, 4), cold_bytes=256 * MB,
            evict_bytes=96 * MB, probe_bytes=512 * MB, deadline_s=470.0, max_case_s=0.3,
            call_cap_s=0.7, rounds=3)
QUICK = Plan(shapes=((2048, 768),), ms=(1, 8), threads=(1, 2), our_bits=(4, 3, 2),
             ort_bits=(4, 2), blocks=(32,), modes=("fast", "exact"), acc_levels=(0, 4),
             cold_bytes=96 * MB, evict_bytes=96 * MB, probe_bytes=128 * MB, deadline_s=30.0,
             max_case_s=0.1, call_cap_s=0.3, rounds=2)


# ----------------------------------------------------------------------------- sampling

Timer = Callable[[int], list[float]]  # runs n timed calls, returns seconds per call each


@dataclass
class Slot:
    """One (case, implementation) being measured: its row's fields and its samples."""
    fields: dict[str, Any]
    timer: Optional[Timer]  # None when not measurable (reason says why)
    prior: Optional[float] = None  # estimated seconds per call
    extra_s: float = 0.0  # untimed work per sample (ORT cold: the cache eviction)
    samples: list[float] = field(default_factory=list)
    reason: Optional[str] = None
    done: bool = False

    @property
    def key(self) -> tuple[str, Optional[str]]:
        return self.fields["impl"], self.fields["mode"]


class Schedule:
    """Hands out per-measurement time budgets so that the run ends near plan.deadline_s."""

    def __init__(self, plan: Plan, n_cases: int) -> None:
        self.plan, self.left, self.t0 = plan, n_cases, time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def budget(self) -> float:
        # 0.6: the rest goes to setup (quantization, sessions, copies) and warm-up calls.
        share = 0.6 * (self.plan.deadline_s - self.elapsed()) / max(1, self.left)
        return min(self.plan.max_case_s, max(MIN_CASE_S, share))

    def exhausted(self) -> bool:
        return self.elapsed() > 1.12 * self.plan.deadline_s

    def tick(self) -> None:
        self.left -= 1


def too_slow(prior: Optional[float], cap: float) -> Optional[str]:
    if prior is None or prior <= cap:
        return None
    return (f"skipped: too slow for the time box (one call estimated at {prior:.2f} s > "
            f"{cap} s cap)")


def scaled_prior(est: dict[int, float], m: int) -> Optional[float]:
    """Estimate for M=m from the largest smaller M measured (linear in M: pessimistic)."""
    smaller = [k for k in est if k < m]
    return est[max(smaller)] * m / max(smaller) if smaller else None


def take(timer: Timer, reps: int, budget: float) -> list[float]:
    """reps samples, in chunks, so that a wrong estimate cannot overrun the budget by much."""
    out: list[float] = []
    start = time.monotonic()
    while len(out) < reps:
        out += timer(min(reps - len(out), max(1, reps // 4)))
        if time.monotonic() - start > 2 * budget:
            break
    return out


def sample_round(s: Slot, budget: float, rounds: int, cap: float) -> None:
    """One of `rounds` turns of s, ~budget / rounds seconds; slow calls take their MIN_REPS
    samples in the first turn. Cheap calls get an untimed warm-up call at the start of every
    turn (the implementations measured in between used the caches and the cores)."""
    assert s.timer is not None
    if s.prior is None or s.prior < WARMUP_BELOW_S:
        first = s.timer(1)[0]
        if not s.samples:
            s.prior = first
        if first > cap:
            s.samples, s.done = [first], True
            return
    cost = s.prior + s.extra_s
    if cost * MIN_REPS > budget:  # slow calls: MIN_REPS samples now, over budget if need be
        s.samples += take(s.timer, MIN_REPS, MIN_REPS * cost)
        s.done = True
        return
    reps = max(math.ceil(MIN_REPS / rounds), min(int(budget / rounds / cost), MAX_REPS))
    s.samples += take(s.timer, reps, budget / rounds)
    s.prior = statistics.median(s.samples)


def median_or_estimate(s: Slot) -> float:
    """The median, else the estimate that got the case skipped (inf if none)."""
    if s.samples and s.reason is None:
        return statistics.median(s.samples)
    return s.prior if s.prior is not None else math.inf


# ----------------------------------------------------------------------------- probe, info




# ----------------------------------------------------------------------------- ours

def our_timer(copies: list[np.ndarray], pm: PackedMatrix, x: np.ndarray, mode: str,
              threads: int) -> Timer:
    """Timed in C++ (bench_matmul, dispatch-default variant), cycling through copies; the
    start rotates between calls so that no copy is reused before the others (cold stays
    cold)."""
    y = np.empty((x.shape[0], pm.N), dtype=np.float32)
    pos = 0

    def run(n: int) -> list[float]:
        nonlocal pos
        p = pos % len(copies)
        pos += n
        ts = _core.bench_matmul(copies[p:] + copies[:p], pm.bits, pm.block, pm.has_zero,
                                pm.scale_dtype, pm.N, x, y, mode, threads, n, "")
        if min(ts) <= 0.0:
            raise RuntimeError("bench_matmul: the kernel returned an error status")
        return ts

    return run


def weight_copies(data: np.ndarray, cold_bytes: int) -> list[np.ndarray]:
    return [data.copy() for _ in range(max(2, math.ceil(cold_bytes / data.nbytes)))]


# ----------------------------------------------------------------------------- onnxruntime

@dataclass
class OrtWeights:
    """Our quantized weight in MatMulNBits form: the same codes and (fp32) scales, symmetric
    (no zero_points input: ORT's default zero point is 2^(bits-1), our stored one too)."""
    B: np.ndarray  # uint8 (N, n_blocks, block * bits / 8), codes LSB-first along K
    S: np.ndarray  # float32 (N * n_blocks,)
    K: int
    N: int
    bits: int
    block: int

    @property
    def nbytes(self) -> int:
        return int(self.B.nbytes + self.S.nbytes)


def ort_weights(pm: PackedMatrix) -> OrtWeights:
    codes, scales, zeros = unpack(pm)
    if not np.all(zeros == (1 << (pm.bits - 1))):
        raise ValueError("expected a symmetric matrix (zero point 2^(bits-1))")
    nb, per = pm.n_blocks, 8 // pm.bits
    c = np.full((pm.N, nb * pm.block), 1 << (pm.bits - 1), dtype=np.uint8)
    c[:, :pm.K] = codes
    c = c.reshape(pm.N, -1, per)
    packed = np.zeros(c.shape[:2], dtype=np.uint8)
    for j in range(per):
        packed |= c[:, :, j] << np.uint8(j * pm.bits)
    B = packed.reshape(pm.N, nb, pm.block * pm.bits // 8)
    S = np.ascontiguousarray(scales, dtype=np.float32).reshape(-1)
    return OrtWeights(B, S, pm.K, pm.N, pm.bits, pm.block)


def _external(name: str, dtype: int, dims: list[int]) -> onnx.TensorProto:
    """An initializer whose data comes from memory (add_external_initializers): no protobuf
    serialization of the weights."""
    t = onnx.TensorProto(name=name, data_type=dtype, dims=dims,
                         data_location=onnx.TensorProto.EXTERNAL)
    t.external_data.add(key="location", value=f"memory/{name}")
    return t


def ort_model(w: OrtWeights, acc: int) -> bytes:
    """One MatMulNBits node: Y = A @ dequant(B, S).T, the weights as initializers B and S."""
    node = helper.make_node("MatMulNBits", ["A", "B", "S"], ["Y"], domain="com.microsoft",
                            K=w.K, N=w.N, bits=w.bits, block_size=w.block, accuracy_level=acc)
    graph = helper.make_graph(
        [node], "matmulnbits",
        [helper.make_tensor_value_info("A", TensorProto.FLOAT, ["M", w.K])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["M", w.N])],
        initializer=[_external("B", TensorProto.UINT8, list(w.B.shape)),
                     _external("S", TensorProto.FLOAT, list(w.S.shape))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21),
                                                    helper.make_opsetid("com.microsoft", 1)])
    return model.SerializeToString()


class OrtRunner:
    """A CPU session of one MatMulNBits node over our weight (see ort_weights)."""

    def __init__(self, w: OrtWeights, acc: int, threads: int) -> None:
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        # Spinning stays at ORT's default (session.intra_op.allow_spinning=1): its best latency.
        self._values = [ort.OrtValue.ortvalue_from_numpy(w.B),
                        ort.OrtValue.ortvalue_from_numpy(w.S)]
        so.add_external_initializers(["B", "S"], self._values)
        self.sess = ort.InferenceSession(ort_model(w, acc), so,
                                         providers=["CPUExecutionProvider"])
        self.N = w.N

    def run_once(self, x: np.ndarray) -> np.ndarray:
        return self.sess.run(["Y"], {"A": x})[0]

    def timer(self, x: np.ndarray, evict: Optional[np.ndarray] = None) -> Timer:
        """Per-call overhead kept low: the input and a preallocated output are bound once
        (IOBinding) and only run_with_iobinding is timed, ~2.5 us of Python + ORT per call
        (meta.ort_run_overhead_us); run_with_ort_values or passing RunOptions cost ~30 us.

        Cold (evict given): before each timed call, untimed, both cores read `evict` (3x the
        LLC), which pushes the weight out of L2 and L3: the call streams it from DRAM. This
        replaces cycling through copies: N nodes over distinct copies in one session run ~2x
        slower per node at 2 threads than one-node sessions (an ORT artifact; and identical
        copies would share one prepacked weight), and the hundreds of 2-thread sessions that
        small shapes need for 256 MB take ~35 ms each to create. As with cycling sessions,
        ORT's worker thread is idle when a cold call starts."""
        io = self.sess.io_binding()
        io.bind_cpu_input("A", x)
        io.bind_ortvalue_output("Y", ort.OrtValue.ortvalue_from_numpy(
            np.empty((x.shape[0], self.N), dtype=np.float32)))
        sess, clock = self.sess, time.perf_counter_ns

        def run(n: int) -> list[float]:
            out = []
            for _ in range(n):
                if evict is not None:
                    _core.bench_read_bandwidth(evict, 2, 1)
                t0 = clock()
                sess.run_with_iobinding(io)
                out.append((clock() - t0) * 1e-9)
            return out

        return run


def ort_run_overhead_us(threads: int) -> float:
    """Median cost of run_with_iobinding on a 1-element Identity model."""
    graph = helper.make_graph([helper.make_node("Identity", ["A"], ["Y"])], "id",
                              [helper.make_tensor_value_info("A", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1])])
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    sess = ort.InferenceSession(model.SerializeToString(), so,
                                providers=["CPUExecutionProvider"])
    io = sess.io_binding()
    io.bind_cpu_input("A", np.ones(1, dtype=np.float32))
    io.bind_ortvalue_output("Y", ort.OrtValue.ortvalue_from_numpy(np.empty(1, np.float32)))
    ts = []
    for _ in range(2000):
        t0 = time.perf_counter_ns()
        sess.run_with_iobinding(io)
        ts.append(time.perf_counter_ns() - t0)
    return statistics.median(ts) / 1e3


# ----------------------------------------------------------------------------- checks

def rel_err(y: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(y - ref).max() / max(1e-30, float(np.abs(ref).max())))


def check_formats(plan: Plan) -> tuple[list[dict[str, Any]], dict[tuple[int, int, int], str]]:
    """On a small case, ours and ORT (fed the same codes and scales) must match
    x @ dequantize(W).T. Returns the records and {(bits, block, acc): reason} to skip."""
    rng = np.random.default_rng(1)
    K, N, M = 512, 96, 3
    w = rng.standard_normal((N, K), dtype=np.float32)
    x = rng.standard_normal((M, K), dtype=np.float32)
    records: list[dict[str, Any]] = []
    skip: dict[tuple[int, int, int], str] = {}
    for bits in sorted(set(plan.our_bits) | set(plan.ort_bits)):
        for block in plan.blocks:
            pm = quantize_rtn(w, bits=bits, block=block)
            ref = x @ dequantize(pm).T
            for mode in plan.modes if bits in plan.our_bits else ():
                err = rel_err(matmul(pm, x, mode=mode), ref)
                records.append({"impl": IMPL_OURS, "bits": bits, "block": block, "mode": mode,
                                "max_rel_err": err,
                                "ok": err < (1e-4 if mode == "exact" else 3e-2)})
            for acc in plan.acc_levels if bits in plan.ort_bits else ():
                rec: dict[str, Any] = {"impl": f"ort-acc{acc}", "bits": bits, "block": block}
                try:
                    err = rel_err(OrtRunner(ort_weights(pm), acc, 1).run_once(x), ref)
                    rec.update(max_rel_err=err, ok=err < (1e-4 if acc == 0 else 3e-2))
                    if not rec["ok"]:
                        skip[(bits, block, acc)] = f"skipped: ORT output differs ({err:.2g})"
                except Exception as e:  # e.g. a combination this ORT build does not support
                    rec.update(ok=False, error=str(e).splitlines()[0][:300])
                    skip[(bits, block, acc)] = f"skipped: ORT failed: {rec['error']}"
                records.append(rec)
    return records, skip


# ----------------------------------------------------------------------------- rows

def row_fields(impl: str, K: int, N: int, M: int, bits: int, block: int, threads: int,
               weights: str, mode: Optional[str], nbytes: int, working_set: int,
               **extra: Any) -> dict[str, Any]:
    return {"impl": impl, "op": "gemv" if M == 1 else "gemm", "bits": bits, "block": block,
            "K": K, "N": N, "M": M, "threads": threads, "weights": weights, "mode": mode,
            "weight_bytes": nbytes, "working_set_mb": working_set / MB, **extra}


def finish_row(s: Slot) -> dict[str, Any]:
    med = statistics.median(s.samples) if s.samples and s.reason is None else None
    return {**s.fields,
            "median_us": med * 1e6 if med else None,
            "min_us": min(s.samples) * 1e6 if med else None,
            "gbps": s.fields["weight_bytes"] / med / 1e9 if med else None,
            "pct_bandwidth": None,
            "speedup_vs_best_peer": None, "best_peer": None, "speedup_vs_ort_4bit": None,
            "samples": len(s.samples) if med else 0, "status": "ok" if med else "skipped",
            "reason": s.reason}


def add_pct_bandwidth(rows: list[dict[str, Any]], probe: dict[str, float]) -> None:
    for r in rows:
        if r["gbps"]:
            r["pct_bandwidth"] = 100.0 * r["gbps"] / probe[str(r["threads"])]


def add_speedups(rows: list[dict[str, Any]]) -> None:
    """speedup_vs_best_peer = best ORT median (same bits/block/shape/M/threads/weights) / ours.
    3-bit has no ORT peer: speedup_vs_ort_4bit compares to ORT's best 4-bit at the same block."""
    best: dict[tuple, tuple[float, str]] = {}
    for r in rows:
        if r["impl"] != IMPL_OURS and r["median_us"]:
            key = (r["bits"], r["block"], r["K"], r["N"], r["M"], r["threads"], r["weights"])
            if key not in best or r["median_us"] < best[key][0]:
                best[key] = (r["median_us"], r["impl"])
    for r in rows:
        if r["impl"] != IMPL_OURS or not r["median_us"]:
            continue
        key = (r["bits"], r["block"], r["K"], r["N"], r["M"], r["threads"], r["weights"])
        if key in best:
            r["speedup_vs_best_peer"] = best[key][0] / r["median_us"]
            r["best_peer"] = best[key][1]
        peer = best.get((4,) + key[1:]) if r["bits"] == 3 else None
        r["speedup_vs_ort_4bit"] = peer[0] / r["median_us"] if peer else None


# ----------------------------------------------------------------------------- the run

OrtOrReason = Union[OrtRunner, str]


class Bench:
    def __init__(self, plan: Plan, probe: dict[str, float],
                 ort_skip: dict[tuple[int, int, int], str], kernels: dict[str, str]) -> None:
        self.plan, self.ort_skip, self.kernels = plan, ort_skip, kernels
        per_shape = len(plan.ms) * len(plan.threads) * 2 * len(plan.blocks) * (
            len(plan.our_bits) * len(plan.modes) + len(plan.ort_bits) * len(plan.acc_levels))
        self.sched = Schedule(plan, per_shape * len(plan.shapes))
        self.evict = np.ones(plan.evict_bytes, dtype=np.uint8)
        self.evict_s = plan.evict_bytes / (min(probe.values()) * 1e9)
        self.rows: list[dict[str, Any]] = []

    def shape(self, K: int, N: int) -> None:
        rng = np.random.default_rng(K * 100003 + N)
        W = rng.standard_normal((N, K), dtype=np.float32)
        xs = {M: rng.standard_normal((M, K), dtype=np.float32) for M in self.plan.ms}
        for bits in sorted(set(self.plan.our_bits) | set(self.plan.ort_bits), reverse=True):
            for block in self.plan.blocks:
                t0 = self.sched.elapsed()
                self.format(quantize_rtn(W, bits=bits, block=block), xs)
                print(f"  {K}x{N} {bits}-bit block {block}: {self.sched.elapsed() - t0:.1f} s "
                      f"(total {self.sched.elapsed():.0f} s)", file=sys.stderr, flush=True)

    def format(self, pm: PackedMatrix, xs: dict[int, np.ndarray]) -> None:
        """All cases of one quantized weight, hot then cold, M ascending (for the estimates)."""
        ours = pm.bits in self.plan.our_bits
        ortw = ort_weights(pm) if pm.bits in self.plan.ort_bits else None
        copies = {"hot": [pm.data],
                  "cold": weight_copies(pm.data, self.plan.cold_bytes) if ours else []}
        for threads in self.plan.threads:
            runners = self.ort_runners(ortw, threads) if ortw else {}
            hot: dict[tuple[str, Optional[str]], dict[int, float]] = {}  # medians by impl, M
            for weights in ("hot", "cold"):
                for M in self.plan.ms:
                    slots = [self.our_slot(pm, copies[weights], xs[M], mode, threads)
                             for mode in (self.plan.modes if ours else ())]
                    slots += [self.ort_slot(ortw, runner, xs[M], acc, threads, weights)
                              for acc, runner in runners.items()]
                    for s in slots:
                        est = hot.setdefault(s.key, {})
                        s.prior = scaled_prior(est, M) if weights == "hot" else est.get(M)
                    self.measure_case(slots)
                    for s in slots:
                        if weights == "hot":
                            hot[s.key][M] = median_or_estimate(s)
                        self.rows.append(finish_row(s))
            del runners

    def measure_case(self, slots: list[Slot]) -> None:
        """The implementations of one case, in turn, plan.rounds times."""
        budget = self.sched.budget()  # per slot
        for s in slots:
            self.sched.tick()
            if s.reason is None and self.sched.exhausted():
                s.reason = "skipped: the run's time budget is exhausted"
            s.reason = s.reason or too_slow(s.prior, self.plan.call_cap_s)
        for _ in range(self.plan.rounds):
            for s in slots:
                if s.reason is None and not s.done:
                    try:
                        sample_round(s, budget, self.plan.rounds, self.plan.call_cap_s)
                    except Exception as e:
                        s.reason = f"error: {e}"
                    if s.key[0].startswith("ort"):
                        # ORT's intra-op workers keep spinning after a call; let them park so
                        # they do not take a core from the next implementation's samples.
                        time.sleep(ORT_SPIN_SETTLE_S)

    def our_slot(self, pm: PackedMatrix, copies: list[np.ndarray], x: np.ndarray, mode: str,
                 threads: int) -> Slot:
        M, weights = x.shape[0], "hot" if len(copies) == 1 else "cold"
        fields = row_fields(IMPL_OURS, pm.K, pm.N, M, pm.bits, pm.block, threads, weights, mode,
                            pm.nbytes, pm.nbytes * len(copies),
                            kernel=self.kernels.get(f"{'gemv' if M == 1 else 'gemm'}_{mode}"),
                            cold_method="cycle copies" if weights == "cold" else None)
        return Slot(fields, our_timer(copies, pm, x, mode, threads))

    def ort_slot(self, w: OrtWeights, runner: OrtOrReason, x: np.ndarray, acc: int,
                 threads: int, weights: str) -> Slot:
        fields = row_fields(f"ort-acc{acc}", w.K, w.N, x.shape[0], w.bits, w.block, threads,
                            weights, None, w.nbytes, w.nbytes, accuracy_level=acc,
                            cold_method="evict caches" if weights == "cold" else None)
        if isinstance(runner, str):
            return Slot(fields, None, reason=runner)
        if weights == "hot":
            return Slot(fields, runner.timer(x))
        return Slot(fields, runner.timer(x, self.evict), extra_s=self.evict_s)

    def ort_runners(self, w: OrtWeights, threads: int) -> dict[int, OrtOrReason]:
        """A session per accuracy level, or the reason why there is none."""
        out: dict[int, OrtOrReason] = {}
        for acc in self.plan.acc_levels:
            reason = self.ort_skip.get((w.bits, w.block, acc))
            if reason is None:
                try:
                    out[acc] = OrtRunner(w, acc, threads)
                    continue
                except Exception as e:
                    reason = f"skipped: ORT session creation failed: {e}"
            out[acc] = reason
        return out


# ----------------------------------------------------------------------------- output

def fmt(v: Optional[float], spec: str, suffix: str = "") -> str:
    """v formatted as spec (e.g. "9.1f") plus suffix, or a "-" of the same width."""
    width = int(spec.split(".")[0]) + len(suffix)
    return (format(v, spec) + suffix) if v is not None else "-".rjust(width)


def table_line(idx: dict[tuple, dict[str, Any]], k: tuple) -> str:
    K, N, M, t, wts, bits, blk = k
    f, e = idx.get((IMPL_OURS, "fast") + k), idx.get((IMPL_OURS, "exact") + k)
    o0, o4 = idx.get(("ort-acc0", None) + k), idx.get(("ort-acc4", None) + k)

    def g(r: Optional[dict[str, Any]], key: str) -> Optional[float]:
        return r.get(key) if r else None

    sp, star = ("speedup_vs_ort_4bit", "*") if bits == 3 else ("speedup_vs_best_peer", " ")
    return (f"{K:>5}x{N:<5} {M:>3} {t:>3} {wts:>4} {bits:>4} {blk:>3} | "
            f"{fmt(g(f, 'median_us'), '9.1f')} {fmt(g(e, 'median_us'), '9.1f')} | "
            f"{fmt(g(o0, 'median_us'), '9.1f')} {fmt(g(o4, 'median_us'), '9.1f')} | "
            f"{fmt(g(f, 'gbps'), '9.2f')} {fmt(g(f, 'pct_bandwidth'), '5.1f')} | "
            f"{fmt(g(f, sp), '7.3g', star)} {fmt(g(e, sp), '7.3g', star)}")


def print_table(rows: list[dict[str, Any]], plan: Plan) -> None:
    """One line per (shape, M, threads, weights, bits, block): medians in us of our fast and
    exact modes and of ORT acc0/acc4, our fast mode's GB/s and % of the probe, and ours vs the
    best ORT as a speedup (3-bit, marked *: vs ORT's best 4-bit)."""
    idx = {(r["impl"], r["mode"], r["K"], r["N"], r["M"], r["threads"], r["weights"],
            r["bits"], r["block"]): r for r in rows}
    head = (f"{'K x N':>11} {'M':>3} {'thr':>3} {'wts':>4} {'bits':>4} {'blk':>3} | "
            f"{'fast us':>9} {'exact us':>9} | {'ort0 us':>9} {'ort4 us':>9} | "
            f"{'fast GB/s':>9} {'%bw':>5} | {'fast x':>8} {'exact x':>8}")
    bits_order = sorted(set(plan.our_bits) | set(plan.ort_bits), reverse=True)
    for K, N in plan.shapes:
        print(f"\n{head}\n{'-' * len(head)}")
        for M in plan.ms:
            for t in plan.threads:
                for wts in ("cold", "hot"):
                    for bits in bits_order:
                        for blk in plan.blocks:
                            print(table_line(idx, (K, N, M, t, wts, bits, blk)))


def print_summary(rows: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    skipped: dict[str, int] = {}
    for r in rows:
        if r["status"] != "ok":
            key = f"{r['impl']}: {r['reason'].split(' (')[0]}"
            skipped[key] = skipped.get(key, 0) + 1
    print(f"\nprobe GB/s (threads: GB/s) start {fmt_dict(meta['probe_gbps_start'])}, end "
          f"{fmt_dict(meta['probe_gbps_end'])}; ORT run_with_iobinding overhead us "
          f"{fmt_dict(meta['ort_run_overhead_us'])}")
    print(f"kernels {meta['cpu_info']['kernels']}; load average start "
          f"{meta['loadavg_start'][0]:.2f}, end {meta['loadavg_end'][0]:.2f}")
    print(f"rows {len(rows)}, measured {sum(r['status'] == 'ok' for r in rows)}")
    for reason, n in sorted(skipped.items()):
        print(f"  skipped {n:4d} x {reason}")


def fmt_dict(d: dict[str, float]) -> str:
    return ", ".join(f"{k}: {v:.1f}" for k, v in d.items())


# ----------------------------------------------------------------------------- main

METHOD = {
    "time": "median of per-call samples; the implementations of a case are sampled in turn "
            "(plan.rounds rounds); ours timed in C++ (bench_matmul), ORT with perf_counter_ns "
            "around run_with_iobinding (input and output bound once)",
    "gbps": "weight bytes read by the kernel (codes + scales; ours fp16 scales, ORT the fp32 "
            "scales given to MatMulNBits, before its prepacking) / median time",
    "pct_bandwidth": "gbps / probe_gbps (the better of the probes at the start and the end of "
                     "the run) at the same thread count; > 100 when the weight is in cache",
    "cold": "ours: bench_matmul cycles through copies totalling working_set_mb "
            "(plan.cold_bytes); ORT: before each timed call, both cores read plan.evict_bytes "
            "(untimed), evicting the weight from L2 and L3",
    "hot": "one copy, after an untimed warm-up call",
    "ort": "CPUExecutionProvider, intra_op_num_threads=threads, inter_op=1, default spinning "
           "(allow_spinning=1), default graph optimization, symmetric weights without the "
           "zero_points input (default zero point 2^(bits-1)), float32 scales",
    "skips": "a case whose single call is estimated above plan.call_cap_s (from the hot "
             "median at the next smaller M, scaled linearly) is skipped",
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", required=True, help="output file")
    ap.add_argument("--quick", action="store_true", help="small subset (CI smoke run, < 60 s)")
    args = ap.parse_args()
    plan = QUICK if args.quick else FULL
    t_start = time.monotonic()
    ort.set_default_logger_severity(3)
    info = fwassist.cpu_info()
    load_start = list(os.getloadavg())  # the machine is shared: other jobs skew the numbers
    probe_reps = 3 if args.quick else 7
    probe_start = read_probe(plan.probe_bytes, plan.threads, probe_reps)
    checks, ort_skip = check_formats(plan)
    for rec in checks:
        if not rec["ok"]:
            print(f"check failed: {rec}", file=sys.stderr)
    bench = Bench(plan, probe_start, ort_skip, info["kernels"])
    for K, N in plan.shapes:
        bench.shape(K, N)
    probe_end = read_probe(plan.probe_bytes, plan.threads, probe_reps)
    # Other jobs also use the memory bus: the better of the two probes is the machine's.
    probe = {t: max(probe_start[t], probe_end[t]) for t in probe_start}
    add_pct_bandwidth(bench.rows, probe)
    add_speedups(bench.rows)
    meta = {
        "command": " ".join(["python"] + sys.argv), "quick": args.quick,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "git": git_commit(),
        "fwassist_version": getattr(fwassist, "__version__", None), "cpu_info": info,
        "onnxruntime_version": ort.__version__, "onnx_version": onnx.__version__,
        "numpy_version": np.__version__, "python": platform.python_version(),
        "machine": platform.machine(), "cpus": os.cpu_count(), "llc_bytes": llc_bytes(),
        "loadavg_start": load_start, "loadavg_end": list(os.getloadavg()),
        "probe_gbps": probe, "probe_gbps_start": probe_start, "probe_gbps_end": probe_end,
        "ort_run_overhead_us": {str(t): ort_run_overhead_us(t) for t in plan.threads},
        "checks": checks, "plan": asdict(plan), "method": METHOD,
    }
    meta["run_seconds"] = time.monotonic() - t_start
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump({"meta": meta, "rows": bench.rows}, f, indent=1)
    print_table(bench.rows, plan)
    print_summary(bench.rows, meta)
    print(f"\nwrote {len(bench.rows)} rows to {args.json} in {meta['run_seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
