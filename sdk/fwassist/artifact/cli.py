"""The artifact subcommands of the ``fwassist`` command line: ``verify``, ``inspect``, ``diff``
and ``sbom``. :func:`register` adds them to the main parser's subparsers; each sets
``fn(args) -> exit code``.

Exit codes: ``verify`` 0 when every byte checks out; ``inspect`` and ``sbom`` 0; ``diff`` the
class code (0 identical, 10 metadata-only, 20 tokenizer, 30 config, 40 weights,
50 quantization, 60 architecture); every command 3 when an artifact is invalid or unreadable
and 2 on bad usage.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from .diff import EXIT_INVALID, EXIT_USAGE

__all__ = ["register", "main"]


def _invalid(e: Any) -> int:
    print(f"fwassist: INVALID {e.path}: {e.status}: {e.message}", file=sys.stderr)
    return EXIT_INVALID


def _json(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False)


def _cmd_verify(args: argparse.Namespace) -> int:
    from .verify import ArtifactInvalid, native_loader, verify

    from .pyverify import PyArtifactError, _check_pin_syntax

    try:
        _check_pin_syntax(args.pin)
    except PyArtifactError as e:
        print(f"fwassist: error: {e.message}", file=sys.stderr)
        return EXIT_USAGE
    engine = "fwassist.load_artifact" if native_loader() else "pure-Python verifier"
    try:
        if args.lazy:
            # The device's open path first (expert blocks deferred), then every byte.
            t0 = time.perf_counter()
            verify(args.file, pin=args.pin, lazy=True)
            lazy_ms = (time.perf_counter() - t0) * 1e3
        t0 = time.perf_counter()
        art = verify(args.file, pin=args.pin, lazy=False)
        full_ms = (time.perf_counter() - t0) * 1e3
    except ArtifactInvalid as e:
        return _invalid(e)
    m = art.manifest
    print(f"OK {art.pin}")
    print(f"  {art.path}: {art.file_length} bytes, {len(m['tensors'])} tensors, "
          f"{len(m['expert_blocks'])} expert blocks, every byte verified by {engine} "
          f"in {full_ms:.1f} ms" + (f" (lazy open {lazy_ms:.1f} ms)" if args.lazy else ""))
    if args.pin:
        print("  pin matches")
    return 0


def _cmd_inspect(args: argparse.Namespace) -> int:
    from .inspect import inspect, render_text
    from .verify import ArtifactInvalid

    try:
        info = inspect(args.file)
    except ArtifactInvalid as e:
        return _invalid(e)
    print(_json(info) if args.json else render_text(info))
    return 0


def _cmd_diff(args: argparse.Namespace) -> int:
    from .diff import diff
    from .verify import ArtifactInvalid

    try:
        res = diff(args.a, args.b)
    except ArtifactInvalid as e:
        return _invalid(e)
    print(_json(res.to_dict()) if args.json else res.render_text())
    return res.exit_code


def _cmd_sbom(args: argparse.Namespace) -> int:
    from .verify import ArtifactInvalid, verify

    try:
        art = verify(args.file)
    except ArtifactInvalid as e:
        return _invalid(e)
    print(_json(art.manifest["sbom"]))
    return 0


def register(subparsers: Any) -> None:
    """Adds ``verify``, ``inspect``, ``diff`` and ``sbom`` to ``subparsers``
    (from ``ArgumentParser.add_subparsers``)."""
    p = subparsers.add_parser("verify", help="verify every byte of an artifact (exit 0 or 3)")
    p.add_argument("file")
    p.add_argument("--pin", help="expected root digest, 'sha256:<64 hex>'")
    p.add_argument("--lazy", action="store_true",
                   help="also time the lazy open (expert blocks deferred) a device performs")
    p.set_defaults(fn=_cmd_verify)
    p = subparsers.add_parser("inspect", help="configuration, tensor table, totals, sections")
    p.add_argument("file")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(fn=_cmd_inspect)
    p = subparsers.add_parser(
        "diff", help="classify the change between two artifacts (exit code = class)",
        description="Exit codes: 0 identical, 10 metadata-only, 20 tokenizer, 30 config, "
                    "40 weights, 50 quantization, 60 architecture; 2 usage, 3 invalid.")
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(fn=_cmd_diff)
    p = subparsers.add_parser("sbom", help="print the artifact's CycloneDX 1.6 ML-BOM")
    p.add_argument("file")
    p.set_defaults(fn=_cmd_sbom)


def main(argv: Any = None) -> int:
    """Standalone entry (``python -m fwassist.artifact.cli``) with only these subcommands."""
    parser = argparse.ArgumentParser(prog="fwassist")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return int(args.fn(args))
    except (ValueError, TypeError) as e:
        print(f"fwassist: error: {e}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
