#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""The Qwen3-Coder-30B-A3B-shaped synthetic model (benchmarks/synth_30b.py) end to end at full
scale, against llama.cpp on the same machine: building, opening, first token, decode, prefill.

    python benchmarks/scale_30b.py --json OUT [--bits 2] [--dir DIR] [--threads 1,2]
                                   [--reps 2] [--shape full] [--llama-root ROOT]

``--dir`` (the model files) defaults to ``$FWA_BIG_DIR``, else ``benchmarks/.big``;
``--llama-root`` (benchmarks/llamacpp_build.py's build) to ``$FWA_LLAMACPP_ROOT``, else
``benchmarks/.llamacpp`` (bench_paths.py).

Steps, per bit width (one width's files on disk at a time, deleted at the end):

1. Storage ceiling of ``--dir``: 1 GiB written + fsync, then read back after
   ``posix_fadvise(DONTNEED)`` (no effect on tmpfs).
2. Our artifact built by ``synth_30b.py`` in a subprocess (the C++ streaming writer, lazy final
   check): wall time, time spent generating the weights, the writer's share (wall minus
   generation: placing, hashing, writing, manifest, fsync, rename, the final check) as GB/s,
   and the process's peak RSS (VmHWM).
3. Open and first token, each in a fresh process after dropping the file from the page cache:
   ``Model.load(lazy=True)`` (expert blocks verified on first use, the rest at open) then a
   session and one token from a one-token prompt (time to first token from process start,
   excluding the interpreter's start); ``load_artifact(lazy=False)`` (every byte hashed)
   as full-verify GB/s; also the full-verify open of ``Model.load``.
4. Decode (prompt 32, 32 greedy tokens) and prefill (prompt 128) through
   benchmarks/compare_worker.py, ``--reps`` rounds at each thread count: with ``--alternate``
   and both files fitting in memory, ours and llama.cpp's alternate per round; else ours
   runs, its file is deleted, the GGUF is built and llama.cpp runs (``"alternated": false``).
5. JSON (raw samples, medians, ratios against the issue's targets) and a table beside it.

The machine's load average is recorded with every sample: this runs beside other work.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from llamacpp_compare import (cpu_model, prebuilt_llama, run_worker, summarize,  # noqa: E402
                              worker_spec)
from bench_paths import BIG_DIR, LLAMACPP_ROOT  # noqa: E402
from machine import git_commit, write_results  # noqa: E402
from synth_30b import LLAMA_QUANT  # noqa: E402

GB = 1e9
TARGETS: dict[str, Any] = {"decode_ratio": {4: 1.1, 3: 1.5, 2: 1.5}, "prefill_ratio": 1.5,
           "writer_gb_per_s": 1.0, "writer_peak_rss_bytes": 2 << 30}
DECODE_PROMPT, DECODE_TOKENS, PREFILL_PROMPT = 32, 32, 128

PROBE = r'''
import json, os, sys, time
t_start = time.perf_counter()
kind, path = sys.argv[1], sys.argv[2]
fd = os.open(path, os.O_RDONLY)
os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
os.close(fd)
import fwassist
t_import = time.perf_counter()
out = {"kind": kind}
if kind == "ttft":
    m = fwassist.Model.load(path, lazy=True)
    t_open = time.perf_counter()
    s = m.session(max_context=64, mode="fast", threads=int(sys.argv[3]))
    it = s.stream(prompt_ids=[65], max_tokens=1, temperature=0.0)
    tok = next(it)
    t_tok = time.perf_counter()
    out.update(open_s=t_open - t_import, ttft_s=t_tok - t_import,
               first_token_after_open_s=t_tok - t_open, import_s=t_import - t_start)
elif kind == "model_full":
    m = fwassist.Model.load(path, lazy=False)
    out.update(open_s=time.perf_counter() - t_import)
else:
    a = fwassist.load_artifact(path, lazy=False)
    t = time.perf_counter() - t_import
    out.update(open_s=t, verify_gb_per_s=os.path.getsize(path) / 1e9 / t)
print(json.dumps(out))
'''


def log(msg: str) -> None:
    print(f"[scale_30b] {msg}", file=sys.stderr, flush=True)


def med(xs: list[Optional[float]]) -> Optional[float]:
    v = [x for x in xs if x is not None]
    return statistics.median(v) if v else None


def storage_ceiling(d: str) -> dict[str, Any]:
    p = os.path.join(d, "storage-probe.tmp")
    buf = os.urandom(1 << 24)
    t0 = time.perf_counter()
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for _ in range(64):
            os.write(fd, buf)
        os.fsync(fd)
    finally:
        os.close(fd)
    w = time.perf_counter() - t0
    fd = os.open(p, os.O_RDONLY)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    t0 = time.perf_counter()
    while os.read(fd, 1 << 24):
        pass
    r = time.perf_counter() - t0
    os.close(fd)
    os.unlink(p)
    fs = subprocess.run(["df", "-T", d], capture_output=True, text=True).stdout.split("\n")[1]
    return {"dir": d, "fs": fs.split()[1] if fs else None, "write_fsync_gb_per_s": (1 << 30) / w / GB,
            "read_after_dontneed_gb_per_s": (1 << 30) / r / GB}


def mem_available() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def build(kind: str, d: str, shape: str, bits: int, llama_lib: str,
          layers: Optional[int] = None) -> dict[str, Any]:
    stats = os.path.join(d, f"stats-{kind}.json")
    cmd = [sys.executable, os.path.join(HERE, "synth_30b.py"), "--shape", shape, "--bits",
           str(bits), "--out", d, "--stats", stats, "--llama-lib", llama_lib,
           "--no-gguf" if kind == "fwa" else "--no-fwa"]
    if layers:
        cmd += ["--layers", str(layers)]
    log(" ".join(cmd))
    subprocess.run(cmd, check=True)
    with open(stats) as f:
        out = json.load(f)[kind]
    os.unlink(stats)
    return dict(out, loadavg=os.getloadavg()[0])


def prebuilt_stats(args: argparse.Namespace, bits: int) -> Optional[dict[str, Any]]:
    """The build statistics synth_30b.py --stats wrote for files already in --dir (both
    runtimes' files), or None when the files are to be built here."""
    if not args.prebuilt:
        return None
    with open(args.prebuilt) as f:
        st: dict[str, Any] = json.load(f)
    if st.get("bits") != bits or st.get("shape") != args.shape:
        raise SystemExit(f"{args.prebuilt}: built for {st.get('shape')} {st.get('bits')}-bit, "
                         f"not {args.shape} {bits}-bit")
    for kind in ("fwa", "gguf"):
        if not os.path.isfile(st[kind]["path"]):
            raise SystemExit(f"{args.prebuilt}: {st[kind]['path']} is missing")
        st[kind]["prebuilt"] = True
    return st


def writer_vs_disk(args: argparse.Namespace) -> int:
    """The writer's rate (from ``--prebuilt`` build statistics) against this disk's own
    sequential write + fsync of the same number of bytes, through the page cache
    (``dd conv=fsync``) and O_DIRECT (``oflag=direct``, as the writer writes), in --dir."""
    with open(args.prebuilt) as f:
        st: dict[str, Any] = json.load(f)
    w = st["fwa"]
    block = 1 << 24
    count = -(-int(w["bytes"]) // block)
    tmp = os.path.join(args.dir, "dd-ceiling.tmp")
    disk: dict[str, Any] = {}
    for kind, flags in (("buffered", []), ("direct", ["oflag=direct"])):
        load0 = os.getloadavg()[0]
        t0 = time.perf_counter()
        try:
            subprocess.run(["dd", "if=/dev/zero", f"of={tmp}", f"bs={block}", f"count={count}",
                            "conv=fsync", "status=none", *flags], check=True)
            dd_s = time.perf_counter() - t0
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        disk[kind] = {"bytes": count * block, "seconds": dd_s,
                      "gb_per_s": count * block / GB / dd_s, "dir": args.dir,
                      "loadavg": [load0, os.getloadavg()[0]]}
    ceiling = max(d["gb_per_s"] for d in disk.values())
    payload = {"benchmark": "scale_30b writer vs disk", "git_commit": git_commit(),
               "build": st, "dd": disk,
               "ratio_writer_share": w["writer_gb_per_s"] / ceiling,
               "ratio_end_to_end": w["end_to_end_gb_per_s"] / ceiling,
               "target_gb_per_s": TARGETS["writer_gb_per_s"]}
    target = TARGETS["writer_gb_per_s"]
    text = (f"writer vs disk ({args.dir}): {st['shape']} {st['bits']}-bit artifact "
            f"{w['bytes'] / GB:.2f} GB written by the C++ writer at "
            f"{w['writer_gb_per_s']:.3f} GB/s (its share: wall {w['wall_s']:.0f} s minus "
            f"{w['generate_s']:.0f} s generating the weights; {w['end_to_end_gb_per_s']:.3f} GB/s "
            f"end to end; load average {w['loadavg']:.1f})\n"
            + "".join(f"dd if=/dev/zero bs=16M conv=fsync{' oflag=direct' if k == 'direct' else ''}"
                      f" of the same size: {d['gb_per_s']:.3f} GB/s ({d['seconds']:.0f} s; load "
                      f"average {d['loadavg'][0]:.1f}-{d['loadavg'][1]:.1f})\n"
                      for k, d in disk.items())
            + f"writer / the faster dd: {payload['ratio_writer_share']:.2f} (writer's share), "
            f"{payload['ratio_end_to_end']:.2f} (end to end); target {target} GB/s "
            f"{'met' if w['writer_gb_per_s'] >= target else 'missed'}"
            + ('' if ceiling >= target else " (above this disk's own ceiling)"))
    write_results(args.json, payload, text)
    return 0


def prewarm(path: str) -> dict[str, Any]:
    """Reads the file once (into the page cache); its time and rate."""
    t0 = time.perf_counter()
    n = 0
    with open(path, "rb", buffering=0) as f:
        while True:
            b = f.read(1 << 24)
            if not b:
                break
            n += len(b)
    dt = time.perf_counter() - t0
    log(f"prewarm {path}: {n / GB:.1f} GB in {dt:.0f} s")
    return {"path": path, "seconds": dt, "gb_per_s": n / GB / dt, "loadavg": os.getloadavg()[0]}


def probe(kind: str, path: str, threads: int = 1) -> dict[str, Any]:
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", PROBE, kind, path, str(threads)],
                       capture_output=True, text=True, cwd=HERE)
    if p.returncode != 0:
        return {"kind": kind, "error": p.stderr[-2000:]}
    res: dict[str, Any] = json.loads(p.stdout.strip().splitlines()[-1])
    res.update(process_wall_s=time.perf_counter() - t0, loadavg=os.getloadavg()[0])
    return res


def worker(runtime: str, path: str, threads: int, llama: dict[str, Any], vocab: int,
           log_dir: str) -> dict[str, Any]:
    phases = [{"kind": "decode", "prompt": DECODE_PROMPT, "tokens": DECODE_TOKENS, "reps": 1,
               "rep_cap_s": 600.0},
              {"kind": "prefill", "prompt": PREFILL_PROMPT, "reps": 1}]
    spec = worker_spec(runtime, path, threads, phases, 256, "fast", vocab, llama)
    res = run_worker(spec, log_dir, 3600.0)
    s = res.get("samples", {})
    sm = summarize(res)
    row = {"runtime": runtime, "threads": threads, "error": res.get("error"),
           **{k: sm[k] for k in ("load_s", "decode_tokens_per_s", "prefill_tokens_per_s",
                                 "peak_rss_bytes")},
           "loadavg": med([x.get("loadavg") for k in ("decode", "prefill")
                           for x in s.get(k, [])]),
           # fwassist's policy sheds a core another process holds ("fastest"): the cores it
           # ran after each phase say whether a 2-thread row ran on 2 cores
           "active_cores": [x.get("active_cores_after") for k in ("decode", "prefill")
                            for x in s.get(k, [])],
           "cores_busy_decode": med([x.get("cores_busy") for x in s.get("decode", [])]),
           "major_faults": sum(x.get("major_faults") or 0 for k in ("decode", "prefill")
                               for x in s.get(k, []))}
    log(f"{runtime} {threads}t: {row}")
    return row


def run_bits(args: argparse.Namespace, bits: int, llama: dict[str, Any]) -> dict[str, Any]:
    import synth_30b
    c = synth_30b.config(args.shape)
    d = args.dir
    os.makedirs(d, exist_ok=True)
    res: dict[str, Any] = {"bits": bits, "llama_quant": LLAMA_QUANT[bits]}
    prebuilt = prebuilt_stats(args, bits)
    res["fwa_build"] = fwa = (prebuilt["fwa"] if prebuilt
                              else build("fwa", d, args.shape, bits, llama["lib_dir"]))
    log(f"fwa build: {fwa}")
    path = fwa["path"]
    res["open"] = [] if args.no_open else [probe("ttft", path, 1) for _ in range(args.reps)]
    if not args.no_open:
        res["open"] += [probe("verify", path) for _ in range(args.reps)]
        res["open"] += [probe("model_full", path)]
    log(f"open: {res['open']}")
    rows: list[dict[str, Any]] = []
    logs = os.path.join(d, "logs")
    # Both files at once when asked (on disk). Rounds alternate the runtimes in ABBA order
    # (ours then llama.cpp, then llama.cpp then ours, ...), so a drift in the machine's load
    # falls on both. When the page cache cannot hold both files, the file of the runtime
    # about to run is read through once first (its time recorded), so that no timed phase
    # waits for the disk.
    both = args.alternate
    gguf: Optional[dict[str, Any]] = None
    if both:
        res["gguf_build"] = gguf = (prebuilt["gguf"] if prebuilt
                                    else build("gguf", d, args.shape, bits, llama["lib_dir"]))
        fit = mem_available() > 1.2 * (fwa["bytes"] + gguf["bytes"])
        res["both_in_page_cache"] = fit
        files = {"fwassist": path, "llama.cpp": gguf["path"]}
        last = None
        res["prewarm"] = []
        for rnd in range(args.reps):
            order = ("fwassist", "llama.cpp") if rnd % 2 == 0 else ("llama.cpp", "fwassist")
            for rt in order:
                if not fit and rt != last:
                    res["prewarm"].append(prewarm(files[rt]))
                last = rt
                for t in args.threads:
                    rows.append(dict(worker(rt, files[rt], t, llama, c["vocab_size"], logs),
                                     round=rnd))
    else:
        for rnd in range(args.reps):
            for t in args.threads:
                rows.append(dict(worker("fwassist", path, t, llama, c["vocab_size"], logs),
                                 round=rnd))
        os.unlink(path)
        res["gguf_build"] = gguf = build("gguf", d, args.shape, bits, llama["lib_dir"])
        for rnd in range(args.reps):
            for t in args.threads:
                rows.append(dict(worker("llama.cpp", gguf["path"], t, llama, c["vocab_size"],
                                        logs), round=rnd))
    res["alternated"] = both
    res["rows"] = rows
    for p in (path, gguf["path"] if gguf else ""):
        if p and os.path.exists(p) and not args.keep:
            os.unlink(p)
    cmp = []
    for t in args.threads:
        o = [r for r in rows if r["runtime"] == "fwassist" and r["threads"] == t]
        ll = [r for r in rows if r["runtime"] == "llama.cpp" and r["threads"] == t]
        for metric, target in (("decode_tokens_per_s", TARGETS["decode_ratio"][bits]),
                               ("prefill_tokens_per_s", TARGETS["prefill_ratio"])):
            a, b = med([r[metric] for r in o]), med([r[metric] for r in ll])
            ratio = a / b if a and b else None
            cmp.append({"metric": metric, "threads": t, "ours": a, "llama_cpp": b,
                        "ratio": ratio, "target": target,
                        "met": None if ratio is None else ratio >= target})
    res["comparisons"] = cmp
    return res


def table(payload: dict[str, Any]) -> str:
    lines = [f"scale_30b: {payload['shape']} shape (Qwen3-Coder-30B-A3B), host "
             f"{payload['machine']['cpu']} ({payload['machine']['isa']}), "
             f"{payload['machine']['cpus']} CPUs shared with other work (load average "
             f"{payload['machine']['loadavg_start']:.1f} at start)",
             f"storage {payload['storage']['dir']} ({payload['storage']['fs']}): "
             f"{payload['storage']['write_fsync_gb_per_s']:.2f} GB/s write+fsync, "
             f"{payload['storage']['read_after_dontneed_gb_per_s']:.2f} GB/s read"]
    if "disk_writer" in payload:
        w, st = payload["disk_writer"], payload["disk_storage"]
        lines.append(f"writer on {st['dir']} ({st['fs']}, {st['write_fsync_gb_per_s']:.2f} GB/s "
                     f"raw write+fsync): 4-bit, {w['layers']} layers, {w['bytes'] / GB:.2f} GB: "
                     f"{w['writer_gb_per_s']:.2f} GB/s (writer's share), peak RSS "
                     f"{w['peak_rss_bytes'] / 2**20:.0f} MiB"
                     + (f", {w['writer_gb_per_cpu_s']:.2f} GB per CPU-second"
                        if "writer_gb_per_cpu_s" in w else ""))
    for r in payload["results"]:
        f = r["fwa_build"]
        lines.append(f"\n{r['bits']}-bit vs {r['llama_quant']}: ours {f['bytes'] / GB:.2f} GB, "
                     f"llama.cpp {r['gguf_build']['bytes'] / GB:.2f} GB"
                     f"{'' if r['alternated'] else ' (not alternated: one file in memory at a time)'}")
        if r.get("prewarm"):
            pw = r["prewarm"]
            lines.append(f"  runtimes alternated per round (ABBA); both files do not fit in the "
                         f"page cache, so each switch first read the next file through "
                         f"({len(pw)} reads, median {med([p['gb_per_s'] for p in pw]):.2f} GB/s)")
        lines.append(f"  writer: {f['writer_gb_per_s']:.2f} GB/s (writer's share, "
                     f"{f['writer_s']:.0f} s), end to end {f['end_to_end_gb_per_s']:.2f} GB/s "
                     f"incl. generating the weights ({f['generate_s']:.0f} s), peak RSS "
                     f"{f['peak_rss_bytes'] / 2**20:.0f} MiB")
        if "writer_gb_per_cpu_s" in f:
            lines.append(f"  writer per CPU-second: {f['writer_gb_per_cpu_s']:.2f} GB "
                         f"({f['writer_cpu_s']:.0f} CPU-s; load average {f['loadavg']:.1f})")
        tt = [o for o in r["open"] if o["kind"] == "ttft" and "error" not in o]
        vv = [o for o in r["open"] if o["kind"] == "verify" and "error" not in o]
        mf = [o for o in r["open"] if o["kind"] == "model_full" and "error" not in o]
        if tt:
            lines.append(f"  lazy open {med([o['open_s'] for o in tt]):.2f} s, time to first "
                         f"token {med([o['ttft_s'] for o in tt]):.2f} s (fresh process; the "
                         f"file dropped from the page cache first"
                         f"{', which tmpfs ignores' if payload['storage']['fs'] == 'tmpfs' else ''})")
        if vv:
            lines.append(f"  full verify {med([o['verify_gb_per_s'] for o in vv]):.2f} GB/s "
                         f"({med([o['open_s'] for o in vv]):.1f} s)"
                         + (f"; Model.load full {mf[0]['open_s']:.1f} s" if mf else ""))
        lines.append(f"  {'metric':<22}{'thr':>4}{'ours':>10}{'llama.cpp':>11}{'ratio':>8}"
                     f"{'target':>8}  met")
        for c in r["comparisons"]:
            def v(x: Optional[float], spec: str = ".2f") -> str:
                return "-" if x is None else format(x, spec)
            lines.append(f"  {c['metric']:<22}{c['threads']:>4}{v(c['ours']):>10}"
                         f"{v(c['llama_cpp']):>11}{v(c['ratio']):>8}{c['target']:>8}  "
                         f"{'-' if c['met'] is None else ('yes' if c['met'] else 'NO')}")
        dec = {c["threads"]: c["llama_cpp"] for c in r["comparisons"]
               if c["metric"] == "decode_tokens_per_s" and c["llama_cpp"]}
        for t, rate in sorted(dec.items()):
            if t > 1 and 1 in dec and rate < 0.5 * dec[1]:
                lines.append(f"  note: llama.cpp's {t}-thread decode is below half its 1-thread "
                             f"rate: its threads wait for each other at every op, and on an "
                             f"oversubscribed machine one of them is often descheduled; that "
                             f"ratio measures the machine's load more than the kernels")
        shed = [row for row in r["rows"] if row["runtime"] == "fwassist" and row["threads"] > 1
                and any(a is not None and a < row["threads"] for a in row.get("active_cores", []))]
        if shed:
            lines.append(f"  note: in {len(shed)} of the {r['bits']}-bit fwassist rows with more "
                         f"than one thread the session's 'fastest' policy had shed a core "
                         f"(load average {med([row['loadavg'] for row in shed]):.1f}; it sheds "
                         f"one when its trial finds 1 core no slower, i.e. another process "
                         f"holds the other): those rows do not show the runtime's scaling")
        for row in r["rows"]:
            if row.get("error"):
                lines.append(f"  error {row['runtime']} {row['threads']}t: {row['error'][:200]}")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", required=True)
    ap.add_argument("--bits", default="2")
    ap.add_argument("--dir", default=BIG_DIR)
    ap.add_argument("--shape", default="full")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--alternate", action="store_true",
                    help="build both files first and alternate the runtimes per round (when "
                    "both fit in memory)")
    ap.add_argument("--llama-root", default=LLAMACPP_ROOT)
    ap.add_argument("--prebuilt", help="use the files synth_30b.py --stats STATS built already "
                    "(one bit width) instead of building them")
    ap.add_argument("--keep", action="store_true", help="do not delete the model files")
    ap.add_argument("--no-open", action="store_true", help="skip the open / first-token probes")
    ap.add_argument("--writer-vs-disk", action="store_true", help="only: the --prebuilt "
                    "writer's rate against dd conv=fsync of the same size in --dir")
    ap.add_argument("--disk-writer-dir", help="also time the writer on this directory's disk "
                    "(4 bits, 8 of the shape's layers)")
    args = ap.parse_args()
    args.threads = [int(t) for t in args.threads.split(",")]
    if args.writer_vs_disk:
        return writer_vs_disk(args)
    llama = prebuilt_llama(args.llama_root)
    from fwassist import _core
    info = _core.cpu_info()
    os.makedirs(args.dir, exist_ok=True)
    payload: dict[str, Any] = {
        "benchmark": "scale_30b", "shape": args.shape, "git_commit": git_commit(),
        "machine": {"cpu": cpu_model(), "isa": info["arch"], "features": info["features"],
                    "kernels": info["kernels"], "cpus": os.cpu_count(),
                    "mem_total_bytes": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"),
                    "loadavg_start": os.getloadavg()[0]},
        "llama_cpp": {k: llama.get(k) for k in ("llama_cpp_python_version", "llama_cpp_commit",
                                                "cmake_flags")},
        "targets": TARGETS, "storage": storage_ceiling(args.dir), "results": []}
    if args.disk_writer_dir:
        # The writer where fsync reaches a disk: the real per-layer shape, fewer layers.
        os.makedirs(args.disk_writer_dir, exist_ok=True)
        payload["disk_storage"] = storage_ceiling(args.disk_writer_dir)
        w = build("fwa", args.disk_writer_dir, args.shape, 4, llama["lib_dir"], layers=8)
        os.unlink(w["path"])
        payload["disk_writer"] = w
        log(f"disk writer: {w}")
    for b in [int(x) for x in args.bits.split(",")]:
        payload["results"].append(run_bits(args, b, llama))
    payload["machine"]["loadavg_end"] = os.getloadavg()[0]
    write_results(args.json, payload, table(payload))
    return 0


if __name__ == "__main__":
    sys.exit(main())
