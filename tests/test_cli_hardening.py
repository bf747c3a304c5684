# SPDX-License-Identifier: Apache-2.0
"""The command line fails closed (issue 14, items 8-10, 14, 15): every failure is one line with
an exit code, never a traceback; every option is checked before any work; an output is never
one of the command's inputs and an existing one is replaced only with --force; untrusted text
is escaped before it reaches a terminal; an interrupted export leaves nothing beside its
output; late or misleading errors are early and named."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np
import pytest

from artifact_fixtures import assemble, build, small_tensors, split
from fwassist.cli import main
from fwassist.textsafe import json_text, printable

ESC_CLEAR = "\x1b[2J"
RLO = "\u202e"
HOSTILE = f"evil{ESC_CLEAR}name{RLO}gpj.fwa\x9b\x07\u2066x"   # UTF-8: no lone surrogate
CARD = {"name": "tiny-test-moe", "known_limitations": ["random weights: not a useful model"]}


def fwassist(*args: str, cwd: Optional[Path] = None,
             env: Optional[dict] = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fwassist", *args], cwd=cwd,
                          capture_output=True, text=True, env=env, errors="surrogateescape")


def run_main(argv: list[str], capsys) -> tuple[int, str, str]:
    """main() in-process: (exit code, stdout, stderr)."""
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as e:  # argparse
        rc = int(e.code)
    out = capsys.readouterr()
    return rc, out.out, out.err


def assert_one_line_failure(rc: int, err: str, needle: str = "") -> None:
    assert rc != 0, err
    assert "Traceback" not in err and "internal error" not in err, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert needle.lower() in lines[0].lower(), (needle, err)


def assert_no_raw_controls(text: str) -> None:
    for ch in (ESC_CLEAR[0], RLO, "\x9b", "\x07", "\u2066", "\ud800"):
        assert ch not in text, (ch, text)


# ---------------------------------------------------------------------------------------------
# artifacts


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("artifacts")
    blob = build(small_tensors())
    (d / "good.fwa").write_bytes(blob)
    m, data = split(blob)
    m["provenance"] = {}
    (d / "empty_provenance.fwa").write_bytes(assemble(m, data))
    m, data = split(blob)
    m["provenance"] = {"source": "not an object", "exporter": [1, 2]}
    m["tokenizer"] = {"model": [], "added_tokens": 7}
    (d / "odd_shapes.fwa").write_bytes(assemble(m, data))
    m, data = split(blob)
    m["model_card"] = {"name": HOSTILE, "known_limitations": [HOSTILE]}
    m["provenance"] = {"source": {"name": HOSTILE, "sha256": HOSTILE},
                       "exporter": {"name": HOSTILE, "version": HOSTILE}}
    m["config"][HOSTILE] = HOSTILE
    m["tensors"][0]["name"] = HOSTILE
    m["evidence"] = {HOSTILE: [HOSTILE]}
    m["sbom"] = dict(m["sbom"], metadata={"component": {"name": HOSTILE}})
    (d / "hostile.fwa").write_bytes(assemble(m, data))
    (d / "empty.fwa").write_bytes(b"")
    (d / "junk.fwa").write_bytes(b"this is not an artifact\n" * 10)
    (d / "adir").mkdir()
    os.mkfifo(d / "fifo.fwa")
    return {p.name: p for p in d.iterdir()}


def test_textsafe_escapes_every_control_and_keeps_json_values():
    s = printable(HOSTILE + "\ud800")
    assert_no_raw_controls(s)
    assert "\\x1b[2J" in s and "\\u202e" in s and "\\x9b" in s and "\\ud800" in s
    assert printable("a\\x1b") == "a\\\\x1b"          # a literal backslash is not an escape
    assert printable("line\n\tnext", keep="\n\t") == "line\n\tnext"
    assert printable("plain ascii, utf-8: µ é 中文") == "plain ascii, utf-8: µ é 中文"
    obj = {HOSTILE: [HOSTILE + "\ud800", "\U000e0041", "\x7f"]}
    text = json_text(obj)
    assert_no_raw_controls(text)
    assert json.loads(text) == obj


@pytest.mark.parametrize("cmd", ["verify", "inspect", "inspect --json", "sbom"])
def test_a_valid_artifact_with_free_form_sections_is_shown(cmd, artifacts, capsys):
    """provenance {} and odd shapes of the free sections pass verify; inspect and sbom show
    them instead of raising KeyError/TypeError."""
    for name in ("empty_provenance.fwa", "odd_shapes.fwa"):
        rc, out, err = run_main([*cmd.split(), artifacts[name]], capsys)
        assert rc == 0, err
        assert "Traceback" not in err and "error" not in err


def test_diff_of_free_form_sections(artifacts, capsys):
    rc, out, err = run_main(["diff", artifacts["good.fwa"], artifacts["odd_shapes.fwa"]],
                            capsys)
    assert rc == 20 and "tokenizer" in out, err          # the tokenizer changed


def test_inspect_provenance_empty_in_a_subprocess(artifacts):
    r = fwassist("inspect", str(artifacts["empty_provenance.fwa"]))
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert "source    -" in r.stdout


@pytest.mark.parametrize("argv", [
    ["inspect", "hostile.fwa"], ["inspect", "hostile.fwa", "--json"],
    ["diff", "good.fwa", "hostile.fwa"], ["diff", "good.fwa", "hostile.fwa", "--json"],
    ["verify", "hostile.fwa"], ["sbom", "hostile.fwa"],
])
def test_untrusted_strings_are_escaped_on_the_terminal(argv, artifacts):
    args = [str(artifacts[a]) if a in artifacts else a for a in argv]
    r = fwassist(*args)
    assert r.returncode in (0, 10, 60), r.stderr      # the tensor's name changed: architecture
    assert_no_raw_controls(r.stdout + r.stderr)
    if argv[0] == "inspect" and "--json" not in argv:
        assert "\\x1b[2J" in r.stdout and "\\u202e" in r.stdout
    if "--json" in argv:
        json.loads(r.stdout)


def test_a_hostile_path_is_escaped_in_errors(tmp_path):
    r = fwassist("verify", str(tmp_path / f"missing{ESC_CLEAR}{RLO}.fwa"))
    assert r.returncode == 3
    assert_no_raw_controls(r.stderr)
    assert "\\x1b[2J" in r.stderr


HOSTILE_INPUTS = ["missing.fwa", "empty.fwa", "junk.fwa", "adir", "fifo.fwa"]


@pytest.mark.parametrize("cmd", [
    "verify {}", "verify {} --lazy", "inspect {}", "inspect {} --json", "diff {} good.fwa",
    "diff good.fwa {}", "sbom {}", "run {} --prompt x", "run {} --prompt-ids 1,2",
    "export {} -o out.fwa --no-evidence",
])
def test_every_subcommand_refuses_hostile_inputs_in_one_line(cmd, artifacts, tmp_path, capsys):
    d = artifacts["good.fwa"].parent
    for bad in HOSTILE_INPUTS:
        argv = [str(d / a) if (d / a).exists() or a == "missing.fwa" else a
                for a in cmd.format(bad).split()]
        argv = [str(tmp_path / "out.fwa") if a == "out.fwa" else a for a in argv]
        rc, out, err = run_main(argv, capsys)
        assert_one_line_failure(rc, err)
        assert rc in (1, 2, 3), (argv, rc, err)
    assert not (tmp_path / "out.fwa").exists()


def test_hostile_inputs_in_a_subprocess_give_no_traceback(artifacts):
    d = artifacts["good.fwa"].parent
    for argv in (["inspect", str(d / "junk.fwa")], ["run", str(d / "fifo.fwa"), "--prompt", "x"],
                 ["export", str(d / "adir"), "-o", str(d / "o.fwa")],
                 ["sbom", str(d / "empty.fwa")]):
        r = fwassist(*argv)
        assert_one_line_failure(r.returncode, r.stderr)


# ---------------------------------------------------------------------------------------------
# every option checked before any work


@pytest.fixture
def junk_model(artifacts) -> str:
    """A file that exists but fails verification (exit 3): an exit 2 on a command given it
    proves the option was refused before the model was loaded."""
    return str(artifacts["junk.fwa"])


RUN_OPTIONS = [
    (["--threads", "0"], "--threads"),
    (["--threads", "x"], "--threads"),
    (["--max-tokens", "-1"], "--max-tokens"),
    (["--max-tokens", "0"], "--max-tokens"),
    (["--temperature", "nan"], "--temperature"),
    (["--temperature", "-0.5"], "--temperature"),
    (["--temperature", "inf"], "--temperature"),
    (["--top-p", "0"], "--top-p"),
    (["--top-p", "1.5"], "--top-p"),
    (["--top-k", "-1"], "--top-k"),
    (["--repetition-penalty", "0"], "--repetition-penalty"),
    (["--repetition-penalty", "nan"], "--repetition-penalty"),
    (["--seed", "-1"], "--seed"),
    (["--seed", str(2**64)], "--seed"),
    (["--ctx", "-5"], "--ctx"),
    (["--kv-cache", "f8"], "--kv-cache"),
    (["--expert-budget", "-1"], "--expert-budget"),
    (["--pin", ""], "pin"),
    (["--pin", "sha256:zz"], "pin"),
    (["--stop", ""], "--stop"),
    (["--energy"], "--grid-intensity"),
    (["--energy", "--grid-intensity", "-1"], "--grid-intensity"),
    (["--energy", "--grid-intensity", "nan"], "--grid-intensity"),
    (["--energy", "--grid-intensity", "300", "--embodied-g", "-2"], "--embodied-g"),
    (["--energy", "--grid-intensity", "300", "--energy-profile", "no-such-profile"],
     "no-such-profile"),
    (["--energy", "--grid-intensity", "300", "--codecarbon-csv", "/nonexistent-dir/e.csv"],
     "does not exist"),
    (["--grid-intensity", "300"], "needs --energy"),
    (["--codecarbon-csv", "e.csv"], "needs --energy"),
]


@pytest.mark.parametrize("extra,needle", RUN_OPTIONS, ids=[" ".join(x) for x, _ in RUN_OPTIONS])
def test_run_options_are_checked_before_the_model_is_loaded(extra, needle, junk_model, capsys):
    rc, _, err = run_main(["run", junk_model, "--prompt", "x", *extra], capsys)
    assert rc == 2, err
    assert_one_line_failure(rc, err, needle)
    assert err.startswith("fwassist run: error: ")


def test_run_prompt_ids_checked_before_loading(junk_model, capsys):
    for ids in ("1,x", ",", "1.5"):
        rc, _, err = run_main(["run", junk_model, "--prompt-ids", ids], capsys)
        assert rc == 2
        assert_one_line_failure(rc, err, "--prompt-ids")


OTHER_OPTIONS = [
    (["demo", "--max-tokens", "0"], "--max-tokens"),
    (["demo", "--threads", "0"], "--threads"),
    (["demo", "--temperature", "inf"], "--temperature"),
    (["demo", "--repetition-penalty", "-1"], "--repetition-penalty"),
    (["demo", "--grid-intensity", "nan"], "--grid-intensity"),
    (["demo", "--prompt", ""], "--prompt"),
    (["demo", "--energy-profile", "no-such-profile"], "no-such-profile"),
    (["check", "--rows", "0"], "--rows"),
    (["check", "--cols", "100000000"], "--cols"),
    (["check", "--tokens", "0"], "--tokens"),
    (["check", "--threads", "0"], "--threads"),
    (["check", "--seed", "-1"], "--seed"),
    (["export", "/nonexistent-dir/m.onnx", "-o", "x.fwa"], "No such file"),
    (["sbom", "{good}", "-o", "/nonexistent-dir/bom.json"], "does not exist"),
    (["sbom", "{good}", "-o", "{good}", "--force"], "is also an input"),
    (["sbom", "{good}", "-o", "{good}"], "also an input"),
    (["verify", "{good}", "--pin", ""], "pin"),
    (["diff", "{good}"], "required"),
    (["nonsense"], "invalid choice"),
]


@pytest.mark.parametrize("argv,needle", OTHER_OPTIONS,
                         ids=[" ".join(a) for a, _ in OTHER_OPTIONS])
def test_other_options_are_checked_up_front(argv, needle, artifacts, capsys):
    good = str(artifacts["good.fwa"])
    before = artifacts["good.fwa"].read_bytes()
    rc, _, err = run_main([a.replace("{good}", good) for a in argv], capsys)
    assert rc == 2, err
    assert_one_line_failure(rc, err, needle)
    assert artifacts["good.fwa"].read_bytes() == before


def test_sbom_output_is_written_once_and_not_replaced_without_force(artifacts, tmp_path,
                                                                     capsys):
    out = tmp_path / "bom.json"
    rc, _, err = run_main(["sbom", artifacts["good.fwa"], "-o", out], capsys)
    assert rc == 0, err
    assert json.loads(out.read_text())["specVersion"] == "1.6"
    out.write_text("keep me")
    rc, _, err = run_main(["sbom", artifacts["good.fwa"], "-o", out], capsys)
    assert_one_line_failure(rc, err, "--force")
    assert out.read_text() == "keep me"
    rc, _, err = run_main(["sbom", artifacts["good.fwa"], "-o", out, "--force"], capsys)
    assert rc == 0 and json.loads(out.read_text())["specVersion"] == "1.6"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bom.json"]


# ---------------------------------------------------------------------------------------------
# the bundled model: run's outputs, logits context


@pytest.fixture(scope="module")
def tiny_coder() -> str:
    from fwassist.models import tiny_coder_path

    return str(tiny_coder_path())


def test_run_codecarbon_csv_into_a_missing_directory_fails_before_generating(tiny_coder,
                                                                             tmp_path):
    r = fwassist("run", tiny_coder, "--prompt", "int main", "--max-tokens", "4", "--energy",
                 "--grid-intensity", "300", "--codecarbon-csv", str(tmp_path / "no" / "e.csv"))
    assert r.returncode == 2
    assert_one_line_failure(r.returncode, r.stderr, "does not exist")
    assert r.stdout == ""                              # nothing was generated


def test_run_codecarbon_csv_may_not_be_the_model(tiny_coder, tmp_path):
    link = tmp_path / "model-link.fwa"
    os.symlink(tiny_coder, link)
    before = Path(tiny_coder).stat()
    r = fwassist("run", str(link), "--prompt", "x", "--energy", "--grid-intensity", "300",
                 "--codecarbon-csv", tiny_coder)
    assert_one_line_failure(r.returncode, r.stderr, "also an input")
    after = Path(tiny_coder).stat()
    assert (before.st_size, before.st_mtime_ns) == (after.st_size, after.st_mtime_ns)


def test_logits_checks_the_context_before_allocating(tiny_coder):
    import fwassist

    m = fwassist.Model.load(tiny_coder)
    with m.session(max_context=64) as s:
        with pytest.raises(ValueError, match="exceed the context of 64 tokens"):
            s.logits(np.ones(10**7, np.int64))
        s.logits([1, 2, 3])
        with pytest.raises(ValueError, match="62 tokens after 3 exceed the context of 64"):
            s.logits(np.ones(62, np.int64))


# ---------------------------------------------------------------------------------------------
# export: inputs, outputs, JSON depth, external data, dims, signals


@pytest.fixture(scope="module")
def qat_dir(tmp_path_factory) -> Path:
    from fwassist.export.qat_builder import QuantSpec, build_qat_onnx, random_weights, tiny_config

    d = tmp_path_factory.mktemp("qat")
    cfg = tiny_config()
    build_qat_onnx(str(d / "model.onnx"), random_weights(cfg, seed=3), cfg,
                   {"default": QuantSpec(pattern="qdq", bits=4, block=32)}, config_json=True)
    (d / "card.json").write_text(json.dumps(CARD))
    return d


@pytest.fixture(scope="module")
def external_dir(qat_dir, tmp_path_factory) -> Path:
    """The same model with its weights in model.onnx.data."""
    import onnx

    d = tmp_path_factory.mktemp("external")
    m = onnx.load(str(qat_dir / "model.onnx"))
    onnx.save_model(m, str(d / "model.onnx"), save_as_external_data=True,
                    all_tensors_to_one_file=True, location="model.onnx.data", size_threshold=0)
    for name in ("config.json", "card.json"):
        (d / name).write_bytes((qat_dir / name).read_bytes())
    assert (d / "model.onnx.data").stat().st_size > 0
    return d


def _snapshot(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in d.iterdir() if p.is_file()}


@pytest.mark.parametrize("target", ["model.onnx", "model.onnx.data", "config.json", "card.json"])
@pytest.mark.parametrize("force", [False, True])
def test_export_never_writes_over_its_inputs(target, force, external_dir):
    before = _snapshot(external_dir)
    r = fwassist("export", str(external_dir / "model.onnx"), "-o", str(external_dir / target),
                 "--no-evidence", "-q", *(["--force"] if force else []))
    assert r.returncode == 2, r.stderr
    assert_one_line_failure(r.returncode, r.stderr, "also an input" if force else "")
    assert _snapshot(external_dir) == before


def test_export_never_writes_over_its_input_through_a_link(qat_dir, tmp_path):
    os.link(qat_dir / "model.onnx", tmp_path / "hard.fwa")
    before = (qat_dir / "model.onnx").read_bytes()
    r = fwassist("export", str(qat_dir / "model.onnx"), "-o", str(tmp_path / "hard.fwa"),
                 "--force", "--no-evidence", "-q")
    assert_one_line_failure(r.returncode, r.stderr, "also an input")
    assert (qat_dir / "model.onnx").read_bytes() == before


def test_export_library_refuses_its_input_as_output(external_dir):
    from fwassist.export.pipeline import export_onnx

    before = _snapshot(external_dir)
    with pytest.raises(ValueError, match="also an input"):
        export_onnx(str(external_dir / "model.onnx"), str(external_dir / "model.onnx.data"),
                    evidence=False, quiet=True)
    assert _snapshot(external_dir) == before


def test_export_replaces_an_existing_output_only_with_force(qat_dir, tmp_path):
    out = tmp_path / "m.fwa"
    out.write_bytes(b"an older artifact")
    r = fwassist("export", str(qat_dir / "model.onnx"), "-o", str(out), "--no-evidence", "-q")
    assert r.returncode == 2
    assert_one_line_failure(r.returncode, r.stderr, "pass --force")
    assert out.read_bytes() == b"an older artifact"
    r = fwassist("export", str(qat_dir / "model.onnx"), "-o", str(out), "--no-evidence", "-q",
                 "--force")
    assert r.returncode == 0, r.stderr
    assert out.read_bytes()[:4] == b"\x89FWA"


def test_export_missing_model_is_named_first(tmp_path):
    from fwassist.export.pipeline import export_onnx

    with pytest.raises(ValueError, match=r"model .*missing\.onnx: No such file"):
        export_onnx(str(tmp_path / "missing.onnx"), str(tmp_path / "o.fwa"), evidence=False)
    r = fwassist("export", str(tmp_path / "missing.onnx"), "-o", str(tmp_path / "o.fwa"))
    assert_one_line_failure(r.returncode, r.stderr, "No such file")
    assert "model card" not in r.stderr


def _deep(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize("which", ["card", "config", "tokenizer"])
def test_export_refuses_deeply_nested_json_in_one_line(which, qat_dir, tmp_path):
    bad = tmp_path / f"{which}.json"
    if which == "card":
        bad.write_text('{"known_limitations": ["x"], "deep": ' + _deep(100000) + "}")
    else:
        bad.write_text('{"deep": ' + _deep(100000) + "}")
    r = fwassist("export", str(qat_dir / "model.onnx"), "-o", str(tmp_path / "o.fwa"),
                 "--no-evidence", "-q", f"--{which}", str(bad))
    assert r.returncode == 1, r.stderr
    assert_one_line_failure(r.returncode, r.stderr, "nested 100001 levels deep")
    assert not (tmp_path / "o.fwa").exists()


def test_json_depth_ignores_brackets_in_strings():
    from fwassist.export.jsonfile import loads, nesting_depth

    assert nesting_depth('{"a": "[[[[[[\\"]]]", "b": [[1]]}') == 3
    assert loads('{"s": "' + "[" * 1000 + '"}', "t") == {"s": "[" * 1000}
    assert nesting_depth(_deep(64)) == 64


def test_external_data_traversal_in_the_embedding_is_named(qat_dir, tmp_path):
    import onnx

    from fwassist.export.onnx_import import import_onnx
    from fwassist.export.tensors import OnnxImportError

    m = onnx.load(str(qat_dir / "model.onnx"))
    emb = next(t for t in m.graph.initializer if "embed" in t.name)
    n = len(emb.raw_data) or 4
    emb.ClearField("raw_data")
    del emb.float_data[:]
    emb.data_location = onnx.TensorProto.EXTERNAL
    for k, v in (("location", "../outside.bin"), ("offset", "0"), ("length", str(n))):
        e = emb.external_data.add()
        e.key, e.value = k, v
    d = tmp_path / "model"
    d.mkdir()
    (tmp_path / "outside.bin").write_bytes(b"\0" * n)
    onnx.save_model(m, str(d / "model.onnx"))
    (d / "config.json").write_bytes((qat_dir / "config.json").read_bytes())
    with pytest.raises(OnnxImportError, match="external data location escapes the model "
                                              "directory") as e:
        import_onnx(str(d / "model.onnx"))
    assert "graph structure" not in str(e.value) and emb.name in str(e.value)


def test_wrapping_int64_dims_name_the_tensor():
    import onnx

    from fwassist.export.tensors import OnnxImportError, decode_tensor

    t = onnx.TensorProto()
    t.name = "w_wrap"
    t.data_type = onnx.TensorProto.FLOAT
    t.dims.extend([2**32, 2**32])                   # 2^64: an int64 product of 0
    with pytest.raises(OnnxImportError, match=r"w_wrap: float32 has 0 values, .* needs "
                                              r"18446744073709551616"):
        decode_tensor(t, "w_wrap")
    t.raw_data = b""
    t.dims[:] = [2**62, 8]
    with pytest.raises(OnnxImportError, match="w_wrap"):
        decode_tensor(t, "w_wrap")


def _wait_for(pred, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.005)
    return False


# `fwassist export` whose evidence step repeats the real measurement on the provisional artifact
# until a signal ends the process (at most 120 s), so that the signal always lands inside that
# step: a quick export would otherwise publish its output before the signal arrives. SIGINT gets
# the disposition a Ctrl-C at a terminal meets: a shell without job control (CI scripts, `cmd &`)
# starts its children with SIGINT ignored, and Python then keeps ignoring it, as it should.
_HELD_EXPORT = """
import signal, sys, time
import fwassist.export.pipeline as pipeline
from fwassist.cli import main

measure = pipeline.measure_evidence

def held(*args, **kwargs):
    end = time.monotonic() + 120
    result = measure(*args, **kwargs)
    while time.monotonic() < end:
        result = measure(*args, **kwargs)
    return result

pipeline.measure_evidence = held
signal.signal(signal.SIGINT, signal.default_int_handler)
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL])
def test_a_signal_during_export_leaves_nothing_beside_the_output(sig, qat_dir, tmp_path):
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    env = dict(os.environ, TMPDIR=str(tmpdir))
    p = subprocess.Popen([sys.executable, "-c", _HELD_EXPORT, "export",
                          str(qat_dir / "model.onnx"), "-o", str(out_dir / "m.fwa"), "-q"],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        seen = _wait_for(lambda: any(tmpdir.glob("fwassist-evidence-*/provisional.fwa")), 120)
        assert seen, "the evidence step never started"
        p.send_signal(sig)
        _, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert list(out_dir.iterdir()) == []                     # nothing beside the output
    if sig == signal.SIGKILL:
        return                                               # only the private temp dir
    assert p.returncode in (128 + sig, 130), (p.returncode, err)
    assert "Traceback" not in err
    # Our temporary files are cleaned up (a library interrupted mid-import may leave its own).
    assert [q for q in tmpdir.iterdir() if q.name.startswith(("fwassist", ".fwassist"))] == []


# ---------------------------------------------------------------------------------------------
# energy: NaN and negative figures


def test_energy_functions_refuse_nan_and_negative():
    from fwassist import energy

    for fn in (energy.joules_to_kwh, energy.kwh_to_joules, energy.pj_per_bit_to_j_per_byte):
        for bad in (math.nan, -1.0, math.inf):
            with pytest.raises(ValueError, match="finite number >= 0"):
                fn(bad)
    act = energy.Activity(wall_s=1.0, busy_core_s=1.0, spin_core_s=0.0, parked_core_s=0.0,
                          process_cpu_s=1.0, weight_bytes_read=10, prompt_tokens=1,
                          generated_tokens=1, generated_lines=0)
    prof = energy.load_profile("generic-x86")
    for bad in (math.nan, -3.0):
        with pytest.raises(ValueError, match="measured.joules"):
            energy.sci_report(act, prof, grid_intensity_g_per_kwh=300.0,
                              measured=energy.EnergyReading(source="rapl", joules=bad))
        with pytest.raises(ValueError, match="embodied_g"):
            energy.sci_report(act, prof, grid_intensity_g_per_kwh=300.0, embodied_g=bad)


@pytest.fixture(scope="module")
def clib(tmp_path_factory):
    """The C library (FWA_C_PREFIX, else built like tests/test_capi_cffi.py)."""
    from test_capi_cffi import _install_prefix

    from fwassist._cffi import CLibrary

    env = os.environ.get("FWA_C_PREFIX")
    prefix = Path(env) if env else _install_prefix(tmp_path_factory.mktemp("capi"))
    libs = sorted(prefix.glob("lib*/libfwassist.so"))
    assert libs, f"no libfwassist.so under {prefix}"
    return CLibrary(str(libs[0]))


@pytest.mark.parametrize("field,value", [("wall_s", math.nan), ("busy_core_s", -1.0),
                                         ("spin_core_s", math.inf), ("parked_core_s", -0.5),
                                         ("process_cpu_s", math.nan),
                                         ("weight_bytes_read", -1), ("generated_tokens", -2)])
def test_c_energy_estimate_refuses_nan_and_negative_activity(field, value, clib):
    ffi, lib = clib.ffi, clib.lib
    stats = ffi.new("fwa_generation_stats*")
    lib.fwa_generation_stats_init(stats)
    stats.wall_s, stats.busy_core_s, stats.generated_tokens = 1.0, 1.0, 4
    model = ffi.new("fwa_energy_model*")
    lib.fwa_energy_model_init(model)
    model.idle_power_w, model.core_busy_power_w = 2.0, 1.0
    report = ffi.new("fwa_energy_report*")
    lib.fwa_energy_report_init(report)
    assert lib.fwa_energy_estimate(stats, model, 300.0, 0.0, report) == lib.FWA_OK
    assert report.total_j == pytest.approx(3.0)
    setattr(stats, field, value)
    st = lib.fwa_energy_estimate(stats, model, 300.0, 0.0, report)
    assert st == lib.FWA_ERR_INVALID_ARGUMENT
    assert field in clib.last_error()
