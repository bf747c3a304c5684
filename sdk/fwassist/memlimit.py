# SPDX-License-Identifier: Apache-2.0
"""The memory limit the process runs under, and the expert budget that fits in it.

``memory_limit()`` reads the process's cgroup from ``/proc/self/cgroup`` and the limit of that
cgroup and of every ancestor (the smallest applies): cgroup v1 ``memory.limit_in_bytes`` under
the ``memory`` controller's mount, cgroup v2 ``memory.max`` (``max``: none) under the unified
mount (``/sys/fs/cgroup``, or ``/sys/fs/cgroup/unified`` on hybrid hosts). Without a cgroup
limit the physical memory (``MemTotal`` of ``/proc/meminfo``) is the limit. The paths are
parameters (``FWA_CGROUP_ROOT`` / ``FWA_PROC_ROOT`` override the defaults) so the parsing can be
tested on fake files.

``auto_expert_budget`` sizes the expert residency: limit minus the non-expert weights minus
the KV caches minus headroom (the process itself, activations, the page cache the reads pass
through), never below one layer's top-k experts, 0 (unlimited) when every expert fits.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

# cgroup v1 reports "no limit" as a huge page-aligned number (LONG_MAX rounded down).
_V1_UNLIMITED = 1 << 60


@dataclass(frozen=True)
class MemoryLimit:
    bytes: int        # the limit in force
    source: str       # the file it came from
    cgroup: bool      # False: no cgroup limit, physical memory


def _read(path: str) -> Optional[str]:
    try:
        with open(path, encoding="ascii") as f:
            return f.read().strip()
    except (OSError, UnicodeDecodeError):
        return None


def _ancestors(rel: str) -> list[str]:
    """"/a/b" -> ["/a/b", "/a", "/"]."""
    parts = [p for p in rel.split("/") if p]
    return ["/" + "/".join(parts[:i]) for i in range(len(parts), -1, -1)]


def _parse_limit(text: Optional[str], v1: bool) -> Optional[int]:
    if text is None or text == "max":
        return None
    try:
        n = int(text)
    except ValueError:
        return None
    if n <= 0 or (v1 and n >= _V1_UNLIMITED):
        return None
    return n


def memory_limit(cgroup_root: Optional[str] = None,
                 proc_root: Optional[str] = None) -> MemoryLimit:
    """The memory limit of this process (see the module docstring)."""
    root = cgroup_root or os.environ.get("FWA_CGROUP_ROOT") or "/sys/fs/cgroup"
    proc = proc_root or os.environ.get("FWA_PROC_ROOT") or "/proc"
    best: Optional[tuple[int, str]] = None

    def consider(path: str, v1: bool) -> None:
        nonlocal best
        n = _parse_limit(_read(path), v1)
        if n is not None and (best is None or n < best[0]):
            best = (n, path)

    for line in (_read(os.path.join(proc, "self", "cgroup")) or "").splitlines():
        fields = line.split(":", 2)
        if len(fields) != 3:
            continue
        _, controllers, rel = fields
        if "memory" in controllers.split(","):
            for a in _ancestors(rel):
                consider(os.path.join(root, "memory", a.lstrip("/"), "memory.limit_in_bytes"),
                         True)
        elif controllers == "":
            for base in (root, os.path.join(root, "unified")):
                for a in _ancestors(rel):
                    consider(os.path.join(base, a.lstrip("/"), "memory.max"), False)
    if best is not None:
        return MemoryLimit(best[0], best[1], True)
    meminfo = os.path.join(proc, "meminfo")
    for line in (_read(meminfo) or "").splitlines():
        if line.startswith("MemTotal:"):
            return MemoryLimit(int(line.split()[1]) * 1024, meminfo, False)
    raise OSError(f"no memory limit found: neither a cgroup limit nor MemTotal in {meminfo}")


def auto_expert_budget(limit: int, *, expert_bytes: int, dense_bytes: int, kv_bytes: int,
                       headroom: int, min_bytes: int) -> int:
    """The expert budget under ``limit`` bytes: 0 (unlimited) when every expert fits, else
    limit - dense - KV - headroom, at least ``min_bytes`` (one layer's top-k experts, which a
    forward pass pins at once)."""
    room = limit - dense_bytes - kv_bytes - headroom
    if room >= expert_bytes:
        return 0
    return max(room, min_bytes)
