#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Decode-time code guard: its cost per decode step and its effect (docs/code-policy.md,
"Decode-time guard").

    python benchmarks/guard.py [--json benchmarks/results/guard.json] [--quick]
        [--sdist benchmarks/.llamacpp/llama_cpp_python-0.3.36.tar.gz] [--prompts FILE.jsonl]

Bundled model (vocabulary 4,096), 1 thread, exact mode: every prompt generated without and
with the guard (policy "default"), greedy and sampled (temperature 0.8, top-p 0.95, penalty
1.15), the two runs taking turns, --reps times; decode ms per generated token (the generation
stats, the fastest repetition), the median over prompts of the per-prompt ratio guarded /
plain; lexical violations (a banned call
at an identifier boundary, whitespace, "(", regular expression over the prompt + output text,
counted when the match ends in the output) and interventions. Prompts: a JSONL file of
{"prompt": ...} (--prompts, e.g. the fine-tuning's held-out prompt set), else C function
openings cut from the C sources vendored in the pinned llama-cpp-python 0.3.36 sdist
(ggml/src, code the bundled model was not trained on), plus prompts that end inside a banned
call's name (the model then writes the call).

Sampler path (the guard's work is all there): the median time of one step of the sampler
(_core.bench_guard_sample: copy, penalty, argmax or top-p draw over the vocabulary) without and
with the guard (walk the sampled token's bytes; on a banned token, mask and draw again), over
rows of seeded random logits, at the bundled vocabulary and at the Qwen2 vocabulary (151,936
tokens, tokenizer.ggml.tokens of ggml-vocab-qwen2.gguf from the sdist, read by the small GGUF
reader below). The guard's cost per step is compared with the decode step of the bundled
model (measured here) and, for the Qwen2 vocabulary, with the decode step of the medium
synthetic MoE model of benchmarks/results/generate-zen4-2core.json (vocabulary 32,768: a lower
bound for a model with 151,936 tokens, whose lm_head alone is 4.6x larger). Intervention steps
are timed separately: the first one in a state builds that state's banned set (one walk of
every token), later ones reuse it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import statistics
import struct
import sys
import tarfile
from typing import IO, Any, Optional

import numpy as np

import fwassist
from fwassist import Model, _core
from fwassist.codecheck import BANNED_CALLS
from fwassist.export.synthetic import bytes_to_unicode
from fwassist.guard import CompiledPolicy, compile_policy
from fwassist.models import TINY_CODER_PIN, tiny_coder_path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from llamacpp_build import DEFAULT_ROOT, sdist_path  # noqa: E402
from machine import git_commit, write_results  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
SDIST = sdist_path(DEFAULT_ROOT)
QWEN2_GGUF = "llama_cpp_python-0.3.36/vendor/llama.cpp/models/ggml-vocab-qwen2.gguf"
C_SOURCES = "llama_cpp_python-0.3.36/vendor/llama.cpp/ggml/src/"
VIOLATION = re.compile(rb"(?<![A-Za-z0-9_\x80-\xff])(" +
                       b"|".join(w.encode() for w in BANNED_CALLS) + rb")[ \t\n\r\v\f]*\(")
# Prompts that end inside a banned call's name: the bundled model completes them with the call.
PROVOKE = (
    "static void set_name(struct device *dev, const char *name)\n{\n    str",
    "static void log_value(char *out, int value)\n{\n    s",
    "static void save_path(char *dst, const char *dir)\n{\n    strc",
    "int read_port(const char *arg)\n{\n    int port = at",
)
GREEDY = {"temperature": 0.0, "repetition_penalty": 1.15}
SAMPLED = {"temperature": 0.8, "top_p": 0.95, "repetition_penalty": 1.15}


# -- GGUF (tokenizer.ggml.tokens only) ---------------------------------------------------------
_SCALAR = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q",
           12: "d"}


def _read(f: IO[bytes], fmt: str) -> Any:
    n = struct.calcsize("<" + fmt)
    return struct.unpack("<" + fmt, f.read(n))[0]


def _value(f: IO[bytes], vtype: int) -> Any:
    if vtype in _SCALAR:
        return _read(f, _SCALAR[vtype])
    if vtype == 8:  # string
        return f.read(_read(f, "Q"))
    if vtype == 9:  # array
        etype, n = _read(f, "I"), _read(f, "Q")
        return [_value(f, etype) for _ in range(n)]
    raise ValueError(f"GGUF: unknown value type {vtype}")


def gguf_tokens(f: IO[bytes]) -> list[bytes]:
    """The tokenizer.ggml.tokens array of a GGUF (v2/v3) file, each token's stored bytes."""
    if f.read(4) != b"GGUF":
        raise ValueError("not a GGUF file")
    version = _read(f, "I")
    if version not in (2, 3):
        raise ValueError(f"GGUF version {version}")
    _read(f, "Q")                      # tensor count
    for _ in range(_read(f, "Q")):     # key/value pairs
        key = f.read(_read(f, "Q")).decode()
        value = _value(f, _read(f, "I"))
        if key == "tokenizer.ggml.tokens":
            return list(value)
    raise ValueError("GGUF: no tokenizer.ggml.tokens")


def byte_level(tokens: list[bytes]) -> list[bytes]:
    """GPT-2 byte-level token strings (Qwen2's BPE) back to their bytes; a token with a char
    outside the byte alphabet (a special token) keeps its text."""
    char_byte = {c: b for b, c in bytes_to_unicode().items()}
    out = []
    for t in tokens:
        s = t.decode("utf-8")
        out.append(bytes(char_byte[ch] for ch in s) if all(ch in char_byte for ch in s)
                   else s.encode())
    return out


# -- prompts -----------------------------------------------------------------------------------
def c_prompts(sdist: str, n: int) -> list[str]:
    """Function openings (up to 12 lines before a line ending in "{" after a ")" line, and that
    line; at most 1,200 characters) from the sdist's ggml C sources, n of them spread evenly,
    deterministic."""
    cands: list[str] = []
    with tarfile.open(sdist) as tar:
        for m in sorted(tar.getmembers(), key=lambda m: m.name):
            if not (m.isfile() and m.name.startswith(C_SOURCES) and m.name.endswith(".c")):
                continue
            f = tar.extractfile(m)
            assert f is not None
            lines = f.read().decode("utf-8", "replace").splitlines()
            for i in range(1, len(lines)):
                if lines[i].strip() == "{" and lines[i - 1].rstrip().endswith(")") or \
                        (lines[i].rstrip().endswith(") {") and not lines[i].startswith((" ", "\t"))):
                    text = "\n".join(lines[max(0, i - 12):i + 1]) + "\n"
                    if len(text) <= 1200:  # well inside the bundled model's 1,024-token context
                        cands.append(text)
    if len(cands) <= n:
        return cands
    step = len(cands) / n
    return [cands[int(k * step)] for k in range(n)]


# -- measurements ------------------------------------------------------------------------------
def generations(model: Model, prompts: list[str], max_tokens: int,
                reps: int) -> dict[str, Any]:
    """Each prompt without and with the guard, greedy and sampled, taking turns, ``reps`` times
    (the same seed gives the same text each time); a prompt's time per token is the fastest of
    its repetitions (the one least disturbed by other processes)."""
    out: dict[str, Any] = {}
    with model.session() as s:
        for name, kw in (("greedy", GREEDY), ("sampled", SAMPLED)):
            ratios, rows = [], []
            totals = {"plain": [0.0, 0, 0, 0], "guard": [0.0, 0, 0, 0]}  # ms, tokens, viol, lines
            interventions: dict[str, int] = {}
            for i, p in enumerate(prompts):
                per: dict[str, tuple[float, list[str]]] = {}
                for rep in range(reps):
                    order = ("plain", "guard") if (i + rep) % 2 == 0 else ("guard", "plain")
                    for which in order:
                        g = s.generate(p, max_tokens=max_tokens, seed=i,
                                       stop_ids=model.eos_ids(),
                                       policy="default" if which == "guard" else None, **kw)
                        st = g.stats
                        ms = st["decode_ms"] / max(1, st["generated_tokens"])
                        if rep > 0:
                            per[which] = (min(per[which][0], ms), per[which][1])
                            continue
                        data = (p + g.text).encode()
                        viol = [m.group(1).decode() for m in VIOLATION.finditer(data)
                                if m.end() > len(p.encode())]
                        t = totals[which]
                        t[0] += st["decode_ms"]
                        t[1] += st["generated_tokens"]
                        t[2] += len(viol)
                        t[3] += g.text.count("\n") + 1
                        per[which] = (ms, viol)
                        if which == "guard":
                            for x in st["interventions"]:
                                interventions[x["rule"]] = interventions.get(x["rule"], 0) + 1
                ratios.append(per["guard"][0] / per["plain"][0])
                rows.append({"plain_violations": per["plain"][1],
                             "guard_violations": per["guard"][1]})
            out[name] = {
                "prompts": len(prompts), "max_tokens": max_tokens, "sampling": kw,
                "plain_ms_per_token": totals["plain"][0] / max(1, totals["plain"][1]),
                "guard_ms_per_token": totals["guard"][0] / max(1, totals["guard"][1]),
                "median_ratio": statistics.median(ratios),
                "plain_violations": totals["plain"][2], "guard_violations": totals["guard"][2],
                "plain_lines": totals["plain"][3], "guard_lines": totals["guard"][3],
                "interventions": interventions,
                "plain_violations_by_call": _count(v for r in rows for v in r["plain_violations"]),
            }
    return out


def _count(items: Any) -> dict[str, int]:
    d: dict[str, int] = {}
    for x in items:
        d[x] = d.get(x, 0) + 1
    return dict(sorted(d.items()))


def sampler_path(policy: CompiledPolicy, tokens: list[bytes], steps: int,
                 reps: int) -> dict[str, Any]:
    """Median ns per sampler step without / with the guard (no intervention: random logits
    rarely favour a banned token), greedy and top-p, the two taking turns per repetition."""
    vocab = len(tokens)
    rng = np.random.default_rng(0)
    logits = (rng.standard_normal((steps, vocab)) * 3).astype(np.float32)
    res: dict[str, Any] = {}
    for name, (temp, top_p) in (("greedy", (0.0, 1.0)), ("top_p", (0.8, 0.95))):
        plain: list[int] = []
        guard: list[int] = []
        ivs = 0
        for r in range(reps):
            for which in (("plain", "guard") if r % 2 == 0 else ("guard", "plain")):
                toks, ns, iv = _core.bench_guard_sample(
                    logits, temp, 0, top_p, 7, policy._native if which == "guard" else None, 0)
                (guard if which == "guard" else plain).extend(ns)
                ivs += iv if which == "guard" else 0
        p, g = statistics.median(plain), statistics.median(guard)
        res[name] = {"plain_ns": p, "guard_ns": g, "guard_cost_ns": g - p,
                     "interventions": ivs, "steps": steps * reps}
    # Intervention steps: from the state after "strcpy", a row whose argmax is a banned token.
    state, _ = policy.feed(b"    strcpy")
    banned = policy.banned(state)  # builds the set (warm); its cost is timed below on a copy
    row = (rng.standard_normal((1, vocab)) * 3).astype(np.float32)
    row[0, banned[0]] = 100.0
    times = []
    for _ in range(max(5, reps * 4)):
        _, ns, iv = _core.bench_guard_sample(row, 0.0, 0, 1.0, 7, policy._native, state)
        assert iv == 1
        times.append(ns[0])
    fresh = CompiledPolicy.for_vocabulary(policy.policy, tokens)  # no banned set built yet
    cold_state, _ = fresh.feed(b"    strcpy")
    _, cold_ns, _ = _core.bench_guard_sample(row, 0.0, 0, 1.0, 7, fresh._native, cold_state)
    res["intervention"] = {"warm_ns": statistics.median(times), "cold_ns": cold_ns[0],
                           "banned_in_state": len(banned)}
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", default=os.path.join(HERE, "results", "guard.json"))
    ap.add_argument("--quick", action="store_true", help="fewer prompts and steps (CI)")
    ap.add_argument("--sdist", default=SDIST, help="the llama-cpp-python 0.3.36 sdist")
    ap.add_argument("--prompts", help="JSONL of {\"prompt\": ...} (default: from the sdist)")
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--reps", type=int, default=3, help="timed repetitions per prompt")
    args = ap.parse_args()
    n_prompts = 24 if args.quick else 200
    steps, reps = (16, 2) if args.quick else (64, 5)

    model = Model.load(tiny_coder_path(), pin=TINY_CODER_PIN)
    have_sdist = os.path.exists(args.sdist)
    if args.prompts:
        with open(args.prompts, encoding="utf-8") as f:
            prompts = [json.loads(line)["prompt"] for line in f if line.strip()][:n_prompts]
        source = args.prompts
    elif have_sdist:
        prompts = c_prompts(args.sdist, n_prompts)
        source = f"{os.path.basename(args.sdist)}:{C_SOURCES}*.c function openings"
    else:
        raise SystemExit(f"{args.sdist} not found: pass --sdist or --prompts")
    gen = generations(model, prompts, args.max_tokens, args.reps)
    provoked = generations(model, list(PROVOKE), args.max_tokens, 1)

    policy = compile_policy(model, "default")
    tj = json.loads(str(model._native.tokenizer_json()))
    bundled_bytes = [b""] * model.vocab_size
    for tok, i in tj["model"]["vocab"].items():
        bundled_bytes[i] = byte_level([tok.encode()])[0]
    paths = {"bundled": {"vocab": model.vocab_size, "states": policy.num_states,
                         **sampler_path(policy, bundled_bytes, steps, reps)}}
    qwen_note = None
    if have_sdist:
        with tarfile.open(args.sdist) as tar:
            member = tar.extractfile(QWEN2_GGUF)
            assert member is not None
            qwen = byte_level(gguf_tokens(member))
        qp = CompiledPolicy.for_vocabulary("default", qwen)
        paths["qwen2"] = {"vocab": len(qwen), "states": qp.num_states,
                          **sampler_path(qp, qwen, steps, reps)}
    else:
        qwen_note = "sdist not found: Qwen2 vocabulary not measured"

    # The decode steps the guard's cost is compared with.
    bundled_step_ms = gen["greedy"]["plain_ms_per_token"]
    medium_step_ms: Optional[float] = None
    ref = os.path.join(HERE, "results", "generate-zen4-2core.json")
    if os.path.exists(ref):
        with open(ref) as f:
            for row in json.load(f).get("rows", []):
                if row.get("model") == "medium" and row.get("bits") == 4 and \
                        row.get("threads") == 1:
                    medium_step_ms = 1e3 / float(row["decode_tok_s"])
    payload = {"meta": {"machine": platform.machine(), "python": platform.python_version(),
                        "commit": git_commit(), "cpu_info": fwassist.cpu_info(),
                        "prompts": source, "method": __doc__, "note": qwen_note},
               "generations": gen, "provoked": provoked, "sampler_path": paths,
               "reference_steps_ms": {"bundled": bundled_step_ms, "medium_synthetic_32k_vocab":
                                      medium_step_ms}}

    L = ["Decode-time guard (policy default): bundled model, 1 thread, exact mode",
         f"prompts: {source}",
         f"{'set':<10}{'mode':<9}{'prompts':>8}{'plain ms/t':>11}{'guard ms/t':>11}"
         f"{'ratio':>8}{'viol plain':>11}{'viol guard':>11}{'interventions':>15}"]
    first = "prompts" if args.prompts else "C-sources"
    for setname, g in ((first, gen), ("provoked", provoked)):
        for mode in ("greedy", "sampled"):
            x = g[mode]
            # Four prompts time nothing reliably: the provoked set counts violations only.
            ratio = f"{x['median_ratio']:>8.3f}" if g is gen else f"{'-':>8}"
            L.append(f"{setname:<10}{mode:<9}{x['prompts']:>8}{x['plain_ms_per_token']:>11.3f}"
                     f"{x['guard_ms_per_token']:>11.3f}{ratio}"
                     f"{x['plain_violations']:>11}{x['guard_violations']:>11}"
                     f"{sum(x['interventions'].values()):>15}")
    L.append(f"ratio: median over prompts of guarded / plain decode ms per token (each the "
             f"fastest of {args.reps} runs); viol: banned calls written (regex over prompt + output, ending in the output)")
    L.append("")
    L.append("Sampler path per step (median ns), the guard's cost vs a decode step")
    L.append(f"{'vocab':<18}{'states':>7}{'sampler':>9}{'plain ns':>11}{'guard ns':>11}"
             f"{'cost ns':>9}{'% of step':>11}  step compared")
    for name, p in paths.items():
        for mode in ("greedy", "top_p"):
            x = p[mode]
            step_ms = bundled_step_ms if name == "bundled" else medium_step_ms
            pct = 100 * x["guard_cost_ns"] / (step_ms * 1e6) if step_ms else float("nan")
            what = ("bundled decode step (measured above)" if name == "bundled" else
                    f"medium MoE decode step {step_ms:.2f} ms (vocab 32,768; lower bound)"
                    if step_ms else "n/a")
            L.append(f"{name + ' ' + str(p['vocab']):<18}{p['states']:>7}{mode:>9}"
                     f"{x['plain_ns']:>11.0f}{x['guard_ns']:>11.0f}{x['guard_cost_ns']:>9.0f}"
                     f"{pct:>10.3f}%  {what}")
        iv = p["intervention"]
        L.append(f"{'':<18}intervention step (greedy): {iv['warm_ns'] / 1e3:.1f} us with the "
                 f"state's banned set cached, {iv['cold_ns'] / 1e3:.1f} us building it "
                 f"({iv['banned_in_state']} banned tokens after '    strcpy')")
    if qwen_note:
        L.append(qwen_note)
    write_results(args.json, payload, "\n".join(L))
    return 0


if __name__ == "__main__":
    sys.exit(main())
