# SPDX-License-Identifier: Apache-2.0
"""The artifact subcommands of the ``fwassist`` command line: ``verify``, ``inspect``, ``diff``
and ``sbom``. :func:`register` adds them to the main parser's subparsers; each sets
``fn(args) -> exit code``.

Exit codes: ``verify`` 0 when every byte checks out; ``inspect`` and ``sbom`` 0; ``diff`` the
class code (0 identical, 10 metadata-only, 20 tokenizer, 30 config, 40 weights,
50 quantization, 60 architecture); every command 3 when an artifact is invalid or unreadable
and 2 on bad usage. Every string taken from an artifact is escaped before it is shown
(:mod:`fwassist.textsafe`); ``sbom -o`` refuses to replace an existing file without ``--force``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any, Optional

from ..errors import ArtifactError
from ..progress import Progress
from ..textsafe import json_text, printable
from ..artifact.diff import EXIT_INVALID, EXIT_USAGE

__all__ = ["register", "main"]


def _invalid(e: ArtifactError) -> int:
    print(f"fwassist: INVALID {printable(e.path)}: {printable(e.status)}: "
          f"{printable(e.message)}", file=sys.stderr)
    return EXIT_INVALID


def _artifact_path(path: str) -> str:
    """An argparse type: a path without NUL that, if it exists, is a regular file (a FIFO would
    block the reader forever). A missing file is left to the reader (``io_error``, exit 3)."""
    import stat

    if not path or "\x00" in path:
        raise argparse.ArgumentTypeError(f"{printable(path)!s}: not a usable path")
    try:
        st = os.stat(path)
    except OSError:
        return path
    if not stat.S_ISREG(st.st_mode):
        raise argparse.ArgumentTypeError(f"{printable(path)}: not a regular file")
    return path


def _size(path: str) -> int:
    """The file's size for the progress line (0 when it cannot be read: the verifier says why)."""
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def _json(obj: Any) -> str:
    return json_text(obj, indent=2, sort_keys=True)


def _cmd_verify(args: argparse.Namespace) -> int:
    from ..artifact.verify import native_loader, verify

    from ..pin import parse_pin

    try:
        parse_pin(args.pin)
    except ValueError as e:
        print(f"fwassist verify: error: {printable(e)}", file=sys.stderr)
        return EXIT_USAGE
    usage = trust_usage_error(args)
    if usage:
        print(f"fwassist verify: error: {usage}", file=sys.stderr)
        return EXIT_USAGE
    engine = "fwassist.load_artifact" if native_loader() else "pure-Python verifier"
    progress = Progress("fwassist verify", quiet=args.quiet)
    try:
        if args.lazy:
            # The device's open path first (expert blocks deferred), then every byte.
            t0 = time.perf_counter()
            with progress.waiting("lazy open", _size(args.file)):
                verify(args.file, pin=args.pin, lazy=True)
            lazy_ms = (time.perf_counter() - t0) * 1e3
        t0 = time.perf_counter()
        with progress.waiting("verifying", _size(args.file)):
            art = verify(args.file, pin=args.pin, lazy=False)
        full_ms = (time.perf_counter() - t0) * 1e3
    except ArtifactError as e:
        return _invalid(e)
    m = art.manifest
    print(f"OK {art.pin}")
    print(f"  {printable(art.path)}: {art.file_length} bytes, {len(m['tensors'])} tensors, "
          f"{len(m['expert_blocks'])} expert blocks, every byte verified by {engine} "
          f"in {full_ms:.1f} ms" + (f" (lazy open {lazy_ms:.1f} ms)" if args.lazy else ""))
    if args.pin:
        print("  pin matches")
    if args.trust is not None:
        return _verify_release(args)
    return 0


def _verify_release(args: argparse.Namespace) -> int:
    """The device's release check (the C++ core, as Model.load(trust=...) runs it)."""
    from ..errors import ReleaseError
    from ..runtime import Model

    try:
        model = Model.load(args.file, pin=args.pin, lazy=True, **trust_options(args))
    except ReleaseError as e:
        print(f"fwassist: RELEASE REFUSED {printable(args.file)}: {printable(e.status)}: "
              f"{printable(e.message)}", file=sys.stderr)
        return EXIT_INVALID
    except ArtifactError as e:
        return _invalid(e)
    except ValueError as e:  # a root key that is not one, a threshold the keys cannot meet
        print(f"fwassist verify: error: {printable(e)}", file=sys.stderr)
        return EXIT_USAGE
    r = model.release
    assert r is not None
    rx = printable(r.rxswin) if r.rxswin is not None else "none"
    print(f"  release verified: security_version {r.security_version}, RXSWIN {rx}, "
          f"policy version {r.policy_version}, counter {r.counter}")
    if r.policy_signed:
        print(f"  policy signed by the root keys: policy version {r.policy_version}, stored "
              f"policy version {r.policy_counter}")
    for s in r.signers:
        print(f"  signer {s.keyid}: {printable(s.role) if s.role else '(not in the policy)'}: "
              f"{s.status}")
    return 0


def _cmd_inspect(args: argparse.Namespace) -> int:
    from ..artifact.inspect import inspect, render_text

    try:
        info = inspect(args.file)
    except ArtifactError as e:
        return _invalid(e)
    print(_json(info) if args.json else render_text(info))
    return 0


def _cmd_diff(args: argparse.Namespace) -> int:
    from ..artifact.diff import diff

    try:
        res = diff(args.a, args.b)
    except ArtifactError as e:
        return _invalid(e)
    print(_json(res.to_dict()) if args.json else res.render_text())
    return res.exit_code


def _cmd_sbom(args: argparse.Namespace) -> int:
    from ..outpath import check_output_file, write_text_atomic
    from ..artifact.verify import verify

    if args.output is not None:
        check_output_file(args.output, "sbom -o", [args.file], force=args.force)
    try:
        with Progress("fwassist sbom", quiet=args.quiet).waiting("verifying", _size(args.file)):
            art = verify(args.file)
    except ArtifactError as e:
        return _invalid(e)
    if args.output is None:
        print(_json(art.manifest["sbom"]))
    else:
        write_text_atomic(args.output, _json(art.manifest["sbom"]) + "\n")
    return 0


def add_trust_arguments(p: argparse.ArgumentParser) -> None:
    """--trust/--sig/--counter: the signed-release check of ``verify`` and ``run``."""
    p.add_argument("--trust", metavar="POLICY", type=_artifact_path,
                   help="trust policy (JSON): also check the signed release against it "
                        "(exit 3 naming the refusal)")
    p.add_argument("--sig", metavar="FILE", type=_artifact_path,
                   help="the release signatures (default: the artifact's path + '.sig')")
    p.add_argument("--counter", metavar="FILE",
                   help="the monotonic counter file (required with --trust: a missing counter "
                        "is refused, never taken as 0; create it with `fwassist counter init "
                        "FILE`)")
    p.add_argument("--root-key", metavar="ROOT.pub.pem", type=_artifact_path, action="append",
                   help="a root public key the policy must be signed with (repeat): the "
                        "policy is then refused unless signed (docs/releases.md §5)")
    p.add_argument("--policy-sig", metavar="FILE", type=_artifact_path,
                   help="the policy's signatures (default: the policy's path + '.sig')")
    p.add_argument("--policy-counter", metavar="FILE",
                   help="the stored policy version (a counter file; required with --root-key: "
                        "an older signed policy is refused)")
    p.add_argument("--root-threshold", metavar="N", type=int, default=1,
                   help="distinct root keys that must have signed the policy (default 1)")


def trust_options(args: argparse.Namespace) -> dict[str, Any]:
    """Model.load's keyword arguments for --trust and the signed-policy options."""
    return dict(trust=args.trust, signature=args.sig, counter=args.counter,
                root_keys=args.root_key, policy_signature=args.policy_sig,
                policy_counter=args.policy_counter, root_threshold=args.root_threshold)


def trust_usage_error(args: argparse.Namespace) -> Optional[str]:
    """The usage error of the trust options, or None."""
    if args.trust is None and any(x is not None for x in (
            args.sig, args.counter, args.root_key, args.policy_sig, args.policy_counter)):
        return "--sig, --counter, --root-key, --policy-sig and --policy-counter need --trust"
    if not args.root_key and (args.policy_sig is not None or args.policy_counter is not None):
        return "--policy-sig and --policy-counter need --root-key"
    return None


def register(subparsers: Any) -> None:
    """Adds ``verify``, ``inspect``, ``diff`` and ``sbom`` to ``subparsers``
    (from ``ArgumentParser.add_subparsers``)."""
    p = subparsers.add_parser("verify", help="verify every byte of an artifact (exit 0 or 3)")
    p.add_argument("file", type=_artifact_path)
    p.add_argument("--pin", help="expected root digest, 'sha256:<64 hex>'")
    p.add_argument("--lazy", action="store_true",
                   help="also time the lazy open (expert blocks deferred) a device performs")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="no progress on stderr (shown only on a terminal anyway)")
    add_trust_arguments(p)
    p.set_defaults(fn=_cmd_verify)
    p = subparsers.add_parser("inspect", help="configuration, tensor table, totals, sections")
    p.add_argument("file", type=_artifact_path)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(fn=_cmd_inspect)
    p = subparsers.add_parser(
        "diff", help="classify the change between two artifacts (exit code = class)",
        description="Exit codes: 0 identical, 10 metadata-only, 20 tokenizer, 30 config, "
                    "40 weights, 50 quantization, 60 architecture; 2 usage, 3 invalid.")
    p.add_argument("a", type=_artifact_path)
    p.add_argument("b", type=_artifact_path)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(fn=_cmd_diff)
    p = subparsers.add_parser("sbom", help="print the artifact's CycloneDX 1.6 ML-BOM")
    p.add_argument("file", type=_artifact_path)
    p.add_argument("-o", "--output", metavar="PATH",
                   help="write the BOM to PATH (atomically) instead of stdout")
    p.add_argument("--force", action="store_true",
                   help="replace an existing --output file (never the artifact itself)")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="no progress on stderr (shown only on a terminal anyway)")
    p.set_defaults(fn=_cmd_sbom)


def main(argv: Any = None) -> int:
    """Standalone entry (``python -m fwassist.cli.artifact``) with only these subcommands."""
    from . import Parser, run_command

    parser = Parser(prog="fwassist")
    register(parser.add_subparsers(dest="command", required=True))
    return run_command(parser, argv)


if __name__ == "__main__":
    sys.exit(main())
