# SPDX-License-Identifier: Apache-2.0
"""The bundled model (fwassist.models): pinned and verified, its golden greedy completions (the
same files tests/capi/run_examples.sh checks natively and under qemu-aarch64), its tokenizer
against Hugging Face ``tokenizers``, its model card and BOM, and ``fwassist demo``."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import fwassist
from fwassist.artifact.inspect import inspect
from fwassist.codecheck import BANNED_CALLS
from fwassist.loader import ArtifactError
from fwassist.models import TINY_CODER_PIN, tiny_coder_path

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "golden"
ALLOWLIST = {"MIT", "BSD-2-Clause", "BSD-3-Clause", "Apache-2.0", "ISC", "Zlib", "PSF-2.0"}


@pytest.fixture(scope="module")
def model() -> fwassist.Model:
    return fwassist.Model.load(tiny_coder_path(), pin=TINY_CODER_PIN)


@pytest.fixture(scope="module")
def info() -> dict:
    return inspect(tiny_coder_path())


def test_bundled_artifact_is_pinned_and_small(model, info):
    path = tiny_coder_path()
    assert os.path.getsize(path) <= 10 * 2**20
    assert model.pin == info["pin"] == TINY_CODER_PIN
    c = model.config
    assert (c["num_experts"], c["num_experts_per_tok"]) == (64, 8)
    bits = {(t["role"], t["bits"]) for t in info["tensors"] if t["bits"] is not None}
    roles = {r: {b for rr, b in bits if rr == r} for r, _ in bits}
    assert roles["expert_gate"] == roles["expert_up"] == roles["expert_down"] == {3}
    assert roles["q_proj"] == roles["o_proj"] == {4}
    assert roles["embed"] == roles["lm_head"] == {8}


def test_readme_states_the_pin():
    assert TINY_CODER_PIN in (ROOT / "README.md").read_text(encoding="utf-8")


def test_tampered_copy_is_refused(tmp_path):
    raw = bytearray(Path(tiny_coder_path()).read_bytes())
    raw[-100] ^= 0x01                           # a weight byte (the data region ends the file)
    p = tmp_path / "tampered.fwa"
    p.write_bytes(bytes(raw))
    with pytest.raises(ArtifactError):
        fwassist.Model.load(p, pin=TINY_CODER_PIN)
    shutil.copyfile(tiny_coder_path(), tmp_path / "copy.fwa")
    with pytest.raises(ArtifactError, match="pin"):
        fwassist.Model.load(tmp_path / "copy.fwa", pin="sha256:" + "0" * 64)


@pytest.mark.parametrize("mode", ["exact", "fast"])
def test_golden_greedy_completion(model, mode):
    """The Python API prints what examples/c/complete.c prints on x86 and under qemu-aarch64
    (tests/capi/run_examples.sh): prompt, 32 greedy tokens, newline."""
    prompt = (GOLDEN / "tiny-coder-prompt.c").read_text(encoding="utf-8")
    want = (GOLDEN / f"tiny-coder-{mode}.txt").read_text(encoding="utf-8")
    for threads in (1, 2):
        with model.session(mode=mode, threads=threads) as s:
            g = s.generate(prompt, max_tokens=32)
        assert len(g.token_ids) == 32
        assert prompt + g.text + "\n" == want, (mode, threads)


def test_tokenizer_equals_hugging_face(model):
    tokenizers = pytest.importorskip("tokenizers")
    ref = tokenizers.Tokenizer.from_str(json.dumps(_manifest()["tokenizer"]))
    texts = [(GOLDEN / "tiny-coder-prompt.c").read_text(encoding="utf-8"),
             "#define REG(x) (*(volatile uint32_t *)(0x40021000u + (x)))\n",
             "\tif (len >= sizeof(buf)) {\n\t\treturn -EINVAL;\n\t}\n",
             "/* überprüfen: naïve café */ x = 0x7fU << 3; // ✓\r\n",
             (ROOT / "csrc" / "include" / "fwassist" / "fwassist.h").read_text(encoding="utf-8")]
    assert model.tokenizer is not None
    for t in texts:
        ids = ref.encode(t, add_special_tokens=False).ids
        assert model.encode(t) == ids
        assert model.tokenizer.decode(ids) == ref.decode(ids)


def _manifest() -> dict:
    from fwassist.artifact import pyverify

    return pyverify.verify(tiny_coder_path()).manifest


def test_model_card_dataset_and_quality(info):
    card = info["model_card"]
    (ds,) = card["datasets"]
    assert set(ds["licenses"]) <= ALLOWLIST and ds["licenses"]
    assert len(ds["sha256"]) == 64 and int(ds["files"]) > 1000
    q = card["quality"]
    # The QAT model keeps >= 99 % of the float model's next-token accuracy, and the runtime's
    # exact mode matches the QAT model (same windows; only float summation order differs).
    assert float(q["qat_retains_float_accuracy"]) >= 0.99
    qat, ex, fa = q["qat"], q["runtime_exact"], q["runtime_fast"]
    assert abs(float(ex["next_token_accuracy"]) - float(qat["next_token_accuracy"])) <= 0.002
    assert abs(float(ex["perplexity"]) / float(qat["perplexity"]) - 1) <= 0.002
    assert abs(float(fa["next_token_accuracy"]) - float(qat["next_token_accuracy"])) <= 0.01
    assert any("tiny model" in x for x in card["known_limitations"])


def test_model_card_policy_evaluation(info):
    """1.1.0 is 1.0.0 after policy tuning (examples/train_tiny_coder/policy_tune.py): its card
    records the policy evaluation before and after, and the targets hold on those figures
    (recomputed here from the rates, not read from the card's verdict): violations per 1k
    lines <= 0.5x in both modes, >= 99 % of the held-out accuracy, calls per 1k lines and the
    unparsed fraction within +-10 %."""
    card = info["model_card"]
    pe = card["policy_evaluation"]
    before, after = pe["before"], pe["after"]
    assert card["version"] == "1.1.0" and before["model"] == "fwassist-tiny-coder 1.0.0"
    assert pe["policy"] == "safety" and int(pe["prompts"]) >= 200
    for mode in ("greedy", "sampled"):
        b, a = before[mode], after[mode]
        for r in (b, a):
            counts = [int(v["count"]) for v in r["by_rule"].values()]
            assert sum(counts) == int(r["violations"])
            rate = 1000 * int(r["violations"]) / int(r["lines"])
            assert abs(rate - float(r["violations_per_1k_lines"])) < 0.006
            lo, hi = (float(x) for x in r["violations_per_1k_lines_ci95"])
            assert lo <= rate <= hi
        ratio = float(a["violations_per_1k_lines"]) / float(b["violations_per_1k_lines"])
        assert ratio <= 0.5
        assert abs(ratio - float(pe["versus_before"]["violation_rate_ratio"][mode])) < 0.001
        assert abs(float(a["calls_per_1k_lines"]) / float(b["calls_per_1k_lines"]) - 1) <= 0.1
        assert abs(float(a["unparsed_fraction"]) / float(b["unparsed_fraction"]) - 1) <= 0.1
    acc_after = float(after["heldout_runtime_exact"]["next_token_accuracy"])
    assert acc_after / float(before["heldout_runtime_exact"]["next_token_accuracy"]) >= 0.99
    # the card's held-out figure is this artifact's own (the runtime's exact mode)
    assert acc_after == float(card["quality"]["runtime_exact"]["next_token_accuracy"])
    assert pe["versus_before"]["meets_all"] is True
    # with the decode-time guard no banned call is written
    for mode in ("greedy", "sampled"):
        assert int(after[f"{mode}_guarded"]["banned_calls_written"]) == 0
        assert not set(after[f"{mode}_guarded"]["by_rule"]) & set(BANNED_CALLS.values())


def test_bom_records_the_corpus(info):
    bom = _manifest()["sbom"]
    (data,) = bom["components"]
    assert data["type"] == "data"
    assert {x["license"]["id"] for x in data["licenses"]} == set(
        info["model_card"]["datasets"][0]["licenses"])
    assert data["hashes"][0]["content"] == info["model_card"]["datasets"][0]["sha256"]
    ref = bom["metadata"]["component"]["modelCard"]["modelParameters"]["datasets"]
    assert ref == [{"ref": data["bom-ref"]}]


def test_pin_is_the_manifest_digest():
    """The pin is SHA-256 over the manifest bytes (hashlib as the independent reference)."""
    import struct

    raw = Path(tiny_coder_path()).read_bytes()
    manifest_len = struct.unpack_from("<Q", raw, 16)[0]
    assert "sha256:" + hashlib.sha256(raw[128:128 + manifest_len]).hexdigest() == TINY_CODER_PIN


def test_demo_runs_offline():
    r = subprocess.run([sys.executable, "-m", "fwassist", "demo", "--max-tokens", "12"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "every byte verified" in r.stderr and TINY_CODER_PIN in r.stderr
    assert "ring_next" in r.stdout and "crc32_update" in r.stdout
    assert "SCI" in r.stderr and ("model estimate" in r.stderr or "measured by" in r.stderr)
    assert "experts activated per layer" in r.stderr and "core-ms/token" in r.stderr
    # the policy figures, from the model card
    pe = inspect(tiny_coder_path())["model_card"]["policy_evaluation"]
    for mode in ("greedy", "sampled"):
        b, a = pe["before"][mode], pe["after"][mode]
        line = next(x for x in r.stderr.splitlines() if x.startswith(f"  {mode} "))
        assert (f"{b['violations_per_1k_lines']} [" in line
                and f"-> {a['violations_per_1k_lines']} [" in line), line
    goto = [sum(int(pe[k][m]["by_rule"].get("goto", {}).get("count", 0))
                for m in ("greedy", "sampled")) for k in ("before", "after")]
    assert "check-code policy safety on" in r.stderr and f"goto {goto[0]} -> {goto[1]}" in r.stderr
    assert "with the code guard (policy default): 0 banned calls written" in r.stderr
