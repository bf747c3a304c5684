# SPDX-License-Identifier: Apache-2.0
"""``fwassist demo``: the main job on the bundled model, offline.

Verifies the bundled fwassist-tiny-coder artifact against its pin (every byte, before use),
shows its identity (model card, quantization, training data licenses, measured quality),
completes a few firmware C prompts with the completion streaming to stdout, and prints per
prompt and in total: tokens/s, experts activated per layer, CPU core-seconds per token, and the
energy / Software Carbon Intensity estimate (a model estimate unless RAPL/hwmon energy
counters are readable; the report says which). Then the decode-time code guard: prompts the
model completes with a banned call (strcpy, sprintf), without and with the guard (policy
default), and the guard's interventions.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any, Optional, TextIO

PROMPTS = (
    "/* Ring buffer for received UART bytes. */\n"
    "#include <stdint.h>\n#include <stddef.h>\n\n"
    "static size_t ring_next(size_t i, size_t size)\n{\n",
    "/* Returns the number of bytes copied, or -1 when the buffer is too small. */\n"
    "int buffer_copy(char *dst, size_t dst_size, const char *src, size_t len)\n{\n",
    "static uint32_t crc32_update(uint32_t crc, const unsigned char *data, size_t len)\n"
    "{\n    size_t i;\n",
)
# Prompts the bundled model completes with a banned call when unguarded (exact mode, greedy,
# penalty 1.15): "strcat(" in the output after a strcpy in the prompt (the policy-tuned model
# writes none unprompted), and "s" + "printf(" split between the prompt and the output.
GUARD_PROMPTS = (
    "static void set_name(struct device *dev, const char *name)\n{\n"
    "    strcpy(dev->name, name);\n}\n\n"
    "static void set_label(struct device *dev, const char *label)\n{\n    str",
    "static void log_value(char *out, int value)\n{\n    s",
)
GUARD_TOKENS = 40
# World average grid intensity (IEA, 2022: ~460 gCO2e/kWh), used when none is given.
DEFAULT_GRID_G_PER_KWH = 460.0


def register(sub: Any) -> None:
    from . import MAX_PENALTY, MAX_THREADS, MIN_PENALTY, float_range, int_range, temperature
    from .run import MAX_TOKENS

    p = sub.add_parser("demo", help="verify the bundled model and complete firmware C code",
                       description=__doc__)
    p.add_argument("--prompt", action="append", type=_prompt,
                   help="a C prompt to complete instead of the built-in ones (repeatable)")
    p.add_argument("--max-tokens", type=int_range(1, MAX_TOKENS), default=64)
    p.add_argument("--mode", choices=("exact", "fast"), default="fast")
    p.add_argument("--threads", type=int_range(1, MAX_THREADS), default=1)
    p.add_argument("--temperature", type=temperature, default=0.0,
                   help="0 = greedy (default: the same bits on every CPU)")
    p.add_argument("--repetition-penalty", type=float_range(MIN_PENALTY, MAX_PENALTY), default=1.15,
                   help="1 = off (default 1.15: a tiny model's greedy output loops without it)")
    p.add_argument("--grid-intensity", type=float_range(0.0), default=None,
                   help=f"gCO2e/kWh of your grid (default {DEFAULT_GRID_G_PER_KWH:g}, a world "
                        "average)")
    p.add_argument("--energy-profile", metavar="NAME|PATH",
                   help="device energy profile (default by CPU architecture)")
    p.add_argument("--copy", action="store_true",
                   help="read and verify the model into private memory")
    p.add_argument("--strict", action="store_true",
                   help="refuse a mapped model whose file is not protected against writes")
    p.set_defaults(fn=run)


def _prompt(s: str) -> str:
    if not s:
        raise argparse.ArgumentTypeError("a prompt may not be empty")
    return s


def _out(msg: str, f: TextIO = sys.stderr) -> None:
    print(msg, file=f, flush=True)


def _identity(path: str, pin: str) -> dict[str, Any]:
    from ..artifact.inspect import inspect

    info = inspect(path)
    if info["pin"] != pin:  # the C++ loader checked the same bytes; a second opinion is cheap
        raise RuntimeError(f"{path}: the Python verifier's pin {info['pin']} differs")
    return info


def _print_identity(info: dict[str, Any], path: str) -> None:
    import os

    card, c, tot = info["model_card"], info["config"], info["totals"]
    H, I, L = int(c["hidden_size"]), int(c["moe_intermediate_size"]), int(c["num_hidden_layers"])
    E, K = int(c["num_experts"]), int(c["num_experts_per_tok"])
    # Active: what a token multiplies with (not the embedding table, not the unpicked experts).
    active = tot["params"] - int(c["vocab_size"]) * H - L * (E - K) * 3 * H * I
    fmt = ", ".join(f"{k} {v['params'] / 1e6:.2f} M" for k, v in tot["by_format"].items())
    _out(f"model     {card.get('name')} {card.get('version', '')}: Qwen3-MoE, {L} layers, "
         f"{E} experts top-{K}, {tot['params'] / 1e6:.1f} M parameters "
         f"({active / 1e6:.1f} M active per token)")
    _out(f"artifact  {path} ({os.path.getsize(path) / 2**20:.1f} MiB)")
    _out(f"pin       {info['pin']}: every byte verified before use")
    _out(f"weights   {fmt} (blocks of 32, {tot['bits_per_param']:.2f} bits/param overall)")
    for d in card.get("datasets") or []:
        _out(f"data      {d.get('name')}: {d.get('files')} files, licenses "
             f"{', '.join(d.get('licenses') or [])}")
    q = card.get("quality") or {}
    if "runtime_exact" in q:
        _out(f"quality   held-out next-token accuracy {q['runtime_exact']['next_token_accuracy']}"
             f", perplexity {q['runtime_exact']['perplexity']} (this runtime; PyTorch float "
             f"{q['float']['next_token_accuracy']})")
    _print_policy(card.get("policy_evaluation"))
    lim = card.get("known_limitations") or []
    if lim:
        _out(f"limits    {lim[0]}")


def _print_policy(pe: Any) -> None:
    """The policy evaluation the model card records (examples/train_tiny_coder/policy_tune.py):
    violations of fwassist check-code's rules without the guard, before and after the policy
    tuning, with the figures that show the model still writes code."""
    if not isinstance(pe, dict) or "after" not in pe:
        _out("policy    no policy evaluation in the model card")
        return
    after, before = pe["after"], pe.get("before")

    def rate(r: dict[str, Any], mode: str) -> str:
        m = r[mode]
        lo, hi = m["violations_per_1k_lines_ci95"]
        return f"{m['violations_per_1k_lines']} [{lo}, {hi}]"

    def rules(r: dict[str, Any]) -> dict[str, int]:
        out: dict[str, int] = {}
        for mode in ("greedy", "sampled"):
            for k, v in r[mode]["by_rule"].items():
                out[k] = out.get(k, 0) + int(v["count"])
        return out

    _out(f"policy    check-code policy {pe['policy']} on {pe['prompts']} held-out prompts "
         f"({pe['max_tokens']} tokens, greedy and sampled, no guard), violations per 1k lines "
         f"[95 % CI]{', ' + before['model'] + ' -> this model' if before else ''}:")
    for mode in ("greedy", "sampled"):
        was = f"{rate(before, mode)} -> " if before else ""
        _out(f"  {mode:<8} {was}{rate(after, mode)}")
    now = rules(after)
    if before:
        then = rules(before)
        _out("  by rule  " + ", ".join(f"{k} {then.get(k, 0)} -> {now.get(k, 0)}"
                                       for k in sorted(set(then) | set(now))))
        vs = pe["versus_before"]
        kept = 100 * float(vs["accuracy_retained"])
        calls, unparsed = vs["calls_ratio"], vs["unparsed_ratio"]
        _out(f"  kept     held-out accuracy {kept:.2f} %; calls per 1k lines "
             f"x{calls['greedy']}/x{calls['sampled']}, unparsed output "
             f"x{unparsed['greedy']}/x{unparsed['sampled']} (greedy/sampled)")
    else:
        _out("  by rule  " + ", ".join(f"{k} {n}" for k, n in sorted(now.items())))
    guarded = [(m, after[f"{m}_guarded"]) for m in ("greedy", "sampled")
               if f"{m}_guarded" in after]
    if guarded:
        _out("  guarded  with the code guard (policy default): " + ", ".join(
            f"{g['banned_calls_written']} banned calls written, {g['violations_per_1k_lines']} "
            f"violations per 1k lines ({m})" for m, g in guarded))


def _cpu_line() -> str:
    from .. import cpu_info

    ci = cpu_info()
    k = ci["kernels"]
    return (f"cpu       {ci['arch']}, kernels: gemv {k['gemv_exact']}/{k['gemv_fast']}, "
            f"gemm {k['gemm_exact']}/{k['gemm_fast']} (exact/fast)")


def run(args: argparse.Namespace) -> int:
    from .. import energy
    from ..errors import ArtifactError
    from ..models import TINY_CODER_PIN, tiny_coder_path
    from ..runtime import Model

    from .run import default_profile_name

    # Every option is checked (the profile loaded) before the model is.
    profile = energy.load_profile(args.energy_profile or default_profile_name())
    opts: dict[str, Any] = {k: True for k in ("copy", "strict") if getattr(args, k)}
    path = tiny_coder_path()
    t0 = time.perf_counter()
    try:
        model = Model.load(path, pin=TINY_CODER_PIN, **opts)
    except ArtifactError as e:
        _out(f"fwassist demo: the bundled model failed verification, refusing to run: {e}")
        return 3
    _out(f"fwassist demo: loaded and verified in {1e3 * (time.perf_counter() - t0):.0f} ms")
    _print_identity(_identity(path, model.pin), path)
    _out(_cpu_line())
    grid = DEFAULT_GRID_G_PER_KWH if args.grid_intensity is None else args.grid_intensity
    meter = energy.EnergyMeter()
    prompts = args.prompt or list(PROMPTS)
    totals: dict[str, float] = {k: 0.0 for k in (
        "busy_core_s", "spin_core_s", "parked_core_s", "weight_bytes_read", "prompt_tokens",
        "generated_tokens", "lines", "decode_s")}
    meter.start()
    wall0, cpu0 = time.perf_counter(), time.process_time()
    with model.session(mode=args.mode, threads=args.threads) as s:
        for i, prompt in enumerate(prompts):
            s.reset()
            _out(f"\n[{i + 1}/{len(prompts)}] completing ({args.mode} mode, {args.threads} "
                 f"thread{'s' if args.threads > 1 else ''}, "
                 f"{'greedy' if args.temperature <= 0 else f'temperature {args.temperature:g}'}"
                 f", repetition penalty {args.repetition_penalty:g}):")
            sys.stdout.write(prompt)
            stream = s.stream(prompt, max_tokens=args.max_tokens,
                              temperature=args.temperature,
                              repetition_penalty=args.repetition_penalty, seed=1,
                              stop=["\n}\n"], stop_ids=model.eos_ids())
            for tok in stream:
                sys.stdout.write(tok.text)
                sys.stdout.flush()
            r = stream.result
            assert r is not None
            if r.stop_reason == "stop_string":
                sys.stdout.write("\n}")
            sys.stdout.write("\n")
            sys.stdout.flush()
            st = r.stats
            n = max(1, st["generated_tokens"])
            core_s = st["busy_core_s"] + st["spin_core_s"]
            _out(f"  {st['generated_tokens']} tokens ({r.stop_reason}), decode "
                 f"{st['decode_tokens_per_s']:.0f} tok/s, TTFT {st['ttft_ms']:.1f} ms, experts "
                 f"activated per layer {'/'.join(str(x) for x in st['experts_activated'])} "
                 f"of {model.config['num_experts']}, {core_s / n * 1e3:.2f} core-ms/token")
            for k in ("busy_core_s", "spin_core_s", "parked_core_s", "weight_bytes_read",
                      "prompt_tokens", "generated_tokens"):
                totals[k] += st[k]
            totals["lines"] += r.text.count("\n")
    wall_s, cpu_s = time.perf_counter() - wall0, time.process_time() - cpu0
    reading = meter.stop()
    activity = energy.Activity(
        wall_s=wall_s, busy_core_s=totals["busy_core_s"], spin_core_s=totals["spin_core_s"],
        parked_core_s=totals["parked_core_s"], process_cpu_s=cpu_s,
        weight_bytes_read=int(totals["weight_bytes_read"]),
        prompt_tokens=int(totals["prompt_tokens"]),
        generated_tokens=int(totals["generated_tokens"]), generated_lines=int(totals["lines"]))
    rep = energy.sci_report(activity, profile, grid_intensity_g_per_kwh=grid, measured=reading)
    _print_energy(rep, activity, profile.name, grid, args.grid_intensity is None)
    _guard_demo(model, args)
    return 0


def _first_lines(prompt: str, text: str, n: int = 2) -> str:
    """The prompt's last line and the first n lines of the completion."""
    return prompt.rsplit("\n", 1)[-1] + "\n".join(text.split("\n")[:n])


def _guard_demo(model: Any, args: argparse.Namespace) -> None:
    import re

    from ..codecheck import BANNED_CALLS
    from ..codecheck.rules import rule
    from ..guard import compile_policy

    banned = re.compile(r"(?<![A-Za-z0-9_])(" + "|".join(BANNED_CALLS) + r")\s*\(")
    policy = compile_policy(model, "default")
    _out(f"\ncode guard: policy default, {len(policy.policy.calls)} banned calls compiled to "
         f"{policy.num_states} automaton states over the {model.vocab_size} tokens; a token "
         f"that would complete one is masked while decoding (docs/code-policy.md)")
    # Exact mode: the prompts were chosen on its logits (fast mode rounds differently).
    with model.session(mode="exact", threads=args.threads) as s:
        for i, prompt in enumerate(GUARD_PROMPTS):
            runs = {}
            for name, pol in (("without", None), ("with", "default")):
                runs[name] = s.generate(prompt, max_tokens=GUARD_TOKENS, repetition_penalty=1.15,
                                        stop_ids=model.eos_ids(), policy=pol)
            _out(f"[guard {i + 1}/{len(GUARD_PROMPTS)}]")
            # Both shown up to the line where the unguarded run writes its first banned call.
            plain = runs["without"].text
            first = next((m.end() - len(prompt) for m in banned.finditer(prompt + plain)
                          if m.end() > len(prompt)), 0)
            shown = max(2, plain[:first].count("\n") + 1)
            for name, r in runs.items():
                found = [m.group(1) for m in banned.finditer(prompt + r.text)
                         if m.end() > len(prompt)]
                what = (f"writes {', '.join(f + '(' for f in found)}" if found
                        else "no banned call")
                iv = r.stats["interventions"]
                if name == "with":
                    what += f"; {len(iv)} intervention{'' if len(iv) == 1 else 's'}" + "".join(
                        f": token {x['position']} would have completed a call banned by rule "
                        f"{x['rule']} ({rule(x['rule']).cwe_id}), blocked "
                        f"{model.tokenizer.decode([x['token']])!r}" for x in iv)
                _out(f"  {name + ' guard:':<15} {_first_lines(prompt, r.text, shown)!r}")
                _out(f"  {'':<15} {what}")


def _print_energy(rep: Any, a: Any, profile: str, grid: float, default_grid: bool) -> None:
    n = max(1, a.generated_tokens + a.prompt_tokens)
    g = max(1, a.generated_tokens)
    src = ("measured by " + rep.energy_source.upper()) if rep.energy_source != "model" else \
        f"a model estimate from counted core-seconds and bytes (profile {profile}), not a " \
        "measurement"
    _out(f"\ntotal     {a.generated_tokens} tokens generated, {a.prompt_tokens} prompt tokens, "
         f"{a.wall_s:.2f} s wall, {(a.busy_core_s + a.spin_core_s) / n * 1e3:.2f} core-ms "
         f"per token (process CPU {a.process_cpu_s / g * 1e3:.2f} ms per generated token), "
         f"weights read {a.weight_bytes_read / n / 2**20:.2f} MiB/token")
    _out(f"energy    {rep.energy_j:.3f} J, {rep.energy_j / g * 1e3:.2f} mJ per generated token: "
         f"{src}")
    sci_tok = _fmt_opt(rep.sci_g_per_1k_tokens)
    sci_lines = _fmt_opt(rep.sci_g_per_1k_lines)
    grid_note = " (world-average default; pass --grid-intensity)" if default_grid else ""
    _out(f"SCI       {sci_tok} gCO2e per 1k tokens, {sci_lines} gCO2e per 1k lines, at "
         f"{grid:g} gCO2e/kWh{grid_note}")


def _fmt_opt(x: Optional[float]) -> str:
    return "n/a" if x is None else f"{x:.3g}"
