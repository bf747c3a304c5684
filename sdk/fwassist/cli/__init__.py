# SPDX-License-Identifier: Apache-2.0
"""Command line: ``fwassist info | check | demo | run | serve | export | verify | inspect | diff |
sbom``.

Exit codes: 0 success, 1 a check failed, a model was refused or the work failed, 2 bad usage
or input (every option and path is checked before any work), 3 an invalid artifact; ``diff``
exits with the class of the change (see ``fwassist diff --help``). Every failure is one line on
stderr, ``fwassist <command>: error: <message>``, with untrusted text escaped (\x1b, \u202e).
Outputs: an existing output file is replaced only with ``--force``, and never when it is one of
the command's inputs.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import threading
import time
from typing import Any, Callable, NoReturn, Optional, Sequence

from ..textsafe import printable

# `check` builds dense float layers of rows x cols x tokens: bounded so a typo is an error,
# not minutes of swapping.
MAX_CHECK_DIM = 16384
MAX_CHECK_TOKENS = 4096


def _cmd_info(args: argparse.Namespace) -> int:
    from .. import __version__, cpu_info

    info = cpu_info()
    if args.json:
        print(json.dumps({"version": __version__, **info}, indent=2))
        return 0
    print(f"fwassist {__version__}  arch {info['arch']}")
    print(f"features : {','.join(info['features']) or '(none)'}")
    if info["detected"] != info["features"]:
        print(f"detected : {','.join(info['detected'])} (lowered by FWA_CPU_FEATURES)")
    if info["sve_vector_bits"]:
        print(f"SVE      : {info['sve_vector_bits']} bits")
    print(f"variants : {', '.join(info['variants'])}")
    for op, variant in info["kernels"].items():
        print(f"  {op:<11} -> {variant}")
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    """Builds one MoE-expert-sized layer per bit width, runs it on every kernel variant this
    CPU has in both modes, and checks the bits against the reference and the values against
    numpy. This is the job the kernels do inside the runtime, on a layer the tool makes itself."""
    import numpy as np

    from .. import _core, cpu_info, kernels

    rng = np.random.default_rng(args.seed)
    N, K = args.rows, args.cols
    variants = cpu_info()["variants"]
    print(f"layer {N}x{K}, variants: {', '.join(variants)}")
    ok = True
    for bits in (4, 3, 2):
        w = kernels.quantize_rtn(rng.standard_normal((N, K), dtype=np.float32) * 0.05,
                                 bits=bits, block=32)
        wf = kernels.dequantize(w).astype(np.float64)
        x = rng.standard_normal((args.tokens, K), dtype=np.float32)
        want = x.astype(np.float64) @ wf.T
        for mode in kernels.MODES:
            ref = kernels.matmul(w, x, mode=mode, variant="ref")
            err = float(np.max(np.abs(ref - want)) / np.max(np.abs(want)))
            for v in variants:
                t0 = time.perf_counter()
                y = kernels.matmul(w, x, mode=mode, variant=v, threads=args.threads)
                dt = time.perf_counter() - t0
                same = y.tobytes() == ref.tobytes()
                ok &= same
                op = ("gemv_" if args.tokens == 1 else "gemm_") + mode
                ran = _core.kernel_for(op, v)  # a variant without this op falls through
                label = v if ran == v else f"{v}->{ran}"
                print(f"  {bits}-bit {mode:<5} {label:<18} {'bit-identical' if same else 'DIFFERS'}"
                      f"  max rel err vs float64 {err:.1e}  {dt * 1e3:8.2f} ms")
    print("all variants bit-identical" if ok else "MISMATCH between variants")
    return 0 if ok else 1


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line, ``fwassist <cmd>: error: <message>``
    (exit 2), like every other failure of the command line."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {printable(message)}\n")


def _int_in(s: str, lo: int, hi: Optional[int] = None) -> int:
    try:
        v = int(s, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{s!r} is not an integer") from None
    if v < lo or (hi is not None and v > hi):
        raise argparse.ArgumentTypeError(
            f"{v} is outside [{lo}, {hi}]" if hi is not None else f"{v} must be >= {lo}")
    return v


def int_range(lo: int, hi: Optional[int] = None) -> Callable[[str], int]:
    """An argparse type: a decimal integer in [lo, hi]."""
    def parse(s: str) -> int:
        return _int_in(s, lo, hi)
    parse.__name__ = "integer"
    return parse


def float_range(lo: float, hi: float = math.inf, *,
                lo_open: bool = False) -> Callable[[str], float]:
    """An argparse type: a finite number in [lo, hi] ((lo, hi] with ``lo_open``)."""
    def parse(s: str) -> float:
        try:
            v = float(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{s!r} is not a number") from None
        if not math.isfinite(v):
            raise argparse.ArgumentTypeError(f"{s!r} is not a finite number")
        if v < lo or (lo_open and v == lo) or v > hi:
            bounds = f"{'(' if lo_open else '['}{lo:g}, {hi:g}]"
            raise argparse.ArgumentTypeError(f"{v:g} is outside {bounds}")
        return v
    parse.__name__ = "number"
    return parse


# The sampler's ranges (csrc/model/sampler.h): a temperature below 1e-3 or a penalty far from 1
# only overflows the logits.
MIN_TEMPERATURE, MAX_TEMPERATURE = 1e-3, 1e3
MIN_PENALTY, MAX_PENALTY = 1e-3, 1e3


def temperature(s: str) -> float:
    """An argparse type: 0 (greedy) or a temperature in [MIN_TEMPERATURE, MAX_TEMPERATURE]."""
    v = float_range(0.0, MAX_TEMPERATURE)(s)
    if 0.0 < v < MIN_TEMPERATURE:
        raise argparse.ArgumentTypeError(f"{v:g} is neither 0 (greedy) nor in "
                                         f"[{MIN_TEMPERATURE:g}, {MAX_TEMPERATURE:g}]")
    return v


def input_file(s: str) -> str:
    """An argparse type: an existing regular file (checked without opening it)."""
    from ..outpath import check_input_file

    try:
        return check_input_file(s, "")
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


MAX_THREADS = 1024
EXIT_FAILED, EXIT_USAGE, EXIT_INVALID = 1, 2, 3


class Terminated(SystemExit):
    """Raised by the SIGTERM handler so that cleanup (``finally``) runs before the exit."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Terminated(128 + signum)


def run_command(parser: argparse.ArgumentParser, argv: Optional[Sequence[str]]) -> int:
    """Parses ``argv`` and runs the subcommand. Every expected failure is one line on stderr,
    ``fwassist <cmd>: error: <message>``, with exit 2 (bad usage or input), 1 (the work failed)
    or 3 (an invalid artifact). SIGTERM and Ctrl-C unwind through the cleanup code; an
    unexpected exception is one line too, its traceback shown with FWASSIST_TRACEBACK=1."""
    import os
    import signal

    args = parser.parse_args(argv)
    prog = f"fwassist {args.command}"
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _on_sigterm)

    def fail(code: int, msg: str) -> int:
        print(f"{prog}: error: {printable(msg)}", file=sys.stderr, flush=True)
        return code

    try:
        return int(args.fn(args))
    except KeyboardInterrupt:
        return fail(130, "interrupted")
    except BrokenPipeError:
        # The reader went away (e.g. `| head`): nothing more can be shown.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED
    except Exception as e:  # noqa: BLE001 - each failure is one line; see _exit_code
        code = _exit_code(e)
        if code is None:
            if os.environ.get("FWASSIST_TRACEBACK"):
                raise
            return fail(EXIT_FAILED, f"internal error: {type(e).__name__}: {e} (set "
                                     f"FWASSIST_TRACEBACK=1 to see where)")
        if isinstance(e, OSError) and e.strerror:
            return fail(code, (f"{e.filename}: " if e.filename else "") + e.strerror)
        if isinstance(e, (MemoryError, RecursionError)):
            return fail(code, f"{type(e).__name__}: {e}")
        return fail(code, str(e))
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _exit_code(e: BaseException) -> Optional[int]:
    """The exit code of an expected failure, None for an unexpected one (a bug)."""
    from ..errors import ArtifactError, MissingExtraError

    if isinstance(e, ArtifactError):
        return EXIT_INVALID
    if isinstance(e, MissingExtraError):
        return EXIT_FAILED
    if isinstance(e, (ValueError, TypeError)):
        return EXIT_USAGE
    if isinstance(e, (OSError, MemoryError, RecursionError)):
        return EXIT_FAILED
    return None


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = Parser(prog="fwassist", description=__doc__,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("info", help="CPU features and the kernel chosen per operation")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(fn=_cmd_info)
    p = sub.add_parser("check", help="run every kernel variant on a model-sized layer")
    p.add_argument("--rows", type=int_range(1, MAX_CHECK_DIM), default=768)
    p.add_argument("--cols", type=int_range(1, MAX_CHECK_DIM), default=2048)
    p.add_argument("--tokens", type=int_range(1, MAX_CHECK_TOKENS), default=8)
    p.add_argument("--threads", type=int_range(1, MAX_THREADS), default=1)
    p.add_argument("--seed", type=int_range(0), default=0)
    p.set_defaults(fn=_cmd_check)
    from .artifact import register as register_artifact
    from .audit import register as register_audit
    from .check_code import register as register_check_code
    from .export import register as register_export

    from .demo import register as register_demo
    from .release import register as register_release
    from .run import register as register_run
    from .serve import register as register_serve

    register_demo(sub)
    register_run(sub)
    register_export(sub)
    register_artifact(sub)
    register_release(sub)
    register_audit(sub)
    register_check_code(sub)
    register_serve(sub)
    return run_command(parser, argv)

