# SPDX-License-Identifier: Apache-2.0
"""Writing and examining `.fwa` artifacts (docs/artifact-format.md).

* :func:`write_artifact` — an imported model to a deterministic, hash-pinned file;
* :func:`inspect` — configuration, tensor table, totals, sections and pin of one artifact;
* :func:`diff` — classifies the change between two artifacts (:data:`DIFF_CLASSES`);
* :func:`verify` — full verification, by ``fwassist.load_artifact`` when the package has it,
  otherwise by the pure-Python reader in :mod:`fwassist.artifact.pyverify`.

The command line subcommands live in :mod:`fwassist.cli.artifact`. The package attributes
``inspect``, ``diff`` and ``verify`` are the functions; import the modules of the same names
with ``from fwassist.artifact.diff import ...``.
"""

from __future__ import annotations

from .canonical import dumps as canonical_json
from .diff import DIFF_CLASSES, EXIT_CODES, DiffResult, diff
from .inspect import inspect, render_text
from .verify import verify
from .writer import write_artifact

__all__ = ["write_artifact", "inspect", "render_text", "diff", "DiffResult", "DIFF_CLASSES",
           "EXIT_CODES", "verify", "canonical_json"]
