#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Side by side with llama.cpp on the same synthetic Qwen3-MoE weights: decode and prefill
speed, CPU core-seconds per token (max rate and paced), idle CPU, peak RSS, an oversubscribed
core, and the MoE's cost against a dense model with the same active parameters.

    python benchmarks/llamacpp_compare.py --json OUT [--quick] [--skip-build] [--bits 4,3,2]
                                          [--threads 1,2] [--reps 3] [--idle-seconds 30]
                                          [--no-dense] [--no-oversub] [--no-llama-bench]
                                          [--cache-dir DIR] [--keep-onnx]

Runs end to end on a fresh machine (up to ~40 min, most of it building llama.cpp; not part of
CI). Steps:

1. llama.cpp: benchmarks/llamacpp_build.py builds the llama.cpp vendored by the pinned PyPI
   ``llama-cpp-python`` sdist in benchmarks/.llamacpp/ (skipped when built; ``--skip-build``
   requires it built). Its version, the llama.cpp commit and the CMake flags are recorded.
2. Models (benchmarks/compare_models.py, cached in benchmarks/.llamacpp/models/): one set of
   seeded float weights per model, written as a QAT ONNX and exported with our exporter to
   ``.fwa`` at 4/3/2 bits (block 32), and as an F16 GGUF (benchmarks/gguf_qwen3moe.py)
   quantized by ``llama-quantize --pure`` to Q4_0 / Q3_K_S / Q2_K (lm_head and embedding at
   8 bits in both). Full: 0.92 B parameters, 64 experts top-8, 16 layers, hidden 1024, expert
   width 256 (177 M active per token); its dense twin (every layer an MLP of width 2048) has
   the same active parameters. Quick: a 55 M-parameter model of the same shape family.
3. Every measurement runs in a fresh subprocess per (runtime, model, threads)
   (benchmarks/compare_worker.py, which documents how each runtime is driven: both token by
   token from the same Python harness, llama.cpp through the ctypes bindings of the same sdist).
   CPU time is the process's getrusage (every thread, user + system) over each phase, so the
   runtimes are measured from the outside, the same way; peak RSS is the worker's VmHWM
   from procfs at its end (not ``wait4``'s ``ru_maxrss``, which on Linux carries the parent's
   high-water mark across fork + exec; kept in the raw data), and VmRSS before the model is
   loaded is recorded too (the harness's own share, ~30 MB, the same for both).
   a. max rate, threads 1 and 2: prompt 128 then 128 greedy tokens (``--reps`` times):
      tokens/s and core-seconds per token; prompt 512 (prefill) tokens/s; with 2 threads also
      30 s idle with the model and context loaded, right after a generation.
   b. paced, 2 threads: 128 tokens at 50 % of llama.cpp's best max rate for that quantization
      (over 1 and 2 threads: a 2-thread rate collapsed by other load on the machine would make
      the pace meaningless); the harness sleeps until each token's deadline, both runtimes are
      paced per token: core-seconds per token. fwassist is given the period as its decode
      latency budget (``target_ms_per_token``: its policy then runs the fewest cores that keep
      up); llama.cpp has no such setting and runs its default.
   c. oversubscribed: a busy-loop process pinned to the last CPU while each runtime decodes
      with 2 threads: tokens/s relative to that runtime's own 1-thread rate from (a).
   d. dense twin, 4-bit, threads 1 and 2: MoE core-s/token / dense core-s/token per runtime.
   e. ``llama-bench`` on each GGUF (-p 512 -n 128 -d 0,128 -r reps, per thread count) as a
      cross-check that the harness drives llama.cpp at llama.cpp's own speed (decode "@128":
      after 128 tokens of context, like the harness's decode; llama-bench excludes sampling).
   Each figure is the median of the repetitions; every raw sample is kept in the JSON.
4. Output: OUT (JSON: machine, versions, llama.cpp commit and flags, models, raw samples,
   medians, ratios against the targets of DESIGN.md section 4) and the table, also printed, in
   OUT with .txt.

Targets (ours vs llama.cpp on the same weights): decode >= 1.1x at 4 bits and >= 1.5x at 3/2
bits; max-rate core-s/token <= 1x; paced core-s/token <= 0.6x; idle < 10 ms CPU per minute;
prefill >= 1.5x; peak RSS <= llama.cpp's; oversubscribed 2-thread decode >= 0.9x our own
1-thread rate; MoE core-s/token <= 1.1x the dense twin's.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, replace
from typing import Any, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import compare_models  # noqa: E402
import llamacpp_build  # noqa: E402
from compare_models import LLAMA_QUANT  # noqa: E402
from machine import git_commit, llc_bytes, write_results  # noqa: E402

MiB = 1 << 20
RUNTIMES = ("llama.cpp", "fwassist")
TARGETS = {"decode_ratio": {4: 1.1, 3: 1.5, 2: 1.5}, "max_rate_core_s_ratio": 1.0,
           "paced_core_s_ratio": 0.6, "idle_ms_per_min": 10.0, "prefill_ratio": 1.5,
           "rss_ratio": 1.0, "oversub_own_1t": 0.9, "moe_over_dense_core_s": 1.1}


@dataclass(frozen=True)
class Plan:
    size: str
    bits: tuple[int, ...]
    threads: tuple[int, ...]
    reps: int
    decode_prompt: int
    decode_tokens: int
    prefill_prompt: int
    paced_tokens: int
    pace_fraction: float
    idle_seconds: float
    max_context: int
    mode: str
    dense: bool
    oversub: bool
    llama_bench: bool
    phase_budget_s: float           # no new repetition of a phase after this (min 1)
    rep_cap_s: float                # a decode/paced repetition stops after this (min 4 tokens)
    worker_timeout_s: float


FULL = Plan(size="full", bits=(4, 3, 2), threads=(1, 2), reps=3, decode_prompt=128,
            decode_tokens=128, prefill_prompt=512, paced_tokens=128, pace_fraction=0.5,
            idle_seconds=30.0, max_context=1024, mode="fast", dense=True, oversub=True,
            llama_bench=True, phase_budget_s=90.0, rep_cap_s=60.0,
            worker_timeout_s=1200.0)
QUICK = replace(FULL, size="quick", decode_tokens=64, paced_tokens=32, idle_seconds=5.0,
                worker_timeout_s=300.0)


def log(msg: str) -> None:
    print(f"[compare] {msg}", file=sys.stderr, flush=True)


def med(xs: list[float]) -> Optional[float]:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return a / b if a is not None and b else None


# ----------------------------------------------------------------------------- processes

def run_worker(spec: dict[str, Any], log_dir: str, timeout: float) -> dict[str, Any]:
    """compare_worker.py in a subprocess; adds its rusage from wait4 (cpu, ru_maxrss)."""
    os.makedirs(log_dir, exist_ok=True)
    model = os.path.basename(os.path.dirname(spec["model"])) + "-" + \
        os.path.basename(spec["model"])
    tag = f"{spec['runtime']}-{model}-{spec['threads']}t-" \
          f"{'-'.join(p['kind'] for p in spec['phases'])}"
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(spec, f)
        spec_path = f.name
    out_path = os.path.join(log_dir, tag + ".out")
    err_path = os.path.join(log_dir, tag + ".log")
    t0 = time.monotonic()
    with open(out_path, "w") as out, open(err_path, "w") as err:
        proc = subprocess.Popen([sys.executable, os.path.join(HERE, "compare_worker.py"),
                                 spec_path], stdout=out, stderr=err, cwd=HERE)
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        try:
            _, status, ru = os.wait4(proc.pid, 0)
        except BaseException:
            proc.kill()
            os.wait4(proc.pid, 0)
            raise
        finally:
            timer.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)
    os.unlink(spec_path)
    try:
        with open(out_path) as f:
            res = json.loads(f.read().strip().splitlines()[-1])
    except (ValueError, IndexError):
        with open(err_path) as f:
            tail = f.read()[-2000:]
        res = {"spec": spec, "error": f"worker exit {proc.returncode}, no result: {tail}"}
    res["process"] = {"exit": proc.returncode, "wall_s": time.monotonic() - t0,
                      "user_s": ru.ru_utime, "sys_s": ru.ru_stime,
                      "ru_maxrss_bytes": ru.ru_maxrss * 1024, "log": err_path}
    return res


class Hog:
    """A busy-loop process pinned to one CPU (the last one this process may use)."""

    def __init__(self) -> None:
        self.cpu = max(os.sched_getaffinity(0))
        cpu = self.cpu
        self.proc = subprocess.Popen([sys.executable, "-c", "while True: pass"],
                                     preexec_fn=lambda: os.sched_setaffinity(0, {cpu}))
        time.sleep(0.5)

    def stop(self) -> dict[str, Any]:
        self.proc.kill()
        _, _, ru = os.wait4(self.proc.pid, 0)
        self.proc.returncode = -9
        return {"cpu": self.cpu, "cpu_s": ru.ru_utime + ru.ru_stime}


def llama_bench(binary: str, lib_dir: str, model: str, plan: Plan) -> dict[str, Any]:
    """llama-bench -p prefill -n decode -r reps -t T (its own timing), one run per thread
    count with a time limit (4 x the repetition cap: a 2-thread run on a loaded machine can
    crawl), as a cross-check of the harness."""
    env = dict(os.environ, LD_LIBRARY_PATH=lib_dir)
    out: list[dict[str, Any]] = []
    errors: list[str] = []
    commit = None
    for t in plan.threads:
        cmd = [binary, "-m", model, "-p", str(plan.prefill_prompt), "-n",
               str(plan.decode_tokens), "-d", f"0,{plan.decode_prompt}", "-t", str(t),
               "-r", str(plan.reps), "-o", "json"]
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, env=env,
                               timeout=4 * plan.rep_cap_s)
            rows = json.loads(p.stdout)
        except (subprocess.SubprocessError, ValueError) as e:
            errors.append(f"-t {t}: {type(e).__name__}: {str(e)[:200]}")
            continue
        for r in rows:
            commit = r.get("build_commit", commit)
            out.append({"kind": "prefill" if r.get("n_prompt") else "decode",
                        "threads": r.get("n_threads"), "depth": r.get("n_depth", 0),
                        "tokens_per_s": r.get("avg_ts"),
                        "stddev": r.get("stddev_ts"), "samples_ts": r.get("samples_ts")})
    return {"model": model, "rows": out, "errors": errors, "build_commit": commit}


# ----------------------------------------------------------------------------- specs

def worker_spec(runtime: str, path: str, threads: int, phases: list[dict[str, Any]],
                max_context: int, mode: str, vocab: int,
                llama: dict[str, Any]) -> dict[str, Any]:
    """A compare_worker.py spec (also used by scale_30b.py): llama.cpp runs get the library
    and bindings directories of ``llama`` (:func:`prebuilt_llama` or ensure_built)."""
    s = {"runtime": runtime, "model": path, "threads": threads, "max_context": max_context,
         "mode": mode, "seed": 7, "vocab_size": vocab, "phases": phases}
    if runtime == "llama.cpp":
        s.update(lib_dir=llama["lib_dir"], bindings_dir=llama["bindings_dir"])
    return s


def spec_for(runtime: str, path: str, threads: int, phases: list[dict[str, Any]],
             plan: Plan, vocab: int, llama: dict[str, Any]) -> dict[str, Any]:
    phases = [{"budget_s": plan.phase_budget_s, "rep_cap_s": plan.rep_cap_s, **p}
              for p in phases]
    return worker_spec(runtime, path, threads, phases, plan.max_context, plan.mode, vocab,
                       llama)


def prebuilt_llama(root: str) -> dict[str, Any]:
    """The llama.cpp already built under ``root`` (llamacpp_build.py --root ROOT), as
    ensure_built returns it; never starts a build (the big benchmarks share one build)."""
    if not llamacpp_build.built(root):
        raise SystemExit(f"llama.cpp is not built under {root}: run "
                         f"python benchmarks/llamacpp_build.py --root {root}")
    return llamacpp_build.ensure_built(root)


def max_rate_phases(plan: Plan, threads: int) -> list[dict[str, Any]]:
    ph = [{"kind": "decode", "prompt": plan.decode_prompt, "tokens": plan.decode_tokens,
           "reps": plan.reps},
          {"kind": "prefill", "prompt": plan.prefill_prompt, "reps": plan.reps}]
    if threads == max(plan.threads) and plan.idle_seconds > 0:
        ph.append({"kind": "idle", "seconds": plan.idle_seconds, "reps": 1})
    return ph


def summarize(res: dict[str, Any]) -> dict[str, Any]:
    """Medians of a worker's samples."""
    s = res.get("samples", {})
    d = s.get("decode", [])
    p = s.get("prefill", [])
    pc = s.get("paced", [])
    idle = s.get("idle", [])
    rss = res.get("rss_end", {})
    return {
        "decode_tokens_per_s": med([x["tokens_per_s"] for x in d]),
        "decode_core_s_per_token": med([x["core_s_per_token"] for x in d]),
        "decode_cores_busy": med([x["cores_busy"] for x in d]),
        "prefill_tokens_per_s": med([x["tokens_per_s"] for x in p]),
        "prefill_core_s_per_token": med([x["core_s_per_token"] for x in p]),
        "paced_core_s_per_token": med([x["core_s_per_token"] for x in pc]),
        "paced_rate_achieved": med([x["rate_achieved"] for x in pc]),
        "paced_rate_target": med([x["rate_target"] for x in pc]),
        "paced_late_tokens": med([x["late_tokens"] for x in pc]),
        "paced_policy": pc[0].get("policy") if pc else None,
        "idle_cpu_ms_per_min": med([x["cpu_ms_per_min"] for x in idle]),
        "idle_cpu_ms_after_1s": med([x.get("cpu_ms_after_1s") for x in idle]),
        # VmHWM, not wait4's ru_maxrss: Linux carries the parent's high-water mark at fork
        # into the child's ru_maxrss across exec, so that one is at least the parent's RSS.
        "peak_rss_bytes": rss.get("VmHWM"),
        "ru_maxrss_bytes": res.get("process", {}).get("ru_maxrss_bytes"),
        "rss_before_load_bytes": res.get("rss_before_load", {}).get("VmRSS"),
        "load_s": res.get("load_s"),
        "decode_ids_head": d[0]["ids"] if d else None,
        "cut_short": (res.get("cut_short") or []) + [
            f"{k}: {x['tokens']} of {x['tokens_asked']} tokens (time cap)"
            for k in ("decode", "paced") for x in s.get(k, [])
            if x["tokens"] < x["tokens_asked"]],
    }


def brief(sm: dict[str, Any]) -> str:
    parts = []
    if sm["decode_tokens_per_s"] is not None:
        parts.append(f"decode {sm['decode_tokens_per_s']:.1f} tok/s "
                     f"{1e3 * sm['decode_core_s_per_token']:.2f} core-ms/tok")
    if sm["prefill_tokens_per_s"] is not None:
        parts.append(f"prefill {sm['prefill_tokens_per_s']:.1f} tok/s")
    if sm["paced_core_s_per_token"] is not None:
        parts.append(f"paced {sm['paced_rate_achieved']:.1f}/{sm['paced_rate_target']:.1f} "
                     f"tok/s {1e3 * sm['paced_core_s_per_token']:.2f} core-ms/tok")
    if sm["idle_cpu_ms_per_min"] is not None:
        parts.append(f"idle {sm['idle_cpu_ms_per_min']:.1f} ms/min")
    if sm["peak_rss_bytes"]:
        parts.append(f"VmHWM {sm['peak_rss_bytes'] / MiB:.0f} MiB")
    return ", ".join(parts)


# ----------------------------------------------------------------------------- the run

def build_models(plan: Plan, cache: str, quantize: str, keep_onnx: bool) -> dict[str, Any]:
    moe = compare_models.ensure_models(cache, plan.size, compare_models.moe_config(plan.size),
                                       list(plan.bits), quantize, keep_onnx)
    out = {"moe": moe}
    if plan.dense:
        out["dense"] = compare_models.ensure_models(
            cache, plan.size + "-dense", compare_models.dense_config(plan.size), [4], quantize,
            keep_onnx)
    return out


def model_path(ms: Any, runtime: str, bits: int) -> str:
    return ms.fwa[bits] if runtime == "fwassist" else ms.gguf[bits]


def run_all(plan: Plan, models: dict[str, Any], llama: dict[str, Any],
            log_dir: str) -> list[dict[str, Any]]:
    """Every worker run, as rows: {scenario, model, runtime, bits, threads, summary, raw}."""
    rows: list[dict[str, Any]] = []
    moe = models["moe"]
    vocab = int(moe.config["vocab_size"])

    def go(scenario: str, name: str, ms: Any, runtime: str, bits: int, threads: int,
           phases: list[dict[str, Any]]) -> dict[str, Any]:
        spec = spec_for(runtime, model_path(ms, runtime, bits), threads, phases, plan, vocab,
                        llama)
        t0 = time.monotonic()
        res = run_worker(spec, log_dir, plan.worker_timeout_s)
        row = {"scenario": scenario, "model": name, "runtime": runtime, "bits": bits,
               "quant": LLAMA_QUANT[bits] if runtime == "llama.cpp" else f"{bits}-bit b32",
               "threads": threads, "summary": summarize(res), "raw": res}
        sm = row["summary"]
        log(f"{scenario:9s} {name:6s} {runtime:9s} {row['quant']:10s} {threads}t: "
            f"{res.get('error') or brief(sm)} ({time.monotonic() - t0:.0f} s)")
        rows.append(row)
        return row

    # a. max rate (+ prefill, + idle at the largest thread count)
    for bits in plan.bits:
        for threads in plan.threads:
            for rt in RUNTIMES:
                go("max_rate", "moe", moe, rt, bits, threads, max_rate_phases(plan, threads))
    # b. paced at pace_fraction of llama.cpp's best max rate (over thread counts), with the
    # largest thread count
    tmax = max(plan.threads)
    for bits in plan.bits:
        rate = max((r["summary"]["decode_tokens_per_s"] or 0.0 for r in rows
                    if (r["scenario"], r["runtime"], r["bits"]) ==
                    ("max_rate", "llama.cpp", bits)), default=None)
        if not rate:
            log(f"paced {bits}-bit: no llama.cpp max rate, skipped")
            continue
        ph = [{"kind": "paced", "prompt": plan.decode_prompt, "tokens": plan.paced_tokens,
               "rate": plan.pace_fraction * rate, "reps": plan.reps}]
        for rt in RUNTIMES:
            go("paced", "moe", moe, rt, bits, tmax, ph)
    # c. oversubscribed
    if plan.oversub and tmax > 1:
        ph = [{"kind": "decode", "prompt": plan.decode_prompt, "tokens": plan.decode_tokens,
               "reps": plan.reps}]
        for bits in plan.bits:
            for rt in RUNTIMES:
                hog = Hog()
                try:
                    row = go("oversub", "moe", moe, rt, bits, tmax, ph)
                finally:
                    row_hog = hog.stop()
                row["hog"] = row_hog
    # d. dense twin
    if "dense" in models:
        ph = [{"kind": "decode", "prompt": plan.decode_prompt, "tokens": plan.decode_tokens,
               "reps": plan.reps}]
        for threads in plan.threads:
            for rt in RUNTIMES:
                go("dense", "dense", models["dense"], rt, 4, threads, ph)
    return rows


def logit_agreement(a: Any, b: Any) -> dict[str, float]:
    """a vs b ([T, vocab]): mean per-position Pearson correlation, argmax agreement, and the
    largest |a - b| relative to b's standard deviation."""
    import numpy as np
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    corr = [float(np.corrcoef(x, y)[0, 1]) for x, y in zip(a, b)]
    return {"corr_mean": float(np.mean(corr)), "corr_min": float(np.min(corr)),
            "argmax_agree": float(np.mean(a.argmax(1) == b.argmax(1))),
            "max_abs_over_std": float(np.max(np.abs(a - b)) / np.std(b))}


def worker_logits(runtime: str, path: str, ids: list[int], plan: Plan, vocab: int,
                  llama: dict[str, Any], log_dir: str) -> Any:
    spec = spec_for(runtime, path, 1, [{"kind": "logits", "ids": ids}], plan, vocab, llama)
    res = run_worker(spec, log_dir, plan.worker_timeout_s)
    if "error" in res:
        raise RuntimeError(f"{runtime} logits: {res['error']}")
    return res["samples"]["logits"][0]["logits"]


def fidelity(plan: Plan, models: dict[str, Any], llama: dict[str, Any], cache: str,
             log_dir: str) -> dict[str, Any]:
    """Evidence that both runtimes run the same model, as logits on 12 random tokens:
    (1) on the quick-size model (the same recipe; its size keeps the float64 numpy reference
    of the float weights cheap), llama.cpp on the F16 GGUF (checks the GGUF's tensor mapping
    and metadata: should agree to float16 rounding) and each runtime at each quantization vs
    that reference (how much each one's own quantization moves the model); (2) on the
    benchmark model, our logits vs llama.cpp's per quantization (each quantized its own way
    from the same float weights: close at 4 bits, apart at 2)."""
    import numpy as np
    out: dict[str, Any] = {}
    n = 12
    try:
        qcfg = compare_models.moe_config("quick")
        qv = qcfg["vocab_size"]
        q = compare_models.ensure_models(cache, "quick", qcfg, list(plan.bits),
                                         llama["quantize"])
        ids = [int(i) for i in np.random.default_rng(3).integers(257, qv, n)]
        ref = compare_models.reference_logits(qcfg, ids)
        files = [("llama.cpp", "F16", q.f16_gguf)] + [
            (rt, f"{b}-bit" if rt == "fwassist" else LLAMA_QUANT[b], model_path(q, rt, b))
            for b in plan.bits for rt in RUNTIMES]
        for rt, label, path in files:
            key = f"quick {rt} {label} vs float reference"
            try:
                out[key] = logit_agreement(
                    worker_logits(rt, path, ids, plan, qv, llama, log_dir), ref)
            except Exception as e:  # reported, not fatal
                out[key] = {"error": f"{type(e).__name__}: {e}"}
            log(f"fidelity: {key}: {out[key]}")
    except Exception as e:  # reported, not fatal
        out["quick vs float reference"] = {"error": f"{type(e).__name__}: {e}"}
    moe = models["moe"]
    vocab = int(moe.config["vocab_size"])
    ids = [int(i) for i in np.random.default_rng(4).integers(257, vocab, n)]
    for b in plan.bits:
        key = f"{plan.size} fwassist {b}-bit vs llama.cpp {LLAMA_QUANT[b]}"
        try:
            o = worker_logits("fwassist", moe.fwa[b], ids, plan, vocab, llama, log_dir)
            l_ = worker_logits("llama.cpp", moe.gguf[b], ids, plan, vocab, llama, log_dir)
            out[key] = logit_agreement(o, l_)
        except Exception as e:
            out[key] = {"error": f"{type(e).__name__}: {e}"}
        log(f"fidelity: {key}: {out[key]}")
    return out


def find(rows: list[dict[str, Any]], scenario: str, runtime: str, bits: int,
         threads: int) -> Optional[dict[str, Any]]:
    for r in rows:
        if (r["scenario"], r["runtime"], r["bits"], r["threads"]) == \
                (scenario, runtime, bits, threads):
            return r["summary"]
    return None


def comparisons(rows: list[dict[str, Any]], plan: Plan) -> list[dict[str, Any]]:
    """Ratios ours / llama.cpp (or ours vs an absolute target) with pass/fail."""
    out: list[dict[str, Any]] = []

    def add(metric: str, bits: Optional[int], threads: Optional[int], ours: Optional[float],
            llama: Optional[float], value: Optional[float], target: float, higher: bool) -> None:
        ok = None if value is None else (value >= target if higher else value <= target)
        out.append({"metric": metric, "bits": bits, "threads": threads, "fwassist": ours,
                    "llama.cpp": llama, "value": value, "target": target,
                    "target_is": ">=" if higher else "<=", "meets": ok})

    tmax = max(plan.threads)
    for bits in plan.bits:
        for t in plan.threads:
            o, l_ = find(rows, "max_rate", "fwassist", bits, t), find(rows, "max_rate",
                                                                      "llama.cpp", bits, t)
            if not (o and l_):
                continue
            add("decode tok/s ratio", bits, t, o["decode_tokens_per_s"],
                l_["decode_tokens_per_s"],
                ratio(o["decode_tokens_per_s"], l_["decode_tokens_per_s"]),
                TARGETS["decode_ratio"][bits], True)
            add("max-rate core-s/token ratio", bits, t, o["decode_core_s_per_token"],
                l_["decode_core_s_per_token"],
                ratio(o["decode_core_s_per_token"], l_["decode_core_s_per_token"]),
                TARGETS["max_rate_core_s_ratio"], False)
            add("prefill tok/s ratio", bits, t, o["prefill_tokens_per_s"],
                l_["prefill_tokens_per_s"],
                ratio(o["prefill_tokens_per_s"], l_["prefill_tokens_per_s"]),
                TARGETS["prefill_ratio"], True)
        o, l_ = find(rows, "paced", "fwassist", bits, tmax), find(rows, "paced", "llama.cpp",
                                                                  bits, tmax)
        if o and l_:
            add("paced core-s/token ratio", bits, tmax, o["paced_core_s_per_token"],
                l_["paced_core_s_per_token"],
                ratio(o["paced_core_s_per_token"], l_["paced_core_s_per_token"]),
                TARGETS["paced_core_s_ratio"], False)
        o, l_ = find(rows, "max_rate", "fwassist", bits, tmax), find(rows, "max_rate",
                                                                     "llama.cpp", bits, tmax)
        if o and l_:
            add("idle CPU ms/min (ours)", bits, tmax, o["idle_cpu_ms_per_min"],
                l_["idle_cpu_ms_per_min"], o["idle_cpu_ms_per_min"],
                TARGETS["idle_ms_per_min"], False)
            po = max(filter(None, (r["summary"]["peak_rss_bytes"] for r in rows
                                   if (r["runtime"], r["bits"], r["model"]) ==
                                   ("fwassist", bits, "moe"))), default=None)
            pl = max(filter(None, (r["summary"]["peak_rss_bytes"] for r in rows
                                   if (r["runtime"], r["bits"], r["model"]) ==
                                   ("llama.cpp", bits, "moe"))), default=None)
            add("peak RSS ratio", bits, None, po, pl, ratio(po, pl), TARGETS["rss_ratio"], False)
        for rt in RUNTIMES:
            ov, one = find(rows, "oversub", rt, bits, tmax), find(rows, "max_rate", rt, bits,
                                                                  min(plan.threads))
            if ov and one:
                v = ratio(ov["decode_tokens_per_s"], one["decode_tokens_per_s"])
                add(f"oversub {tmax}t / own 1t tok/s ({rt})", bits, tmax,
                    v if rt == "fwassist" else None, v if rt == "llama.cpp" else None, v,
                    TARGETS["oversub_own_1t"], True)
    for t in plan.threads:
        for rt in RUNTIMES:
            m, d = find(rows, "max_rate", rt, 4, t), find(rows, "dense", rt, 4, t)
            if m and d:
                v = ratio(m["decode_core_s_per_token"], d["decode_core_s_per_token"])
                add(f"MoE / dense core-s/token ({rt})", 4, t,
                    v if rt == "fwassist" else None, v if rt == "llama.cpp" else None, v,
                    TARGETS["moe_over_dense_core_s"], False)
    return out


# ----------------------------------------------------------------------------- output

def fmt(x: Optional[float], spec: str = ".1f") -> str:
    return "-" if x is None else format(x, spec)


def table(rows: list[dict[str, Any]], comps: list[dict[str, Any]], meta: dict[str, Any],
          plan: Plan) -> str:
    lines = []
    hdr = (f"{'scenario':9s} {'model':6s} {'runtime':9s} {'quant':10s} {'thr':>3s} | "
           f"{'dec t/s':>8s} {'core-ms/t':>9s} {'busy':>5s} | {'pf512 t/s':>9s} | "
           f"{'paced c-ms/t':>12s} {'rate':>11s} | {'idle ms/min':>11s} | {'peakRSS MiB':>11s}")
    lines += [hdr, "-" * len(hdr)]
    for r in rows:
        s = r["summary"]
        if "error" in r["raw"]:
            lines.append(f"{r['scenario']:9s} {r['model']:6s} {r['runtime']:9s} "
                         f"{r['quant']:10s} {r['threads']:3d} | ERROR {r['raw']['error'][:80]}")
            continue
        core = s["decode_core_s_per_token"]
        paced = s["paced_core_s_per_token"]
        rate = (f"{s['paced_rate_achieved']:.1f}/{s['paced_rate_target']:.1f}"
                if s["paced_rate_target"] else "-")
        lines.append(
            f"{r['scenario']:9s} {r['model']:6s} {r['runtime']:9s} {r['quant']:10s} "
            f"{r['threads']:3d} | {fmt(s['decode_tokens_per_s']):>8s} "
            f"{fmt(core and 1e3 * core, '.2f'):>9s} {fmt(s['decode_cores_busy'], '.2f'):>5s} | "
            f"{fmt(s['prefill_tokens_per_s']):>9s} | {fmt(paced and 1e3 * paced, '.2f'):>12s} "
            f"{rate:>11s} | {fmt(s['idle_cpu_ms_per_min']):>11s} | "
            f"{fmt(s['peak_rss_bytes'] and s['peak_rss_bytes'] / MiB):>11s}")
    for r in rows:
        if r["summary"].get("cut_short"):
            lines.append(f"note: {r['scenario']} {r['runtime']} {r['quant']} {r['threads']}t "
                         f"cut short (phase budget / repetition time cap): "
                         f"{'; '.join(r['summary']['cut_short'])}")
    lines.append("core-ms/t: CPU core-milliseconds per decoded token (getrusage of the worker, "
                 "all threads); busy: cores busy while decoding; rate: achieved/target tok/s")
    lines.append("")
    lines.append("vs targets (value = fwassist / llama.cpp unless stated):")
    ch = (f"  {'metric':40s} {'bits':>4s} {'thr':>3s} {'fwassist':>10s} {'llama.cpp':>10s} "
          f"{'value':>7s} {'target':>8s} {'meets':>5s}")
    lines += [ch, "  " + "-" * (len(ch) - 2)]
    for c in comps:
        def v(x: Any) -> str:
            if x is None:
                return "-"
            if c["metric"].startswith("peak RSS"):
                return f"{x / MiB:.1f}M"
            if "core-s" in c["metric"] and "ratio" in c["metric"]:
                return f"{1e3 * x:.3f}ms"
            return f"{x:.2f}" if isinstance(x, float) else str(x)
        lines.append(f"  {c['metric']:40s} {fmt(c['bits'], 'd'):>4s} "
                     f"{fmt(c['threads'], 'd'):>3s} {v(c['fwassist']):>10s} "
                     f"{v(c['llama.cpp']):>10s} {fmt(c['value'], '.3g'):>7s} "
                     f"{c['target_is'] + format(c['target'], 'g'):>8s} "
                     f"{'-' if c['meets'] is None else ('yes' if c['meets'] else 'NO'):>5s}")
    lines.append("")
    for key, m in meta["models"].items():
        p = m["params"]
        sizes = ", ".join(f"{k} {v / MiB:.1f}" for k, v in m["file_bytes"].items())
        lines.append(f"model {key}: {p['total'] / 1e6:.0f} M params, {p['active'] / 1e6:.0f} M "
                     f"active/token; files MiB: {sizes}")
    lb = meta.get("llama_bench") or {}
    for q, res in lb.items():
        txt = ", ".join(f"{r['kind']} {r['threads']}t" +
                        (f"@{r['depth']}" if r.get("depth") else "") +
                        f" {fmt(r['tokens_per_s'])}" for r in res["rows"])
        lines.append(f"llama-bench {q}: {txt} tok/s" + "".join(
            f"; {e}" for e in res["errors"]))
    for k, v in meta.get("fidelity", {}).items():
        if "error" in v:
            lines.append(f"fidelity {k}: {v['error']}")
        else:
            lines.append(f"fidelity {k}: logit corr {v['corr_mean']:.4f} (min "
                         f"{v['corr_min']:.4f}), argmax agree {v['argmax_agree']:.2f}, "
                         f"max |diff| / std {v['max_abs_over_std']:.3f}")
    for n in meta.get("notes", []):
        lines.append(f"NOTE: {n}")
    li = meta["llama_cpp"]
    lines.append(f"llama.cpp: llama-cpp-python {li['llama_cpp_python_version']} sdist, "
                 f"llama.cpp {li['llama_cpp_commit']}, {li['compiler']}, "
                 f"GGML_NATIVE=ON GGML_OPENMP=ON, built in {li['build_seconds']} s")
    lines.append(f"fwassist {meta['fwassist_version']} ({meta['git']}), mode {plan.mode}; "
                 f"cpu {meta['cpu_model']}, {meta['cpus']} cpus; load average start "
                 f"{meta['loadavg_start'][0]:.2f}, end {meta['loadavg_end'][0]:.2f}; "
                 f"run {meta['run_seconds']:.0f} s" + (" (QUICK: smoke run)" if meta["quick"]
                                                      else ""))
    return "\n".join(lines)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def on_sigterm(signum: int, frame: Any) -> None:
    """SIGTERM unwinds like Ctrl-C, so the busy-loop process and a running worker end too."""
    raise KeyboardInterrupt


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", required=True)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--skip-build", action="store_true",
                    help="do not build llama.cpp (it must be built already)")
    ap.add_argument("--bits")
    ap.add_argument("--threads")
    ap.add_argument("--reps", type=int)
    ap.add_argument("--idle-seconds", type=float)
    ap.add_argument("--no-dense", action="store_true")
    ap.add_argument("--no-oversub", action="store_true")
    ap.add_argument("--no-llama-bench", action="store_true")
    ap.add_argument("--cache-dir", default=os.path.join(llamacpp_build.DEFAULT_ROOT, "models"))
    ap.add_argument("--keep-onnx", action="store_true")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, on_sigterm)
    plan = QUICK if args.quick else FULL
    if args.bits:
        plan = replace(plan, bits=tuple(int(b) for b in args.bits.split(",")))
    if args.threads:
        plan = replace(plan, threads=tuple(int(t) for t in args.threads.split(",")))
    if args.reps:
        plan = replace(plan, reps=args.reps)
    if args.idle_seconds is not None:
        plan = replace(plan, idle_seconds=args.idle_seconds)
    plan = replace(plan, dense=plan.dense and not args.no_dense,
                   oversub=plan.oversub and not args.no_oversub,
                   llama_bench=plan.llama_bench and not args.no_llama_bench)
    t_start = time.monotonic()
    load_start = list(os.getloadavg())

    if args.skip_build:
        if not llamacpp_build.built(llamacpp_build.DEFAULT_ROOT):
            raise SystemExit("--skip-build: llama.cpp is not built; run "
                             "benchmarks/llamacpp_build.py")
    llama = llamacpp_build.ensure_built()
    llamacpp_build.ensure_gguf(compare_models.gguf_qwen3moe.GGUF_VERSION_PIN)
    models = build_models(plan, args.cache_dir, llama["quantize"], args.keep_onnx)

    import fwassist
    from fwassist import _core
    core_mtime = os.path.getmtime(_core.__file__)
    out = os.path.abspath(args.json)
    log_dir = os.path.join(llamacpp_build.DEFAULT_ROOT, "logs",
                           os.path.splitext(os.path.basename(out))[0])
    fid = fidelity(plan, models, llama, args.cache_dir, log_dir)
    rows = run_all(plan, models, llama, log_dir)
    lb: dict[str, Any] = {}
    if plan.llama_bench:
        for b in plan.bits:
            lb[LLAMA_QUANT[b]] = llama_bench(llama["bench"], llama["lib_dir"],
                                             models["moe"].gguf[b], plan)
            log(f"llama-bench {LLAMA_QUANT[b]}: {lb[LLAMA_QUANT[b]].get('rows') or lb[LLAMA_QUANT[b]]}")
    comps = comparisons(rows, plan)
    notes = []
    if importlib.metadata.version("gguf") != compare_models.gguf_qwen3moe.GGUF_VERSION_PIN:
        notes.append(f"gguf {importlib.metadata.version('gguf')} installed, "
                     f"{compare_models.gguf_qwen3moe.GGUF_VERSION_PIN} pinned")
    mtimes = {r["raw"].get("fwassist_core_mtime") for r in rows
              if r["runtime"] == "fwassist"} - {None}
    mtimes.add(os.path.getmtime(_core.__file__))
    if len(mtimes) > 1 or core_mtime not in mtimes:
        notes.append(f"fwassist._core was reinstalled during the run: the fwassist rows mix "
                     f"{len(mtimes)} builds (raw.fwassist_core_mtime per row)")
    meta = {
        "command": " ".join(["python"] + sys.argv), "quick": args.quick,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "git": git_commit(),
        "fwassist_version": getattr(fwassist, "__version__", None),
        "fwassist_core": {"path": _core.__file__, "mtime": time.strftime(
            "%Y-%m-%dT%H:%M:%S%z", time.localtime(core_mtime))},
        "python": platform.python_version(), "machine": platform.machine(),
        "cpu_model": cpu_model(), "cpus": os.cpu_count(), "llc_bytes": llc_bytes(),
        "loadavg_start": load_start, "loadavg_end": list(os.getloadavg()),
        "llama_cpp": llama, "gguf_package": {
            "pinned": compare_models.gguf_qwen3moe.GGUF_VERSION_PIN,
            "installed": importlib.metadata.version("gguf")},
        "models": {k: v.describe() for k, v in models.items()},
        "plan": asdict(plan), "targets": {k: (v if not isinstance(v, dict) else
                                              {str(b): x for b, x in v.items()})
                                          for k, v in TARGETS.items()},
        "llama_bench": lb, "fidelity": fid, "notes": notes, "log_dir": log_dir,
        "method": __doc__,
    }
    meta["run_seconds"] = time.monotonic() - t_start
    txt = write_results(out, {"meta": meta, "rows": rows, "comparisons": comps},
                        table(rows, comps, meta, plan))
    print(f"\nwrote {args.json} and {txt} in {meta['run_seconds']:.0f} s")
    return 0 if all("error" not in r["raw"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
