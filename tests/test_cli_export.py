# SPDX-License-Identifier: Apache-2.0
"""End to end from the command line: builder QAT ONNX → ``fwassist export`` → ``verify --pin``,
``inspect``, ``diff``, ``sbom``; a refused export leaves no file; export is deterministic."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fwassist.export.qat_builder import QuantSpec, build_qat_onnx, random_weights, tiny_config

CARD = {"name": "tiny-test-moe", "known_limitations": ["random weights: not a useful model"]}


def fwassist(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fwassist", *args], cwd=cwd,
                          capture_output=True, text=True)


@pytest.fixture(scope="module")
def qat_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("qat")
    cfg = tiny_config()
    quant = {"default": QuantSpec(pattern="qdq", bits=4, block=32),
             "expert_up": QuantSpec(pattern="qcdq", bits=3, block=32),
             "expert_down": QuantSpec(pattern="qcdq", bits=2, block=32)}
    build_qat_onnx(str(d / "model.onnx"), random_weights(cfg, seed=1), cfg, quant,
                   config_json=True)
    (d / "card.json").write_text(json.dumps(CARD))
    return d


def test_export_verify_inspect_diff_sbom(qat_dir: Path, tmp_path: Path):
    r = fwassist("export", str(qat_dir / "model.onnx"), "-o", str(tmp_path / "m.fwa"),
                 cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    pin = r.stdout.strip()
    assert pin.startswith("sha256:") and len(pin) == 71
    assert r.stderr == ""  # progress only on a terminal (tests/test_progress.py)
    raw = (tmp_path / "m.fwa").read_bytes()
    n = int.from_bytes(raw[16:24], "little")
    assert pin == "sha256:" + hashlib.sha256(raw[128:128 + n]).hexdigest()

    r = fwassist("verify", "m.fwa", "--pin", pin, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    bad_pin = pin[:-1] + ("0" if pin[-1] != "0" else "1")
    r = fwassist("verify", "m.fwa", "--pin", bad_pin, cwd=tmp_path)
    assert r.returncode == 3 and "pin_mismatch" in r.stderr

    r = fwassist("inspect", "m.fwa", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["config"]["num_experts"] == 8

    manifest = json.loads(raw[128:128 + n])
    bits = {t["name"]: t["quant"]["bits"] for t in manifest["tensors"] if t["quant"]}
    assert bits["model.layers.0.mlp.experts.0.up_proj.weight"] == 3
    assert bits["model.layers.1.mlp.experts.7.down_proj.weight"] == 2
    assert bits["model.layers.0.self_attn.q_proj.weight"] == 4
    ev = manifest["evidence"]
    assert ev["measured"] is True
    for p in ev["probes"]:
        assert float(p["max_rel_error"]) < 1e-5 and float(p["top1_agreement"]) == 1.0

    r = fwassist("diff", "m.fwa", "m.fwa", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    r = fwassist("sbom", "m.fwa", cwd=tmp_path)
    assert r.returncode == 0 and json.loads(r.stdout)["specVersion"] == "1.6"

    # Tamper with one data byte: verify fails and names the problem.
    data = bytearray(raw)
    data[-4096 - 100] ^= 0x10
    (tmp_path / "t.fwa").write_bytes(bytes(data))
    r = fwassist("verify", "t.fwa", cwd=tmp_path)
    assert r.returncode == 3 and ("digest_mismatch" in r.stderr or "padding" in r.stderr)


def test_export_is_deterministic_and_refusal_leaves_nothing(qat_dir: Path, tmp_path: Path):
    env = dict(os.environ, TZ="Asia/Kolkata", LC_ALL="C", PYTHONHASHSEED="123")
    outs = []
    for i, e in enumerate((None, env)):
        out = tmp_path / f"a{i}.fwa"
        r = subprocess.run([sys.executable, "-m", "fwassist", "export", "-q",
                            str(qat_dir / "model.onnx"), "-o", str(out)],
                           capture_output=True, text=True, env=e)
        assert r.returncode == 0, r.stderr
        outs.append(out.read_bytes())
    assert outs[0] == outs[1]

    (tmp_path / "bad_card.json").write_text(json.dumps({"known_limitations": []}))
    r = fwassist("export", str(qat_dir / "model.onnx"), "-o", "x.fwa", "--card",
                 str(tmp_path / "bad_card.json"), cwd=tmp_path)
    assert r.returncode == 1 and "known_limitations" in r.stderr
    assert not (tmp_path / "x.fwa").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("x")] == []
