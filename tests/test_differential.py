# SPDX-License-Identifier: Apache-2.0
"""The C++ reader (fwassist.load_artifact) and the Python verifier (fwassist.artifact.pyverify)
reach the same verdict: on each disagreement found so far (by the review and by
tests/fuzz/differential.py), and on a short differential fuzz run (FWA_DIFF_SECONDS, default
15 s; tests/fuzz/run_fuzz.sh runs it longer)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Callable

import pytest

import artifact_fixtures as fx

sys.path.insert(0, str(Path(__file__).resolve().parent / "fuzz"))
import differential  # noqa: E402


@pytest.fixture(scope="module")
def base() -> tuple[dict, bytes]:
    return fx.split(fx.build(fx.small_tensors(seed=1)))


def edited(base: tuple[dict, bytes], edit: Callable[[dict], Any]) -> bytes:
    """The edited manifest, sealed again; section digests the edit left alone are updated."""
    m, data = json.loads(json.dumps(base[0])), base[1]
    before = dict(m["sections"])
    edit(m)
    for k in fx.SECTION_KEYS:
        if m["sections"][k] == before[k]:
            m["sections"][k] = fx.sha(fx.canonical(m[k]))
    return fx.assemble(m, data, fix_sections=False)


def tensor(m: dict, i: int = 0) -> dict:
    return m["tensors"][i]


def nest(n: int, bottom: Any = 0) -> Any:
    for _ in range(n):
        bottom = [bottom]
    return bottom


# (what, edit of the manifest, expected status of both readers). The manifest is one
# container, evidence a second: nest(62) under it makes 64 in all.
CASES: list[tuple[str, Callable[[dict], Any], str]] = [
    ("64 nested containers with a value at the bottom",
     lambda m: m["evidence"].update(deep=nest(62)), "ok"),
    ("65 nested containers", lambda m: m["evidence"].update(deep=nest(63)), "cap_exceeded"),
    ("known_limitations holding an empty string",
     lambda m: m["model_card"].update(known_limitations=["a", ""]), "malformed"),
    ("requires.kernel_layout true",
     lambda m: m["requires"].update(kernel_layout=True), "malformed"),
    ("format_version [1, false]", lambda m: m.update(format_version=[1, False]), "malformed"),
    ("requires before the top-level keys",
     lambda m: (m.update(extra=1), m["requires"].update(kernel_layout=2)), "incompatible"),
    ("config without architecture", lambda m: m["config"].pop("architecture"), "malformed"),
    ("quant scale not implemented",
     lambda m: next(t for t in m["tensors"] if t["quant"])["quant"].update(scale="f8"),
     "incompatible"),
    ("quant bits not implemented",
     lambda m: next(t for t in m["tensors"] if t["quant"])["quant"].update(bits=5),
     "incompatible"),
    ("rank 0", lambda m: tensor(m).update(shape=[]), "malformed"),
    ("dimension 0 before a dimension above the cap",
     lambda m: tensor(m).update(shape=[0, 1 << 32]), "malformed"),
    ("layer 2^31", lambda m: tensor(m).update(layer=1 << 31), "malformed"),
    ("dtype an object", lambda m: tensor(m).update(dtype={}), "malformed"),
    ("a section digest that is not hex",
     lambda m: m["sections"].update(config="x" * 64), "malformed"),
    ("config.vocab_size above the cap",
     lambda m: m["config"].update(vocab_size=(1 << 21) + 1), "cap_exceeded"),
    ("tokenizer id above the cap",
     lambda m: m.update(tokenizer={"model": {"vocab": {"a": 1 << 21}}}), "cap_exceeded"),
    ("tokenizer id of the wrong type (the tokenizer's to refuse)",
     lambda m: m.update(tokenizer={"model": {"vocab": {"a": "x"}}}), "ok"),
]


def verdicts(blob: bytes, tmp_path: Path, lazy: bool = False) -> tuple[str, str]:
    p = tmp_path / "case.fwa"
    p.write_bytes(blob)
    return differential.native_verdict(blob, lazy)[0], differential.python_verdict(str(p),
                                                                                 lazy)[0]


@pytest.mark.parametrize("what", [c[0] for c in CASES])
def test_readers_agree_on_past_disagreements(base, tmp_path, what: str):
    edit, want = next((e, w) for n, e, w in CASES if n == what)
    assert verdicts(edited(base, edit), tmp_path) == (want, want)


def raw_manifest(base: tuple[dict, bytes]) -> bytes:
    return fx.canonical(base[0])


@pytest.mark.parametrize("deep_first", [True, False])
def test_the_first_fault_in_document_order_decides(base, tmp_path, deep_first: bool):
    """A nesting cap and a syntax error in one manifest: the one at the lower offset wins in
    both readers (the Python verifier once reported the syntax error first)."""
    raw = raw_manifest(base)
    # A 70-deep value as the first member of config ("0deep" sorts before "architecture").
    i = raw.index(b'"config":{') + len(b'"config":{')
    bad = raw[:i] + b'"0deep":' + b"[" * 70 + b"0" + b"]" * 70 + b"," + raw[i:]
    if deep_first:
        bad = bad[:-1] + b" }"
    else:
        bad = bad[:1] + b" " + bad[1:]
    want = "cap_exceeded" if deep_first else "malformed"
    assert verdicts(differential.seal(bad, base[1]), tmp_path) == (want, want)


def test_header_data_length_checked_before_the_file_size(base, tmp_path):
    blob = bytearray(fx.build(fx.small_tensors(seed=1)))
    blob[32:40] = (int.from_bytes(blob[32:40], "little") - 1).to_bytes(8, "little")
    blob[40:48] = (int.from_bytes(blob[40:48], "little") - 1).to_bytes(8, "little")
    assert verdicts(bytes(blob), tmp_path) == ("malformed", "malformed")


def test_short_differential_fuzz_run_finds_no_disagreement():
    seconds = float(os.environ.get("FWA_DIFF_SECONDS", "15"))
    seed = int(os.environ.get("FWA_DIFF_SEED", "20261206"))
    findings = differential.run(seconds, seed, None, max_findings=5, log=lambda s: None)
    assert not findings, "\n".join(why for _, why in findings)


def test_the_fuzzer_sees_a_planted_disagreement(base, tmp_path, monkeypatch):
    """The oracle can fail: a Python verifier that accepts every manifest is caught."""
    from fwassist.artifact import pyverify

    monkeypatch.setattr(pyverify, "_check_declared_sizes", lambda m: None)
    blob = edited(base, lambda m: m["config"].update(num_experts=1 << 20))
    assert differential.compare(blob, str(tmp_path / "x.fwa"), False) is not None
