# SPDX-License-Identifier: Apache-2.0
"""fwassist.BatchDecoder (csrc/model/batch.h): generations in slots decoded in one forward pass.

The contract is bit-identity with a session decoding alone: every slot's next-token logits are
compared bit for bit with Session.logits on a fresh session fed the same tokens, and every
slot's tokens and finish reason with Session.generate for the same prompt, parameters and
seed; for 1 to 8 slots of different prompt lengths, both compute modes, greedy and sampled,
slots joining and leaving mid-run, cancellation and prompt-prefix reuse. Then the errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np
import pytest

import fwassist
from fwassist.artifact.writer import write_artifact
from fwassist.export.synthetic import synthetic_config, synthetic_model

# A dense (mlp_only) layer between MoE layers; top-2 of 8 experts, so a batch's rows share
# some experts and not others.
CFG = synthetic_config(num_hidden_layers=3, num_experts=8, num_experts_per_tok=2,
                       mlp_only_layers=[1], hidden_size=128, head_dim=32,
                       num_attention_heads=4, num_key_value_heads=2, vocab_size=300,
                       max_position_embeddings=256)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> fwassist.Model:
    imported = synthetic_model(CFG, bits=4, seed=11)
    path = Path(tmp_path_factory.mktemp("batch")) / "synthetic.fwa"
    write_artifact(str(path), imported, model_card={"known_limitations": ["random weights"]},
                   options={}, evidence={"measured": False}, exporter_version="test")
    return fwassist.Model.load(path)


def ids(n: int, seed: int) -> list[int]:
    return [int(i) for i in np.random.default_rng(seed).integers(0, CFG["vocab_size"], size=n)]


def bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)


def run_to_end(bd: fwassist.BatchDecoder) -> dict[int, tuple[list[int], Optional[str]]]:
    """Steps until no slot is active: each slot's emitted tokens and finish reason."""
    out: dict[int, tuple[list[int], Optional[str]]] = {s: ([], None) for s in bd.active}
    while bd.active:
        for slot, tok, reason in bd.step():
            toks, _ = out[slot]
            if tok >= 0:
                toks.append(tok)
            out[slot] = (toks, reason)
    return out


SAMPLED: list[dict[str, Any]] = [
    dict(temperature=0.0),
    dict(temperature=0.9, seed=3),
    dict(temperature=1.3, top_k=20, seed=7),
    dict(temperature=0.7, top_p=0.85, seed=11),
    dict(temperature=1.0, top_k=50, top_p=0.9, repetition_penalty=1.2, seed=2**64 - 1),
    dict(temperature=2.0, seed=5),
    dict(temperature=0.5, repetition_penalty=0.9, seed=9),
    dict(temperature=0.0, repetition_penalty=1.5),
]


@pytest.mark.parametrize("mode", ["exact", "fast"])
@pytest.mark.parametrize("threads", [1, 2])
def test_every_step_is_bit_identical_to_solo_decode(model: fwassist.Model, mode: str,
                                                    threads: int) -> None:
    """For N = 1..8 slots with prompts of 1 to 29 tokens: the logits each slot samples from,
    at every step, equal those of a fresh session fed the same tokens one by one, bit for
    bit; and the tokens are the greedy ones of that session."""
    bd = fwassist.BatchDecoder(model, slots=8, max_context=96, mode=mode, threads=threads)
    for n in range(1, 9):
        prompts = [ids(1 + (4 * i + n) % 29, 100 * n + i) for i in range(n)]
        slots = [bd.add(p, max_tokens=8, stop_ids=()) for p in prompts]
        assert sorted(slots) == sorted(set(slots)) and len(slots) == n
        solos = [model.session(max_context=96, mode=mode, threads=1) for _ in range(n)]
        want = [s.logits(p)[-1] for s, p in zip(solos, prompts)]
        while bd.active:
            got = {slot: bd.logits(slot) for slot in bd.active}
            for i, slot in enumerate(slots):
                if slot in got:
                    assert np.array_equal(bits(got[slot]), bits(want[i])), (n, i)
            for slot, tok, _ in bd.step():
                i = slots.index(slot)
                assert tok == int(np.argmax(want[i]))  # greedy: the first maximum
                want[i] = solos[i].logits([tok])[-1]
        for i, slot in enumerate(slots):
            assert bd.tokens(slot) == solos[i].tokens
            solos[i].close()
    bd.close()


@pytest.mark.parametrize("mode", ["exact", "fast"])
def test_sampled_slots_equal_session_generate(model: fwassist.Model, mode: str) -> None:
    """Eight slots with different prompts and sampling parameters (greedy, temperature, top-k,
    top-p, repetition penalty, seeds, a stop id): tokens and finish reasons equal
    Session.generate's for the same prompt, parameters and seed."""
    prompts = [ids(3 + 5 * i, 900 + i) for i in range(len(SAMPLED))]
    with model.session(max_context=128, mode=mode) as s:
        free = s.generate(prompt_ids=prompts[2], max_tokens=20, stop_ids=(), **SAMPLED[2])
    stop = free.token_ids[7]  # a token slot 2 reaches: its generation stops there
    params = [dict(p, max_tokens=20, stop_ids=(stop,) if i == 2 else ())
              for i, p in enumerate(SAMPLED)]
    want = []
    for p, kw in zip(prompts, params):
        with model.session(max_context=128, mode=mode) as s:
            g = s.generate(prompt_ids=p, **kw)
            want.append((g.token_ids, g.stop_reason))
    assert want[2][1] == "stop_id"
    with fwassist.BatchDecoder(model, slots=8, max_context=128, mode=mode, threads=2) as bd:
        slots = [bd.add(p, **kw) for p, kw in zip(prompts, params)]
        got = run_to_end(bd)
        assert [got[s] for s in slots] == want
        for s, (toks, _) in zip(slots, want):
            st = bd.stats(s)
            assert st["generated_tokens"] == len(toks)
            assert st["stop_reason"] == got[s][1]


def test_slots_join_leave_and_cancel_mid_run(model: fwassist.Model) -> None:
    """Slots added while others run, one cancelled mid-run (freed at once, its slot reused),
    one reaching its context's end: every completed slot still equals Session.generate."""
    kw: dict[str, Any] = dict(max_tokens=12, temperature=0.8, top_k=30, stop_ids=())
    prompts = {name: ids(4 + 3 * i, 50 + i) for i, name in enumerate("abcdef")}
    want = {}
    for name, p in prompts.items():
        with model.session(max_context=40) as s:
            g = s.generate(prompt_ids=p, seed=ord(name), **kw)
            want[name] = (g.token_ids, g.stop_reason)
    with model.session(max_context=40) as s:  # 29 + 11 tokens: the context ends first
        g = s.generate(prompt_ids=ids(29, 77), seed=1, **kw)
        want["full"] = (g.token_ids, g.stop_reason)
    assert want["full"][1] == "context_full"
    bd = fwassist.BatchDecoder(model, slots=3, max_context=40)
    slot_of = {"a": bd.add(prompts["a"], seed=ord("a"), **kw)}
    got: dict[str, list[int]] = {"a": []}
    reasons: dict[str, Optional[str]] = {}
    queue = ["b", "c", "full", "d", "e", "f"]
    steps = 0
    while bd.active or queue:
        if queue and len(bd.active) < 3 and steps % 2 == 0:
            name = queue.pop(0)
            slot_of[name] = bd.add(ids(29, 77) if name == "full" else prompts[name],
                                   seed=1 if name == "full" else ord(name), **kw)
            got[name] = []
        if steps == 5:
            assert bd.cancel(slot_of["b"]) is True
            reasons["b"] = "cancelled"
            assert slot_of["b"] not in bd.active
            assert bd.cancel(slot_of["b"]) is False
            assert bd.stats(slot_of["b"])["stop_reason"] == "cancelled"
        by_slot = {v: k for k, v in slot_of.items() if k not in reasons}
        for slot, tok, reason in bd.step():
            name = by_slot[slot]
            if tok >= 0:
                got[name].append(tok)
            if reason is not None:
                reasons[name] = reason
        steps += 1
    for name in ["a", "c", "d", "e", "f", "full"]:
        assert (got[name], reasons[name]) == want[name], name
    assert got["b"] == want["b"][0][:len(got["b"])] and 0 < len(got["b"]) < 12
    bd.close()


def test_prefix_reuse_equals_a_fresh_prefill(model: fwassist.Model) -> None:
    """A prompt sharing a prefix with a free slot's context goes to that slot and prefills only
    the rest (cached_tokens); its logits and tokens equal a fresh session's. An identical
    prompt re-evaluates only its last token."""
    base = ids(30, 5)
    other = ids(12, 6)
    follow = base[:22] + ids(9, 7)
    kw: dict[str, Any] = dict(max_tokens=6, stop_ids=())
    with fwassist.BatchDecoder(model, slots=2, max_context=64) as bd:
        s0 = bd.add(base, **kw)
        s1 = bd.add(other, **kw)
        run_to_end(bd)
        s = bd.add(follow, **kw)
        assert s == s0
        assert bd.stats(s)["cached_tokens"] == 22
        assert bd.stats(s)["prompt_tokens"] == len(follow)
        with model.session(max_context=64) as fresh:
            want = fresh.logits(follow)[-1]
        assert np.array_equal(bits(bd.logits(s)), bits(want))
        got = run_to_end(bd)[s]
        with model.session(max_context=64) as fresh:
            g = fresh.generate(prompt_ids=follow, **kw)
        assert got == (g.token_ids, g.stop_reason)
        again = bd.add(other, **kw)
        assert again == s1 and bd.stats(again)["cached_tokens"] == len(other) - 1
        assert run_to_end(bd)[again][0] == bd.tokens(again)[len(other):]
        # No common prefix: the slot freed first (s0, before s1's second run ended).
        first = bd.add(ids(5, 8), **kw)
        assert first == s0 and bd.stats(first)["cached_tokens"] == 0


def test_stats_count_the_work(model: fwassist.Model) -> None:
    with fwassist.BatchDecoder(model, slots=4, max_context=64) as bd:
        slots = [bd.add(ids(10 + i, i), max_tokens=5, stop_ids=()) for i in range(4)]
        bd.step()
        bd.step()
        st = bd.stats(slots[0])
        assert st["generated_tokens"] == 2 and st["stop_reason"] is None
        run_to_end(bd)
        for s in slots:
            st = bd.stats(s)
            assert st["generated_tokens"] == 5 and st["prompt_tokens"] == 10 + s
            assert st["busy_core_s"] > 0 and st["weight_bytes_read"] > 0
            assert st["energy_j"] > 0 and st["energy_measured"] is False
            assert st["decode_ms"] > 0 and st["ttft_ms"] >= st["prefill_ms"]
            assert st["stop_reason"] == "max_tokens"
        # Every evaluated token (4 prompts, 5 tokens each) routed to top-k experts of each MoE
        # layer, none in the dense layer.
        hits = bd.expert_tokens()
        assert hits.shape == (3, 8) and hits.dtype == np.uint64
        evaluated = sum(10 + i for i in range(4)) + 4 * 5
        assert [int(r.sum()) for r in hits] == [2 * evaluated, 0, 2 * evaluated]
        assert bd.free_slots == 4


@pytest.mark.parametrize("mode", ["exact", "fast"])
def test_a_slot_that_overflows_ends_alone(tmp_path: Path, mode: str) -> None:
    """Huge (finite) q/k norm weights in layer 0: attention scores overflow float32 for some
    token pairs and not others. A slot whose next token overflows ends with ``non_finite``
    (that token neither emitted nor kept: the context a session alone keeps after its
    ArtifactError), while the other slots of the same steps go on exactly as alone (fast
    mode quantizes a layer's rows in one pass, which refuses the whole step: the rows are
    re-run one by one)."""
    imported = synthetic_model(CFG, bits=4, seed=11)
    for t in imported.tensors:
        if t.role in ("q_norm", "k_norm") and t.layer == 0:
            t.value[:] = np.float32(5e18)
    path = tmp_path / "overflow.fwa"
    write_artifact(str(path), imported, model_card={"known_limitations": ["random weights"]},
                   options={}, evidence={"measured": False}, exporter_version="test")
    model = fwassist.Model.load(path)
    kw: dict[str, Any] = dict(max_tokens=4, stop_ids=())
    want: dict[int, tuple[list[int], str]] = {}
    for tok in range(40):
        with model.session(max_context=16, mode=mode) as s:
            try:
                g = s.generate(prompt_ids=[tok], **kw)
                want[tok] = (g.token_ids, g.stop_reason)
            except fwassist.ArtifactError as e:
                assert e.status == "non_finite"
                if s.n_past:  # the prompt itself overflows: add() refuses it (below)
                    want[tok] = (s.tokens[1:], "non_finite")
    reasons = {r for _, r in want.values()}
    assert reasons == {"max_tokens", "non_finite"}, reasons  # the fixture has both kinds
    bd = fwassist.BatchDecoder(model, slots=8, max_context=16, mode=mode)
    toks = sorted(want)
    assert {want[t][1] for t in toks[:8]} == reasons  # both kinds in the same steps
    for i in range(0, len(toks), 8):
        slots = {bd.add([t], **kw): t for t in toks[i:i + 8]}
        got = run_to_end(bd)
        for slot, t in slots.items():
            assert got[slot] == want[t], t
            assert bd.tokens(slot) == [t] + want[t][0]
    refused = next(t for t in range(40) if t not in want)
    with pytest.raises(fwassist.ArtifactError, match="non_finite"):
        bd.add([refused], **kw)
    assert bd.active == []


def test_errors_are_clear_and_change_nothing(model: fwassist.Model) -> None:
    V = CFG["vocab_size"]
    bd = fwassist.BatchDecoder(model, slots=2, max_context=16)
    s0 = bd.add(ids(4, 1), max_tokens=50, stop_ids=())
    bad: list[tuple[Any, dict[str, Any], str]] = [
        ([1, V, 2], {}, f"token id {V} at position 1 is outside the vocabulary"),
        ([-1], {}, "token id -1 at position 0 is outside the vocabulary"),
        ([], {}, "empty"),
        (ids(17, 2), {}, "the prompt's 17 tokens exceed the context of 16 tokens"),
        ([1, 2], {"temperature": -1.0}, "temperature"),
        ([1, 2], {"top_p": 0.0}, "top_p"),
        ([1, 2], {"max_tokens": 0}, "max_tokens"),
        ([1, 2], {"seed": -1}, "seed"),
        ([[1, 2]], {}, "1-D"),
    ]
    for prompt, kw, text in bad:
        with pytest.raises(fwassist.BatchRequestError, match=text) as e:
            bd.add(prompt, **kw)
        assert isinstance(e.value, ValueError) and isinstance(e.value, fwassist.Error)
    assert bd.active == [s0]
    s1 = bd.add(ids(16, 3), max_tokens=5, stop_ids=())  # exactly the context: accepted
    with pytest.raises(fwassist.NoFreeSlotError, match="all 2 slots are generating"):
        bd.add([1, 2, 3])
    assert bd.active == [s0, s1]
    for call in (bd.cancel, bd.stats, bd.tokens, bd.logits):
        with pytest.raises(fwassist.BatchRequestError, match="not one of the decoder's slots"):
            call(2)
    # A full context ends the slot (no token), as Session.generate does.
    assert bd.step() == [(s0, bd.tokens(s0)[-1], None), (s1, -1, "context_full")]
    with pytest.raises(fwassist.BatchRequestError, match="not generating"):
        bd.logits(s1)
    bd.close()
    with pytest.raises(RuntimeError, match="closed"):
        bd.step()
    with pytest.raises(ValueError, match="slots must be in"):
        fwassist.BatchDecoder(model, slots=0)
    with pytest.raises(ValueError, match="mode"):
        fwassist.BatchDecoder(model, slots=1, mode="quick")


def test_guarded_slots_equal_session_generate() -> None:
    """The code guard in the batch (docs/code-policy.md): on the bundled coder, slots whose
    unguarded output writes strcat( or (split with the prompt) sprintf(, a sampled slot the
    guard never touches and a slot whose every token is banned, decoded together: each
    slot's tokens, finish reason and interventions equal Session.generate(policy=...)'s; the
    untouched slot's tokens are also the unguarded ones (the guard is invisible there)."""
    from fwassist.guard import CodePolicy, CompiledPolicy
    from fwassist.models import TINY_CODER_PIN, tiny_coder_path
    from test_guard import COPY_PROMPT, SPLIT_PROMPT, _matches

    coder = fwassist.Model.load(tiny_coder_path(), pin=TINY_CODER_PIN)
    masked = CompiledPolicy.for_vocabulary(CodePolicy({"x": "r"}), [b" x("] * coder.vocab_size)
    quiet = "void uart_init(void)\n{\n    "
    jobs: list[tuple[str, dict[str, Any]]] = [
        (COPY_PROMPT, dict(max_tokens=40, repetition_penalty=1.15, policy="default")),
        (SPLIT_PROMPT, dict(max_tokens=24, repetition_penalty=1.15, policy="safety")),
        (quiet, dict(max_tokens=24, temperature=0.8, seed=3, policy="default")),
        ("int main(void)", dict(max_tokens=8, policy=masked)),
    ]
    want = []
    with coder.session(max_context=256) as s:
        for prompt, kw in jobs:
            g = s.generate(prompt, stop_ids=(), **kw)
            want.append((g.token_ids, g.stop_reason, g.stats["interventions"]))
        plain = s.generate(quiet, stop_ids=(), **dict(jobs[2][1], policy=None))
    assert want[0][2] and want[1][2] and not want[2][2]  # the guard fired where it should
    assert want[3][:2] == ([], "policy")
    assert want[2][0] == plain.token_ids
    with fwassist.BatchDecoder(coder, slots=4, max_context=256, threads=2) as bd:
        slots = [bd.add(coder.encode(p), stop_ids=(), **kw) for p, kw in jobs]
        got = run_to_end(bd)
        assert [(got[s][0], got[s][1], bd.stats(s)["interventions"]) for s in slots] == want
    for (prompt, _), (toks, _, _) in zip(jobs[:2], want):
        text = (prompt + coder.tokenizer.decode(toks)).encode()
        assert _matches(text, len(prompt.encode())) == []    # COPY_PROMPT itself has a strcpy(


def test_guard_errors_in_the_batch(model: fwassist.Model) -> None:
    from fwassist.guard import CompiledPolicy

    bd = fwassist.BatchDecoder(model, slots=1, max_context=16)
    other = CompiledPolicy.for_vocabulary("default", [b"a", b"b"])
    with pytest.raises(fwassist.BatchRequestError, match="vocabulary of 2"):
        bd.add([1, 2], policy=other)
    with pytest.raises(fwassist.BatchRequestError, match="unknown policy"):
        bd.add([1, 2], policy="nonesuch")
    assert bd.active == []
    bd.close()
