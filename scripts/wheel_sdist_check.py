#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Checks an sdist of fwassist holds everything a build from it needs and nothing built.

usage: python scripts/wheel_sdist_check.py SDIST.tar.gz [REPO_ROOT]

* every git-tracked file of the repository is in the sdist (pyproject's ``sdist.exclude``
  drops only build trees and benchmark output, which git does not track), so the C++ sources,
  CMake files, the package, the bundled model, README.md and LICENSE are all there;
* no member is a build product: build trees, dist/, compiled modules, __pycache__.

Exit 1 with one line per problem. tests/test_packaging.py runs it on a fresh sdist.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import List, Optional

# The files a build from the sdist cannot do without (checked even outside a git checkout).
REQUIRED = ("pyproject.toml", "CMakeLists.txt", "README.md", "LICENSE", "csrc/CMakeLists.txt",
            "csrc/python/CMakeLists.txt", "csrc/kernels/variants.def",
            "sdk/fwassist/__init__.py", "sdk/fwassist/models/tiny-coder.fwa")
_BUILT = re.compile(r"(^|/)(build[^/]*|dist|__pycache__|\.git)/|\.(so|o|a|pyc)$")


def members(sdist: str) -> List[str]:
    """Paths in the sdist relative to its top directory (fwassist-<version>/)."""
    with tarfile.open(sdist) as t:
        names = [m.name for m in t.getmembers() if m.isfile()]
    tops = {n.split("/", 1)[0] for n in names}
    if len(tops) != 1:
        raise ValueError(f"{sdist}: expected one top directory, found {sorted(tops)}")
    return sorted(n.split("/", 1)[1] for n in names)


def problems(sdist: str, root: Optional[Path] = None) -> List[str]:
    have = set(members(sdist))
    out = [f"missing: {p}" for p in REQUIRED if p not in have]
    if root is not None and (root / ".git").exists():
        tracked = subprocess.run(["git", "ls-files", "-z"], cwd=root, check=True,
                                 capture_output=True).stdout.decode().split("\0")
        out += [f"missing (tracked by git): {p}" for p in tracked
                if p and p not in have and p not in REQUIRED and (root / p).is_file()]
    out += [f"build product: {p}" for p in sorted(have) if _BUILT.search(p)]
    return out


def main(argv: Optional[List[str]] = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not 1 <= len(args) <= 2:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    root = Path(args[1]) if len(args) == 2 else Path(__file__).resolve().parent.parent
    found = problems(args[0], root)
    for p in found:
        print(f"{args[0]}: {p}")
    if not found:
        print(f"{args[0]}: complete ({len(members(args[0]))} files)")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
