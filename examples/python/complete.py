# SPDX-License-Identifier: Apache-2.0
"""Complete a C source file with a pinned fwassist model: the dev-board script.

Loads a ``.fwa`` artifact verified against its pin (every byte checked before a weight is
used), takes the content of FILE as the prompt, streams the completion to stdout and prints
the statistics (tokens, tokens/s, time to first token, experts activated per layer, stop
reason) on stderr. With no ``--model`` it uses the model bundled with the package
(``fwassist.models``) and its pin, when this install has it.

Run::

    python examples/python/complete.py main.c --model tiny-coder.fwa --pin sha256:<64 hex>
    head -c 2000 driver.c | python examples/python/complete.py - --max-tokens 64 --mode fast
    python examples/python/complete.py main.c --stop '\\n}\\n' --temperature 0.2 --top-p 0.95

``--stop`` is repeatable and understands the escapes ``\\n``, ``\\t`` and ``\\\\``. A prompt
longer than the context keeps its tail (leaving room for ``--max-tokens``); a note says so on
stderr.

Exit codes: 0 completed; 2 bad arguments or input (including a model given without a pin and
without ``--no-pin``); 3 the artifact failed verification (wrong pin, tampered or corrupt
file): its status and message are printed.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from typing import Any, Optional

EXIT_OK, EXIT_USAGE, EXIT_ARTIFACT = 0, 2, 3
PIN_RE = re.compile(r"sha256:[0-9a-f]{64}\Z")
WHY_PIN = ("the model must be bit-for-bit the certified one: its pin is the SHA-256 of the "
           "artifact's manifest, which holds the digest of every tensor, so checking it "
           "rejects a swapped, corrupted or tampered file before any weight is used")


class UsageError(Exception):
    """Bad arguments or input (exit 2)."""


def log(msg: str) -> None:
    print(f"[complete] {msg}", file=sys.stderr, flush=True)


def bundled_model() -> Optional[tuple[str, str]]:
    """(path, pin) of the model shipped with the package, or None in an install without it."""
    try:
        from fwassist import models  # type: ignore[attr-defined]
    except ImportError:
        return None
    return os.fspath(models.tiny_coder_path()), str(models.TINY_CODER_PIN)


def unescape(s: str) -> str:
    """Turns the escapes \\n, \\t and \\\\ typed on a command line into their characters."""
    table = {"n": "\n", "t": "\t", "\\": "\\"}
    return re.sub(r"\\([nt\\])", lambda m: table[m.group(1)], s)


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0],
                                epilog="exit codes: 0 ok, 2 bad arguments/input, "
                                       "3 artifact verification failure")
    p.add_argument("file", metavar="FILE", help="C source to complete ('-' reads stdin)")
    p.add_argument("--model", metavar="PATH",
                   help="the .fwa artifact (default: the bundled model, if installed)")
    p.add_argument("--pin", metavar="sha256:HEX",
                   help="the certified pin of --model (default: the bundled model's pin)")
    p.add_argument("--no-pin", action="store_true",
                   help="run a model without checking its pin (not for production)")
    p.add_argument("--max-tokens", type=int, default=64, metavar="N")
    p.add_argument("--mode", choices=("exact", "fast"), default="fast",
                   help="exact: float32 activations; fast: int8 activations (default)")
    p.add_argument("--threads", type=int, default=1, metavar="N")
    p.add_argument("--temperature", type=float, default=0.0, metavar="T",
                   help="0 = greedy (default)")
    p.add_argument("--top-p", type=float, default=1.0, metavar="P")
    p.add_argument("--seed", type=int, default=0, metavar="S")
    p.add_argument("--stop", action="append", default=[], metavar="STR",
                   help="stop string (repeatable; \\n, \\t, \\\\ escapes)")
    return p.parse_args(argv)  # exits 2 on bad usage


def resolve_model(args: argparse.Namespace) -> tuple[str, Optional[str]]:
    """(artifact path, pin or None), refusing an unpinned model unless --no-pin."""
    if args.pin is not None and args.no_pin:
        raise UsageError("--pin and --no-pin contradict each other")
    if args.pin is not None and not PIN_RE.match(args.pin):
        raise UsageError(f"--pin must be 'sha256:' and 64 lowercase hex digits, got "
                         f"{args.pin!r}")
    path, pin = args.model, args.pin
    if path is None:
        bundled = bundled_model()
        if bundled is None:
            raise UsageError("no --model given and this fwassist install has no bundled "
                             "model (fwassist.models)")
        path = bundled[0]
        if pin is None and not args.no_pin:
            pin = bundled[1]
    if not os.path.isfile(path):
        raise UsageError(f"{path}: no such file")
    if pin is None and not args.no_pin:
        raise UsageError(f"refusing to load {path} without --pin: {WHY_PIN}. Pass "
                         f"--pin sha256:... (the certified pin, as `fwassist inspect` "
                         f"prints it), or --no-pin to run an uncertified model anyway")
    return path, pin


def read_source(name: str) -> str:
    """FILE's text ('-' = stdin), UTF-8."""
    try:
        if name == "-":
            data = sys.stdin.buffer.read()
        else:
            with open(name, "rb") as f:
                data = f.read()
    except OSError as e:
        raise UsageError(f"cannot read {name}: {e.strerror or e}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UsageError(f"{name}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    if not text:
        raise UsageError(f"{name}: empty, nothing to complete")
    return text


def fit_prompt(ids: list[int], max_context: int, max_tokens: int) -> list[int]:
    """The tail of ``ids`` that leaves room for ``max_tokens`` in the context."""
    room = max_context - max_tokens
    if room < 1:
        raise UsageError(f"--max-tokens {max_tokens} leaves no room for a prompt in the "
                         f"context of {max_context} tokens")
    if len(ids) <= room:
        return ids
    log(f"prompt is {len(ids)} tokens, the context {max_context}: keeping the last {room} "
        f"tokens (dropped the first {len(ids) - room}) to leave room for {max_tokens} "
        f"new tokens")
    return ids[-room:]


def print_stats(result: Any, model: Any, args: argparse.Namespace) -> None:
    st = result.stats
    experts = ",".join(str(x) for x in st["experts_activated"])
    log(f"prompt {st['prompt_tokens']} tokens ({st['cached_tokens']} cached), generated "
        f"{st['generated_tokens']} tokens")
    log(f"prefill {st['prefill_tokens_per_s']:.1f} tokens/s, decode "
        f"{st['decode_tokens_per_s']:.1f} tokens/s, TTFT {st['ttft_ms']:.1f} ms "
        f"(mode {args.mode}, threads {args.threads})")
    log(f"distinct experts activated per layer: {experts} (of {model.config['num_experts']}, "
        f"top-{model.config['num_experts_per_tok']})")
    log(f"stop reason: {result.stop_reason}")


def complete(args: argparse.Namespace) -> int:
    import fwassist

    if args.max_tokens < 1:
        raise UsageError(f"--max-tokens must be >= 1, got {args.max_tokens}")
    if args.threads < 1:
        raise UsageError(f"--threads must be >= 1, got {args.threads}")
    if not 0 <= args.seed < 2**64:
        raise UsageError("--seed must be in [0, 2**64)")
    path, pin = resolve_model(args)
    text = read_source(args.file)
    try:
        model = fwassist.Model.load(path, pin=pin)
    except fwassist.ArtifactError as e:
        print(f"complete: artifact verification failed for {path}: {e.status}: {e.message}",
              file=sys.stderr)
        if e.status == "pin_mismatch":
            print(f"complete: refusing it: {WHY_PIN}", file=sys.stderr)
        return EXIT_ARTIFACT
    if pin is None:
        log(f"WARNING: unpinned model {path} ({model.pin}); pass --pin to require exactly it")
    else:
        log(f"loaded {os.path.basename(path)}: every byte verified, pin matches {pin}")
    if model.tokenizer is None:
        raise UsageError(f"{path} has no tokenizer: it cannot complete text")
    with model.session(mode=args.mode, threads=args.threads) as s:
        ids = fit_prompt(model.encode(text), s.max_context, args.max_tokens)
        stream = s.stream(prompt_ids=ids, max_tokens=args.max_tokens,
                          temperature=args.temperature, top_p=args.top_p, seed=args.seed,
                          stop=[unescape(x) for x in args.stop], stop_ids=model.eos_ids())
        for tok in stream:
            sys.stdout.write(tok.text)
            sys.stdout.flush()
        result = stream.result
        assert result is not None
        if sys.stdout.isatty() and not result.text.endswith("\n"):
            sys.stdout.write("\n")
        sys.stdout.flush()
        print_stats(result, model, args)
    return EXIT_OK


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    from fwassist import ArtifactError

    try:
        return complete(args)
    except ArtifactError as e:  # a block failing its digest after the open
        print(f"complete: artifact verification failed: {e.status}: {e.message}",
              file=sys.stderr)
        return EXIT_ARTIFACT
    except (UsageError, ValueError) as e:  # ValueError: the runtime's argument checks
        print(f"complete: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:  # the reader went away (e.g. `| head`): not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
