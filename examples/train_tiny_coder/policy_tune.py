# SPDX-License-Identifier: Apache-2.0
"""Policy-aware fine-tuning of the tiny coder: rejection-sampling fine-tuning (RFT) with
``fwassist check-code``'s rules as the reward, after QAT and with QAT's fake quantization on.

    python policy_tune.py eval --corpus DIR --artifact A.fwa --out result.json [--guard]
    python policy_tune.py sample --corpus DIR --artifact A.fwa --out DIR   (optional: tune
                                                                            does it first)
    python policy_tune.py tune --corpus DIR --artifact A.fwa --out DIR [--steps N]
        [--select clean|clean-calls] [--unlikelihood W] [--baseline BASE.json] [--guard]
    python policy_tune.py export --corpus DIR --artifact A.fwa --out DIR [--baseline ...]
    python policy_tune.py compare --artifact A.fwa --out DIR --baseline BASE.json
        --result RUN.json                     (exit 0 only when every target condition holds)

Why RFT: the reward is a 0/1 verdict of a rule checker on short, often unparseable fragments;
at 11 M parameters and a budget of minutes on two CPU cores, policy-gradient or DPO-style
updates would be high-variance and need a reference model in memory, while RFT is plain
supervised learning on the completions the checker passes (the model's own distribution, so
it keeps its style and syntax), mixed with the original data to hold the held-out accuracy.
Fake quantization stays on, so the exported codes are the ones that were trained.

``eval`` (the measurement, before and after): a fixed set of held-out prompts (up to
``--per-file`` prompts from each test-split file: the ``--prompt-lines`` lines before evenly
spaced line boundaries), each completed for ``--max-tokens`` tokens greedily and sampled
(temperature 0.8, top-p 0.95, seed = prompt index), repetition penalty 1.15 as ``fwassist
demo``, cut at the last newline. Prompt and completion are checked together (tolerant mode,
``safety`` policy: every rule, every function safety-related) and a finding counts when it
lies in the completion. Reported: violations per 1,000 generated lines by rule with a 95 %
bootstrap interval over prompts, function calls (tree-sitter ``call_expression``) per 1,000
lines, the fraction of completions holding a syntax-error region, and the runtime's held-out
next-token accuracy and perplexity (the 48 windows of train.py); with ``--guard`` the same
again with the decode-time guard (policy default) and the banned calls written.

``tune``: the weights of the artifact (its codes times scales are fixed points of the fake
quantization, so the start is exactly the shipped model); a judged pool of ``--draws``
sampled completions of each of ``--samples`` train-split prompts (OUT/samples.json); the
completions learned (``select``: every clean one, or per prompt the clean one with the most
calls per line, so that the tuning cannot buy fewer violations with less code); then
``--steps`` QAT steps on batches of those (loss on the completion tokens) mixed half and half
with train windows that hold no lexical violation of the policy (banned calls, malloc/free,
goto: the original data keeps the accuracy but must not teach the patterns back), plus, with
``--unlikelihood``, -log(1 - p) on the token where each finding of a violating completion
starts; then the export path of train.py (QAT ONNX, ``fwassist export``, runtime evaluation,
final artifact whose model card holds the tuned model's own figures and the policy evaluation
before and after) and ``eval`` of the new artifact.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections import Counter
from typing import Any, Optional

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

POLICY = "safety"
EOS_ID = 0
DRAW_SEED_STRIDE = 1_000_003   # draw d of prompt i samples with seed i + d * stride


def log(msg: str) -> None:
    print(f"[policy {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- prompts and generation ------------------------------------------------------------------


def load_split(corpus: str, split: str) -> list[dict[str, str]]:
    with open(os.path.join(corpus, f"{split}.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def make_prompts(docs: list[dict[str, str]], per_file: int, lines: int) -> list[dict[str, Any]]:
    """Up to ``per_file`` prompts per file: the ``lines`` lines before evenly spaced line
    boundaries (a prompt ends with a newline, so the completion starts a line)."""
    out = []
    for d in docs:
        text_lines = d["text"].split("\n")
        usable = len(text_lines) - lines - 8
        if usable <= 0:
            continue
        for k in range(per_file):
            end = lines + (usable * (2 * k + 1)) // (2 * per_file)
            prompt = "\n".join(text_lines[end - lines:end]) + "\n"
            out.append({"file": f"{d['package']}/{d['path']}", "line": end, "prompt": prompt})
    return out


def generate(artifact: str, prompts: list[dict[str, Any]], sampled: bool, max_tokens: int,
             threads: int, seed_offset: int = 0, temperature: float = 0.8, top_p: float = 0.95,
             repetition_penalty: float = 1.15, policy: Optional[str] = None) -> list[str]:
    """One completion per prompt, cut after its last newline (sampled: seed = prompt index +
    ``seed_offset``). The defaults are the measurement's settings."""
    from fwassist import Model

    m = Model.load(artifact)
    out = []
    with m.session(max_context=1024, threads=threads) as s:
        for i, p in enumerate(prompts):
            ids = m.encode(p["prompt"])[-(1024 - max_tokens):]
            kw: dict[str, Any] = ({"temperature": temperature, "top_p": top_p,
                                   "seed": i + seed_offset} if sampled else {})
            g = s.generate(prompt_ids=ids, max_tokens=max_tokens,
                           repetition_penalty=repetition_penalty,
                           stop_ids=(EOS_ID,), policy=policy, **kw)
            text = g.text
            out.append(text[:text.rfind("\n") + 1] if "\n" in text else "")
    return out


# -- judging ---------------------------------------------------------------------------------


class Judge:
    """The checker's verdict and the tree-sitter figures on the completion part of a text."""

    def __init__(self) -> None:
        import tree_sitter
        import tree_sitter_c

        from fwassist.codecheck import load_policy

        self.policy = load_policy(POLICY)
        self.parser = tree_sitter.Parser(tree_sitter.Language(tree_sitter_c.language()))

    def judge(self, prompt: str, completion: str) -> dict[str, Any]:
        from fwassist.codecheck import CodeParseError, check_source

        first = prompt.count("\n") + 1             # 1-based first line of the completion
        lines = completion.count("\n")
        source = (prompt + completion).encode("utf-8")
        errors: list[CodeParseError] = []
        findings = [f.rule for f in check_source(source, "gen.c", self.policy, errors)
                    if f.line >= first]
        tree = self.parser.parse(source)
        calls = 0
        stack = [tree.root_node]
        while stack:
            node = stack.pop()
            if node.end_point[0] + 1 < first:
                continue
            if node.type == "call_expression" and node.start_point[0] + 1 >= first:
                calls += 1
            stack.extend(node.children)
        unparsed = any(e.line >= first for e in errors)
        return {"lines": lines, "findings": findings, "calls": calls, "unparsed": unparsed}


def finding_offsets(prompt: str, completion: str) -> list[int]:
    """Character offsets in the completion where its findings start (the checker's 1-based
    line and code-point column)."""
    from fwassist.codecheck import CodeParseError, check_source, load_policy

    text = prompt + completion
    line_starts = [0] + [i + 1 for i, ch in enumerate(text) if ch == "\n"]
    errors: list[CodeParseError] = []
    found = check_source(text.encode("utf-8"), "gen.c", load_policy(POLICY), errors)
    offsets = [line_starts[f.line - 1] + f.column - 1 - len(prompt) for f in found]
    return sorted({o for o in offsets if o >= 0})


def bootstrap(counts: np.ndarray, lines: np.ndarray, reps: int = 2000) -> list[float]:
    """95 % percentile interval of 1000 * sum(counts) / sum(lines), prompts resampled."""
    rng = np.random.Generator(np.random.PCG64(0))
    idx = rng.integers(0, counts.size, size=(reps, counts.size))
    rates = 1000 * counts[idx].sum(1) / np.maximum(lines[idx].sum(1), 1)
    return [round(float(np.percentile(rates, 2.5)), 2), round(float(np.percentile(rates, 97.5)), 2)]


def summarize_mode(judged: list[dict[str, Any]]) -> dict[str, Any]:
    lines = np.array([j["lines"] for j in judged], dtype=np.float64)
    total_lines = int(lines.sum())
    per_rule: Counter[str] = Counter(r for j in judged for r in j["findings"])
    out: dict[str, Any] = {"completions": len(judged), "lines": total_lines}
    viol = np.array([len(j["findings"]) for j in judged], dtype=np.float64)
    out["violations"] = int(viol.sum())
    out["violations_per_1k_lines"] = round(1000 * viol.sum() / max(total_lines, 1), 2)
    out["violations_per_1k_lines_ci95"] = bootstrap(viol, lines)
    out["by_rule"] = {}
    for rule, n in sorted(per_rule.items()):
        c = np.array([j["findings"].count(rule) for j in judged], dtype=np.float64)
        out["by_rule"][rule] = {"count": n, "per_1k_lines": round(1000 * n / total_lines, 2),
                                "ci95": bootstrap(c, lines)}
    calls = np.array([j["calls"] for j in judged], dtype=np.float64)
    out["calls_per_1k_lines"] = round(1000 * calls.sum() / max(total_lines, 1), 1)
    out["calls_per_1k_lines_ci95"] = bootstrap(calls, lines)
    out["unparsed_fraction"] = round(sum(j["unparsed"] for j in judged) / len(judged), 4)
    return out


def evaluate(artifact: str, corpus: str, a: argparse.Namespace) -> dict[str, Any]:
    from train import eval_runtime, eval_windows, token_stream

    prompts = make_prompts(load_split(corpus, "test"), a.per_file, a.prompt_lines)
    judge = Judge()
    result: dict[str, Any] = {"policy": POLICY, "prompts": len(prompts),
                              "max_tokens": a.max_tokens, "prompt_lines": a.prompt_lines}
    for mode in ("greedy", "sampled"):
        t0 = time.time()
        comps = generate(artifact, prompts, mode == "sampled", a.max_tokens, a.threads)
        judged = [judge.judge(p["prompt"], c) for p, c in zip(prompts, comps)]
        result[mode] = summarize_mode(judged)
        log(f"{mode}: {json.dumps(result[mode])} ({time.time() - t0:.0f} s)")
    if a.guard:
        banned = lexical_banned_calls()
        for mode in ("greedy", "sampled"):
            comps = generate(artifact, prompts, mode == "sampled", a.max_tokens, a.threads,
                             policy="default")
            judged = [judge.judge(p["prompt"], c) for p, c in zip(prompts, comps)]
            result[f"{mode}_guarded"] = summarize_mode(judged)
            result[f"{mode}_guarded"]["banned_calls_written"] = sum(
                len(banned.findall(c)) for c in comps)
            log(f"{mode}, guard on: {json.dumps(result[mode + '_guarded'])}")
    both = result["greedy"]["violations"] + result["sampled"]["violations"]
    result["violations_total"] = both
    tok = os.path.join(corpus, "tokenizer.json")
    windows = eval_windows(token_stream(corpus, "test", tok), 512, a.eval_windows)
    result["heldout_runtime_exact"] = eval_runtime(artifact, windows, "exact")
    return result


TARGET_VIOLATION_RATIO = 0.5    # violations per 1k lines, each mode, at most this x the base
TARGET_ACCURACY_KEPT = 0.99     # held-out next-token accuracy, at least this x the base
TARGET_BAND = 0.10              # calls per 1k lines and unparsed fraction, each mode, within


def versus_baseline(base: dict[str, Any], cand: dict[str, Any]) -> dict[str, Any]:
    """The candidate's figures as ratios to the base model's, each target condition's verdict
    and whether all hold (the base's rates are nonzero on the fixed prompt set)."""
    out: dict[str, Any] = {"violation_rate_ratio": {}, "calls_ratio": {}, "unparsed_ratio": {}}
    ok = {}
    for m in ("greedy", "sampled"):
        b, c = base[m], cand[m]
        # float(): an evaluation made in this process holds numpy scalars
        v = float(c["violations_per_1k_lines"]) / float(b["violations_per_1k_lines"])
        k = float(c["calls_per_1k_lines"]) / float(b["calls_per_1k_lines"])
        u = float(c["unparsed_fraction"]) / float(b["unparsed_fraction"])
        out["violation_rate_ratio"][m] = round(v, 3)
        out["calls_ratio"][m] = round(k, 3)
        out["unparsed_ratio"][m] = round(u, 3)
        ok[f"violations_{m}"] = v <= TARGET_VIOLATION_RATIO
        ok[f"calls_{m}"] = abs(k - 1) <= TARGET_BAND
        ok[f"unparsed_{m}"] = abs(u - 1) <= TARGET_BAND
    def rate(r: dict[str, Any]) -> float:
        return float(r["violations_total"]) / (r["greedy"]["lines"] + r["sampled"]["lines"])

    out["violation_rate_ratio_both_modes"] = round(rate(cand) / rate(base), 3)
    acc = (float(cand["heldout_runtime_exact"]["next_token_accuracy"])
           / float(base["heldout_runtime_exact"]["next_token_accuracy"]))
    out["accuracy_retained"] = round(acc, 4)
    ok["accuracy"] = acc >= TARGET_ACCURACY_KEPT
    out["conditions"] = ok
    out["meets_all"] = all(ok.values())
    return out


# -- fine-tuning -----------------------------------------------------------------------------


def load_artifact_weights(model: Any, artifact: str) -> None:
    """The artifact's dequantized weights (codes times scales) into the PyTorch model."""
    import torch

    from fwassist.artifact.diff import _dequantized
    from fwassist.artifact.verify import verify

    art = verify(artifact)
    tensors = {t["name"]: t for t in art.manifest["tensors"]}

    def get(name: str) -> torch.Tensor:
        t = tensors[name]
        return torch.from_numpy(_dequantized(t, art.tensor_bytes(name)).astype(np.float32))

    with torch.no_grad():
        model.embed.copy_(get("model.embed_tokens.weight"))
        model.final_norm.weight.copy_(get("model.norm.weight"))
        model.lm_head.copy_(get("lm_head.weight"))
        for i, L in enumerate(model.layers):
            pre = f"model.layers.{i}"
            for n in ("q_proj", "k_proj", "v_proj", "o_proj"):
                getattr(L.attn, n).copy_(get(f"{pre}.self_attn.{n}.weight"))
            L.attn.q_norm.weight.copy_(get(f"{pre}.self_attn.q_norm.weight"))
            L.attn.k_norm.weight.copy_(get(f"{pre}.self_attn.k_norm.weight"))
            L.input_norm.weight.copy_(get(f"{pre}.input_layernorm.weight"))
            L.post_attention_norm.weight.copy_(get(f"{pre}.post_attention_layernorm.weight"))
            L.moe.router.copy_(get(f"{pre}.mlp.gate.weight"))
            for e in range(model.c.num_experts):
                ex = f"{pre}.mlp.experts.{e}"
                L.moe.gate[e].copy_(get(f"{ex}.gate_proj.weight"))
                L.moe.up[e].copy_(get(f"{ex}.up_proj.weight"))
                L.moe.down[e].copy_(get(f"{ex}.down_proj.weight"))


def collect_samples(artifact: str, corpus: str, a: argparse.Namespace) -> list[dict[str, Any]]:
    """``--draws`` sampled completions of each of ``--samples`` train prompts, every one with
    the checker's verdict and its call and line counts (the selection is made in ``tune``)."""
    docs = load_split(corpus, "train")
    rng = np.random.Generator(np.random.PCG64(a.seed))
    pick = rng.permutation(len(docs))
    prompts = make_prompts([docs[i] for i in pick], 2, a.prompt_lines)[:a.samples]
    judge = Judge()
    records = []
    for d in range(a.draws):
        comps = generate(artifact, prompts, True, a.max_tokens, a.threads, d * DRAW_SEED_STRIDE,
                         a.sample_temperature, a.sample_top_p, a.sample_repetition_penalty)
        for i, (p, c) in enumerate(zip(prompts, comps)):
            records.append({"prompt_index": i, "draw": d, "prompt": p["prompt"],
                            "completion": c, **judge.judge(p["prompt"], c)})
    return records


def select(records: list[dict[str, Any]], how: str) -> tuple[list[dict[str, Any]],
                                                              dict[str, Any]]:
    """The completions the tuning learns from. ``clean``: every completion of ≥ 3 lines without
    a finding. ``clean-calls``: per prompt, of its clean draws the one with the most calls per
    line (the reward is then lexicographic: no finding first, call density second), so the
    learned set writes at least as many calls as the model does and the tuning cannot buy its
    reduction by writing less code."""
    rejected: Counter[str] = Counter()
    clean: dict[int, list[dict[str, Any]]] = {}
    for r in records:
        if r["lines"] < 3:
            rejected["short"] += 1
        elif r["findings"]:
            rejected.update(r["findings"])
        else:
            clean.setdefault(r["prompt_index"], []).append(r)
    if how == "clean":
        chosen = [r for rs in clean.values() for r in rs]
    else:
        chosen = [max(rs, key=lambda r: (r["calls"] / r["lines"], -r["draw"]))
                  for _, rs in sorted(clean.items())]

    def density(rs: list[dict[str, Any]]) -> float:
        return round(1000 * sum(r["calls"] for r in rs) / max(sum(r["lines"] for r in rs), 1), 1)

    long_enough = [r for r in records if r["lines"] >= 3]
    stats = {"sampled": len(records), "clean": sum(len(rs) for rs in clean.values()),
             "selected": len(chosen), "selection": how, "rejected": dict(sorted(rejected.items())),
             "calls_per_1k_lines": {"sampled": density(long_enough), "selected": density(chosen)}}
    return chosen, stats


def violating_tokens(records: list[dict[str, Any]], tok: Any,
                     a: argparse.Namespace) -> list[tuple[list[int], list[int]]]:
    """The completions with a finding as (token ids, positions of the tokens where a finding
    starts), the prompt cut to its last ``--rft-prompt-tokens`` tokens and the sequence after
    the last such token dropped."""
    out = []
    for r in records:
        if not r["findings"]:
            continue
        pids = tok.encode(r["prompt"], add_special_tokens=False).ids[-a.rft_prompt_tokens:]
        enc = tok.encode(r["completion"], add_special_tokens=False)
        pos = sorted({len(pids) + k for off in finding_offsets(r["prompt"], r["completion"])
                      for k, (b, e) in enumerate(enc.offsets) if b <= off < e})
        if pos:
            out.append(((pids + enc.ids)[:pos[-1] + 1], pos))
    return out


def unlikelihood_loss(model: Any, negatives: list[tuple[list[int], list[int]]],
                      pick: np.ndarray) -> tuple[Any, Any]:
    """Mean of -log(1 - p) over the tokens where a finding starts (unlikelihood training:
    only those tokens are pushed down, the rest of the violating completion is not learned),
    and the router's balance loss on the batch."""
    import torch

    longest = max(len(negatives[i][0]) for i in pick)
    ids = torch.zeros((len(pick), longest), dtype=torch.long)
    rows, cols, want = [], [], []
    for r, i in enumerate(pick):
        seq, pos = negatives[i]
        ids[r, :len(seq)] = torch.tensor(seq, dtype=torch.long)
        for p in pos:
            rows.append(r)
            cols.append(p - 1)
            want.append(seq[p])
    logits, aux = model(ids[:, :-1])
    logp = torch.log_softmax(logits[rows, cols], dim=-1)
    p = logp[torch.arange(len(want)), torch.tensor(want)].exp()
    return -torch.log1p(-p.clamp(max=1 - 1e-6)).mean(), aux


def lexical_banned_calls() -> Any:
    """The lexical rules of the guard's ``default`` policy: a call of a banned name
    (codecheck.BANNED_CALLS) at an identifier boundary."""
    import re

    from fwassist.codecheck import BANNED_CALLS

    return re.compile(r"(?<![A-Za-z0-9_])(?:" + "|".join(BANNED_CALLS) + r")\s*\(")


def lexical_violation() -> Any:
    """A regex for the lexical part of the safety policy: the checker's banned calls, the
    dynamic-memory calls of MISRA 21.3 and goto, at identifier boundaries."""
    import re

    from fwassist.codecheck import BANNED_CALLS

    names = sorted(set(BANNED_CALLS) | {"malloc", "calloc", "realloc", "aligned_alloc", "free"})
    return re.compile(r"\bgoto\b|(?<![\w.>])(?:" + "|".join(names) + r")\s*\(")


class CleanBatches:
    """Random train windows (train.Batches) whose text holds no lexical violation: the half
    of each batch that keeps the original data teaches no banned pattern back."""

    def __init__(self, stream: np.ndarray, seq: int, batch: int, seed: int, tok: Any) -> None:
        import train as T

        self.inner = T.Batches(stream, seq, 1, seed)
        self.batch, self.tok, self.bad = batch, tok, lexical_violation()
        self.drawn = self.kept = 0

    def next(self) -> Any:
        import torch

        rows = []
        while len(rows) < self.batch:
            w = self.inner.next()
            self.drawn += 1
            if not self.bad.search(self.tok.decode(w[0].tolist(), skip_special_tokens=False)):
                rows.append(w)
                self.kept += 1
        return torch.cat(rows)


def samples(a: argparse.Namespace) -> list[dict[str, Any]]:
    """The judged samples, made once and kept as OUT/samples.json (so that sampling can run
    while the baseline is measured, and a tuning re-run with another selection reuses them)."""
    path = os.path.join(a.out, "samples.json")
    if not os.path.exists(path):
        t0 = time.time()
        records = collect_samples(a.artifact, a.corpus, a)
        log(f"sampling: {len(records)} completions ({time.time() - t0:.0f} s)")
        os.makedirs(a.out, exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            json.dump(records, f)
    with open(path, encoding="utf-8") as f:
        return list(json.load(f))


def sample(a: argparse.Namespace) -> int:
    samples(a)
    return 0


def tune(a: argparse.Namespace) -> int:
    import torch
    import torch.nn.functional as F
    from tokenizers import Tokenizer

    import train as T
    from model import QuantPlan, TinyCoder, TinyConfig

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    torch.use_deterministic_algorithms(True)
    os.makedirs(a.out, exist_ok=True)
    tok_path = os.path.join(a.corpus, "tokenizer.json")
    tok = Tokenizer.from_file(tok_path)
    cfg = TinyConfig(vocab_size=tok.get_vocab_size(), moe_intermediate_size=64)
    plan = QuantPlan()
    model = TinyCoder(cfg)
    load_artifact_weights(model, a.artifact)
    model.plan = plan
    test = T.token_stream(a.corpus, "test", tok_path)
    windows = T.eval_windows(test, 512, a.torch_eval_windows)
    quality: dict[str, Any] = {"start": T.eval_torch(model, windows)}
    log(f"start (artifact weights, fake quantization on): {quality['start']}")

    records = samples(a)
    chosen, stats = select(records, a.select)
    log(f"selection: {stats}")
    seqs, starts = [], []
    for r in chosen:
        pids = tok.encode(r["prompt"], add_special_tokens=False).ids[-(512 - a.max_tokens):]
        seqs.append(pids + tok.encode(r["completion"], add_special_tokens=False).ids)
        starts.append(len(pids))
    negatives = violating_tokens(records, tok, a) if a.unlikelihood > 0 else []
    stats["unlikelihood_sequences"] = len(negatives)
    stats["unlikelihood_tokens"] = sum(len(p) for _, p in negatives)
    # the prompt part cut to its last --rft-prompt-tokens tokens (context for the loss only)
    cut = [max(0, s - a.rft_prompt_tokens) for s in starts]
    seqs = [q[c:] for q, c in zip(seqs, cut)]
    starts = [s - c for s, c in zip(starts, cut)]
    train = T.token_stream(a.corpus, "train", tok_path)
    batches = CleanBatches(train, a.seq, a.batch // 2, a.seed, tok)
    rng = np.random.Generator(np.random.PCG64(a.seed + 1))
    opt = T.make_optimizer(model, 0.1)
    V = cfg.vocab_size
    t0 = time.time()
    with open(os.path.join(a.out, "tune_log.jsonl"), "w", encoding="utf-8") as logf:
        for step in range(a.steps):
            lr = T.lr_at(step, a.steps, a.lr, a.lr / 10, 10)
            for g in opt.param_groups:
                g["lr"] = lr
            w = batches.next()
            logits, aux = model(w[:, :-1])
            ce_orig = F.cross_entropy(logits.reshape(-1, V), w[:, 1:].reshape(-1))
            pick = rng.integers(0, len(seqs), size=a.batch // 2)
            longest = max(len(seqs[i]) for i in pick)
            ids = torch.zeros((len(pick), longest), dtype=torch.long)
            tgt = torch.full((len(pick), longest - 1), -100, dtype=torch.long)
            for r, i in enumerate(pick):
                s = torch.tensor(seqs[i], dtype=torch.long)
                ids[r, :s.numel()] = s
                tgt[r, starts[i] - 1:s.numel() - 1] = s[starts[i]:]
            logits_r, aux_r = model(ids[:, :-1])
            ce_rft = F.cross_entropy(logits_r.reshape(-1, V), tgt.reshape(-1), ignore_index=-100)
            loss = ce_orig + ce_rft + a.aux * (aux + aux_r)
            ul = torch.zeros(())
            if negatives:
                ul, aux_n = unlikelihood_loss(model, negatives, rng.integers(
                    0, len(negatives), size=a.batch // 2))
                loss = loss + a.unlikelihood * ul + a.aux * aux_n
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            if step % 10 == 0 or step == a.steps - 1:
                rec = {"phase": "policy-rft", "step": step, "ce_orig": round(ce_orig.item(), 4),
                       "ce_rft": round(ce_rft.item(), 4), "ul": round(ul.item(), 4), "lr": lr}
                logf.write(json.dumps(rec) + "\n")
                log(f"{rec} {time.time() - t0:.0f} s")
    torch.save(model.state_dict(), os.path.join(a.out, "policy.pt"))
    stats["train_windows_drawn"], stats["train_windows_clean"] = batches.drawn, batches.kept
    quality["tuned"] = T.eval_torch(model, windows)
    log(f"tuned: {quality['tuned']}")
    info = {"method": "rejection-sampling fine-tuning, fake quantization on",
            "reward": f"fwassist check-code, policy {POLICY}: a completion without findings"
            + (", then the most calls per line of a prompt's draws"
               if a.select == "clean-calls" else ""),
            "rft": stats, "steps": a.steps, "rft_prompt_tokens": a.rft_prompt_tokens,
            "batch": f"{a.batch // 2} train windows of {a.seq} without a lexical violation + "
            f"{a.batch // 2} accepted completions", "lr": a.lr, "seed": a.seed,
            "threads": a.threads, "max_tokens": a.max_tokens}
    with open(os.path.join(a.out, "tune_info.json"), "w", encoding="utf-8") as f:
        json.dump({"quality": quality, "info": info}, f, indent=1, sort_keys=True)
    export_tuned(model, plan, cfg, a, quality, info, tok_path)
    return 0


def export_again(a: argparse.Namespace) -> int:
    """Exports and evaluates OUT/policy.pt with the figures of OUT/tune_info.json."""
    import torch

    from model import QuantPlan, TinyCoder, TinyConfig

    torch.set_num_threads(a.threads)
    tok_path = os.path.join(a.corpus, "tokenizer.json")
    with open(os.path.join(a.out, "tune_info.json"), encoding="utf-8") as f:
        saved = json.load(f)
    with open(tok_path, encoding="utf-8") as f:
        vocab = len(json.load(f)["model"]["vocab"])
    cfg = TinyConfig(vocab_size=vocab, moe_intermediate_size=64)
    plan = QuantPlan()
    model = TinyCoder(cfg)
    model.load_state_dict(torch.load(os.path.join(a.out, "policy.pt")))
    model.plan = plan
    export_tuned(model, plan, cfg, a, saved["quality"], saved["info"], tok_path)
    return 0


def evaluate_once(art: str, a: argparse.Namespace) -> dict[str, Any]:
    """The policy evaluation of ``art``: OUT/policy_eval.json when it measured an artifact with
    the same tensors (a re-export only changes the card), else a new ``eval``."""
    import train as T
    from fwassist.artifact.verify import verify

    path, final = os.path.join(a.out, "policy_eval.json"), os.path.join(a.out, "tiny-coder.fwa")
    if os.path.exists(path) and os.path.exists(final):
        with open(path, encoding="utf-8") as f:
            saved: dict[str, Any] = json.load(f)
        if (saved["artifact_pin"] == verify(final).pin
                and T.tensors_digest(final) == T.tensors_digest(art)):
            log(f"policy evaluation of the same tensors reused from {path}")
            return {k: v for k, v in saved.items() if k != "artifact_pin"}
    return evaluate(art, a.corpus, a)


def policy_card(base_eval: Optional[dict[str, Any]], base_card: dict[str, Any],
                tuned_eval: dict[str, Any]) -> dict[str, Any]:
    """The model card's ``policy_evaluation``: the measurement's settings, the tuned model's
    figures and, with the base model's evaluation, its figures and the ratios."""
    settings = ("policy", "prompts", "max_tokens", "prompt_lines")
    modes = ("greedy", "sampled", "violations_total", "heldout_runtime_exact")
    card: dict[str, Any] = {k: tuned_eval[k] for k in settings}
    card["method"] = ("held-out prompts completed greedily and sampled (temperature 0.8, top-p "
                      "0.95, repetition penalty 1.15), checked by fwassist check-code without "
                      "the decode-time guard; 95 % bootstrap intervals over prompts")
    card["after"] = {k: tuned_eval[k] for k in modes}
    for k in ("greedy_guarded", "sampled_guarded"):   # eval --guard: the same, guard on
        if k in tuned_eval:
            card["after"][k] = tuned_eval[k]
    if base_eval is not None:
        card["before"] = {"model": f"{base_card.get('name')} {base_card.get('version')}",
                          **{k: base_eval[k] for k in modes}}
        card["versus_before"] = versus_baseline(base_eval, tuned_eval)
    return card


def export_tuned(model: Any, plan: Any, cfg: Any, a: argparse.Namespace,
                 quality: dict[str, Any], info: dict[str, Any], tok_path: str) -> None:
    """train.py's export path (QAT ONNX, ``fwassist export``) and its card, with the tuned
    model's figures: PyTorch QAT and the runtime's exact and fast held-out accuracy on
    train.py's windows (the float phase's figures are the base model's), the tuning recipe
    and the policy evaluation, before (``--baseline``) and after."""
    import train as T
    from fwassist.artifact.verify import verify

    base = verify(a.artifact).manifest["model_card"]
    art, _ = T.export(model, plan, tok_path, a.out, dict(base), "provisional.fwa")
    policy_eval = evaluate_once(art, a)
    windows = T.eval_windows(T.token_stream(a.corpus, "test", tok_path), 512, a.eval_windows)
    bq = base["quality"]
    q: dict[str, Any] = {k: bq[k] for k in ("float", "float_quantized_rtn")}
    q["qat"] = T.eval_torch(model, windows)
    q["qat_retains_float_accuracy"] = round(
        q["qat"]["next_token_accuracy"] / float(bq["float"]["next_token_accuracy"]), 4)
    q["runtime_exact"] = policy_eval["heldout_runtime_exact"]
    q["runtime_fast"] = T.eval_runtime(art, windows, "fast")
    q["policy_tuning"] = {"pytorch_before_after": quality}
    card = T.model_card(a.corpus, q, plan, {**base["training"], "policy_tuning": info}, cfg)
    card["version"] = a.version
    card["known_limitations"][-1] = (
        "no instruction tuning; the policy tuning lowers but does not remove violations of "
        "fwassist check-code's safety rules (policy_evaluation), so generated code must still "
        "be checked (the decode-time guard blocks the lexical rules)")
    base_eval = None
    if a.baseline:
        with open(a.baseline, encoding="utf-8") as f:
            base_eval = json.load(f)
    card["policy_evaluation"] = policy_card(base_eval, base, policy_eval)
    art, pin = T.export(model, plan, tok_path, a.out, card, "tiny-coder.fwa")
    if T.tensors_digest(art) != T.tensors_digest(os.path.join(a.out, "provisional.fwa")):
        raise SystemExit("the final artifact's tensors differ from the measured provisional one")
    os.remove(os.path.join(a.out, "provisional.fwa"))
    os.remove(os.path.join(a.out, "provisional.fwa.pin"))
    with open(os.path.join(a.out, "policy_eval.json"), "w", encoding="utf-8") as f:
        json.dump({"artifact_pin": pin, **policy_eval}, f, indent=1, sort_keys=True)
    log(f"done: {art} {pin}")


def compare(a: argparse.Namespace) -> int:
    """The run in OUT (its tune_info.json and policy_eval.json) against the base model's
    evaluation: writes --result with the recipe, the figures, the ratios and each target
    condition's verdict; exit 0 when every condition holds, 1 otherwise."""
    from fwassist.artifact.verify import verify

    with open(a.baseline, encoding="utf-8") as f:
        base = json.load(f)
    with open(os.path.join(a.out, "policy_eval.json"), encoding="utf-8") as f:
        cand = json.load(f)
    with open(os.path.join(a.out, "tune_info.json"), encoding="utf-8") as f:
        tuning = json.load(f)
    vs = versus_baseline(base, cand)
    res = {"what": a.what, "base_pin": verify(a.artifact).pin, "tuned_pin": cand["artifact_pin"],
           "tuning": tuning, "evaluation": cand, "versus_baseline": vs}
    with open(a.result, "w", encoding="utf-8") as f:
        json.dump(res, f, indent=1, sort_keys=True)
        f.write("\n")
    failed = [k for k, ok in vs["conditions"].items() if not ok]
    verdict = "meets every condition" if not failed else "fails " + ", ".join(failed)
    log(f"{json.dumps(vs)}: {verdict}")
    return 0 if not failed else 1


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("command", choices=("eval", "sample", "tune", "export", "compare"))
    ap.add_argument("--corpus", help="corpus.py --out DIR with tokenizer.json (not for compare)")
    ap.add_argument("--artifact", required=True, help="the base model (the shipped one)")
    ap.add_argument("--out", required=True,
                    help="eval: result JSON; tune, export, compare: the run's directory")
    ap.add_argument("--baseline", help="the base model's eval JSON (compare; tune and export: "
                    "recorded in the card)")
    ap.add_argument("--result", help="compare: the JSON to write")
    ap.add_argument("--what", default="", help="compare: the run's description")
    ap.add_argument("--per-file", type=int, default=4)
    ap.add_argument("--prompt-lines", type=int, default=24)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--samples", type=int, default=1200, help="train prompts sampled")
    ap.add_argument("--draws", type=int, default=2, help="sampled completions per prompt")
    ap.add_argument("--sample-temperature", type=float, default=0.8)
    ap.add_argument("--sample-top-p", type=float, default=0.95)
    ap.add_argument("--sample-repetition-penalty", type=float, default=1.15)
    ap.add_argument("--select", choices=("clean", "clean-calls"), default="clean-calls",
                    help="which sampled completions the tuning learns from (see select())")
    ap.add_argument("--steps", type=int, default=120)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=512, help="tokens per train window")
    ap.add_argument("--rft-prompt-tokens", type=int, default=384,
                    help="prompt tokens kept before an accepted completion")
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--aux", type=float, default=0.01)
    ap.add_argument("--unlikelihood", type=float, default=0.0,
                    help="weight of the unlikelihood loss on the tokens where a finding of a "
                    "sampled completion starts (0: off)")
    ap.add_argument("--eval-windows", type=int, default=48,
                    help="held-out windows of 512 tokens for the runtime's accuracy")
    ap.add_argument("--torch-eval-windows", type=int, default=48,
                    help="held-out windows for the PyTorch accuracy before/after tuning")
    ap.add_argument("--guard", action="store_true",
                    help="eval: also with the decode-time guard (policy default)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--version", default="1.1.0")
    a = ap.parse_args(argv)
    if a.command == "compare":
        if not (a.baseline and a.result):
            ap.error("compare needs --baseline and --result")
        return compare(a)
    if not a.corpus:
        ap.error(f"{a.command} needs --corpus")
    if a.command == "tune":
        return tune(a)
    if a.command == "sample":
        return sample(a)
    if a.command == "export":
        return export_again(a)
    res = evaluate(a.artifact, a.corpus, a)
    with open(a.out, "w", encoding="utf-8") as f:
        json.dump(res, f, indent=1, sort_keys=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
