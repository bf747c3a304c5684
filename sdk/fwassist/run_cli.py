"""``fwassist run MODEL.fwa --prompt TEXT``: generate, streaming the text to stdout and one
line of statistics to stderr. ``--prompt-ids 1,2,3`` runs a model exported without a tokenizer
(the generated ids are then printed, space-separated)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

EOS_TEXTS = ("<|endoftext|>", "<|im_end|>")


def register(sub: Any) -> None:
    p = sub.add_parser("run", help="generate text with a .fwa model",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="the .fwa artifact")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--prompt", help="prompt text")
    g.add_argument("--prompt-ids", help="prompt token ids, comma-separated")
    p.add_argument("--pin", help="expected pin sha256:<hex>; refuse any other model")
    p.add_argument("--lazy", action="store_true", help="verify experts on first use")
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=0.0, help="0: greedy (default)")
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--repetition-penalty", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    p.add_argument("--no-eos", action="store_true",
                   help="do not stop at the tokenizer's <|endoftext|> / <|im_end|>")
    p.add_argument("--mode", choices=("exact", "fast"), default="exact")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--ctx", type=int, default=0, help="max context (default: model, <= 4096)")
    p.set_defaults(fn=run)


def _eos_ids(model: Any) -> list[int]:
    tok = model.tokenizer
    if tok is None:
        return []
    out = []
    for t in EOS_TEXTS:
        ids = tok.encode(t)
        if len(ids) == 1 and tok.decode(ids, skip_special_tokens=True) == "":
            out.append(ids[0])
    return out


def run(args: argparse.Namespace) -> int:
    from .loader import ArtifactError
    from .runtime import Model

    try:
        model = Model.load(args.model, pin=args.pin, lazy=args.lazy)
    except ArtifactError as e:
        print(f"fwassist run: refused {args.model}: {e}", file=sys.stderr)
        return 3
    if args.prompt_ids is not None:
        try:
            ids = [int(x) for x in args.prompt_ids.replace(" ", "").split(",") if x]
        except ValueError:
            raise ValueError("--prompt-ids must be comma-separated integers") from None
        kwargs: dict[str, Any] = {"prompt_ids": ids}
    else:
        kwargs = {"prompt": args.prompt}
    with model.session(max_context=args.ctx or None, mode=args.mode,
                       threads=args.threads) as s:
        stream = s.stream(max_tokens=args.max_tokens, temperature=args.temperature,
                          top_k=args.top_k, top_p=args.top_p,
                          repetition_penalty=args.repetition_penalty, seed=args.seed,
                          stop=args.stop, stop_ids=[] if args.no_eos else _eos_ids(model),
                          **kwargs)
        text_mode = model.tokenizer is not None
        for tok in stream:
            sys.stdout.write(tok.text if text_mode else f"{tok.id} ")
            sys.stdout.flush()
        sys.stdout.write("\n")
        sys.stdout.flush()
        r = stream.result
        assert r is not None
        st = r.stats
        print(f"[fwassist] prompt {st['prompt_tokens']} tok (cached {st['cached_tokens']}), "
              f"generated {st['generated_tokens']} tok, "
              f"prefill {st['prefill_tokens_per_s']:.1f} tok/s, "
              f"decode {st['decode_tokens_per_s']:.1f} tok/s, TTFT {st['ttft_ms']:.1f} ms, "
              f"stop {r.stop_reason}, experts/layer "
              f"{','.join(str(x) for x in st['experts_activated'])}, mode {args.mode}, "
              f"threads {args.threads}", file=sys.stderr)
    return 0
