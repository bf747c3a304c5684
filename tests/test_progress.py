# SPDX-License-Identifier: Apache-2.0
"""Progress of export, verify and sbom (issue 16 item 7): shown on stderr when stderr is a
terminal (a pty here), and nothing extra without one or with -q: stdout and stderr stay what
they were."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest

from fwassist.export.qat_builder import QuantSpec, build_qat_onnx, random_weights, tiny_config
from fwassist.models import tiny_coder_path

MODEL = tiny_coder_path()


def run(args: list[str], cwd: Path, tty: bool) -> tuple[int, str, str]:
    """Runs ``python -m fwassist ARGS``; stderr is a pty when ``tty``, else a pipe. stdout is
    always a file (not a terminal)."""
    out_path = cwd / "stdout.txt"
    with open(out_path, "wb") as out:
        if not tty:
            r = subprocess.run([sys.executable, "-m", "fwassist", *args], cwd=cwd,
                               stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.PIPE,
                               timeout=300)
            return r.returncode, out_path.read_text(), r.stderr.decode()
        master, slave = pty.openpty()
        p = subprocess.Popen([sys.executable, "-m", "fwassist", *args], cwd=cwd,
                             stdin=subprocess.DEVNULL, stdout=out, stderr=slave)
        os.close(slave)
        chunks = []
        while True:
            try:
                b = os.read(master, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not b:
                break
            chunks.append(b)
        os.close(master)
        rc = p.wait(timeout=300)
    return rc, out_path.read_text(), b"".join(chunks).decode()


def _without_times(text: str) -> str:
    return "\n".join(line.split(" in ")[0] for line in text.splitlines())


def test_verify_progress_on_a_terminal_only(tmp_path):
    rc, out, err = run(["verify", MODEL], tmp_path, tty=True)
    assert rc == 0, err
    assert "fwassist verify: verifying" in err and "MiB/s)" in err, err
    mib = f"{os.path.getsize(MODEL) / (1 << 20):.1f}"
    assert f"{mib}/{mib} MiB" in err
    rc2, out2, err2 = run(["verify", MODEL], tmp_path, tty=False)
    assert rc2 == 0 and err2 == ""
    assert _without_times(out2) == _without_times(out)  # stdout unchanged by the progress
    rc3, out3, err3 = run(["verify", "-q", MODEL], tmp_path, tty=True)
    assert rc3 == 0 and err3 == ""
    assert _without_times(out3) == _without_times(out)


def test_sbom_progress_on_a_terminal_only(tmp_path):
    rc, out, err = run(["sbom", MODEL], tmp_path, tty=True)
    assert rc == 0 and "fwassist sbom: verifying" in err, err
    assert json.loads(out)["bomFormat"] == "CycloneDX"
    rc2, out2, err2 = run(["sbom", MODEL], tmp_path, tty=False)
    assert rc2 == 0 and err2 == "" and out2 == out
    rc3, out3, err3 = run(["sbom", "--quiet", MODEL], tmp_path, tty=True)
    assert rc3 == 0 and err3 == "" and out3 == out


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("qat")
    cfg = tiny_config()
    build_qat_onnx(str(d / "model.onnx"), random_weights(cfg, seed=3), cfg,
                   {"default": QuantSpec(pattern="qdq", bits=4, block=32)}, config_json=True)
    (d / "card.json").write_text(json.dumps({"known_limitations": ["random weights"]}))
    return d / "model.onnx"


def test_export_progress_on_a_terminal_only(onnx_model, tmp_path):
    rc, out, err = run(["export", str(onnx_model), "-o", "a.fwa", "--no-evidence"], tmp_path,
                       tty=True)
    assert rc == 0, err
    for phase in ("fwassist export: importing model.onnx", "tensors (", "writing a.fwa",
                  "written ", "MiB/s)", f"done: {out.strip()}"):
        assert phase in err, (phase, err)
    rc2, out2, err2 = run(["export", str(onnx_model), "-o", "b.fwa", "--no-evidence"],
                          tmp_path, tty=False)
    assert rc2 == 0 and err2 == "" and out2 == out  # the pin on stdout, nothing else
    rc3, out3, err3 = run(["export", str(onnx_model), "-o", "c.fwa", "--no-evidence", "-q"],
                          tmp_path, tty=True)
    assert rc3 == 0 and err3 == "" and out3 == out
