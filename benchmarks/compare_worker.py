#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""One runtime, one model, one thread count, in a process of its own: the workload of
benchmarks/llamacpp_compare.py, measured the same way for both runtimes.

    python benchmarks/compare_worker.py SPEC.json   (prints one JSON object on stdout)

Both runtimes are driven token by token from this Python harness:

* ``fwassist``: ``Model.load`` + ``model.session(max_context, mode, threads)``; a generation is
  ``session.stream(prompt_ids=..., max_tokens=n)`` (which prefills the prompt) and each
  ``next()`` of the stream samples greedily and evaluates the token: one decode step.
* ``llama.cpp``: ``libllama.so`` through the ctypes bindings shipped in the same
  ``llama-cpp-python`` sdist (``llama_cpp/llama_cpp.py``, which match that library's structs),
  loaded without the package's high-level ``Llama`` class: ``llama_model_load_from_file``
  (mmap, CPU), ``llama_init_from_model`` (n_ctx = max_context, n_batch = n_ubatch = 512,
  n_threads = n_threads_batch = threads, everything else default), a prompt is one
  ``llama_decode`` of ``llama_batch_get_one`` (logits of the last token only), and a decode
  step is ``llama_sampler_sample`` with the greedy sampler + ``llama_decode`` of that token:
  the loop of llama.cpp's ``llama-simple``.

Phases (a phase's ``reps`` repetitions, none started after its ``budget_s``; a decode or
paced repetition stops after ``rep_cap_s`` with the tokens it has, at least 4; each repetition
on a fresh context and its own seeded random prompt, so neither
runtime can reuse a cached prefix):

* ``decode``: prompt P, then T greedy tokens as fast as possible. Wall time and CPU time
  (``getrusage(RUSAGE_SELF)``: user + system of every thread of the process) over the T
  decode steps only.
* ``prefill``: prompt P alone (ours: ``stream()`` returning, which prefills; llama.cpp: one
  ``llama_decode``); wall and CPU time.
* ``paced``: prompt P, then T tokens at ``rate`` tokens/s: after each token the harness
  sleeps until the next deadline (absolute schedule). CPU time over the T periods, sleeps
  included: what a runtime's threads burn while they wait shows up here. fwassist is told
  the pace (``set_policy(target_ms_per_token=1000 / rate)``, its latency policy: the fewest
  cores that keep a step within the period); llama.cpp has no such setting and runs its
  default, as the issue's target states.
* ``logits``: the logits of given ids on a fresh context (a fidelity check, not timed).
* ``idle``: after a generation, the model and context stay loaded and the process sleeps for
  ``seconds``; CPU time over that window (also after 1 s and 5 s), voluntary/involuntary
  context switches.

Also reported: per decode and prefill sample the page faults (minor, major) and, for fwassist,
the cores its policy runs after the phase (``active_cores_after``: "fastest" sheds one while
another process holds it, so a 2-thread row on a loaded machine may be a 1-core row); VmRSS
before the model is loaded, VmHWM / VmRSS / RssAnon / RssFile at the end,
the load time, and every raw sample. A warm-up generation (16 + 16 tokens) precedes the phases.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
import types
from typing import Any, Optional, Protocol

import numpy as np


class Runtime(Protocol):
    def start(self, ids: list[int], n_new: int) -> None: ...
    def step(self) -> int: ...
    def logits(self, ids: list[int]) -> np.ndarray: ...
    def pace(self, rate: Optional[float]) -> str: ...
    def active_cores(self) -> Optional[int]: ...
    def close(self) -> None: ...


# ----------------------------------------------------------------------------- measurement

def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def page_faults() -> tuple[int, int]:
    """Minor and major page faults of every thread of this process so far: a decode that
    touches weight pages not mapped yet (or dropped by reclaim) shows up here."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_minflt, r.ru_majflt


def ctx_switches() -> tuple[int, int]:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_nvcsw, r.ru_nivcsw


def proc_status() -> dict[str, int]:
    """VmRSS, VmHWM, RssAnon, RssFile of this process in bytes."""
    out: dict[str, int] = {}
    with open("/proc/self/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "Threads"):
                parts = v.split()
                out[k] = int(parts[0]) * (1024 if len(parts) > 1 else 1)
    return out


# ----------------------------------------------------------------------------- runtimes

class Fwassist:
    def __init__(self, path: str, threads: int, max_context: int, mode: str) -> None:
        import fwassist
        self.model = fwassist.Model.load(path)
        self.sess = self.model.session(max_context=max_context, mode=mode, threads=threads)
        self.it: Optional[Any] = None

    def start(self, ids: list[int], n_new: int) -> None:
        self.sess.reset()
        self.it = self.sess.stream(prompt_ids=ids, max_tokens=max(1, n_new), temperature=0.0)

    def step(self) -> int:
        assert self.it is not None
        while True:
            tok = next(self.it)          # StopIteration: the generation ended early
            if tok.id >= 0:
                return int(tok.id)

    def logits(self, ids: list[int]) -> np.ndarray:
        self.sess.reset()
        return self.sess.logits(ids)

    def pace(self, rate: Optional[float]) -> str:
        """The caller's pace as the session's decode latency budget (its latency policy:
        the fewest cores that keep a step within the period); None: back to "fastest"."""
        target_ms = 1e3 / rate if rate else 0.0
        self.sess.set_policy(target_ms_per_token=target_ms)
        return f"target_ms_per_token={target_ms:.2f}"

    def active_cores(self) -> Optional[int]:
        """The cores the session's policy runs now: below ``threads`` when its "fastest"
        policy shed one taken by another process (docs/runtime.md, the core policy)."""
        return int(self.sess.policy()["active_cores"])

    def close(self) -> None:
        self.sess.close()


def _llama_bindings(lib_dir: str, bindings_dir: str) -> Any:
    """The sdist's ``llama_cpp.llama_cpp`` module, without running the package's __init__
    (which imports the high-level API and its dependencies)."""
    os.environ["LLAMA_CPP_LIB_PATH"] = lib_dir
    pkg = types.ModuleType("llama_cpp")
    pkg.__path__ = [os.path.join(bindings_dir, "llama_cpp")]
    sys.modules["llama_cpp"] = pkg
    import importlib
    return importlib.import_module("llama_cpp.llama_cpp")


class LlamaCpp:
    def __init__(self, path: str, threads: int, max_context: int, lib_dir: str,
                 bindings_dir: str, repack: bool = True) -> None:
        L = self.L = _llama_bindings(lib_dir, bindings_dir)
        L.llama_backend_init()
        mp = L.llama_model_default_params()
        mp.n_gpu_layers = 0
        # repack=False: the weights stay in the file mapping (llama.cpp's --no-repack) instead
        # of being copied into its repacked CPU layout (anonymous memory, e.g. Q4_0 -> 8x8).
        mp.use_extra_bufts = repack
        self.model = L.llama_model_load_from_file(path.encode(), mp)
        if not self.model:
            raise RuntimeError(f"llama.cpp could not load {path}")
        cp = L.llama_context_default_params()
        cp.n_ctx = max_context
        cp.n_batch = 512
        cp.n_ubatch = 512
        cp.n_threads = threads
        cp.n_threads_batch = threads
        cp.no_perf = True
        self.ctx = L.llama_init_from_model(self.model, cp)
        if not self.ctx:
            raise RuntimeError("llama_init_from_model failed")
        self.mem = L.llama_get_memory(self.ctx)
        self.smpl = L.llama_sampler_init_greedy()
        self.one = (L.llama_token * 1)()
        self.n_vocab = L.llama_vocab_n_tokens(L.llama_model_get_vocab(self.model))

    def _decode(self, arr: Any, n: int) -> None:
        rc = self.L.llama_decode(self.ctx, self.L.llama_batch_get_one(arr, n))
        if rc != 0:
            raise RuntimeError(f"llama_decode returned {rc}")

    def start(self, ids: list[int], n_new: int) -> None:
        self.L.llama_memory_clear(self.mem, True)
        arr = (self.L.llama_token * len(ids))(*ids)
        self._decode(arr, len(ids))

    def step(self) -> int:
        tok = int(self.L.llama_sampler_sample(self.smpl, self.ctx, -1))
        self.one[0] = tok
        self._decode(self.one, 1)
        return tok

    def logits(self, ids: list[int]) -> np.ndarray:
        """[len(ids), vocab]: one token per llama_decode, the last logits after each."""
        self.L.llama_memory_clear(self.mem, True)
        rows = []
        for t in ids:
            self.one[0] = t
            self._decode(self.one, 1)
            ptr = self.L.llama_get_logits_ith(self.ctx, -1)
            rows.append(np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).copy())
        return np.stack(rows)

    def pace(self, rate: Optional[float]) -> str:
        return "none (llama.cpp has no latency budget)"

    def active_cores(self) -> Optional[int]:
        return None                        # no policy: its threads always run

    def close(self) -> None:
        self.L.llama_sampler_free(self.smpl)
        self.L.llama_free(self.ctx)
        self.L.llama_model_free(self.model)


# ----------------------------------------------------------------------------- phases

class Prompts:
    """Seeded random prompts: the same sequence for every runtime and configuration."""

    def __init__(self, seed: int, vocab: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.vocab = vocab

    def take(self, n: int) -> list[int]:
        # ids 0..255 are bytes, 256 <|endoftext|>: draw from the whole vocabulary but 256
        ids = self.rng.integers(0, self.vocab - 1, size=n)
        return [int(i) + (1 if i >= 256 else 0) for i in ids]


def phase_decode(rt: Runtime, prompts: Prompts, p: int, t: int,
                 cap_s: float = float("inf")) -> dict[str, Any]:
    """cap_s: stop after this many seconds (at least 4 tokens), rates over the tokens made."""
    rt.start(prompts.take(p), t)
    c0, w0, (mn0, mj0) = cpu_seconds(), time.perf_counter(), page_faults()
    ids: list[int] = []
    while len(ids) < t and (len(ids) < 4 or time.perf_counter() - w0 < cap_s):
        ids.append(rt.step())
    wall, cpu, (mn1, mj1) = time.perf_counter() - w0, cpu_seconds() - c0, page_faults()
    return {"tokens": len(ids), "tokens_asked": t, "wall_s": wall, "cpu_s": cpu,
            "tokens_per_s": len(ids) / wall, "core_s_per_token": cpu / len(ids),
            "cores_busy": cpu / wall, "minor_faults": mn1 - mn0, "major_faults": mj1 - mj0,
            "ids": ids[:16]}


def phase_prefill(rt: Runtime, prompts: Prompts, p: int) -> dict[str, Any]:
    ids = prompts.take(p)
    c0, w0, (mn0, mj0) = cpu_seconds(), time.perf_counter(), page_faults()
    rt.start(ids, 1)
    wall, cpu, (mn1, mj1) = time.perf_counter() - w0, cpu_seconds() - c0, page_faults()
    return {"tokens": p, "wall_s": wall, "cpu_s": cpu, "tokens_per_s": p / wall,
            "core_s_per_token": cpu / p, "minor_faults": mn1 - mn0, "major_faults": mj1 - mj0}


def phase_paced(rt: Runtime, prompts: Prompts, p: int, t: int, rate: float,
                cap_s: float = float("inf")) -> dict[str, Any]:
    period = 1.0 / rate
    policy = rt.pace(rate)
    rt.start(prompts.take(p), t)
    c0, w0 = cpu_seconds(), time.perf_counter()
    deadline, late, busy, n = w0, 0, 0.0, 0
    while n < t and (n < 4 or time.perf_counter() - w0 < cap_s):
        n += 1
        s0 = time.perf_counter()
        rt.step()
        busy += time.perf_counter() - s0
        deadline += period
        now = time.perf_counter()
        if now > deadline:
            late += 1
            deadline = now                 # no catch-up burst after a late token
        else:
            time.sleep(deadline - now)
    wall, cpu = time.perf_counter() - w0, cpu_seconds() - c0
    rt.pace(None)
    return {"policy": policy, "tokens": n, "tokens_asked": t, "rate_target": rate,
            "rate_achieved": n / wall,
            "late_tokens": late, "wall_s": wall, "cpu_s": cpu, "core_s_per_token": cpu / n,
            "step_ms_mean": 1e3 * busy / n, "cores_busy": cpu / wall}


def phase_idle(rt: Runtime, prompts: Prompts, seconds: float) -> dict[str, Any]:
    rt.start(prompts.take(16), 16)
    for _ in range(16):
        rt.step()
    c0, w0, (v0, i0) = cpu_seconds(), time.perf_counter(), ctx_switches()
    marks: dict[str, float] = {}
    for mark in (1.0, 5.0, seconds):
        if mark <= seconds:
            time.sleep(max(0.0, w0 + mark - time.perf_counter()))
            marks[f"cpu_ms_after_{mark:g}s"] = 1e3 * (cpu_seconds() - c0)
    wall, cpu = time.perf_counter() - w0, cpu_seconds() - c0
    v1, i1 = ctx_switches()
    return {"seconds": wall, "cpu_s": cpu, "cpu_ms_per_min": 6e4 * cpu / wall,
            "voluntary_ctx_switches": v1 - v0, "involuntary_ctx_switches": i1 - i0, **marks}


def run(spec: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"spec": spec, "rss_before_load": proc_status()}
    t0 = time.perf_counter()
    rt: Runtime
    if spec["runtime"] == "fwassist":
        rt = Fwassist(spec["model"], spec["threads"], spec["max_context"], spec["mode"])
    else:
        rt = LlamaCpp(spec["model"], spec["threads"], spec["max_context"],
                      spec["lib_dir"], spec["bindings_dir"])
    out["load_s"] = time.perf_counter() - t0
    if spec["runtime"] == "fwassist":
        from fwassist import _core
        out["fwassist_core_mtime"] = os.path.getmtime(_core.__file__)
    out["rss_after_load"] = proc_status()
    prompts = Prompts(spec["seed"], spec["vocab_size"])
    warm = phase_decode(rt, prompts, 16, 16)
    out["warmup"] = warm
    samples: dict[str, list[dict[str, Any]]] = {}
    for ph in spec["phases"]:
        kind = ph["kind"]
        t_phase = time.perf_counter()
        for rep in range(ph.get("reps", 1)):
            if rep and time.perf_counter() - t_phase > ph.get("budget_s", float("inf")):
                out.setdefault("cut_short", []).append(f"{kind}: {rep} of {ph['reps']} reps")
                break
            cap = ph.get("rep_cap_s", float("inf"))
            if kind == "decode":
                s = phase_decode(rt, prompts, ph["prompt"], ph["tokens"], cap)
            elif kind == "prefill":
                s = phase_prefill(rt, prompts, ph["prompt"])
            elif kind == "paced":
                s = phase_paced(rt, prompts, ph["prompt"], ph["tokens"], ph["rate"], cap)
            elif kind == "idle":
                s = phase_idle(rt, prompts, ph["seconds"])
            elif kind == "logits":
                s = {"ids": ph["ids"], "logits": rt.logits(ph["ids"]).astype(float).tolist()}
            else:
                raise ValueError(f"unknown phase {kind!r}")
            s["loadavg"] = os.getloadavg()[0]
            s["active_cores_after"] = rt.active_cores()
            samples.setdefault(kind, []).append(s)
    out["samples"] = samples
    out["rss_end"] = proc_status()
    rt.close()
    out["cpu_total_s"] = cpu_seconds()
    return out


def main() -> int:
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    try:
        res = run(spec)
    except Exception as e:  # reported to the parent, which records it
        res = {"spec": spec, "error": f"{type(e).__name__}: {e}"}
    sys.stdout.write(json.dumps(res) + "\n")
    sys.stdout.flush()
    return 0 if "error" not in res else 1


if __name__ == "__main__":
    sys.exit(main())
