# SPDX-License-Identifier: Apache-2.0
"""``fwassist run MODEL.fwa --prompt TEXT``: generate, streaming the text to stdout and one
line of statistics to stderr. ``--prompt-ids 1,2,3`` runs a model exported without a tokenizer
(the generated ids are then printed, space-separated)."""

from __future__ import annotations

import argparse
import sys
from typing import Any, Union


def register(sub: Any) -> None:
    from . import (MAX_PENALTY, MAX_THREADS, MIN_PENALTY, float_range, input_file,
                      int_range, temperature)

    p = sub.add_parser("run", help="generate text with a .fwa model",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", type=input_file, help="the .fwa artifact")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--prompt", help="prompt text")
    g.add_argument("--prompt-ids", type=_prompt_ids, help="prompt token ids, comma-separated")
    p.add_argument("--pin", help="expected pin sha256:<hex>; refuse any other model (an empty "
                                 "value is an error, not \"no pin\")")
    p.add_argument("--lazy", action="store_true", help="verify experts on first use")
    p.add_argument("--copy", action="store_true",
                   help="read and verify the model into private memory (later writes to the "
                        "file cannot change it)")
    p.add_argument("--strict", action="store_true",
                   help="refuse a mapped model whose file is not protected against writes")
    from .artifact import add_trust_arguments
    add_trust_arguments(p)
    p.add_argument("--max-tokens", type=int_range(1, MAX_TOKENS), default=64)
    p.add_argument("--temperature", type=temperature, default=0.0,
                   help="0: greedy (default)")
    p.add_argument("--top-k", type=int_range(0, 2**31 - 1), default=0)
    p.add_argument("--top-p", type=float_range(0.0, 1.0, lo_open=True), default=1.0)
    p.add_argument("--repetition-penalty", type=float_range(MIN_PENALTY, MAX_PENALTY), default=1.0)
    p.add_argument("--seed", type=int_range(0, 2**64 - 1), default=0)
    p.add_argument("--stop", action="append", default=[], type=_stop,
                   help="stop string (repeatable)")
    p.add_argument("--no-eos", action="store_true",
                   help="do not stop at the tokenizer's <|endoftext|> / <|im_end|>")
    p.add_argument("--policy", metavar="NAME|POLICY.json",
                   help="decode-time code guard: mask tokens that would write a call the code "
                        "policy bans (docs/code-policy.md); interventions are reported")
    p.add_argument("--mode", choices=("exact", "fast"), default="exact")
    p.add_argument("--threads", type=int_range(1, MAX_THREADS), default=1)
    p.add_argument("--ctx", type=int_range(0), default=0,
                   help="max context (default 0: the model's, <= 4096)")
    p.add_argument("--kv-cache", choices=("f32", "f16", "bf16"), default="f32",
                   help="KV cache storage: f16/bf16 halve its memory per token (rounded to "
                        "nearest even, attention in float32; docs/runtime.md)")
    p.add_argument("--expert-budget", type=_budget, default=0, metavar="BYTES|auto",
                   help="expert weights kept resident; colder ones are dropped and verified "
                        "again on reuse (default 0: all); auto: sized to the memory limit "
                        "(cgroup), with the non-expert weights in private memory and the "
                        "resident experts locked")
    e = p.add_argument_group("energy and carbon (docs/energy.md)")
    e.add_argument("--energy", action="store_true",
                   help="print a Software Carbon Intensity report (JSON) to stderr")
    e.add_argument("--grid-intensity", type=float_range(0.0), metavar="G_PER_KWH",
                   help="grid carbon intensity in gCO2e/kWh (required with --energy)")
    e.add_argument("--energy-profile", metavar="NAME|PATH",
                   help="device profile (default: generic-x86 or cortex-a76-rpi5 by CPU)")
    e.add_argument("--embodied-g", type=float_range(0.0),
                   help="embodied emissions share M, in gCO2e")
    e.add_argument("--codecarbon-csv", metavar="PATH",
                   help="append the report as a CodeCarbon emissions.csv row (needs --energy; "
                        "the directory must exist)")
    p.set_defaults(fn=run)


# Far beyond any context this runtime opens (4096 by default); a typo is an error.
MAX_TOKENS = 1 << 20


def _prompt_ids(s: str) -> list[int]:
    try:
        ids = [int(x, 10) for x in s.replace(" ", "").split(",") if x]
    except ValueError:
        raise argparse.ArgumentTypeError("must be comma-separated integers") from None
    if not ids:
        raise argparse.ArgumentTypeError("no token ids")
    return ids


def _budget(s: str) -> Union[int, str]:
    if s == "auto":
        return s
    from . import int_range
    return int_range(0)(s)


def _stop(s: str) -> str:
    if not s:
        raise argparse.ArgumentTypeError("a stop string may not be empty")
    return s


def default_profile_name() -> str:
    import platform

    return "cortex-a76-rpi5" if platform.machine() in ("aarch64", "arm64") else "generic-x86"


def validate(args: argparse.Namespace) -> Any:
    """Every check that needs no model, before the model is loaded: the pin, the energy
    options (the profile is loaded here and returned) and the CSV output."""
    from ..outpath import check_output_file
    from ..pin import parse_pin

    parse_pin(args.pin)
    if args.energy and args.grid_intensity is None:
        raise ValueError("--energy needs --grid-intensity G (gCO2e/kWh of your grid)")
    if not args.energy:
        for flag, v in (("--grid-intensity", args.grid_intensity),
                        ("--energy-profile", args.energy_profile),
                        ("--embodied-g", args.embodied_g),
                        ("--codecarbon-csv", args.codecarbon_csv)):
            if v is not None:
                raise ValueError(f"{flag} needs --energy")
        return None
    from .. import energy

    profile = energy.load_profile(args.energy_profile or default_profile_name())
    if args.codecarbon_csv is not None:
        check_output_file(args.codecarbon_csv, "--codecarbon-csv", [args.model], append=True)
    return profile


def energy_report(args: argparse.Namespace, result: Any, wall_s: float, cpu_s: float,
                  reading: Any, profile: Any = None) -> Any:
    """The SCI report of one generation: the session's measured core-seconds and weight bytes,
    the process CPU time, RAPL/hwmon energy when readable (else the profile's model)."""
    from .. import energy

    st = result.stats
    if profile is None:
        profile = energy.load_profile(args.energy_profile or default_profile_name())
    activity = energy.Activity(
        wall_s=wall_s, busy_core_s=st["busy_core_s"], spin_core_s=st["spin_core_s"],
        parked_core_s=st["parked_core_s"], process_cpu_s=cpu_s,
        weight_bytes_read=st["weight_bytes_read"], prompt_tokens=st["prompt_tokens"],
        generated_tokens=st["generated_tokens"], generated_lines=result.text.count("\n"))
    return energy.sci_report(activity, profile,
                             grid_intensity_g_per_kwh=args.grid_intensity,
                             measured=reading,
                             embodied_g=args.embodied_g,
                             info=energy.RunInfo.here(project_name="fwassist run"))


def run(args: argparse.Namespace) -> int:
    import time

    from ..errors import ArtifactError
    from ..runtime import Model
    from ..textsafe import printable

    profile = validate(args)
    code_policy = None
    if args.policy is not None:  # checked before the model is loaded
        from ..guard import CodePolicy

        code_policy = CodePolicy.from_policy(args.policy)
    # --copy/--strict only when asked: the keywords exist from the Model.load that has them.
    opts: dict[str, Any] = {k: True for k in ("copy", "strict") if getattr(args, k)}
    from .artifact import trust_options, trust_usage_error
    usage = trust_usage_error(args)
    if usage:
        print(f"fwassist run: error: {usage}", file=sys.stderr)
        return 2
    if args.trust is not None:
        opts.update(trust_options(args))
    if args.expert_budget == "auto":
        opts["private_weights"] = True
    try:
        model = Model.load(args.model, pin=args.pin, lazy=args.lazy, **opts)
    except ArtifactError as e:
        print(f"fwassist run: refused {printable(args.model)}: {printable(e)}", file=sys.stderr)
        return 3
    if args.expert_budget == "auto":
        ctx = args.ctx or min(int(model.config["max_position_embeddings"]), 4096)
        model.set_expert_budget("auto", mlock=True,
                                kv_bytes=ctx * model.kv_bytes_per_token(args.kv_cache))
    elif args.expert_budget:
        model.set_expert_budget(args.expert_budget)
    if args.prompt_ids is not None:
        kwargs: dict[str, Any] = {"prompt_ids": args.prompt_ids}
    else:
        kwargs = {"prompt": args.prompt}
    # Generated text comes from the artifact's tokenizer: escaped when shown on a terminal,
    # passed through (newlines and all) to a pipe or file.
    shown = (lambda t: printable(t, keep="\n\t")) if sys.stdout.isatty() else (lambda t: t)
    with model.session(max_context=args.ctx or None, mode=args.mode,
                       threads=args.threads, kv_cache=args.kv_cache) as s:
        meter = None
        if args.energy:
            from ..energy import EnergyMeter
            meter = EnergyMeter()
            meter.start()
        wall0, cpu0 = time.perf_counter(), time.process_time()
        stream = s.stream(max_tokens=args.max_tokens, temperature=args.temperature,
                          top_k=args.top_k, top_p=args.top_p,
                          repetition_penalty=args.repetition_penalty, seed=args.seed,
                          stop=args.stop, stop_ids=[] if args.no_eos else model.eos_ids(),
                          policy=code_policy, **kwargs)
        text_mode = model.tokenizer is not None
        for tok in stream:
            sys.stdout.write(shown(tok.text) if text_mode else f"{tok.id} ")
            sys.stdout.flush()
        sys.stdout.write("\n")
        sys.stdout.flush()
        r = stream.result
        assert r is not None
        st = r.stats
        evaluated = st["prompt_tokens"] - st["cached_tokens"] + st["generated_tokens"]
        protection = getattr(model, "protection", None)
        print(f"[fwassist] prompt {st['prompt_tokens']} tok (cached {st['cached_tokens']}), "
              f"generated {st['generated_tokens']} tok, "
              f"prefill {st['prefill_tokens_per_s']:.1f} tok/s, "
              f"decode {st['decode_tokens_per_s']:.1f} tok/s, TTFT {st['ttft_ms']:.1f} ms, "
              f"stop {printable(r.stop_reason)}, experts/layer "
              f"{','.join(str(x) for x in st['experts_activated'])}, mode {args.mode}, "
              f"threads {args.threads}, weights read "
              f"{st['weight_bytes_read'] / max(1, evaluated) / 2**20:.1f} MiB/token, "
              f"core-s busy {st['busy_core_s']:.3f} spin {st['spin_core_s']:.3f}"
              + (f", protection {printable(protection)}" if protection is not None else ""),
              file=sys.stderr)
        if code_policy is not None:
            iv = st["interventions"]
            print(f"[fwassist] policy {printable(code_policy.name)}: {len(iv)} intervention"
                  f"{'' if len(iv) == 1 else 's'}"
                  + "".join(f"; token {x['position']}: {printable(x['rule'])} (blocked "
                            f"{printable(repr(model.tokenizer.decode([x['token']])) if model.tokenizer else str(x['token']))})"
                            for x in iv), file=sys.stderr)
        if args.expert_budget:
            res = model.residency()
            print(f"[fwassist] experts: budget {res['budget_bytes']} B, resident "
                  f"{res['resident_bytes']} B, hit rate {res['hit_rate']:.3f}, "
                  f"{res['releases']} released and re-verified", file=sys.stderr)
        if args.energy:
            wall_s, cpu_s = time.perf_counter() - wall0, time.process_time() - cpu0
            assert meter is not None
            report = energy_report(args, r, wall_s, cpu_s, meter.stop(), profile)
            print(report.to_json(), file=sys.stderr)
            if args.codecarbon_csv:
                _append_csv(args.codecarbon_csv, report)
    return 0


def _append_csv(path: str, report: Any) -> None:
    """Appends the report's row, with the header first when the file is new or empty; one
    write, so an interrupted run leaves no half row."""
    import os

    with open(path, "a", encoding="utf-8") as f:
        new = os.fstat(f.fileno()).st_size == 0
        f.write((report.codecarbon_csv_header() + "\n" if new else "")
                + report.codecarbon_csv_row() + "\n")
