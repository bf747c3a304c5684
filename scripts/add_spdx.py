#!/usr/bin/env python3
"""Inserts ``SPDX-License-Identifier: Apache-2.0`` as the first comment line of every source file
of the repository (C, C++, headers, CMake, Python, shell, linker map), after a shebang and a
Python encoding line (PEP 263 wants that one on line 1 or 2). Files that already have the line
near the top are left alone, so running it twice changes nothing.

usage: python scripts/add_spdx.py [--check] [ROOT]
  --check: change nothing; list the files without the line and exit 1 if there are any.

tests/test_repo_hygiene.py checks every source file has the line (``missing``).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import List, Optional

SPDX = "SPDX-License-Identifier: Apache-2.0"
# The line must be within the first HEAD_LINES lines (after shebang, encoding line, the line).
HEAD_LINES = 3
_ENCODING = re.compile(r"^[ \t\f]*#.*?coding[:=][ \t]*[-_.a-zA-Z0-9]+")
# Data that happens to have a source extension: the golden prompt is fed to the model byte for
# byte (tests/golden/*.txt are its completions), so a header would change the goldens.
EXCLUDE_DIRS = ("tests/golden/",)
# Directories never walked when ROOT is not a git checkout (an unpacked sdist, a copy).
_SKIP_DIRS = {".git", "dist", "__pycache__", ".pytest_cache", ".mypy_cache"}


def comment_for(path: str) -> Optional[str]:
    """The SPDX comment line for a source file, None for a file that is not source code."""
    name = os.path.basename(path)
    ext = name.rsplit(".", 1)[-1] if "." in name else ""
    if ext in ("c", "h", "map"):  # C (the C ABI header stays C89-clean) and linker scripts
        return f"/* {SPDX} */"
    if ext in ("cpp", "hpp", "cc", "inc", "def"):
        return f"// {SPDX}"
    if name == "CMakeLists.txt" or ext in ("cmake", "py", "sh", "toml") or name.endswith(".cmake.in"):
        return f"# {SPDX}"
    if path.replace(os.sep, "/") == ".ci/run":  # the CI entry point, a shell script
        return f"# {SPDX}"
    return None


def source_files(root: Path) -> List[str]:
    """Repository-relative paths of every source file: the git-tracked ones in a checkout,
    otherwise every file under root except build trees."""
    if (root / ".git").exists():
        out = subprocess.run(["git", "ls-files", "-z"], cwd=root, check=True,
                             capture_output=True).stdout.decode()
        paths = [p for p in out.split("\0") if p]
    else:
        paths = []
        for d, dirs, files in os.walk(root):
            dirs[:] = sorted(x for x in dirs if x not in _SKIP_DIRS and not x.startswith("build")
                             and not x.startswith("venv"))
            rel = os.path.relpath(d, root)
            paths += [os.path.normpath(os.path.join(rel, f)) for f in sorted(files)]
    return sorted(p for p in paths if comment_for(p) is not None and (root / p).is_file()
                  and not p.replace(os.sep, "/").startswith(EXCLUDE_DIRS))


def _insert_at(lines: List[str]) -> int:
    """Index of the line the SPDX comment goes before: after a shebang and an encoding line."""
    i = 0
    if lines and lines[0].startswith("#!"):
        i = 1
    if i < len(lines) and i < 2 and _ENCODING.match(lines[i]):
        i += 1
    return i


def has_spdx(text: str) -> bool:
    """True when the SPDX line is among the first lines of text, as a comment."""
    return any(SPDX in line for line in text.splitlines()[:HEAD_LINES])


def add(path: Path, comment: str) -> bool:
    """Inserts the comment into path; False if it was already there."""
    raw = path.read_bytes()
    text = raw.decode("utf-8")
    if has_spdx(text):
        return False
    newline = "\r\n" if "\r\n" in text else "\n"
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith(("\n", "\r")):
        lines[-1] += newline  # keep the last line a line
    i = _insert_at(lines)
    lines.insert(i, comment + newline)
    path.write_bytes("".join(lines).encode("utf-8"))
    return True


def missing(root: Path) -> List[str]:
    """The source files under root without the SPDX line."""
    return [p for p in source_files(root) if not has_spdx((root / p).read_text("utf-8"))]


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only list the files without the line")
    ap.add_argument("root", nargs="?", default=str(Path(__file__).resolve().parent.parent))
    args = ap.parse_args(argv)
    root = Path(args.root)
    if args.check:
        todo = missing(root)
        for p in todo:
            print(f"{p}: no '{SPDX}' in its first {HEAD_LINES} lines")
        return 1 if todo else 0
    changed = 0
    for p in source_files(root):
        comment = comment_for(p)
        assert comment is not None
        changed += add(root / p, comment)
    print(f"add_spdx: {changed} file(s) changed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
