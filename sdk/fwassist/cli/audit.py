# SPDX-License-Identifier: Apache-2.0
"""``fwassist audit OLD.fwa NEW.fwa -o DIR``: the evidence pack for one change
(docs/audit-report.md), and ``fwassist logits-digest MODEL.fwa``: the digest of a model's
logits on the probe prompt, the same on the device and on any PC.

audit exit codes: 0 the report was written; 1 written, but a given signature was refused or the
OEM policy's verdict is ``fail``; 2 bad usage or input (nothing written); 3 an invalid artifact.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any


def _audit(args: argparse.Namespace) -> int:
    from ..audit import build_report, check_output_dir, load_oem_policy, summary, write_report
    from ..textsafe import printable

    check_output_dir(args.output, force=args.force)
    policy = load_oem_policy(args.policy) if args.policy is not None else None
    report = build_report(args.old, args.new, sig=args.sig, old_sig=args.old_sig,
                          trust=args.trust, policy=policy, policy_file=args.policy,
                          reproduce=not args.no_reproduce)
    paths = write_report(report, args.output, force=args.force)
    for line in summary(report):
        print(line)
    for p in paths:
        print(f"wrote    {printable(p)}")
    refused = [s for s in ("old", "new") if report[s]["release"] is not None
               and report[s]["release"]["status"] not in ("ok", "unsigned")]
    failed = report["oem_policy"] is not None and report["oem_policy"]["verdict"] == "fail"
    return 1 if refused or failed else 0


def _logits_digest(args: argparse.Namespace) -> int:
    from ..audit import logits_digest, probe_ids
    from ..errors import ArtifactError
    from ..runtime import Model
    from ..textsafe import printable

    try:
        model = Model.load(args.model, pin=args.pin)
    except ArtifactError as e:
        print(f"fwassist logits-digest: refused {printable(args.model)}: {printable(e)}",
              file=sys.stderr)
        return 3
    ids = args.prompt_ids if args.prompt_ids is not None else probe_ids(model.vocab_size)
    for mode in (("exact", "fast") if args.mode == "both" else (args.mode,)):
        print(f"logits {mode} {logits_digest(model, ids, mode)}")
    return 0


def register(sub: Any) -> None:
    from . import input_file
    from .run import _prompt_ids

    p = sub.add_parser("audit", help="evidence pack for one change: JSON report + HTML page",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("old", type=input_file, help="the certified (previous) artifact")
    p.add_argument("new", type=input_file, help="the candidate artifact")
    p.add_argument("-o", "--output", required=True, metavar="DIR",
                   help="directory for report.json and index.html (created if missing)")
    p.add_argument("--trust", type=input_file, metavar="POLICY.json",
                   help="trust policy: verify the signatures (default NEW.fwa.sig, "
                        "OLD.fwa.sig; a missing file is reported as unsigned)")
    p.add_argument("--sig", metavar="NEW.fwa.sig", help="the new artifact's signature file")
    p.add_argument("--old-sig", metavar="OLD.fwa.sig", help="the old artifact's signature file")
    p.add_argument("--policy", type=input_file, metavar="OEM-POLICY.json",
                   help="OEM policy: which changes are substantial, which evidence each needs")
    p.add_argument("--no-reproduce", action="store_true",
                   help="do not run the new model for its logits digests")
    p.add_argument("--force", action="store_true", help="replace an existing report in DIR")
    p.set_defaults(fn=_audit)
    p = sub.add_parser("logits-digest",
                       help="SHA-256 of a model's logits on the probe prompt (reproducible on "
                            "every CPU)")
    p.add_argument("model", type=input_file)
    p.add_argument("--pin", help="expected pin sha256:<hex>")
    p.add_argument("--mode", choices=("exact", "fast", "both"), default="both")
    p.add_argument("--prompt-ids", type=_prompt_ids,
                   help="prompt ids, comma-separated (default: the probe of "
                        "tests/cpp/logits_digest.cpp, 48 ids (i*37+11) %% vocab)")
    p.set_defaults(fn=_logits_digest)
