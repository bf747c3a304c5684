# SPDX-License-Identifier: Apache-2.0
"""``fwassist audit``: the evidence pack for one change between two artifacts
(docs/audit-report.md).

* :func:`build_report` — identities (pins, format version, signature verdicts with security
  version, RXSWIN and signers), the change class of :func:`fwassist.artifact.diff` and what an
  OEM policy makes of it, the SBOM, model card and evidence differences, and the logits digests
  with the commands that reproduce them;
* :func:`write_report` — ``report.json`` (schema: docs/audit-report.schema.json) and a
  self-contained ``index.html`` into a directory;
* :func:`load_oem_policy` — the OEM policy file (:mod:`fwassist.audit.policy`).
"""

from __future__ import annotations

import os
from typing import Any, Union

from ..outpath import write_text_atomic
from ..textsafe import json_text, printable
from .html import render_html
from .logits import logits_digest, probe_ids
from .policy import AuditError, OemPolicy, load_oem_policy, parse_oem_policy
from .report import REPORT_FORMAT, REPORT_VERSION, build_report, summary

__all__ = ["build_report", "write_report", "render_html", "report_json", "load_oem_policy",
           "parse_oem_policy", "OemPolicy", "AuditError", "REPORT_FORMAT", "REPORT_VERSION",
           "OUTPUT_FILES", "logits_digest", "probe_ids", "summary"]

OUTPUT_FILES = ("report.json", "index.html")


def report_json(report: dict[str, Any]) -> str:
    """The report as JSON text: sorted keys, indented, every unsafe character escaped."""
    return json_text(report, indent=2, sort_keys=True) + "\n"


def check_output_dir(out_dir: Union[str, "os.PathLike[str]"], *, force: bool = False) -> str:
    """Checks, before any work, that ``out_dir`` is a writable directory (or can be created
    in one) without report files, unless ``force``. Raises AuditError."""
    d = os.fspath(out_dir)
    if not d or "\x00" in d:
        raise AuditError(f"-o {printable(d)}: not a usable directory name")
    if os.path.lexists(d):
        if not os.path.isdir(d):
            raise AuditError(f"-o {printable(d)}: exists and is not a directory")
        if not os.access(d, os.W_OK | os.X_OK):
            raise AuditError(f"-o {printable(d)}: the directory is not writable")
        existing = [f for f in OUTPUT_FILES if os.path.lexists(os.path.join(d, f))]
        if existing and not force:
            raise AuditError(f"-o {printable(d)}: {existing[0]} exists; pass --force to "
                             f"replace the report")
        return d
    parent = os.path.dirname(os.path.abspath(d))
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK | os.X_OK):
        raise AuditError(f"-o {printable(d)}: {printable(parent)} is not a writable directory")
    return d


def write_report(report: dict[str, Any], out_dir: Union[str, "os.PathLike[str]"], *,
                 force: bool = False) -> list[str]:
    """Writes ``report.json`` and ``index.html`` into ``out_dir`` (created if missing; each
    file written atomically) and returns their paths."""
    d = check_output_dir(out_dir, force=force)
    os.makedirs(d, exist_ok=True)
    paths = [os.path.join(d, f) for f in OUTPUT_FILES]
    write_text_atomic(paths[0], report_json(report))
    write_text_atomic(paths[1], render_html(report))
    return paths
