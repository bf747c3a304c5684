# SPDX-License-Identifier: Apache-2.0
"""A policy checker for C (docs/code-policy.md): CWE, MISRA C:2012 and CERT C rules decided on
tree-sitter's syntax tree, with findings as text and SARIF 2.1.0.

>>> from fwassist.codecheck import check_source, load_policy
>>> [f.rule for f in check_source(b"void f(char *d) { gets(d); }")]
['gets']

Needs the ``check`` extra (``pip install 'fwassist[check]'``: tree-sitter and its C grammar).
"""

from __future__ import annotations

from .check import CodeParseError, Finding, check_file, check_files, check_source
from .report import format_finding, to_sarif
from .rules import (BANNED_CALLS, POLICIES, RULES, Policy, PolicyError, Rule, load_policy,
                    policy_from_dict)

__all__ = ["check_source", "check_file", "check_files", "Finding", "CodeParseError", "RULES",
           "Rule", "Policy", "POLICIES", "PolicyError", "load_policy", "policy_from_dict",
           "format_finding", "to_sarif", "BANNED_CALLS"]
