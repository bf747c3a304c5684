"""``fwassist demo``: the main job end to end on a model the tool builds itself (until the
bundled model exists): a synthetic Qwen3-MoE (64 experts, top-8, 4-bit weights, byte-level
tokenizer) written as a pinned artifact, loaded with its pin (every byte verified), and run:
the completion streams to stdout, statistics go to stderr. The weights are random, so the
text is noise; the point is the pipeline, the pin and the numbers."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser("demo", help="build a small synthetic model, verify it, generate",
                       description=__doc__)
    p.add_argument("--out", help="where to write the artifact (default: a temporary file)")
    p.add_argument("--prompt", default="int main(void) {")
    p.add_argument("--max-tokens", type=int, default=48)
    p.add_argument("--bits", type=int, choices=(2, 3, 4), default=4)
    p.add_argument("--mode", choices=("exact", "fast"), default="fast")
    p.add_argument("--threads", type=int, default=1)
    p.set_defaults(fn=run)


def run(args: argparse.Namespace) -> int:
    from . import __version__
    from .artifact.writer import write_artifact
    from .export.synthetic import synthetic_config, synthetic_model
    from .runtime import Model

    cfg = synthetic_config()
    model = synthetic_model(cfg, bits=args.bits)
    with tempfile.TemporaryDirectory() as tmp:
        path = args.out or os.path.join(tmp, "demo.fwa")
        pin = write_artifact(path, model, model_card={"known_limitations": [
            "synthetic random weights: generates noise, not code"]},
            options={"demo": True, "bits": args.bits}, evidence={"measured": False},
            exporter_version=__version__)
        n_params = sum(int(np_size(t.value)) for t in model.tensors)
        print(f"[fwassist demo] built {path}: {n_params / 1e6:.1f} M parameters, "
              f"{cfg['num_experts']} experts top-{cfg['num_experts_per_tok']}, "
              f"{args.bits}-bit, {os.path.getsize(path) / 2**20:.1f} MiB, {pin}", file=sys.stderr)
        m = Model.load(path, pin=pin)
        print(f"[fwassist demo] loaded and verified against the pin; prompt {args.prompt!r}",
              file=sys.stderr)
        with m.session(mode=args.mode, threads=args.threads) as s:
            stream = s.stream(args.prompt, max_tokens=args.max_tokens, temperature=0.8,
                              top_p=0.95, seed=1)
            sys.stdout.write(args.prompt)
            for tok in stream:
                sys.stdout.write(tok.text)
                sys.stdout.flush()
            sys.stdout.write("\n")
            r = stream.result
            assert r is not None
            st = r.stats
            print(f"[fwassist demo] generated {st['generated_tokens']} tokens "
                  f"({r.stop_reason}); prefill {st['prefill_tokens_per_s']:.0f} tok/s, decode "
                  f"{st['decode_tokens_per_s']:.0f} tok/s, TTFT {st['ttft_ms']:.1f} ms, "
                  f"experts/layer {st['experts_activated']}, mode {args.mode}", file=sys.stderr)
    return 0


def np_size(v: Any) -> int:
    q = getattr(v, "q", v)
    return int(getattr(q, "size", 0))
