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


@pytest.fixture(scope="module")
def base11() -> tuple[dict, bytes]:
    """Format 1.1: with generation metadata (spec §3.9)."""
    return fx.split(fx.build(fx.small_tensors(seed=1), generation=fx.GENERATION))


def edited(base: tuple[dict, bytes], edit: Callable[[dict], Any],
           minor: Any = None) -> bytes:
    """The edited manifest, sealed again (header minor version `minor`, else the one its
    generation key implies); section digests the edit left alone are updated."""
    m, data = json.loads(json.dumps(base[0])), base[1]
    before = dict(m["sections"])
    edit(m)
    for k in fx.section_keys(m):
        if k in m["sections"] and m["sections"][k] == before.get(k):
            m["sections"][k] = fx.sha(fx.canonical(m[k]))
    if minor is None:
        return fx.assemble(m, data, fix_sections=False)
    return differential.seal(fx.canonical(m), data, minor)


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


def gen(m: dict) -> dict:
    return m["generation"]


# Format 1.1: every rule of `generation` (§3.9), and the version rules, refused by both
# readers with the spec's status.
CASES_1_1: list[tuple[str, Callable[[dict], Any], str]] = [
    ("the base 1.1 artifact", lambda m: None, "ok"),
    ("null template, bos and pad, no sources",
     lambda m: m["generation"].update(chat_template=None, bos_token_id=None, pad_token_id=None,
                                      sources={k: None for k in m["generation"]["sources"]}),
     "ok"),
    ("generation missing", lambda m: (m.pop("generation"), m["sections"].pop("generation")),
     "malformed"),
    ("generation an array", lambda m: m.update(generation=[]), "malformed"),
    ("generation null", lambda m: m.update(generation=None), "malformed"),
    ("an unknown generation key", lambda m: gen(m).update(extra=1), "malformed"),
    ("a missing generation key", lambda m: gen(m).pop("pad_token_id"), "malformed"),
    ("an unknown key before a missing one",
     lambda m: (gen(m).update(a=1), gen(m).pop("sources")), "malformed"),
    ("config.vocab_size absent", lambda m: m["config"].pop("vocab_size"), "malformed"),
    ("config.vocab_size a string", lambda m: m["config"].update(vocab_size="32"), "malformed"),
    ("bos_token_id a boolean", lambda m: gen(m).update(bos_token_id=True), "malformed"),
    ("bos_token_id negative", lambda m: gen(m).update(bos_token_id=-1), "malformed"),
    ("bos_token_id = vocab_size", lambda m: gen(m).update(bos_token_id=32), "malformed"),
    ("bos_token_id = vocab_size - 1", lambda m: gen(m).update(bos_token_id=31), "ok"),
    ("chat_template an integer", lambda m: gen(m).update(chat_template=1), "malformed"),
    ("chat_template empty", lambda m: gen(m).update(chat_template=""), "malformed"),
    ("chat_template at the cap in UTF-8 bytes",
     lambda m: gen(m).update(chat_template="é" * (128 << 10)), "ok"),
    ("chat_template one byte above the cap",
     lambda m: gen(m).update(chat_template="é" * (128 << 10) + "x"), "cap_exceeded"),
    ("chat_template above the cap before a bad eos list",
     lambda m: gen(m).update(chat_template="x" * ((256 << 10) + 1), eos_token_ids=[]),
     "cap_exceeded"),
    ("eos_token_ids an integer", lambda m: gen(m).update(eos_token_ids=1), "malformed"),
    ("eos_token_ids empty", lambda m: gen(m).update(eos_token_ids=[]), "malformed"),
    ("eos_token_ids at the cap", lambda m: (m["config"].update(vocab_size=64),
                                            gen(m).update(eos_token_ids=list(range(64)))),
     "ok"),
    ("eos_token_ids above the cap", lambda m: (m["config"].update(vocab_size=70),
                                               gen(m).update(eos_token_ids=list(range(65)))),
     "cap_exceeded"),
    ("eos count cap before an id out of range",
     lambda m: gen(m).update(eos_token_ids=list(range(65))), "cap_exceeded"),
    ("an eos id a string", lambda m: gen(m).update(eos_token_ids=["1"]), "malformed"),
    ("an eos id = vocab_size", lambda m: gen(m).update(eos_token_ids=[1, 32]), "malformed"),
    ("eos ids unsorted", lambda m: gen(m).update(eos_token_ids=[30, 1]), "malformed"),
    ("eos ids duplicated", lambda m: gen(m).update(eos_token_ids=[1, 1]), "malformed"),
    ("pad_token_id a string", lambda m: gen(m).update(pad_token_id="0"), "malformed"),
    ("pad_token_id out of range", lambda m: gen(m).update(pad_token_id=1 << 21), "malformed"),
    ("sources null", lambda m: gen(m).update(sources=None), "malformed"),
    ("sources with an unknown file",
     lambda m: gen(m)["sources"].update({"special_tokens_map.json": None}), "malformed"),
    ("sources without a file", lambda m: gen(m)["sources"].pop("chat_template.jinja"),
     "malformed"),
    ("a source digest in upper case",
     lambda m: gen(m)["sources"].update({"tokenizer_config.json": "A" * 64}), "malformed"),
    ("a source digest an integer",
     lambda m: gen(m)["sources"].update({"generation_config.json": 0}), "malformed"),
    ("sections without generation", lambda m: m["sections"].pop("generation"), "malformed"),
    ("a wrong generation section digest",
     lambda m: m["sections"].update(generation="0" * 64), "digest_mismatch"),
    ("generation checked before sections",
     lambda m: (gen(m).update(eos_token_ids=[]), m["sections"].update(config="x")),
     "malformed"),
    ("the §3.8 caps checked before generation",
     lambda m: (gen(m).update(eos_token_ids=[]), m["config"].update(num_experts=1 << 20)),
     "cap_exceeded"),
]


@pytest.mark.parametrize("what", [c[0] for c in CASES_1_1])
def test_readers_agree_on_generation_rules(base11, tmp_path, what: str):
    edit, want = next((e, w) for n, e, w in CASES_1_1 if n == what)
    assert verdicts(edited(base11, edit), tmp_path) == (want, want)


def test_generation_in_a_1_0_manifest_is_an_unknown_key(base, base11, tmp_path):
    """The header's minor version decides the key set: a 1.0 header with `generation` (and
    its section) is malformed, as is a 1.1 header without it; a 1.0 artifact stays valid."""
    blob10 = edited(base11, lambda m: m.update(format_version=[1, 0]), minor=0)
    assert verdicts(blob10, tmp_path) == ("malformed", "malformed")
    blob11 = edited(base, lambda m: m.update(format_version=[1, 1]), minor=1)
    assert verdicts(blob11, tmp_path) == ("malformed", "malformed")
    assert verdicts(edited(base, lambda m: None), tmp_path) == ("ok", "ok")
    # format_version must say the header's minor version.
    assert verdicts(edited(base11, lambda m: None, minor=0), tmp_path) == ("malformed",
                                                                          "malformed")
    # A minor version above 1 is not implemented.
    assert verdicts(edited(base11, lambda m: None, minor=2), tmp_path) == (
        "unsupported_version", "unsupported_version")


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
