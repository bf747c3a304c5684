# SPDX-License-Identifier: Apache-2.0
"""The measurement parts of examples/train_tiny_coder/policy_tune.py: prompts end at line
boundaries, a finding counts only in the completion, calls and syntax errors are attributed to
the completion, and the bootstrap interval brackets the rate."""

from __future__ import annotations

import numpy as np
import pytest

from test_corpus import load_example

pytest.importorskip("tree_sitter", reason="the check extra is not installed")
pytest.importorskip("tree_sitter_c", reason="the check extra is not installed")

tune = load_example("policy_tune")

PROMPT = """static int copy_name(char *dst, const char *src)
{
    strcpy(dst, src);
"""


def test_prompts_end_at_line_boundaries() -> None:
    text = "\n".join(f"int v{i} = {i};" for i in range(100)) + "\n"
    prompts = tune.make_prompts([{"package": "p", "path": "a.c", "text": text}], 4, 10)
    assert len(prompts) == 4
    for p in prompts:
        assert p["prompt"].endswith("\n") and p["prompt"].count("\n") == 10
        assert p["prompt"] in text
        assert text.split("\n")[p["line"] - 1] == p["prompt"].split("\n")[-2]
    too_short = {"package": "p", "path": "b.c", "text": "int x;\n" * 12}
    assert tune.make_prompts([too_short], 4, 10) == []


def test_judge_counts_only_the_completion() -> None:
    judge = tune.Judge()
    clean = "    dst[0] = 0;\n    return (int)strlen(dst);\n}\n"
    v = judge.judge(PROMPT, clean)
    assert v == {"lines": 3, "findings": [], "calls": 1, "unparsed": False}
    bad = "    sprintf(dst, \"%s\", src);\n    goto out;\nout:\n    return atoi(src);\n}\n"
    v = judge.judge(PROMPT, bad)
    assert sorted(v["findings"]) == ["atoi-family", "goto", "unbounded-copy"]
    assert v["calls"] == 2 and v["lines"] == 5 and not v["unparsed"]
    # a syntax-error region that starts in the completion marks it unparsed
    v = judge.judge(PROMPT, "    dst[0] = = 0;\n    return 1;\n}\n")
    assert v["unparsed"] and v["findings"] == [] and v["lines"] == 3


def test_bootstrap_brackets_the_rate() -> None:
    rng = np.random.Generator(np.random.PCG64(3))
    lines = rng.integers(5, 30, size=300).astype(np.float64)
    counts = rng.poisson(0.05 * lines).astype(np.float64)
    lo, hi = tune.bootstrap(counts, lines)
    rate = 1000 * counts.sum() / lines.sum()
    assert lo < rate < hi
    assert tune.bootstrap(np.zeros(50), np.full(50, 10.0)) == [0.0, 0.0]


def test_summary_by_rule() -> None:
    judged = [{"lines": 10, "findings": ["goto", "goto"], "calls": 3, "unparsed": False},
              {"lines": 30, "findings": ["gets"], "calls": 1, "unparsed": True}]
    s = tune.summarize_mode(judged)
    assert s["lines"] == 40 and s["violations"] == 3
    assert s["violations_per_1k_lines"] == 75.0
    assert s["by_rule"]["goto"]["count"] == 2 and s["by_rule"]["gets"]["per_1k_lines"] == 25.0
    assert s["calls_per_1k_lines"] == 100.0 and s["unparsed_fraction"] == 0.5


def test_artifact_weights_are_fixed_points_of_fake_quantization() -> None:
    """Tuning starts exactly at the shipped model: its codes times scales, loaded into the
    PyTorch model, re-quantize to themselves in every quantized tensor."""
    torch = pytest.importorskip("torch", reason="the train extra is not installed")
    model_mod = load_example("model")
    from fwassist.models import tiny_coder_path

    m = model_mod.TinyCoder(model_mod.TinyConfig(vocab_size=4096, moe_intermediate_size=64))
    tune.load_artifact_weights(m, tiny_coder_path())
    plan = model_mod.QuantPlan()
    checks = [(m.embed, plan.embed), (m.lm_head, plan.lm_head)]
    for i, layer in enumerate(m.layers):
        checks += [(getattr(layer.attn, n), plan.attention)
                   for n in ("q_proj", "k_proj", "v_proj", "o_proj")]
        checks += [(w, plan.experts[i]) for w in (layer.moe.gate, layer.moe.up, layer.moe.down)]
    with torch.no_grad():
        for w, bits in checks:
            assert torch.equal(model_mod.fake_quant(w, bits), w)
            assert w.abs().sum() > 0


def _rec(i: int, draw: int, lines: int, calls: int, findings: list[str]) -> dict:
    return {"prompt_index": i, "draw": draw, "prompt": "", "completion": "", "lines": lines,
            "calls": calls, "findings": findings, "unparsed": False}


def test_selection_keeps_clean_completions_and_prefers_calls() -> None:
    records = [_rec(0, 0, 10, 1, []), _rec(0, 1, 10, 4, []),        # both clean: the denser
               _rec(1, 0, 10, 9, ["goto"]), _rec(1, 1, 5, 1, []),  # the clean one only
               _rec(2, 0, 2, 2, []), _rec(2, 1, 8, 3, ["safety-dynamic-memory", "goto"]),
               _rec(3, 0, 6, 2, []), _rec(3, 1, 3, 1, [])]          # tie 1/3: the first draw
    chosen, stats = tune.select(records, "clean-calls")
    assert [(r["prompt_index"], r["draw"]) for r in chosen] == [(0, 1), (1, 1), (3, 0)]
    assert stats["rejected"] == {"goto": 2, "safety-dynamic-memory": 1, "short": 1}
    assert stats["clean"] == 5 and stats["selected"] == 3
    assert stats["calls_per_1k_lines"]["selected"] == round(1000 * 7 / 21, 1)
    assert stats["calls_per_1k_lines"]["sampled"] == round(1000 * 21 / 52, 1)
    every, _ = tune.select(records, "clean")
    assert len(every) == 5 and all(not r["findings"] and r["lines"] >= 3 for r in every)


def test_finding_offsets_point_at_the_violation() -> None:
    c = "    char *p = malloc(4);\n    strcpy(dst, src);\n    goto out;\nout:\n    return 0;\n}\n"
    offsets = tune.finding_offsets(PROMPT, c)
    assert [c[o:o + 6] for o in offsets] == ["malloc", "strcpy", "goto o"]
    # the prompt's own strcpy is not the completion's
    assert tune.finding_offsets(PROMPT, "    return 0;\n}\n") == []


def _mode(viol: float, calls: float, unparsed: float, lines: int = 1000) -> dict:
    return {"violations_per_1k_lines": viol, "calls_per_1k_lines": calls,
            "unparsed_fraction": unparsed, "lines": lines}


def test_versus_baseline_checks_every_condition() -> None:
    base = {"greedy": _mode(10.0, 160.0, 0.6), "sampled": _mode(8.0, 150.0, 0.5),
            "violations_total": 18, "heldout_runtime_exact": {"next_token_accuracy": 0.5}}
    good = {"greedy": _mode(5.0, 145.0, 0.55), "sampled": _mode(3.0, 164.0, 0.54),
            "violations_total": 8, "heldout_runtime_exact": {"next_token_accuracy": 0.496}}
    vs = tune.versus_baseline(base, good)
    assert vs["meets_all"] and all(vs["conditions"].values())
    assert vs["violation_rate_ratio"] == {"greedy": 0.5, "sampled": 0.375}
    assert vs["violation_rate_ratio_both_modes"] == round(8 / 18, 3)
    assert vs["accuracy_retained"] == 0.992
    # each condition on its own fails the verdict
    for mode, key, value, cond in (("greedy", "violations_per_1k_lines", 5.1, "violations_greedy"),
                                   ("sampled", "calls_per_1k_lines", 134.0, "calls_sampled"),
                                   ("greedy", "calls_per_1k_lines", 177.0, "calls_greedy"),
                                   ("sampled", "unparsed_fraction", 0.44, "unparsed_sampled")):
        bad = {**good, mode: {**good[mode], key: value}}
        vs = tune.versus_baseline(base, bad)
        assert not vs["meets_all"] and [k for k, v in vs["conditions"].items() if not v] == [cond]
    low = {**good, "heldout_runtime_exact": {"next_token_accuracy": 0.4945}}
    assert tune.versus_baseline(base, low)["conditions"]["accuracy"] is False


def test_unlikelihood_pushes_down_only_the_marked_tokens() -> None:
    """-log(1 - p) of each marked token, from the model's own logits at the position before
    it, averaged; the gradient lowers those tokens' probabilities."""
    torch = pytest.importorskip("torch", reason="the train extra is not installed")
    model_mod = load_example("model")
    m = model_mod.TinyCoder(model_mod.TinyConfig(vocab_size=64, moe_intermediate_size=8))
    m.init_weights(torch.Generator().manual_seed(0))
    negatives = [([5, 9, 3, 7, 2], [2, 4]), ([1, 4, 6], [1])]
    loss, _ = tune.unlikelihood_loss(m, negatives, np.array([0, 1]))
    with torch.no_grad():
        want = []
        for seq, pos in negatives:
            logits, _ = m(torch.tensor([seq[:-1]]))
            p = torch.softmax(logits[0], dim=-1)
            want += [-torch.log1p(-p[q - 1, seq[q]]) for q in pos]
    assert torch.allclose(loss, torch.stack(want).mean(), rtol=1e-5, atol=1e-6)
    opt = torch.optim.SGD(m.parameters(), lr=0.5)
    opt.zero_grad()
    loss.backward()
    opt.step()
    after, _ = tune.unlikelihood_loss(m, negatives, np.array([0, 1]))
    assert after.item() < loss.item()


def test_lexical_banned_calls_are_calls_at_identifier_boundaries() -> None:
    banned = tune.lexical_banned_calls()
    text = "strcpy(a, b); my_strcpy(a, b); strcpy_s(a, 1, b); x = atoi (s); gets\n(buf);"
    assert banned.findall(text) == ["strcpy(", "atoi (", "gets\n("]
