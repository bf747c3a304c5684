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
