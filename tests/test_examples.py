# SPDX-License-Identifier: Apache-2.0
"""The Python examples run as scripts, as a user runs them (subprocesses of this interpreter):
``examples/export_qat/export_and_diff.py`` with its built-in model, and
``examples/python/complete.py`` on a small synthetic artifact written here: with its pin, a
wrong pin, a tampered copy and no pin. About 10 s in all."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import fwassist

ROOT = Path(__file__).resolve().parents[1]
EXPORT_AND_DIFF = ROOT / "examples" / "export_qat" / "export_and_diff.py"
COMPLETE = ROOT / "examples" / "python" / "complete.py"
C_PROMPT = "#include <stdint.h>\n\nstatic uint32_t crc32(const uint8_t *p, size_t n) {\n"


def env() -> dict[str, str]:
    """This process's environment with the fwassist it imported first on PYTHONPATH, so the
    scripts run against the same package."""
    pkg = str(Path(fwassist.__file__).resolve().parents[1])
    old = os.environ.get("PYTHONPATH")
    return dict(os.environ, PYTHONPATH=pkg + (os.pathsep + old if old else ""))


def script(path: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(path), *args], input=stdin, capture_output=True,
                          text=True, env=env(), timeout=120)


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fwassist", *args], capture_output=True,
                          text=True, env=env(), timeout=60)


# ---------------------------------------------------------------------------------------------
# export_and_diff.py


def test_export_and_diff_builtin_model(tmp_path: Path) -> None:
    out = tmp_path / "out"
    r = script(EXPORT_AND_DIFF, "--out", str(out))
    assert r.returncode == 0, r.stdout + r.stderr
    a, b = out / "a.fwa", out / "b.fwa"
    assert a.is_file() and b.is_file()

    summary = json.loads((out / "summary.json").read_text())
    rows = {row["artifact"]: row for row in summary["rows"]}
    assert set(rows) == {"a.fwa", "b.fwa"}
    for path in (a, b):
        row = rows[path.name]
        v = cli("verify", str(path), "--pin", row["pin"])
        assert v.returncode == 0, v.stderr
        assert row["file_bytes"] == path.stat().st_size
        assert row["exact_max_rel_error"] is not None and row["exact_max_rel_error"] < 1e-4
        assert 0.5 <= row["fast_top1_agreement"] <= 1.0
    assert rows["a.fwa"]["pin"] != rows["b.fwa"]["pin"]
    assert rows["b.fwa"]["bits_per_param"] < rows["a.fwa"]["bits_per_param"]
    assert rows["b.fwa"]["file_bytes"] < rows["a.fwa"]["file_bytes"]

    d = json.loads((out / "diff.json").read_text())
    assert d["class"] == "quantization" and d["exit_code"] == 50
    assert (d["a"], d["b"]) == (rows["a.fwa"]["pin"], rows["b.fwa"]["pin"])
    changed = d["changes"]["quantization"]
    assert changed and {(c["a"]["quant"]["bits"], c["b"]["quant"]["bits"])
                        for c in changed} == {(4, 2)}
    assert all(".experts." in c["tensor"] for c in changed)
    assert "class     quantization (exit 50)" in (out / "diff.txt").read_text()

    for key in ("a", "b"):
        info = json.loads((out / f"inspect-{key}.json").read_text())
        assert info["pin"] == rows[f"{key}.fwa"]["pin"]
        assert info["config"]["num_experts"] == 64
        assert info["pin"] in (out / f"inspect-{key}.txt").read_text()

    table = (out / "summary.txt").read_text().splitlines()
    for name in ("a.fwa", "b.fwa"):
        assert any(line.startswith(name) and rows[name]["pin"] in line for line in table)
    assert "== summary" in r.stdout and rows["b.fwa"]["pin"] in r.stdout


# ---------------------------------------------------------------------------------------------
# complete.py


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A small synthetic model with a byte-level tokenizer (context 128 tokens) and its pin."""
    from fwassist.artifact.writer import write_artifact
    from fwassist.export.synthetic import synthetic_config, synthetic_model

    cfg = synthetic_config(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                           num_key_value_heads=2, head_dim=16, intermediate_size=64,
                           moe_intermediate_size=32, num_experts=16, num_experts_per_tok=4,
                           max_position_embeddings=128)
    path = tmp_path_factory.mktemp("complete") / "model.fwa"
    pin = write_artifact(str(path), synthetic_model(cfg, bits=4, seed=3), model_card={
        "known_limitations": ["synthetic random weights: a test fixture"]},
        options={"test": True}, evidence={"measured": False}, exporter_version="test")
    return path, pin


@pytest.fixture
def source(tmp_path: Path) -> Path:
    p = tmp_path / "crc.c"
    p.write_text(C_PROMPT, encoding="utf-8")
    return p


def test_complete_streams_with_pin(artifact: tuple[Path, str], source: Path) -> None:
    path, pin = artifact
    r = script(COMPLETE, str(source), "--model", str(path), "--pin", pin, "--max-tokens", "16",
               "--mode", "exact", "--threads", "1")
    assert r.returncode == 0, r.stderr
    assert r.stdout != ""
    assert "pin matches" in r.stderr
    assert "generated 16 tokens" in r.stderr
    for what in ("tokens/s", "TTFT", "experts activated per layer", "stop reason: max_tokens"):
        assert what in r.stderr, what


def test_complete_keeps_the_tail_of_a_long_prompt(artifact: tuple[Path, str]) -> None:
    path, pin = artifact
    r = script(COMPLETE, "-", "--model", str(path), "--pin", pin, "--max-tokens", "8",
               "--temperature", "0.8", "--top-p", "0.9", "--seed", "3", "--stop", "\\n\\n",
               stdin=C_PROMPT * 6)
    assert r.returncode == 0, r.stderr
    assert "keeping the last 120 tokens" in r.stderr
    assert "prompt 120 tokens" in r.stderr


def test_complete_refuses_a_wrong_pin(artifact: tuple[Path, str], source: Path) -> None:
    path, pin = artifact
    wrong = pin[:-1] + ("0" if pin[-1] != "0" else "1")
    r = script(COMPLETE, str(source), "--model", str(path), "--pin", wrong)
    assert r.returncode == 3, r.stderr
    assert "pin_mismatch" in r.stderr and wrong in r.stderr
    assert r.stdout == ""


def test_complete_refuses_a_tampered_copy(artifact: tuple[Path, str], source: Path,
                                          tmp_path: Path) -> None:
    path, pin = artifact
    raw = bytearray(path.read_bytes())
    data_offset = int.from_bytes(raw[24:32], "little")
    raw[data_offset + 5] ^= 0x01          # one bit of the first tensor
    bad = tmp_path / "tampered.fwa"
    bad.write_bytes(bytes(raw))
    r = script(COMPLETE, str(source), "--model", str(bad), "--pin", pin)
    assert r.returncode == 3, r.stderr
    assert "digest_mismatch" in r.stderr
    assert r.stdout == ""


def test_complete_needs_a_pin(artifact: tuple[Path, str], source: Path) -> None:
    path, _ = artifact
    r = script(COMPLETE, str(source), "--model", str(path))
    assert r.returncode == 2
    assert "--pin" in r.stderr and "bit-for-bit" in r.stderr
    r = script(COMPLETE, str(source), "--model", str(path), "--no-pin", "--max-tokens", "4")
    assert r.returncode == 0, r.stderr
    assert "WARNING: unpinned" in r.stderr
