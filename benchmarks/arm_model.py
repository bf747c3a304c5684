#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""ARM GEMV speed without a board: llvm-mca on the executed instruction stream of the real
kernels, for fwassist's ARM variants and the matching llama.cpp kernels.

    python benchmarks/arm_model.py [--out benchmarks/results/arm-model] [--k 2048] [--smoke]

Method (benchmarks/README.md, "ARM model"):
1. clang-19 compiles, for aarch64, fwassist's ARM kernel files with the flags of their
   variants.def rows, and llama.cpp's ``ggml-cpu/arch/arm/quants.c`` and ``repack.cpp`` from the
   pinned llama-cpp-python sdist (benchmarks/llamacpp_build.py) at the ISA levels a native
   build on each core would use; each is linked statically with a small driver
   (benchmarks/arm_model/*_driver.cpp) that makes one GEMV call between two marker calls.
2. qemu-aarch64 runs each driver with ``-d in_asm,exec,nochain``: the translated blocks and the
   order they executed in give the exact instruction stream of the call (every branch
   resolved, loop trip counts real, SVE at the core's vector length). Its length is the
   instruction count of the real binary.
3. That stream, disassembled by llvm-objdump-19 from the same binary, goes to llvm-mca-19 with
   ``-mcpu`` of each core: total cycles / (weights / 32) = cycles per 32 weights, including
   loop overhead, per-block epilogues and call overhead, excluding cache misses (every load
   hits L1 in the model).
4. Per reference board: the weight stream the kernel can consume on one core
   (bytes per 32 weights x clock / cycles) against that core's memory bandwidth says whether
   it is compute- or bandwidth-bound, and the predicted GEMV time is the larger of the two.
Needs clang-19, llvm-mca-19, llvm-objdump-19 (Debian ``llvm-19``, ``clang-19``; see
``scripts/install_deps.sh bench``), qemu-aarch64 and the sdist (downloaded when missing).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import llamacpp_build  # noqa: E402

TOOLS = ("clang-19", "clang++-19", "llvm-mca-19", "llvm-objdump-19", "qemu-aarch64")
TARGET = "--target=aarch64-linux-gnu"
OPT = ("-O3", "-DNDEBUG")


@dataclass(frozen=True)
class Core:
    name: str
    mcpu: str           # llvm-mca scheduling model
    qemu: str           # qemu -cpu (only the SVE vector length matters to the stream)
    ours: tuple[str, ...]   # our variants usable on the core
    llama_isa: str      # the llama.cpp build a native build on this core selects
    llama_repack: str   # the repacked Q4_0 GEMV llama.cpp picks there (repack.cpp)


# llama.cpp's choice (ggml-cpu/repack.cpp, ggml_repack_get_optimal_repack_type for Q4_0):
# 8x8 with SVE + i8mm at a 256-bit vector, else 4x8 with i8mm, else 4x4 with dotprod.
CORES = (
    Core("cortex-a55", "cortex-a55", "max,sve=off", ("neon", "dotprod"), "dotprod", "q4_0_4x4"),
    Core("neoverse-n1", "neoverse-n1", "max,sve=off", ("neon", "dotprod"), "dotprod",
         "q4_0_4x4"),
    Core("neoverse-v1", "neoverse-v1", "max,sve256=on", ("neon", "dotprod", "sve"), "sve",
         "q4_0_8x8"),
    Core("neoverse-v2", "neoverse-v2", "max,sve128=on", ("neon", "dotprod", "sve"), "sve",
         "q4_0_4x8"),
)
LLAMA_ISA_FLAGS = {
    "dotprod": "-march=armv8.2-a+dotprod+fp16",
    "sve": "-march=armv8.2-a+dotprod+fp16+i8mm+sve",
}
# Bytes per 32 weights as stored: ours block 32 with fp16 scales (bits * 4 + 2); llama.cpp's
# from ggml-common.h (Q4_0 18 B / 32; Q4_K 144, Q3_K 110, Q2_K 84 B / 256).
LLAMA_KERNELS = {"q4_0": 18.0, "q4_K": 144 / 8, "q3_K": 110 / 8, "q2_K": 84 / 8,
                 "q4_0_4x4": 18.0, "q4_0_4x8": 18.0, "q4_0_8x8": 18.0}
# llama.cpp's counterpart per bit width of ours (the comparison).
LLAMA_PEER = {4: "repack", 3: "q3_K", 2: "q2_K"}


@dataclass(frozen=True)
class Board:
    name: str
    core: str            # the CORES model standing in for it
    ghz: float
    peak_gbs: float      # DRAM peak of the whole SoC
    core_gbs: float      # one core's sustained read bandwidth (the reference memory)
    source: str


BOARDS = (
    Board("Raspberry Pi 5 (BCM2712, Cortex-A76)", "neoverse-n1", 2.4, 17.1, 12.4,
          "Raspberry Pi 5 product brief: 4x A76 at 2.4 GHz, LPDDR4X-4267 on a 32-bit bus "
          "(17.1 GB/s peak). One core: T-MAC's 1-thread Llama-2-7B 2-bit run (4.4 tok/s) "
          "moves ~12.4 GB/s (shared/notes/milestone2-anchors.md section 1, derived); "
          "LLVM 19 has no A76 model, the N1 (same core) stands in"),
    Board("Automotive Cortex-A78AE SoC (Jetson AGX Orin class)", "neoverse-n1", 2.2, 204.8,
          15.0,
          "NVIDIA Jetson AGX Orin module data sheet: 12x A78AE up to 2.2 GHz, 256-bit "
          "LPDDR5 204.8 GB/s. One core: no published figure; 15 GB/s is an assumption "
          "(an A78-class core's outstanding misses, not the DRAM, limit it). LLVM 19 has "
          "no A78 model: the N1 model stands in (the A78 is wider, so this is pessimistic)"),
    Board("Neoverse-N1 server (AWS Graviton2)", "neoverse-n1", 2.5, 204.8, 20.0,
          "Graviton2: 64x N1 at 2.5 GHz, 8x DDR4-3200 (204.8 GB/s). One core: assumed "
          "20 GB/s (no published single-core figure)"),
    Board("Neoverse-V1 server (AWS Graviton3)", "neoverse-v1", 2.6, 307.2, 25.0,
          "Graviton3: 64x V1 at 2.6 GHz, 8x DDR5-4800 (307.2 GB/s; WikiChip). One core: "
          "assumed 25 GB/s (no published single-core figure)"),
    Board("Neoverse-V2 server (AWS Graviton4)", "neoverse-v2", 2.8, 537.6, 30.0,
          "Graviton4: 96x V2 at 2.8 GHz, 12x DDR5-5600 (537.6 GB/s). One core: assumed "
          "30 GB/s (no published single-core figure)"),
)


def log(msg: str) -> None:
    print(f"[arm_model] {msg}", file=sys.stderr, flush=True)


def run(cmd: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(cmd, text=True, capture_output=True, **kw)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({res.returncode}): {res.stderr[-2000:]}")
    return res


def aarch64_variant_flags() -> dict[str, str]:
    """The compile flags of the aarch64 rows of csrc/kernels/variants.def."""
    flags: dict[str, str] = {}
    with open(os.path.join(ROOT, "csrc", "kernels", "variants.def")) as f:
        for line in f:
            m = re.match(r'FWA_KERNEL_VARIANT\((\w+), aarch64, .*"([^"]*)"\)$', line.strip())
            if m:
                flags[m.group(1)] = m.group(2)
    return flags


# Compilers for our side: clang-19 (the same as llama.cpp's side) or the GCC cross compiler the
# aarch64 builds use (csrc/cmake/toolchains/aarch64-linux-gnu.cmake).
OURS_CXX = {"clang": ["clang++-19", TARGET], "gcc": ["aarch64-linux-gnu-g++"]}


def build_ours(work: str, compiler: str = "clang") -> str:
    flags = aarch64_variant_flags()
    cxx = [*OURS_CXX[compiler], *OPT, "-std=c++17", "-I" + os.path.join(ROOT, "csrc")]
    objs = []
    srcs = [("format", os.path.join(ROOT, "csrc", "quant", "format.cpp"), "-march=armv8-a"),
            ("driver", os.path.join(HERE, "arm_model", "ours_driver.cpp"), "-march=armv8-a")]
    for v in ("neon", "dotprod", "sve"):
        srcs.append((v, os.path.join(ROOT, "csrc", "kernels", "arm", f"matmul_{v}.cpp"),
                     flags[v]))
    for name, src, fl in srcs:
        obj = os.path.join(work, f"ours-{name}.o")
        run([*cxx, *fl.split(), "-c", src, "-o", obj])
        objs.append(obj)
    exe = os.path.join(work, "ours")
    run([*OURS_CXX[compiler], "-static", *objs, "-o", exe])
    return exe


def build_llama(work: str, root: str, isa: str) -> str:
    llamacpp_build.download(root)
    llamacpp_build.unpack(root)
    ggml = os.path.join(llamacpp_build.llama_src(root), "ggml")
    inc = [f"-I{ggml}/include", f"-I{ggml}/src", f"-I{ggml}/src/ggml-cpu"]
    arm = os.path.join(ggml, "src", "ggml-cpu", "arch", "arm")
    fl = LLAMA_ISA_FLAGS[isa].split()
    objs = [os.path.join(work, f"llama-{isa}-{n}.o") for n in ("quants", "repack", "driver")]
    run(["clang-19", TARGET, *OPT, *fl, *inc, "-c", os.path.join(arm, "quants.c"),
         "-o", objs[0]])
    run(["clang++-19", TARGET, *OPT, "-std=c++17", *fl, *inc,
         "-c", os.path.join(arm, "repack.cpp"), "-o", objs[1]])
    run(["clang++-19", TARGET, *OPT, "-std=c++17", "-march=armv8-a",
         "-c", os.path.join(HERE, "arm_model", "llamacpp_driver.cpp"), "-o", objs[2]])
    exe = os.path.join(work, f"llama-{isa}")
    # The two files call generic fallbacks and reference helpers (other ggml files) only on
    # paths the driver never takes: left unresolved rather than linking all of ggml.
    run(["clang++-19", TARGET, "-static", *objs, "-Wl,--unresolved-symbols=ignore-all",
         "-o", exe])
    return exe


class Disasm:
    """Address -> instruction text of a static binary, in llvm-mca-readable syntax."""

    def __init__(self, exe: str) -> None:
        out = run(["llvm-objdump-19", "-d", "--no-show-raw-insn",
                   "--mattr=+dotprod,+i8mm,+sve,+sve2,+fullfp16", exe]).stdout
        self.insn: dict[int, str] = {}
        for line in out.splitlines():
            m = re.match(r"\s*([0-9a-f]+):\s+(\S.*)$", line)
            if not m:
                continue
            text = m.group(2).split("//")[0].strip()
            # Branch / literal targets "0x4075cc <sym+0x10>" become a label llvm-mca accepts.
            text = re.sub(r"0x[0-9a-f]+ <[^>]*>", ".Ltarget", text)
            text = re.sub(r"^((?:b|bl|b\.\w+|cbn?z|tbn?z|adrp?)\s.*?)(?<!#)0x[0-9a-f]+$",
                          r"\1.Ltarget", text)
            # llvm-mca gives a call 100 cycles of latency; in the trace the callee's own
            # instructions follow, so a call is modeled as the branch it is.
            text = re.sub(r"^bl\s", "b ", text.replace("\t", " "))
            text = re.sub(r"^blr\s", "br ", text)
            self.insn[int(m.group(1), 16)] = text


def trace(exe: str, qemu_cpu: str, args: list[str], work: str) -> list[int]:
    """Addresses of the instructions executed between the two fwa_model_mark calls."""
    logf = os.path.join(work, "qemu.log")
    run(["qemu-aarch64", "-cpu", qemu_cpu, "-d", "in_asm,exec,nochain", "-D", logf, exe,
         *args])
    blocks: dict[int, list[int]] = {}
    seq: list[int] = []
    cur: Optional[list[int]] = None
    marks = 0
    with open(logf) as f:
        for line in f:
            if line.startswith("IN:"):
                cur = []
                continue
            m = re.match(r"0x([0-9a-f]+):\s", line)
            if m and cur is not None:
                cur.append(int(m.group(1), 16))
                continue
            if cur:
                blocks[cur[0]] = cur
                cur = None
            t = re.match(r"Trace \d+: 0x[0-9a-f]+ \[[0-9a-f]+/([0-9a-f]+)/", line)
            if t:
                if line.rstrip().endswith(" fwa_model_mark"):
                    marks += 1
                    continue
                if marks == 1:
                    seq.append(int(t.group(1), 16))
    os.unlink(logf)
    if marks < 2:
        raise RuntimeError(f"{exe} {args}: markers not seen in the qemu trace")
    out: list[int] = []
    for pc in seq:
        out.extend(blocks[pc])
    return out


def mca(stream: str, mcpu: str, work: str) -> int:
    path = os.path.join(work, "stream.s")
    with open(path, "w") as f:
        f.write(".Ltarget:\n" + stream)
    res = run(["llvm-mca-19", "-mtriple=aarch64-linux-gnu", f"-mcpu={mcpu}",
               "-mattr=+dotprod,+i8mm,+sve,+fullfp16", "-iterations=1",
               "-summary-view", "-instruction-info=0", "-resource-pressure=0", path])
    m = re.search(r"Total Cycles:\s+(\d+)", res.stdout)
    if not m:
        raise RuntimeError(f"llvm-mca output without a cycle count: {res.stdout[:400]}")
    return int(m.group(1))


def model_call(exe: str, dis: Disasm, qemu_cpu: str, args: list[str], weights: int,
               mcpus: list[str], work: str) -> dict[str, Any]:
    addrs = trace(exe, qemu_cpu, args, work)
    stream = "\n".join(dis.insn[a] for a in addrs) + "\n"
    groups = weights / 32
    row: dict[str, Any] = {"instructions": len(addrs),
                           "insn_per_32w": round(len(addrs) / groups, 3), "cycles_per_32w": {}}
    for mcpu in mcpus:
        row["cycles_per_32w"][mcpu] = round(mca(stream, mcpu, work) / groups, 3)
    return row


def registry_gemv_fast(core: Core) -> str:
    """The variant csrc/kernels/variants.def dispatches gemv_fast to on the core: the first
    aarch64 row whose features the core has and whose gemv_fast column is "fast"."""
    have = {"neon", "dotprod"} | ({"sve", "i8mm"} if "sve" in core.ours else set())
    with open(os.path.join(ROOT, "csrc", "kernels", "variants.def")) as f:
        for line in f:
            m = re.match(r"FWA_KERNEL_VARIANT\((\w+), (aarch64|any), ([^,]*), (\w+), (\w+),",
                         line.strip())
            if not m:
                continue
            need = {n[1:].lower() for n in re.findall(r"k[A-Z0-9]+", m.group(3))}
            if need <= have and m.group(5) == "fast":
                return m.group(1)
    return "ref"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(HERE, "results", "arm-model"))
    ap.add_argument("--k", type=int, default=2048, help="GEMV width K")
    ap.add_argument("--rows", type=int, default=16, help="GEMV output rows N")
    ap.add_argument("--llama-root", default=llamacpp_build.DEFAULT_ROOT)
    ap.add_argument("--ours-compiler", choices=sorted(OURS_CXX), default="clang",
                    help="compiler for fwassist's kernels (llama.cpp's stay on clang-19)")
    ap.add_argument("--smoke", action="store_true",
                    help="tiny shape, our dotprod 2-bit and llama.cpp Q2_K on the N1 only")
    a = ap.parse_args()
    missing = [t for t in (*TOOLS, OURS_CXX[a.ours_compiler][0]) if shutil.which(t) is None]
    if missing:
        log(f"missing {', '.join(missing)} (apt-get install llvm-19 clang-19 qemu-user): "
            "nothing modeled")
        return 2
    if a.smoke:
        a.k, a.rows = 256, 16
    t0 = time.monotonic()
    results: dict[str, Any] = {"ours": {}, "llama": {}}
    with tempfile.TemporaryDirectory(prefix="arm_model") as work:
        log(f"building fwassist's ARM kernels and the driver ({OURS_CXX[a.ours_compiler][0]})")
        ours = build_ours(work, a.ours_compiler)
        dis_ours = Disasm(ours)
        llama: dict[str, tuple[str, Disasm]] = {}
        for isa in sorted({c.llama_isa for c in CORES}):
            log(f"building llama.cpp's ARM kernels ({isa})")
            exe = build_llama(work, a.llama_root, isa)
            llama[isa] = (exe, Disasm(exe))
        cores = [c for c in CORES if not a.smoke or c.name == "neoverse-n1"]
        for core in cores:
            for v in core.ours:
                if a.smoke and v != "dotprod":
                    continue
                for bits in ((2,) if a.smoke else (4, 3, 2)):
                    key = f"{v}/{bits}/{core.qemu}"
                    log(f"ours {v} {bits}-bit on {core.name}")
                    row = model_call(ours, dis_ours, core.qemu,
                                     [v, str(bits), str(a.rows), str(a.k)], a.rows * a.k,
                                     [core.mcpu], work)
                    results["ours"].setdefault(core.name, {}).setdefault(v, {})[str(bits)] = {
                        **row, "key": key}
            exe, dis = llama[core.llama_isa]
            kernels = ["q2_K"] if a.smoke else ["q4_0", "q4_K", "q3_K", "q2_K",
                                                 core.llama_repack]
            for kname in kernels:
                log(f"llama.cpp {kname} on {core.name}")
                row = model_call(exe, dis, core.qemu, [kname, str(a.rows), str(a.k)],
                                 a.rows * a.k, [core.mcpu], work)
                results["llama"].setdefault(core.name, {})[kname] = row
    report = summarize(results, cores, a)
    report["seconds"] = round(time.monotonic() - t0, 1)
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out + ".json", "w") as f:
        json.dump(report, f, indent=1, sort_keys=True)
    text = render(report)
    with open(a.out + ".txt", "w") as f:
        f.write(text)
    print(text)
    return 0


def tool_version(tool: str) -> str:
    out = run([tool, "--version"]).stdout.splitlines()
    return next((ln.strip() for ln in out if "version" in ln.lower()), out[0] if out else "")


def summarize(results: dict[str, Any], cores: list[Core], a: argparse.Namespace
              ) -> dict[str, Any]:
    """Adds the per-core comparisons and the per-board predictions."""
    cyc: dict[str, dict[str, dict[int, float]]] = {}  # core -> path -> bits -> cycles/32w
    for core in cores:
        ours = results["ours"].get(core.name, {})
        for v, by_bits in ours.items():
            for b, row in by_bits.items():
                cyc.setdefault(core.name, {}).setdefault(v, {})[int(b)] = \
                    row["cycles_per_32w"][core.mcpu]
    comparisons = []
    for core in cores:
        chosen = registry_gemv_fast(core)
        best = None
        for v, by_bits in cyc.get(core.name, {}).items():
            total = sum(by_bits.values())
            if best is None or total < best[1]:
                best = (v, total)
        lrow = results["llama"].get(core.name, {})
        for bits in sorted({b for by in cyc.get(core.name, {}).values() for b in by}):
            peer = core.llama_repack if LLAMA_PEER[bits] == "repack" else LLAMA_PEER[bits]
            if peer not in lrow or chosen not in cyc.get(core.name, {}):
                continue
            ours_c = cyc[core.name][chosen][bits]
            lc = lrow[peer]["cycles_per_32w"][core.mcpu]
            comparisons.append({"core": core.name, "bits": bits, "dispatched": chosen,
                                "ours_cycles_per_32w": ours_c, "llama_kernel": peer,
                                "llama_cycles_per_32w": lc, "ratio": round(ours_c / lc, 3),
                                "target_le_0_8": ours_c / lc <= 0.8})
        results.setdefault("dispatch", {})[core.name] = {
            "gemv_fast": chosen, "cheapest_modeled": best[0] if best else None}
    predictions = []
    for board in BOARDS:
        bcore = next((c for c in cores if c.name == board.core), None)
        if bcore is None:
            continue
        chosen = registry_gemv_fast(bcore)
        paths: list[tuple[str, float, float]] = []  # label, bytes/32w, cycles/32w
        for bits, c32 in sorted(cyc.get(bcore.name, {}).get(chosen, {}).items(), reverse=True):
            paths.append((f"ours {chosen} {bits}-bit", bits * 4 + 2.0, c32))
        for kname, row in sorted(results["llama"].get(bcore.name, {}).items()):
            paths.append((f"llama.cpp {kname}", LLAMA_KERNELS[kname],
                          row["cycles_per_32w"][bcore.mcpu]))
        for label, nbytes, c32 in paths:
            compute_gbs = nbytes * board.ghz / c32      # bytes per ns = GB/s
            shape = (4096, 4096)
            groups = shape[0] * shape[1] / 32
            t_compute = groups * c32 / (board.ghz * 1e3)          # microseconds
            t_memory = groups * nbytes / (board.core_gbs * 1e3)
            predictions.append({
                "board": board.name, "model": board.core, "path": label,
                "bytes_per_32w": nbytes, "cycles_per_32w": c32,
                "stream_gbs_at_compute_limit": round(compute_gbs, 2),
                "core_gbs": board.core_gbs,
                "bound": "bandwidth" if compute_gbs >= board.core_gbs else "compute",
                "gemv_4096x4096_us": round(max(t_compute, t_memory), 1)})
    return {"results": results, "comparisons": comparisons, "predictions": predictions,
            "boards": [vars(b) for b in BOARDS],
            "shape": {"rows": a.rows, "k": a.k, "block": 32, "scales": "f16", "M": 1},
            "host": {"machine": platform.machine(), "python": platform.python_version()},
            "ours_compiler": OURS_CXX[a.ours_compiler][0],
            "tools": {t: tool_version(t) for t in ("clang-19", "llvm-mca-19", "qemu-aarch64",
                                                   *OURS_CXX[a.ours_compiler][:1])},
            "llama_cpp_python": llamacpp_build.LLAMA_CPP_PYTHON_VERSION}


def render(r: dict[str, Any]) -> str:
    res = r["results"]
    lines = [f"ARM model: llvm-mca-19 on the executed instruction stream (qemu) of one GEMV, "
             f"N={r['shape']['rows']} K={r['shape']['k']}, block 32, fp16 scales, M=1; "
             f"cycles (insns) per 32 weights; ours compiled by "
             f"{r.get('ours_compiler', 'clang++-19')}, llama.cpp by clang-19", ""]
    lines.append("| core | path | 4-bit | 3-bit | 2-bit |")
    lines.append("|---|---|---|---|---|")
    for core, by_v in res["ours"].items():
        for v, by_bits in by_v.items():
            cells = []
            for b in ("4", "3", "2"):
                row = by_bits.get(b)
                cells.append(f"{next(iter(row['cycles_per_32w'].values())):.2f} "
                             f"({row['insn_per_32w']:.1f})" if row else "-")
            mark = " (dispatched)" if res["dispatch"][core]["gemv_fast"] == v else ""
            lines.append(f"| {core} | ours {v}{mark} | " + " | ".join(cells) + " |")
        for k, row in res["llama"].get(core, {}).items():
            c = next(iter(row["cycles_per_32w"].values()))
            lines.append(f"| {core} | llama.cpp {k} | {c:.2f} ({row['insn_per_32w']:.1f}) "
                         "| | |")
    lines += ["", "Ours (dispatched GEMV) vs llama.cpp at the same bits (target <= 0.8):", "",
              "| core | bits | ours | llama.cpp | ratio |", "|---|---|---|---|---|"]
    for c in r["comparisons"]:
        lines.append(f"| {c['core']} | {c['bits']} | {c['dispatched']} "
                     f"{c['ours_cycles_per_32w']:.2f} | {c['llama_kernel']} "
                     f"{c['llama_cycles_per_32w']:.2f} | {c['ratio']:.2f} |")
    lines += ["", "Per-board prediction, one core (bandwidth-bound when the kernel could "
              "stream faster than the core's memory):", "",
              "| board | path | B/32w | cyc/32w | GB/s at compute limit | core GB/s | bound "
              "| 4096x4096 us |", "|---|---|---|---|---|---|---|---|"]
    for p in r["predictions"]:
        lines.append(f"| {p['board']} | {p['path']} | {p['bytes_per_32w']:.2f} | "
                     f"{p['cycles_per_32w']:.2f} | {p['stream_gbs_at_compute_limit']:.1f} | "
                     f"{p['core_gbs']:.1f} | {p['bound']} | {p['gemv_4096x4096_us']} |")
    lines += ["", "Boards:"] + [f"- {b['name']}: {b['ghz']} GHz, {b['peak_gbs']} GB/s peak, "
                                f"{b['core_gbs']} GB/s one core. {b['source']}"
                                for b in r["boards"]]
    lines.append(f"\ntools: {r['tools']}; llama-cpp-python {r['llama_cpp_python']}; "
                 f"host {r['host']['machine']}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
