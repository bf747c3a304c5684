# SPDX-License-Identifier: Apache-2.0
"""benchmarks/bench_paths.py: the benchmarks' shared default locations and the rewriting that
keeps one machine's absolute paths out of committed results (machine.write_results)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"

PROBE = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
import bench_paths, llamacpp_build, scale_30b, synth_30b
print(json.dumps({"llama": bench_paths.LLAMACPP_ROOT, "big": bench_paths.BIG_DIR,
                  "build_default": llamacpp_build.DEFAULT_ROOT,
                  "portable": bench_paths.portable(json.loads(sys.argv[2]))}))
"""


def probe(env: dict[str, str], data: object) -> dict[str, object]:
    base = {k: v for k, v in os.environ.items() if k not in ("FWA_LLAMACPP_ROOT", "FWA_BIG_DIR")}
    r = subprocess.run([sys.executable, "-c", PROBE, str(BENCH), json.dumps(data)],
                       env={**base, **env}, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    out: dict[str, object] = json.loads(r.stdout)
    return out


def test_defaults_are_in_the_checkout_and_ignored() -> None:
    out = probe({}, [])
    assert out["llama"] == out["build_default"] == str(BENCH / ".llamacpp")
    assert out["big"] == str(BENCH / ".big")
    for d in (BENCH / ".llamacpp", BENCH / ".big"):
        r = subprocess.run(["git", "-C", str(ROOT), "check-ignore", "-q", str(d / "x.fwa")],
                           capture_output=True, timeout=30)
        if r.returncode == 128:      # not a git checkout (an unpacked sdist)
            continue
        assert r.returncode == 0, f"{d} is not ignored by .gitignore"


def test_results_name_files_relative_to_checkout_and_locations(tmp_path: Path) -> None:
    llama, big = tmp_path / "llama", tmp_path / "big"
    data = {"dir": str(big), "model": str(big / "full-3bit.fwa"),
            "flags": [f"-DCMAKE_RUNTIME_OUTPUT_DIRECTORY={llama}/build-0.3.36/bin"],
            "command": f"python {ROOT}/benchmarks/scale_30b.py --json {ROOT}/out.json",
            "checkout": str(ROOT), "text": f"storage {big} (ext4): 1 GB/s",
            # Not under any root, or only sharing a prefix with one: unchanged.
            "other": f"{big}2/x.fwa", "outside": "/opt/models/m.fwa", "n": 1.5}
    out = probe({"FWA_LLAMACPP_ROOT": str(llama), "FWA_BIG_DIR": str(big)}, data)
    assert out["llama"] == str(llama) and out["big"] == str(big)
    assert out["build_default"] == str(llama)
    assert out["portable"] == {
        "dir": "benchmarks/.big", "model": "benchmarks/.big/full-3bit.fwa",
        "flags": ["-DCMAKE_RUNTIME_OUTPUT_DIRECTORY=benchmarks/.llamacpp/build-0.3.36/bin"],
        "command": "python benchmarks/scale_30b.py --json out.json", "checkout": ".",
        "text": "storage benchmarks/.big (ext4): 1 GB/s", "other": f"{big}2/x.fwa",
        "outside": "/opt/models/m.fwa", "n": 1.5}
