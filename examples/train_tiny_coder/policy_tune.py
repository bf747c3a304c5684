# SPDX-License-Identifier: Apache-2.0
"""Policy-aware fine-tuning of the tiny coder: rejection-sampling fine-tuning (RFT) with
``fwassist check-code``'s rules as the reward, after QAT and with QAT's fake quantization on.

    python policy_tune.py eval --corpus DIR --artifact A.fwa --out result.json
    python policy_tune.py sample --corpus DIR --artifact A.fwa --out DIR   (optional: tune
                                                                            does it first)
    python policy_tune.py tune --corpus DIR --artifact A.fwa --out DIR [--steps N]

Why RFT: the reward is a 0/1 verdict of a rule checker on short, often unparseable fragments;
at 11 M parameters and a budget of minutes on two CPU cores, policy-gradient or DPO-style
updates would be high-variance and need a reference model in memory, while RFT is plain
supervised learning on the completions the checker passes (the model's own distribution, so
it keeps its style, calls and syntax), mixed with the original data to hold the held-out
accuracy. Fake quantization stays on, so the exported codes are the ones that were trained.

``eval`` (the measurement, before and after): a fixed set of held-out prompts (up to
``--per-file`` prompts from each test-split file: the ``--prompt-lines`` lines before evenly
spaced line boundaries), each completed for ``--max-tokens`` tokens greedily and sampled
(temperature 0.8, top-p 0.95, seed = prompt index), repetition penalty 1.15 as ``fwassist
demo``, cut at the last newline. Prompt and completion are checked together (tolerant mode,
``safety`` policy: every rule, every function safety-related) and a finding counts when it
lies in the completion. Reported: violations per 1,000 generated lines by rule with a 95 %
bootstrap interval over prompts, function calls (tree-sitter ``call_expression``) per 1,000
lines, the fraction of completions holding a syntax-error region, and the runtime's held-out
next-token accuracy and perplexity (the 48 windows of train.py).

``tune``: the weights of the artifact (its codes times scales are fixed points of the fake
quantization, so the start is exactly the shipped model), ``--samples`` sampled completions of
train-split prompts, the ones without a finding kept; then ``--steps`` QAT steps on batches of
kept completions (loss on the completion tokens) mixed half and half with train windows that
hold no lexical violation of the policy (banned calls, malloc/free, goto: the original data
keeps the accuracy but must not teach the patterns back);
then the export path of train.py (QAT ONNX, ``fwassist export``, runtime evaluation, final
artifact with the policy evaluation in its model card) and ``eval`` of the new artifact.
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
             threads: int) -> list[str]:
    """One completion per prompt, cut after its last newline."""
    from fwassist import Model

    m = Model.load(artifact)
    out = []
    with m.session(max_context=1024, threads=threads) as s:
        for i, p in enumerate(prompts):
            ids = m.encode(p["prompt"])[-(1024 - max_tokens):]
            kw: dict[str, Any] = {"temperature": 0.8, "top_p": 0.95, "seed": i} if sampled else {}
            g = s.generate(prompt_ids=ids, max_tokens=max_tokens, repetition_penalty=1.15,
                           stop_ids=(EOS_ID,), **kw)
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
    both = result["greedy"]["violations"] + result["sampled"]["violations"]
    result["violations_total"] = both
    tok = os.path.join(corpus, "tokenizer.json")
    windows = eval_windows(token_stream(corpus, "test", tok), 512, a.eval_windows)
    result["heldout_runtime_exact"] = eval_runtime(artifact, windows, "exact")
    return result


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


def collect_accepted(artifact: str, corpus: str, a: argparse.Namespace,
                     tok: Any) -> tuple[list[list[int]], list[int], dict[str, Any]]:
    """Sampled completions of train prompts; the ones the checker passes, as token ids with the
    length of their prompt part."""
    docs = load_split(corpus, "train")
    rng = np.random.Generator(np.random.PCG64(a.seed))
    pick = rng.permutation(len(docs))
    prompts = make_prompts([docs[i] for i in pick], 2, a.prompt_lines)[:a.samples]
    comps = generate(artifact, prompts, True, a.max_tokens, a.threads)
    judge = Judge()
    seqs, starts = [], []
    rejected: Counter[str] = Counter()
    for p, c in zip(prompts, comps):
        if c.count("\n") < 3:
            rejected["short"] += 1
            continue
        v = judge.judge(p["prompt"], c)
        if v["findings"]:
            rejected.update(v["findings"])
            continue
        pids = tok.encode(p["prompt"], add_special_tokens=False).ids[-(512 - a.max_tokens):]
        cids = tok.encode(c, add_special_tokens=False).ids
        seqs.append(pids + cids)
        starts.append(len(pids))
    stats = {"sampled": len(prompts), "accepted": len(seqs),
             "rejected": dict(sorted(rejected.items()))}
    return seqs, starts, stats


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


def accepted_samples(a: argparse.Namespace, tok: Any) -> tuple[list[list[int]], list[int],
                                                              dict[str, Any]]:
    """The rejection-sampling set, made once and kept as OUT/accepted.json (so that sampling
    can run while the baseline is measured, and a tuning re-run reuses it)."""
    path = os.path.join(a.out, "accepted.json")
    if not os.path.exists(path):
        t0 = time.time()
        seqs, starts, stats = collect_accepted(a.artifact, a.corpus, a, tok)
        log(f"rejection sampling: {stats} ({time.time() - t0:.0f} s)")
        os.makedirs(a.out, exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            json.dump({"seqs": seqs, "starts": starts, "stats": stats}, f)
    with open(path, encoding="utf-8") as f:
        saved = json.load(f)
    return saved["seqs"], saved["starts"], saved["stats"]


def sample(a: argparse.Namespace) -> int:
    from tokenizers import Tokenizer

    accepted_samples(a, Tokenizer.from_file(os.path.join(a.corpus, "tokenizer.json")))
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

    seqs, starts, stats = accepted_samples(a, tok)
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
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            if step % 10 == 0 or step == a.steps - 1:
                rec = {"phase": "policy-rft", "step": step, "ce_orig": round(ce_orig.item(), 4),
                       "ce_rft": round(ce_rft.item(), 4), "lr": lr}
                logf.write(json.dumps(rec) + "\n")
                log(f"{rec} {time.time() - t0:.0f} s")
    torch.save(model.state_dict(), os.path.join(a.out, "policy.pt"))
    stats["train_windows_drawn"], stats["train_windows_clean"] = batches.drawn, batches.kept
    quality["tuned"] = T.eval_torch(model, windows)
    log(f"tuned: {quality['tuned']}")
    info = {"method": "rejection-sampling fine-tuning, fake quantization on",
            "reward": f"fwassist check-code, policy {POLICY}: a completion without findings",
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


def export_tuned(model: Any, plan: Any, cfg: Any, a: argparse.Namespace,
                 quality: dict[str, Any], info: dict[str, Any], tok_path: str) -> None:
    """train.py's export path; the card carries the base card's figures plus the policy
    evaluation of the new artifact."""
    import train as T
    from fwassist.artifact.verify import verify

    base = verify(a.artifact).manifest["model_card"]
    card = dict(base)
    art, pin = T.export(model, plan, tok_path, a.out, card, "provisional.fwa")
    policy_eval = evaluate(art, a.corpus, a)
    card["quality"] = {**base.get("quality", {}), "policy_tuning": {
        "pytorch": quality, "runtime_exact": policy_eval["heldout_runtime_exact"]}}
    card["training"] = {**base.get("training", {}), "policy_tuning": info}
    card["policy_evaluation"] = policy_eval
    card["version"] = a.version
    card["datasets"] = T.model_card(a.corpus, {}, plan, base["training"], cfg)["datasets"]
    art, pin = T.export(model, plan, tok_path, a.out, card, "tiny-coder.fwa")
    if T.tensors_digest(art) != T.tensors_digest(os.path.join(a.out, "provisional.fwa")):
        raise SystemExit("the final artifact's tensors differ from the measured provisional one")
    os.remove(os.path.join(a.out, "provisional.fwa"))
    os.remove(os.path.join(a.out, "provisional.fwa.pin"))
    with open(os.path.join(a.out, "policy_eval.json"), "w", encoding="utf-8") as f:
        json.dump({"artifact_pin": pin, **policy_eval}, f, indent=1, sort_keys=True)
    log(f"done: {art} {pin}")


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("command", choices=("eval", "sample", "tune", "export"))
    ap.add_argument("--corpus", required=True, help="corpus.py --out DIR with tokenizer.json")
    ap.add_argument("--artifact", required=True)
    ap.add_argument("--out", required=True, help="eval: result JSON; tune: output directory")
    ap.add_argument("--per-file", type=int, default=4)
    ap.add_argument("--prompt-lines", type=int, default=24)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--samples", type=int, default=1200)
    ap.add_argument("--steps", type=int, default=120)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=512, help="tokens per train window")
    ap.add_argument("--rft-prompt-tokens", type=int, default=384,
                    help="prompt tokens kept before an accepted completion")
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--aux", type=float, default=0.01)
    ap.add_argument("--eval-windows", type=int, default=48,
                    help="held-out windows of 512 tokens for the runtime's accuracy")
    ap.add_argument("--torch-eval-windows", type=int, default=48,
                    help="held-out windows for the PyTorch accuracy before/after tuning")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--version", default="1.1.0")
    a = ap.parse_args(argv)
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
