# SPDX-License-Identifier: Apache-2.0
"""Where the benchmarks keep what they build outside git, and how results name those files.

Two locations, each overridable by an environment variable (and by each script's own flag):

* ``LLAMACPP_ROOT``: the pinned llama.cpp build of benchmarks/llamacpp_build.py and the models
  it converts; ``$FWA_LLAMACPP_ROOT``, else ``benchmarks/.llamacpp`` in this checkout.
* ``BIG_DIR``: multi-GB models (synth_30b.py, scale_30b.py, beyond_ram.py); ``$FWA_BIG_DIR``,
  else ``benchmarks/.big`` in this checkout.

Both defaults are ignored by git (.gitignore). Committed results must not name one machine's
absolute paths: :func:`portable` rewrites a path under the checkout to its relative name, under
either location to that location's default name (``benchmarks/.llamacpp/...``,
``benchmarks/.big/...``: the same file in the default layout) and under the interpreter's
site-packages to ``site-packages/...``; machine.write_results applies it to every result.
No imports beyond the standard library: llamacpp_build.py runs before anything is installed.
"""

from __future__ import annotations

import os
import re
import sysconfig
from typing import Any

BENCH = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH)
LLAMACPP_ROOT = os.path.abspath(os.environ.get("FWA_LLAMACPP_ROOT")
                                or os.path.join(BENCH, ".llamacpp"))
BIG_DIR = os.path.abspath(os.environ.get("FWA_BIG_DIR") or os.path.join(BENCH, ".big"))


def _rules() -> list[tuple[re.Pattern[str], str]]:
    names = {os.path.realpath(sysconfig.get_paths()["purelib"]): "site-packages",
             sysconfig.get_paths()["purelib"]: "site-packages",
             REPO: "", os.path.realpath(REPO): "",
             LLAMACPP_ROOT: "benchmarks/.llamacpp", BIG_DIR: "benchmarks/.big"}
    rules = []
    # Longest first: a location inside another (the defaults are inside the checkout) wins.
    for root in sorted(names, key=len, reverse=True):
        name = names[root]
        # A root is a whole path component: not preceded or continued by a name character.
        head = r"(?<![\w./+-])" + re.escape(root.rstrip("/"))
        if name:
            rules.append((re.compile(head + r"(?![\w.+-])"), name))
        else:
            rules.append((re.compile(head + "/"), ""))
            rules.append((re.compile(head + r"(?![\w.+-])"), "."))
    return rules


RULES = _rules()


def portable(obj: Any) -> Any:
    """``obj`` (JSON data or a string) with every absolute path under the checkout, the two
    locations or site-packages renamed as described above, wherever it occurs in a string (a
    path field, a command line, a CMake flag)."""
    if isinstance(obj, str):
        for pattern, name in RULES:
            obj = pattern.sub(name, obj)
        return obj
    if isinstance(obj, dict):
        return {portable(k): portable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [portable(v) for v in obj]
    return obj
