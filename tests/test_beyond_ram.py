# SPDX-License-Identifier: Apache-2.0
"""Experts beyond RAM from Python and the C ABI: the cgroup memory limit parsed from fake
cgroup trees, set_expert_budget("auto") sized from it, prefetch on and off giving the same
logits bits under a tiny budget with its counters moving, and the private copy of the
non-expert weights (docs/runtime.md, "Experts beyond memory")."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

import fwassist
from fwassist import memlimit


def _tree(tmp: Path, cgroup: str, files: dict[str, str], meminfo: str = "") -> tuple[str, str]:
    proc = tmp / "proc"
    (proc / "self").mkdir(parents=True)
    (proc / "self" / "cgroup").write_text(cgroup)
    (proc / "meminfo").write_text(meminfo or "MemTotal:       24683772 kB\nMemFree: 1 kB\n")
    root = tmp / "cg"
    for rel, text in files.items():
        f = root / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(text)
    return str(root), str(proc)


def test_cgroup_v1_limit_and_the_smallest_ancestor(tmp_path):
    root, proc = _tree(tmp_path, "11:cpu:/x\n4:memory:/bench/run\n1:name=systemd:/y\n", {
        "memory/memory.limit_in_bytes": "9223372036854771712\n",   # v1's "no limit"
        "memory/bench/memory.limit_in_bytes": "8589934592\n",
        "memory/bench/run/memory.limit_in_bytes": "9663676416\n",
    })
    lim = memlimit.memory_limit(root, proc)
    assert lim.cgroup and lim.bytes == 8 << 30
    assert lim.source.endswith("memory/bench/memory.limit_in_bytes")


def test_cgroup_v2_and_hybrid_unified_mount(tmp_path):
    root, proc = _tree(tmp_path, "0::/app.slice/run\n", {
        "app.slice/memory.max": "max\n", "app.slice/run/memory.max": "4294967296\n"})
    assert memlimit.memory_limit(root, proc).bytes == 4 << 30
    root2, proc2 = _tree(tmp_path / "h", "4:memory:/\n0::/job\n", {
        "memory/memory.limit_in_bytes": "9223372036854771712\n",
        "unified/job/memory.max": "6442450944\n"})
    lim = memlimit.memory_limit(root2, proc2)
    assert lim.bytes == 6 << 30 and "unified" in lim.source


def test_no_cgroup_limit_is_physical_memory_and_garbage_is_ignored(tmp_path, monkeypatch):
    root, proc = _tree(tmp_path, "4:memory:/a\n0::/a\nnot a line\n", {
        "memory/a/memory.limit_in_bytes": "lots\n", "a/memory.max": "max\n"})
    lim = memlimit.memory_limit(root, proc)
    assert not lim.cgroup and lim.bytes == 24683772 * 1024
    # The environment overrides the default paths.
    monkeypatch.setenv("FWA_CGROUP_ROOT", root)
    monkeypatch.setenv("FWA_PROC_ROOT", proc)
    assert memlimit.memory_limit() == lim
    os.remove(os.path.join(proc, "meminfo"))
    with pytest.raises(OSError, match="MemTotal"):
        memlimit.memory_limit(root, proc)


def test_auto_budget_arithmetic():
    kw = dict(expert_bytes=1000, dense_bytes=200, kv_bytes=50, headroom=100, min_bytes=80)
    assert memlimit.auto_expert_budget(2000, **kw) == 0          # every expert fits
    assert memlimit.auto_expert_budget(900, **kw) == 550         # 900 - 200 - 50 - 100
    assert memlimit.auto_expert_budget(300, **kw) == 80          # never below one layer's top-k


@pytest.fixture(scope="module")
def built(build_tiny_model):
    return build_tiny_model(bits=4)


def _decode(m: fwassist.Model, ids: list[int]) -> np.ndarray:
    with m.session(mode="fast", threads=2) as s:
        return np.concatenate([s.logits([t]) for t in ids])


def test_prefetch_same_bits_counters_and_auto_budget(built):
    path = built[0]
    rng = np.random.default_rng(3)
    ids = [int(i) for i in rng.integers(0, built[2]["vocab_size"], size=24)]
    want = _decode(fwassist.Model.load(path), ids)
    with fwassist.load_artifact(path) as a:
        block = a.expert_blocks()[0]["length"]
    k = int(built[2]["num_experts_per_tok"])
    for on in (False, True):
        m = fwassist.Model.load(path, private_weights=True)
        r0 = m.residency()
        assert r0["private_dense_bytes"] > 0 and r0["expert_bytes"] > 0
        # "auto" under a limit that leaves room for 2k experts next to the rest.
        limit = r0["private_dense_bytes"] + 4096 + (1 << 20) + 2 * k * block
        got = m.set_expert_budget("auto", kv_bytes=4096, headroom=1 << 20, limit=limit)
        assert got == 2 * k * block == m.residency()["budget_bytes"]
        m.set_expert_prefetch(on)
        assert _decode(m, ids).tobytes() == want.tobytes()
        r = m.residency()
        assert r["prefetch"] is on and r["resident_bytes"] <= r["budget_bytes"]
        if on:
            assert r["prefetch_issued"] > 0 and r["predicted"] > 0
            assert 0 <= r["predicted_routed"] <= r["predicted"]
            assert r["prefetch_useful"] + r["prefetch_wasted"] <= r["prefetch_fetched"]
        else:
            assert r["prefetch_issued"] == 0 and r["predicted"] == 0
    with pytest.raises(ValueError, match="'auto'"):
        m.set_expert_budget("half")
    # Without a limit argument: the process's own (cgroup or physical memory), which holds
    # this small model whole: unlimited.
    assert m.set_expert_budget("auto") == 0
