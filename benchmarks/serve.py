#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""``fwassist serve`` under concurrent streaming clients, side by side with llama.cpp's
``llama-server -np N`` on the same synthetic weights as llamacpp_compare.py.

    python benchmarks/serve.py --json OUT [--clients 1,16] [--duration 20] [--max-tokens 64]
                               [--synthetic quick|full|none] [--bits 4] [--threads 1,2]
                               [--repeats 3] [--llamacpp-root DIR] [--no-llama-server]

For each runtime and each client count C, C threads stream completions (the same prompts, in
the same order, greedy, ``max_tokens`` each) back to back for ``--duration`` seconds against
a server started for the run with one slot per client of the largest count (``fwassist serve
--sessions N``, ``llama-server -np N``), and measure: time to first token of every request
(p50/p99), aggregate generated tokens per second (tokens of the requests finished in the
window / wall time), the server's peak RSS (VmHWM of its process) and its RSS over the run.
All servers run at once and every repeat measures each in turn (order rotated), so the
shared machine's load falls on all alike; each figure is the median of ``--repeats``. The
client is the same for all (http.client, one connection per request, SSE parsed the same
way); generated tokens are the server's own count (``usage``; llama-server with
``stream_options.include_usage``). As an independent check, each server's 1-client tokens/s
is also measured with ``curl -N``. llama-server runs once per ``--threads`` value (-t) and the
comparison takes its best row: with -t equal to the cores of a busy host its spinning
threads collapse.

Models: ``--synthetic quick`` (default) uses benchmarks/compare_models.py's seeded weights,
exported to ``.fwa`` by our exporter and quantized to GGUF by ``llama-quantize``, built by
benchmarks/llamacpp_build.py (``--server`` builds llama-server too); ``--synthetic none``
serves the bundled model and skips llama-server (no GGUF of it exists).

Targets (docs/serve.md): with 16 clients, aggregate tokens/s >= 1.5x one client's, and >=
llama-server's with 16 clients.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from typing import Any, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from bench_paths import LLAMACPP_ROOT, portable  # noqa: E402

PROMPTS = (
    "/* Ring buffer for received UART bytes. */\nstatic size_t ring_next(size_t i, size_t n)\n{\n",
    "int buffer_copy(char *dst, size_t dst_size, const char *src, size_t len)\n{\n",
    "static uint32_t crc32_update(uint32_t crc, const unsigned char *data, size_t len)\n{\n",
    "void gpio_set(volatile uint32_t *port, unsigned pin, int on)\n{\n",
    "static int spi_transfer(struct spi *s, const uint8_t *tx, uint8_t *rx, size_t n)\n{\n",
    "/* Debounce a button sampled every millisecond. */\nbool debounce(struct button *b)\n{\n",
)


def host_cpu() -> dict[str, Any]:
    """The CPU model and its SIMD flags from /proc/cpuinfo (empty off Linux)."""
    model, flags = "", list[str]()
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                k, _, v = line.partition(":")
                if k.strip() == "model name" and not model:
                    model = v.strip()
                elif k.strip() == "flags" and not flags:
                    flags = [x for x in v.split() if x.startswith(("avx", "sse4", "fma", "neon",
                                                                   "asimd", "amx"))]
    except OSError:
        pass
    return {"model": model, "simd_flags": flags}


def log(msg: str) -> None:
    print(f"[serve-bench] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def proc_kb(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


class Server:
    """A server subprocess on a loopback port, ready once GET /health answers 200."""

    def __init__(self, name: str, cmd: list[str], port: int) -> None:
        self.name, self.port = name, port
        self.log_path = f"/tmp/serve-bench-{name}-{port}.log"
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{name} exited: see {self.log_path}")
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                c.request("GET", "/health")
                if c.getresponse().status == 200:
                    c.close()
                    return
                c.close()
            except OSError:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"{name} did not become ready")

    def rss_kb(self) -> int:
        return proc_kb(self.proc.pid, "VmRSS")

    def hwm_kb(self) -> int:
        return proc_kb(self.proc.pid, "VmHWM")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def one_request(port: int, prompt: str, max_tokens: int) -> tuple[float, int]:
    """(time to first token in s, generated tokens) of one streamed completion."""
    body = {"prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}}
    t0 = time.perf_counter()
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    try:
        c.request("POST", "/v1/completions", body=json.dumps(body).encode(),
                  # close: the response ends with the connection even for a server whose
                  # stream has no [DONE] (llama-server's /v1/completions keeps it alive).
                  headers={"Content-Type": "application/json", "Connection": "close"})
        r = c.getresponse()
        if r.status != 200:
            raise RuntimeError(f"status {r.status}: {r.read()[:200]!r}")
        ttft: Optional[float] = None
        tokens, chunks = None, 0
        while True:
            line = r.readline()
            if not line:
                break
            if not line.startswith(b"data: "):
                continue
            data = line[6:].strip()
            if data == b"[DONE]":
                break
            ev = json.loads(data)
            for ch in ev.get("choices") or []:
                if ch.get("text"):
                    chunks += 1
                    if ttft is None:
                        ttft = time.perf_counter() - t0
            if ev.get("usage"):
                tokens = int(ev["usage"]["completion_tokens"])
        if ttft is None:
            ttft = time.perf_counter() - t0
        return ttft, tokens if tokens is not None else chunks
    finally:
        c.close()


def run_load(srv: Server, clients: int, duration: float, max_tokens: int) -> dict[str, Any]:
    ttfts: list[float] = []
    tokens = [0]
    errors: list[str] = []
    lock = threading.Lock()
    rss: list[int] = []
    finished: list[float] = []
    start = time.perf_counter()
    end = start + duration

    def client(i: int) -> None:
        n = 0
        try:
            while time.perf_counter() < end:
                prompt = PROMPTS[(i + n) % len(PROMPTS)]
                try:
                    ttft, k = one_request(srv.port, prompt, max_tokens)
                except Exception as e:  # noqa: BLE001 - counted, shown in the JSON
                    with lock:
                        errors.append(f"{type(e).__name__}: {e}")
                    return
                with lock:
                    ttfts.append(ttft)
                    tokens[0] += k
                n += 1
        finally:
            with lock:
                finished.append(time.perf_counter())

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        rss.append(srv.rss_kb())
        time.sleep(0.5)
    # wall: until the last client's last response, not the RSS sampler's next tick.
    wall = max(finished) - start
    q = sorted(ttfts)
    return {"clients": clients, "requests": len(q), "errors": errors[:5],
            "n_errors": len(errors), "wall_s": wall, "tokens": tokens[0],
            "tokens_per_s": tokens[0] / wall if wall else 0.0,
            "ttft_p50_ms": 1e3 * statistics.median(q) if q else None,
            "ttft_p99_ms": 1e3 * q[min(len(q) - 1, int(0.99 * len(q)))] if q else None,
            "rss_kb_first": rss[0] if rss else None, "rss_kb_last": rss[-1] if rss else None,
            "rss_kb_max": max(rss) if rss else None, "load_average": os.getloadavg()}


def curl_check(port: int, max_tokens: int, n: int) -> Optional[float]:
    """One client's tokens/s measured by ``curl -N`` (n sequential streamed requests, the
    same prompts and body as one_request): an independent client to check the harness's own
    1-client figure against. None when curl is missing."""
    curl = shutil.which("curl")
    if curl is None:
        return None
    toks, wall = 0, 0.0
    for i in range(n):
        body = {"prompt": PROMPTS[i % len(PROMPTS)], "max_tokens": max_tokens,
                "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}
        t0 = time.perf_counter()
        out = subprocess.run([curl, "-sN", "-H", "Content-Type: application/json", "-d",
                              json.dumps(body), f"http://127.0.0.1:{port}/v1/completions"],
                             check=True, capture_output=True).stdout
        wall += time.perf_counter() - t0
        events = [json.loads(x[6:]) for x in out.split(b"\n") if x.startswith(b"data: {")]
        usage = [ev["usage"] for ev in events if ev.get("usage")]
        if not usage:
            raise RuntimeError(f"no usage in the stream from port {port}: {out[-300:]!r}")
        toks += int(usage[-1]["completion_tokens"])
    return toks / wall


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The medians over repeats of one (runtime, clients) cell, and every repeat's figures."""
    out: dict[str, Any] = {"clients": runs[0]["clients"], "repeats": runs}
    for k in ("tokens_per_s", "ttft_p50_ms", "ttft_p99_ms", "requests", "n_errors",
              "rss_kb_max"):
        vals = [r[k] for r in runs if r[k] is not None]
        out[k] = statistics.median(vals) if vals else None
    return out


def models(args: argparse.Namespace) -> tuple[str, str, Optional[str], dict[str, Any]]:
    """(fwa path, pin, gguf path or None, description)."""
    if args.synthetic == "none":
        from fwassist.models import TINY_CODER_PIN, tiny_coder_path
        return tiny_coder_path(), TINY_CODER_PIN, None, {"name": "bundled tiny-coder"}
    import compare_models
    import llamacpp_build
    quantize = None
    if not args.no_llama_server:
        info = llamacpp_build.ensure_built(args.llamacpp_root, args.jobs)
        quantize = info["quantize"]
        llamacpp_build.ensure_gguf(compare_models.gguf_qwen3moe.GGUF_VERSION_PIN)
    cache = args.cache_dir or os.path.join(args.llamacpp_root, "models")
    ms = compare_models.ensure_models(cache, args.synthetic,
                                      compare_models.moe_config(args.synthetic), [args.bits],
                                      quantize)
    from fwassist.artifact.inspect import inspect
    pin = inspect(ms.fwa[args.bits], lazy=True)["pin"]
    return ms.fwa[args.bits], pin, ms.gguf.get(args.bits), ms.describe()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", required=True)
    ap.add_argument("--clients", default="1,16")
    ap.add_argument("--duration", type=float, default=20.0)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--synthetic", choices=("quick", "full", "none"), default="quick")
    ap.add_argument("--bits", type=int, choices=(2, 3, 4), default=4)
    ap.add_argument("--threads", default=",".join(sorted({"1", str(os.cpu_count() or 1)})),
                    help="llama-server -t values, comma-separated (one server each)")
    ap.add_argument("--ctx", type=int, default=512, help="context per slot")
    ap.add_argument("--llamacpp-root", default=LLAMACPP_ROOT,
                    help="default: $FWA_LLAMACPP_ROOT, else benchmarks/.llamacpp")
    ap.add_argument("--cache-dir", help="where the synthetic models are made (default: "
                                         "LLAMACPP_ROOT/models, as llamacpp_compare.py)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--no-llama-server", action="store_true")
    ap.add_argument("--engines", default="batch,sessions",
                    help="fwassist serve --engine values to run (default batch,sessions)")
    ap.add_argument("--fwassist-threads", type=int, default=os.cpu_count() or 1,
                    help="the batch engine's threads (the sessions engine runs one thread "
                         "per session)")
    ap.add_argument("--repeats", type=int, default=3,
                    help="runs of every (server, clients) cell, alternating the servers; "
                         "the figures are their medians")
    ap.add_argument("--curl-requests", type=int, default=12,
                    help="sequential curl -N requests per server for the 1-client check")
    ap.add_argument("--sessions", type=int, default=0,
                    help="fwassist serve --sessions (default: the largest client count)")
    args = ap.parse_args()
    counts = [int(x) for x in args.clients.split(",")]
    slots = max(counts)
    fwa, pin, gguf, desc = models(args)
    results: dict[str, Any] = {
        "machine": {"arch": platform.machine(), "cpus": os.cpu_count(),
                    "python": platform.python_version(), "cpu": host_cpu(),
                    "load_average_at_start":
                    os.getloadavg()},
        "model": desc, "fwa": fwa, "gguf": gguf, "clients": counts,
        "duration_s": args.duration, "max_tokens": args.max_tokens, "ctx": args.ctx,
        "runs": {}}
    try:
        from fwassist import cpu_info
        results["machine"]["kernels"] = cpu_info()["kernels"]
    except ImportError:
        pass
    runtimes: list[tuple[str, list[str]]] = []
    for engine in args.engines.split(","):
        # "fwassist": the default (batched) engine; others are named by their engine.
        runtimes.append(("fwassist" if engine == "batch" else f"fwassist-{engine}",
                         [sys.executable, "-m", "fwassist", "serve", fwa, "--pin", pin,
                          "--port", str(free_port()), "--sessions", str(args.sessions or slots),
                          "--queue", str(slots), "--ctx", str(args.ctx), "--engine", engine,
                          "--threads",
                          str(args.fwassist_threads if engine == "batch" else 1)]))
    server_bin = None
    if gguf is not None and not args.no_llama_server:
        import llamacpp_build
        server_bin = llamacpp_build.ensure_server(args.llamacpp_root, args.jobs)
        results["llama_server"] = server_bin
        # One llama-server per -t value: its ggml threads spin at barriers, so with as many
        # threads as cores on a shared host it collapses (see benchmarks/README.md); the
        # comparison takes its best row.
        for t in args.threads.split(","):
            runtimes.append((f"llama-server-t{t}", [
                server_bin, "-m", gguf, "--host", "127.0.0.1", "--port", str(free_port()),
                "-np", str(slots), "-c", str(args.ctx * slots), "-t", t, "--no-webui", "-cb"]))
    # All servers up at once (idle ones wait on their queues), then every repeat runs each
    # client count on each server in turn, the order rotated per repeat, so a change in the
    # machine's load (it is shared) falls on all of them alike; cells are medians of repeats.
    servers: list[Server] = []
    cells: dict[str, dict[str, list[dict[str, Any]]]] = {}
    try:
        for name, cmd in runtimes:
            p = int(cmd[cmd.index("--port") + 1])
            log(f"starting {name}: {' '.join(cmd)}")
            servers.append(Server(name, cmd, p))
            one_request(p, PROMPTS[0], 8)  # warm-up
        for rep in range(args.repeats):
            order = servers[rep % len(servers):] + servers[:rep % len(servers)]
            for c in counts:
                for srv in order:
                    log(f"repeat {rep + 1}/{args.repeats}: {srv.name}, {c} clients for "
                        f"{args.duration:g} s")
                    r = run_load(srv, c, args.duration, args.max_tokens)
                    log(f"  {r['tokens_per_s']:.1f} tok/s, TTFT p50 {r['ttft_p50_ms']:.0f} ms "
                        f"p99 {r['ttft_p99_ms']:.0f} ms, {r['requests']} requests, "
                        f"{r['n_errors']} errors, load {r['load_average'][0]:.1f}")
                    cells.setdefault(srv.name, {}).setdefault(str(c), []).append(r)
        for srv in servers:
            log(f"{srv.name}: curl -N check, {args.curl_requests} requests")
            results["runs"][srv.name] = {c: median_run(rs) for c, rs in cells[srv.name].items()}
            results["runs"][srv.name]["peak_rss_kb"] = srv.hwm_kb()
            results["runs"][srv.name]["curl_1client_tokens_per_s"] = curl_check(
                srv.port, args.max_tokens, args.curl_requests)
    finally:
        for srv in servers:
            srv.stop()
    fw = results["runs"]["fwassist"]
    lo, hi = str(min(counts)), str(max(counts))
    ratios: dict[str, Any] = {
        f"fwassist_{hi}_vs_{lo}_clients": fw[hi]["tokens_per_s"] / fw[lo]["tokens_per_s"]}
    llama = [n for n in results["runs"] if n.startswith("llama-server")]
    if llama:
        def best(c: str) -> float:
            return max(float(results["runs"][n][c]["tokens_per_s"]) for n in llama)
        ratios[f"fwassist_vs_best_llama_server_{hi}_clients"] = fw[hi]["tokens_per_s"] / best(hi)
        ratios[f"fwassist_vs_best_llama_server_{lo}_clients"] = fw[lo]["tokens_per_s"] / best(lo)
    results["ratios"] = ratios
    results["targets"] = {f"{hi} clients >= 1.5x {lo} client": ratios[
        f"fwassist_{hi}_vs_{lo}_clients"] >= 1.5}
    if llama:
        results["targets"][f">= llama-server (best -t) at {hi} clients"] = ratios[
            f"fwassist_vs_best_llama_server_{hi}_clients"] >= 1.0
    cpu = results["machine"]["cpu"]
    table = [f"host: {cpu['model']} ({os.cpu_count()} CPUs), "
             f"fwassist kernels {results['machine'].get('kernels')}",
             f"medians of {args.repeats} alternating runs of {args.duration:g} s per cell",
             "runtime            clients  tok/s    TTFT p50 ms  p99 ms  requests  errors  RSS max MB"]
    for name, runs in results["runs"].items():
        for c in counts:
            r = runs[str(c)]
            table.append(f"{name:<18} {c:>7}  {r['tokens_per_s']:>7.1f}  "
                         f"{r['ttft_p50_ms']:>11.0f}  {r['ttft_p99_ms']:>6.0f}  "
                         f"{r['requests']:>8.0f}  {r['n_errors']:>6.0f}  "
                         f"{(r['rss_kb_max'] or 0) / 1024:>10.1f}")
    for name, runs in results["runs"].items():
        cv = runs["curl_1client_tokens_per_s"]
        table.append(f"{name}: curl -N, 1 client, {args.curl_requests} requests: "
                     + (f"{cv:.1f} tok/s" if cv is not None else "curl missing"))
    table += [f"{k}: {v:.2f}" for k, v in ratios.items()]
    table.append(f"load average at start / end: {results['machine']['load_average_at_start']}"
                 f" / {os.getloadavg()}")
    table += [f"target {k}: {'met' if v else 'NOT met'}" for k, v in results["targets"].items()]
    text = portable("\n".join(table))
    print(text)
    with open(args.json, "w") as f:
        json.dump(portable(results), f, indent=1)
    with open(re.sub(r"\.json$", "", args.json) + ".txt", "w") as f:
        f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
