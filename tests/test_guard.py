# SPDX-License-Identifier: Apache-2.0
"""The decode-time code guard (csrc/model/guard.h, fwassist.guard, docs/code-policy.md):
identifier boundaries, patterns split across tokens and between prompt and output, the
all-masked stop, bit-identity when it never intervenes, the C ABI, and the banned sets over
the bundled model's real vocabulary checked against an independent Python reference (the
tokenizer.json vocabulary byte-decoded here, a regular expression)."""

from __future__ import annotations

import json
import os
import random
import re
from pathlib import Path

import pytest

import fwassist
from fwassist.codecheck import BANNED_CALLS, POLICIES, PolicyError, policy_from_dict
from fwassist.export.synthetic import bytes_to_unicode
from fwassist.guard import CodePolicy, CompiledPolicy, compile_policy
from fwassist.models import TINY_CODER_PIN, tiny_coder_path

# The reference: a banned call at an identifier boundary, whitespace, then "(".
REF = re.compile(rb"(?<![A-Za-z0-9_\x80-\xff])(" + b"|".join(w.encode() for w in BANNED_CALLS)
                 + rb")[ \t\n\r\v\f]*\(")
# Prompts the bundled model completes with a banned call when unguarded (greedy, penalty 1.15):
# "strcat(" in the output (token 31; the policy-tuned model no longer writes one unprompted, so
# the prompt shows it strcpy first); "s" + "printf(" split between the prompt and the output.
COPY_PROMPT = ("static void set_name(struct device *dev, const char *name)\n{\n"
               "    strcpy(dev->name, name);\n}\n\n"
               "static void set_label(struct device *dev, const char *label)\n{\n    str")
SPLIT_PROMPT = "static void log_value(char *out, int value)\n{\n    s"


@pytest.fixture(scope="module")
def model() -> fwassist.Model:
    return fwassist.Model.load(tiny_coder_path(), pin=TINY_CODER_PIN)


@pytest.fixture(scope="module")
def vocab_bytes(model) -> list[bytes]:
    """Each id's bytes from tokenizer.json, decoded here (GPT-2 bytes_to_unicode inverted),
    independently of the C++ tokenizer; special tokens add nothing to the text."""
    tj = json.loads(model._native.tokenizer_json())
    char_byte = {c: b for b, c in bytes_to_unicode().items()}
    out = [b""] * model.vocab_size
    for tok, i in tj["model"]["vocab"].items():
        out[i] = bytes(char_byte[ch] for ch in tok)
    for a in tj["added_tokens"]:
        out[a["id"]] = b"" if a["special"] else a["content"].encode()
    return out


def _matches(data: bytes, after: int) -> list[bytes]:
    return [m.group(0) for m in REF.finditer(data) if m.end() > after]


def test_identifier_boundaries(model):
    cp = compile_policy(model, "default")
    assert cp.feed(b"x = gets(")[1] == "gets"
    assert cp.feed(b"gets (")[1] == "gets"
    assert cp.feed(b"\tgets \n\t(buf)")[1] == "gets"
    assert cp.feed(b"(char*)strcpy(d, s)")[1] == "unbounded-copy"
    assert cp.feed(b"if (!system(cmd))")[1] == "command-execution"
    for text in (b"my_gets(", b"getsx(", b"1gets(", b"gets", b"gets x(", b"gets;(", b"fgets(",
                 b"\xc3\xa9gets(", b"strcpy_s(", b"n = atoi_safe(s)"):
        assert cp.feed(text)[1] is None, text


def test_patterns_split_across_tokens_and_states(model, vocab_bytes):
    cp = compile_policy(model, "default")
    s, rule = cp.feed(b"    strc")
    assert rule is None
    s, rule = cp.feed(b"py", s)
    assert rule is None
    s, rule = cp.feed(b"  ", s)
    assert rule is None
    assert cp.feed(b"(", s)[1] == "unbounded-copy"
    assert cp.feed(b"y(", s)[1] is None          # strcpy  y( is no call of strcpy
    # Every token that would complete the call from here is banned, and only those.
    banned = set(cp.banned(s))
    assert banned and all(cp.feed(vocab_bytes[i], s)[1] for i in banned)
    assert all(vocab_bytes[i].lstrip(b" \t\n\r\v\f").startswith(b"(") for i in banned)


def test_policy_selection_follows_the_codecheck_rules():
    assert CodePolicy.from_policy("default").calls == dict(sorted(BANNED_CALLS.items()))
    no_atoi = policy_from_dict({"format": "fwassist-code-policy/1",
                                "rules": {"atoi-family": {"enabled": False}}})
    calls = CodePolicy.from_policy(no_atoi).calls
    assert "atoi" not in calls and calls["gets"] == "gets"
    assert CodePolicy.from_policy(POLICIES["safety"]).calls == CodePolicy.from_policy("default").calls
    with pytest.raises(fwassist.Error):
        CodePolicy({"": "gets"})


def test_bad_patterns_are_refused_naming_the_problem():
    with pytest.raises(PolicyError, match="pattern 0: a call pattern must be an ASCII C identifier"):
        CompiledPolicy.for_vocabulary(CodePolicy({"get s": "gets"}), [b"a"])
    with pytest.raises(PolicyError, match="longer than 256 bytes"):
        CompiledPolicy.for_vocabulary(CodePolicy({}, {"x" * 300: "r"}), [b"a"])


def test_guard_stops_a_banned_call_in_the_output(model):
    with model.session() as s:
        plain = s.generate(COPY_PROMPT, max_tokens=40, repetition_penalty=1.15, stop_ids=())
        assert _matches((COPY_PROMPT + plain.text).encode(), len(COPY_PROMPT)) == [b"strcat("]
        g = s.generate(COPY_PROMPT, max_tokens=40, repetition_penalty=1.15, stop_ids=(),
                       policy="default")
    assert _matches((COPY_PROMPT + g.text).encode(), len(COPY_PROMPT)) == []
    iv = g.stats["interventions"]
    assert [x["rule"] for x in iv] == ["unbounded-copy"]
    p = iv[0]["position"]
    # Up to the intervention the two generations are the same tokens.
    assert g.token_ids[:p] == plain.token_ids[:p] and g.token_ids[p] != plain.token_ids[p]
    assert plain.token_ids[p] == iv[0]["token"]


def test_pattern_split_between_prompt_and_output(model):
    with model.session() as s:
        plain = s.generate(SPLIT_PROMPT, max_tokens=24, repetition_penalty=1.15, stop_ids=())
        assert plain.text.startswith("printf(")   # "s" + "printf(": sprintf( across the two
        g = s.generate(SPLIT_PROMPT, max_tokens=24, repetition_penalty=1.15, stop_ids=(),
                       policy="default")
    assert g.stats["interventions"][0]["position"] == 1
    assert _matches((SPLIT_PROMPT + g.text).encode(), 0) == []


def test_bit_identical_when_the_guard_never_intervenes(model):
    prompts = ("int ring_next(int i, int size)\n{\n", "/* CRC-8 */\nstatic uint8_t crc8(",
               "void uart_init(void)\n{\n    ")
    configs = ({}, {"temperature": 0.8, "seed": 3}, {"temperature": 1.0, "top_k": 40, "seed": 5},
               {"temperature": 0.9, "top_p": 0.9, "seed": 7, "repetition_penalty": 1.1})
    checked = 0
    with model.session() as a, model.session() as b:
        for prompt in prompts:
            for kw in configs:
                g0 = a.generate(prompt, max_tokens=32, stop_ids=(), **kw)
                g1 = b.generate(prompt, max_tokens=32, stop_ids=(), policy="default", **kw)
                if g1.stats["interventions"]:
                    continue
                checked += 1
                assert g1.token_ids == g0.token_ids and g1.text == g0.text
                assert a.tokens == b.tokens
                la, lb = a.logits([13]), b.logits([13])
                assert la.tobytes() == lb.tobytes()
    assert checked >= 8


def test_everything_masked_stops_with_reason_policy(model):
    # Every token's bytes end in "x(" after an "x" call word: each one completes a banned call.
    cp = CompiledPolicy.for_vocabulary(CodePolicy({"x": "r"}), [b" x("] * model.vocab_size)
    with model.session() as s:
        g = s.generate("int main(void)", max_tokens=8, stop_ids=(), policy=cp)
    assert g.stop_reason == "policy" and g.token_ids == [] and g.text == ""
    assert [(x["rule"], x["position"]) for x in g.stats["interventions"]] == [("r", 0)]


def test_policy_for_another_vocabulary_is_refused(model):
    cp = CompiledPolicy.for_vocabulary("default", [b"a", b"b"])
    with model.session() as s, pytest.raises(ValueError, match="vocabulary of 2"):
        s.generate("int", policy=cp)
    with model.session() as s, pytest.raises(fwassist.Error, match="unknown policy"):
        s.generate("int", policy="nonesuch")


def test_banned_sets_match_the_python_reference_on_the_real_vocabulary(model, vocab_bytes):
    """For contexts reached by random generations, the guard's banned set from the context's
    state equals the tokens whose bytes make REF match past the end of the context."""
    cp = compile_policy(model, "default")
    rng = random.Random(20)
    contexts = [COPY_PROMPT.encode(), SPLIT_PROMPT.encode(), b"x = gets  \n", b"  atoi"]
    with model.session() as s:
        for k in range(6):
            prompt = rng.choice([COPY_PROMPT, SPLIT_PROMPT, "int f(char *d)\n{\n    "])
            g = s.generate(prompt, max_tokens=24, temperature=1.0, seed=k, stop_ids=(),
                           policy="default")
            data = prompt.encode() + b"".join(vocab_bytes[t] for t in g.token_ids)
            assert _matches(data, len(prompt.encode())) == []   # 0 violations with the guard
            cut = rng.randrange(len(prompt), len(data) + 1)
            contexts.append(data[:cut])
    for ctx in contexts:
        state, _ = cp.feed(ctx)
        got = set(cp.banned(state))
        want = {i for i, b in enumerate(vocab_bytes) if b and _matches(ctx + b, len(ctx))}
        assert got == want, ctx[-40:]
    assert any(cp.banned(cp.feed(c)[0]) for c in contexts)


def test_c_abi_policy(model, tmp_path_factory):
    from test_capi_cffi import _install_prefix

    from fwassist._cffi import CLibrary

    env = os.environ.get("FWA_C_PREFIX")
    prefix = Path(env) if env else _install_prefix(tmp_path_factory.mktemp("guard-capi"))
    c = CLibrary(str(sorted(prefix.glob("lib*/libfwassist.so"))[0]))
    ffi, lib = c.ffi, c.lib
    with c.open_file(tiny_coder_path(), pin=TINY_CODER_PIN) as m, m.session() as s:
        words = [ffi.new("char[]", w.encode()) for w in BANNED_CALLS]
        rules = sorted(set(BANNED_CALLS.values()))
        rule_strs = [ffi.new("char[]", r.encode()) for r in rules]
        pats = ffi.new("fwa_policy_pattern[]", len(words))
        for i, (w, r) in enumerate(zip(words, BANNED_CALLS.values())):
            pats[i].text, pats[i].kind, pats[i].rule = w, lib.FWA_PATTERN_CALL, rules.index(r)
        rule_arr = ffi.new("char*[]", rule_strs)
        out = ffi.new("fwa_policy**")
        c.check("fwa_policy_compile", lib.fwa_policy_compile(m.handle, pats, len(words), rule_arr,
                                                              len(rules), out))
        policy = out[0]
        # A bad pattern: a clear status, nothing allocated for the caller.
        bad = ffi.new("fwa_policy_pattern[]", 1)
        bad[0].text, bad[0].kind, bad[0].rule = words[0], lib.FWA_PATTERN_CALL, 99
        assert lib.fwa_policy_compile(m.handle, bad, 1, rule_arr, len(rules), out) == \
            lib.FWA_ERR_INVALID_ARGUMENT
        assert b"rule index 99" in ffi.string(lib.fwa_last_error())

        def run(with_policy: bool) -> tuple[bytes, int, list[tuple[int, int]]]:
            params = ffi.new("fwa_generate_params*")
            lib.fwa_generate_params_init(params)
            params.max_tokens = 40
            params.sampling.repetition_penalty = 1.15
            iv = ffi.new("fwa_intervention[]", 4)
            if with_policy:
                params.policy = policy
                params.interventions = iv
                params.interventions_capacity = 4
            stats = ffi.new("fwa_generation_stats*")
            lib.fwa_generation_stats_init(stats)
            pieces: list[bytes] = []

            @ffi.callback("fwa_token_callback")
            def cb(user, token, piece, n):  # type: ignore[no-untyped-def]
                pieces.append(bytes(ffi.buffer(piece, n)) if n else b"")
                return 0

            text = COPY_PROMPT.encode()
            c.check("fwa_generate_text", lib.fwa_generate_text(s.handle, text, len(text), params,
                                                               cb, ffi.NULL, stats))
            n = int(stats.interventions)
            return (b"".join(pieces), n,
                    [(int(iv[i].rule), int(iv[i].position)) for i in range(min(n, 4))])

        plain, n0, _ = run(False)
        guarded, n1, iv = run(True)
        assert n0 == 0 and _matches(COPY_PROMPT.encode() + plain, len(COPY_PROMPT))
        assert n1 == 1 and iv[0][0] == rules.index("unbounded-copy")
        assert _matches(COPY_PROMPT.encode() + guarded, len(COPY_PROMPT)) == []
        with model.session() as py:
            g = py.generate(COPY_PROMPT, max_tokens=40, repetition_penalty=1.15,
                            stop_ids=(), policy="default")
        assert guarded.decode() == g.text and iv[0][1] == g.stats["interventions"][0]["position"]
        lib.fwa_policy_free(policy)
        lib.fwa_policy_free(policy)   # twice: ignored
        params = ffi.new("fwa_generate_params*")
        lib.fwa_generate_params_init(params)
        params.policy = policy
        text = b"int"
        assert lib.fwa_generate_text(s.handle, text, 3, params, ffi.NULL, ffi.NULL, ffi.NULL) == \
            lib.FWA_ERR_BAD_HANDLE


def test_cli_run_policy_reports_interventions():
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "fwassist", "run", tiny_coder_path(), "--prompt", COPY_PROMPT,
           "--max-tokens", "40", "--repetition-penalty", "1.15"]
    plain = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    guarded = subprocess.run(cmd + ["--policy", "default"], capture_output=True, text=True,
                             timeout=300)
    assert plain.returncode == 0 and guarded.returncode == 0, guarded.stderr
    assert _matches((COPY_PROMPT + plain.stdout).encode(), len(COPY_PROMPT)) == [b"strcat("]
    assert _matches((COPY_PROMPT + guarded.stdout).encode(), len(COPY_PROMPT)) == []
    assert "policy default: 1 intervention; token 31: unbounded-copy" in guarded.stderr
    bad = subprocess.run(cmd + ["--policy", "nonesuch"], capture_output=True, text=True,
                         timeout=300)
    assert bad.returncode == 2 and "unknown policy 'nonesuch'" in bad.stderr


def test_demo_shows_the_guard_before_and_after():
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "fwassist", "demo", "--max-tokens", "4"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    guard = r.stderr[r.stderr.index("code guard: policy default"):]
    assert guard.count("writes strcat(") == 1 and guard.count("writes sprintf(") == 1
    assert guard.count("no banned call; 1 intervention: token") == 2
    assert "banned by rule unbounded-copy (CWE-120)" in guard
