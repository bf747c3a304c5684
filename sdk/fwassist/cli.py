"""Command line: ``fwassist info | check | demo | run | export | verify | inspect | diff | sbom``.

Exit codes: 0 success, 1 a check failed or a model was refused, 2 bad usage, 3 an invalid
artifact; ``diff`` exits with the class of the change (see ``fwassist diff --help``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Optional, Sequence


def _cmd_info(args: argparse.Namespace) -> int:
    from . import __version__, cpu_info

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

    from . import _core, cpu_info, kernels

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


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="fwassist", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("info", help="CPU features and the kernel chosen per operation")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(fn=_cmd_info)
    p = sub.add_parser("check", help="run every kernel variant on a model-sized layer")
    p.add_argument("--rows", type=int, default=768)
    p.add_argument("--cols", type=int, default=2048)
    p.add_argument("--tokens", type=int, default=8)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(fn=_cmd_check)
    from .artifact.cli import register as register_artifact
    from .export.cli import register as register_export

    from .demo import register as register_demo
    from .run_cli import register as register_run

    register_demo(sub)
    register_run(sub)
    register_export(sub)
    register_artifact(sub)
    args = parser.parse_args(argv)
    try:
        return int(args.fn(args))
    except (ValueError, TypeError) as e:
        print(f"fwassist: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
