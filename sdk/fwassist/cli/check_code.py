# SPDX-License-Identifier: Apache-2.0
"""``fwassist check-code FILE... [--policy NAME|policy.json] [--sarif out.sarif]``: the C
policy checker (docs/code-policy.md). One line per finding, ``file:line:col: severity rule
CWE-n: message``; ``--sarif`` also writes the findings as SARIF 2.1.0.

Exit codes: 0 no finding; 1 findings (or the ``check`` extra is missing); 2 bad usage, an
invalid policy or a file that does not parse (its line and column named; nothing is written).
``--tolerant`` checks what parses around syntax errors (macro-heavy code: the parser runs
without a preprocessor) and lists the regions left unchecked instead of exiting with 2.
"""

from __future__ import annotations

import argparse
from typing import Any, List, Optional


def _check_code(args: argparse.Namespace) -> int:
    from .. import __version__
    from ..codecheck import CodeParseError, check_files, format_finding, load_policy, to_sarif
    from ..outpath import check_output_file, write_text_atomic
    from ..textsafe import json_text

    policy = load_policy(args.policy)
    if args.sarif is not None:
        check_output_file(args.sarif, "--sarif", args.files, force=args.force)
    errors: Optional[List[CodeParseError]] = [] if args.tolerant else None
    # Every file is checked before anything is printed or written.
    findings = check_files(args.files, policy, errors)
    for f in findings:
        print(format_finding(f))
    for e in errors or []:
        print(f"{e}; region not checked")
    if args.sarif is not None:
        write_text_atomic(args.sarif, json_text(to_sarif(findings, policy, __version__, errors),
                                                indent=2) + "\n")
    n = len(findings)
    unparsed = f", {len(errors)} unparsed regions" if errors else ""
    print(f"{n} finding{'' if n == 1 else 's'} in {len(args.files)} "
          f"file{'' if len(args.files) == 1 else 's'}{unparsed} (policy {policy.name})")
    return 1 if findings else 0


def register(sub: Any) -> None:
    from . import input_file

    p = sub.add_parser("check-code", help="check C files against a CWE/MISRA/CERT code policy",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files", nargs="+", type=input_file, metavar="FILE", help="C source files")
    p.add_argument("--policy", default="default", metavar="NAME|POLICY.json",
                   help="built-in policy (default, safety) or a JSON policy file "
                        "(default: %(default)s)")
    p.add_argument("--sarif", metavar="OUT.sarif", help="also write the findings as SARIF 2.1.0")
    p.add_argument("--tolerant", action="store_true",
                   help="check around syntax errors (listed) instead of refusing the file")
    p.add_argument("--force", action="store_true", help="replace an existing --sarif file")
    p.set_defaults(fn=_check_code)
