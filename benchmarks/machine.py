# SPDX-License-Identifier: Apache-2.0
"""What the benchmarks record about the machine and the checkout, shared by kernels.py and
generate.py: a DRAM read-bandwidth probe, the LLC size and the git commit."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
from typing import Any, Optional

import numpy as np

from fwassist import _core

from bench_paths import portable


def read_probe(nbytes: int, threads: tuple[int, ...], reps: int) -> dict[str, float]:
    """GB/s of _core.bench_read_bandwidth over a buffer >> LLC (streams from DRAM)."""
    buf = np.ones(nbytes, dtype=np.uint8)
    out = {}
    for t in threads:
        _core.bench_read_bandwidth(buf, t, 1)
        out[str(t)] = nbytes / statistics.median(_core.bench_read_bandwidth(buf, t, reps)) / 1e9
    return out


def llc_bytes() -> Optional[int]:
    try:
        with open("/sys/devices/system/cpu/cpu0/cache/index3/size") as f:
            text = f.read().strip()
    except OSError:
        return None
    return int(text.rstrip("KM")) * {"K": 1 << 10, "M": 1 << 20}.get(text[-1], 1)


def git_commit() -> Optional[str]:
    """HEAD, with "+dirty" when csrc/ or sdk/ has uncommitted changes."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        head = subprocess.run(["git", "-C", root, "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "csrc", "sdk"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (head + ("+dirty" if dirty else "")) or None


def write_results(out: str, payload: dict[str, Any], text: str) -> str:
    """Writes the JSON to ``out`` and the readable table beside it (``.txt``), prints the
    table; returns the table's path. Paths in both are named relative to the checkout or the
    benchmarks' cache locations (bench_paths.portable), never as this machine's absolute
    paths."""
    out = os.path.abspath(out)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump(portable(payload), f, indent=1)
    txt = os.path.splitext(out)[0] + ".txt"
    text = portable(text)
    with open(txt, "w") as f:
        f.write(text + "\n")
    print(text)
    return txt
