# SPDX-License-Identifier: Apache-2.0
"""The rule set of ``fwassist check-code`` (docs/code-policy.md) and its policies.

Every rule has a CWE id, its MISRA C:2012 and CERT C rule where one applies, and a precision
mark: ``precise`` when the rule's condition is decided from the syntax tree alone, so that every
finding is an instance of what the rule states (a call of ``gets``, a ``goto``); ``heuristic``
when the rule guesses at intent (a credential recognised by the name of a variable). A policy
selects rules and their severities: the built-in ``default`` and ``safety`` policies, or a JSON
file (:func:`load_policy`), parsed strictly: an unknown key, rule or severity is an error.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple

from ..errors import Error
from ..textsafe import printable

__all__ = ["Rule", "RULES", "RULE_IDS", "Policy", "POLICIES", "SEVERITIES", "PolicyError",
           "load_policy", "policy_from_dict", "BANNED_CALLS"]

SEVERITIES = ("error", "warning", "note")
POLICY_FORMAT = "fwassist-code-policy/1"
MAX_POLICY_BYTES = 1 << 20


class PolicyError(Error, ValueError):
    """A code policy (name or JSON file) is not valid; the message names the problem."""


@dataclass(frozen=True)
class Rule:
    id: str
    title: str
    cwe: int
    misra: Optional[str]   # MISRA C:2012 rule, e.g. "21.3"
    cert: Optional[str]    # SEI CERT C rule, e.g. "STR31-C"
    precision: str         # "precise" or "heuristic"
    description: str

    @property
    def cwe_id(self) -> str:
        return f"CWE-{self.cwe}"


_R = Rule
RULES: Tuple[Rule, ...] = (
    _R("unbounded-copy", "Unbounded string copy or formatting", 120, None, "STR31-C", "precise",
       "strcpy, strcat, sprintf, vsprintf, stpcpy, wcscpy, wcscat: the destination size is "
       "not an argument, so nothing bounds the write."),
    _R("gets", "gets() reads an unbounded line", 242, None, "MSC24-C", "precise",
       "gets cannot limit its input and was removed in C11; use fgets."),
    _R("scanf-unbounded-string", "scanf-family %s or %[ without a field width", 120, None,
       "STR31-C", "precise",
       "A %s or %[ conversion without a width in a literal scanf-family format writes as many "
       "characters as the input holds."),
    _R("format-nonliteral", "Format string is not a string literal", 134, None, "FIO30-C",
       "precise",
       "The format argument of printf-family calls is neither a string literal nor a "
       "concatenation of literals and macro names, so data can become conversions."),
    _R("command-execution", "Command execution through a shell or exec", 78, None, "ENV33-C",
       "precise",
       "system, popen and the exec family run programs; a command built from data is OS "
       "command injection. system(NULL) (the shell-availability query) is allowed."),
    _R("hardcoded-credential", "Hard-coded credential", 798, None, "MSC41-C", "heuristic",
       "A non-empty string literal is assigned to a variable, field or macro whose name says "
       "password, passphrase, secret, credential, API/private/secret key or auth/access token."),
    _R("unchecked-allocation", "Allocation result used before a NULL check", 690, None,
       "ERR33-C", "precise",
       "The pointer returned by malloc, calloc, realloc, aligned_alloc, strdup or strndup is "
       "dereferenced or passed to a mem*/str* function in the same block before any statement "
       "tests it."),
    _R("allocation-size-arithmetic", "Multiplication in an allocation size", 190, None,
       "MEM07-C", "heuristic",
       "The size argument of malloc, realloc or aligned_alloc multiplies a non-constant operand: "
       "the product can wrap and allocate less than intended; use calloc or a checked multiply."),
    _R("safety-dynamic-memory", "Dynamic memory in safety-related code", 770, "21.3",
       None, "precise",
       "malloc, calloc, realloc, aligned_alloc or free in code marked safety-related "
       "(the /* fwassist: safety-related */ marker, or every file under the safety policy)."),
    _R("goto", "goto statement", 1075, "15.1", None, "precise",
       "goto transfers control outside structured control flow (MISRA C:2012 Rule 15.1)."),
    _R("recursion", "Direct recursion", 674, "17.2", "MEM05-C", "precise",
       "A function calls itself by name; its stack depth is unbounded by the syntax."),
    _R("atoi-family", "atoi/atol/atoll/atof", 676, "21.7", "ERR34-C", "precise",
       "These conversions have undefined behaviour on out-of-range input and report no error; "
       "use strtol/strtod and check errno and the end pointer."),
    _R("insecure-tempfile", "Predictable temporary file name", 377, None, "FIO21-C", "precise",
       "tmpnam, tempnam and mktemp return a name another process can create first; use mkstemp "
       "or tmpfile."),
)
RULE_IDS: Tuple[str, ...] = tuple(r.id for r in RULES)
_BY_ID: Dict[str, Rule] = {r.id: r for r in RULES}

# The banned calls decided by name alone: the lexical part of the rule set, which the
# decode-time guard can also apply to token bytes (identifier boundaries).
BANNED_CALLS: Dict[str, str] = {
    **{n: "unbounded-copy" for n in ("strcpy", "strcat", "sprintf", "vsprintf", "stpcpy",
                                     "wcscpy", "wcscat")},
    "gets": "gets",
    **{n: "command-execution" for n in ("system", "popen", "execl", "execlp", "execle", "execv",
                                        "execvp", "execvpe", "execve", "fexecve", "_popen",
                                        "_wsystem", "_wpopen")},
    **{n: "atoi-family" for n in ("atoi", "atol", "atoll", "atof")},
    **{n: "insecure-tempfile" for n in ("tmpnam", "tmpnam_r", "tempnam", "mktemp")},
}


@dataclass(frozen=True)
class Policy:
    """Which rules run, at which severity, and whether every function counts as
    safety-related (``safety_related == "all"``) or only the marked ones (``"marked"``)."""
    name: str
    severities: Mapping[str, str]      # enabled rule id -> severity
    safety_related: str = "marked"
    source: Optional[str] = field(default=None)  # the JSON file, None for a built-in

    def enabled(self, rule_id: str) -> bool:
        return rule_id in self.severities


_MISRA_ONLY = ("goto", "recursion")
POLICIES: Dict[str, Policy] = {
    # Security rules; the MISRA-only structural rules stay off outside safety code.
    "default": Policy("default", {r.id: ("warning" if r.precision == "heuristic" else "error")
                                  for r in RULES if r.id not in _MISRA_ONLY}),
    # Everything, every function safety-related (ISO 26262 / IEC 62304 code).
    "safety": Policy("safety", {r.id: "error" for r in RULES}, safety_related="all"),
}


def _no_duplicates(pairs: List[Tuple[str, Any]]) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise PolicyError(f"duplicate key {printable(k)!r}")
        out[k] = v
    return out


def _keys(obj: Any, where: str, allowed: Tuple[str, ...]) -> Dict[str, Any]:
    if not isinstance(obj, dict):
        raise PolicyError(f"{where} must be a JSON object, not {type(obj).__name__}")
    for k in obj:
        if k not in allowed:
            raise PolicyError(f"{where}: unknown key {printable(k)!r} (allowed: "
                              f"{', '.join(allowed)})")
    return obj


def policy_from_dict(doc: Any, name: str = "policy", source: Optional[str] = None) -> Policy:
    """A policy from its JSON document: ``{"format": "fwassist-code-policy/1", "extends":
    "default"|"safety"|"none", "safety_related": "marked"|"all", "rules": {RULE: {"enabled":
    bool, "severity": "error"|"warning"|"note"}}}``; only ``format`` is required."""
    d = _keys(doc, "policy", ("format", "extends", "safety_related", "rules"))
    if d.get("format") != POLICY_FORMAT:
        raise PolicyError(f"policy: \"format\" must be {POLICY_FORMAT!r}, not "
                          f"{printable(repr(d.get('format')))}")
    base = d.get("extends", "default")
    if base != "none" and base not in POLICIES:
        raise PolicyError(f"policy: \"extends\" must be one of none, {', '.join(POLICIES)}; "
                          f"not {printable(repr(base))}")
    severities = dict(POLICIES[base].severities) if base != "none" else {}
    safety = d.get("safety_related", POLICIES[base].safety_related if base != "none"
                   else "marked")
    if safety not in ("marked", "all"):
        raise PolicyError(f"policy: \"safety_related\" must be \"marked\" or \"all\", not "
                          f"{printable(repr(safety))}")
    rules = _keys(d.get("rules", {}), "policy: \"rules\"", RULE_IDS)
    for rid, setting in rules.items():
        s = _keys(setting, f"policy: rule {rid}", ("enabled", "severity"))
        enabled = s.get("enabled", True)
        if not isinstance(enabled, bool):
            raise PolicyError(f"policy: rule {rid}: \"enabled\" must be true or false")
        sev = s.get("severity", severities.get(rid, "error"))
        if sev not in SEVERITIES:
            raise PolicyError(f"policy: rule {rid}: \"severity\" must be one of "
                              f"{', '.join(SEVERITIES)}, not {printable(repr(sev))}")
        if enabled:
            severities[rid] = sev
        else:
            severities.pop(rid, None)
    return Policy(name, {r: severities[r] for r in RULE_IDS if r in severities}, safety, source)


def load_policy(spec: str) -> Policy:
    """A built-in policy by name (``default``, ``safety``), or a JSON policy file (a path
    ending in ``.json``). Raises :class:`PolicyError` naming the problem."""
    if spec in POLICIES:
        return POLICIES[spec]
    if not spec.endswith(".json"):
        raise PolicyError(f"unknown policy {printable(spec)!r}: use one of "
                          f"{', '.join(POLICIES)} or a .json policy file")
    try:
        with open(spec, "rb") as f:
            raw = f.read(MAX_POLICY_BYTES + 1)
    except OSError as e:
        raise PolicyError(f"policy {printable(spec)}: {e.strerror}") from None
    if len(raw) > MAX_POLICY_BYTES:
        raise PolicyError(f"policy {printable(spec)}: larger than {MAX_POLICY_BYTES} bytes")
    try:
        doc = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates,
                         parse_constant=_reject_constant)
    except UnicodeDecodeError as e:
        raise PolicyError(f"policy {printable(spec)}: not UTF-8 ({e.reason} at byte "
                          f"{e.start})") from None
    except json.JSONDecodeError as e:
        raise PolicyError(f"policy {printable(spec)}: invalid JSON: {e.msg} at line {e.lineno} "
                          f"column {e.colno}") from None
    except PolicyError as e:
        raise PolicyError(f"policy {printable(spec)}: {e}") from None
    try:
        return policy_from_dict(doc, os.path.basename(spec), spec)
    except PolicyError as e:
        raise PolicyError(f"{printable(spec)}: {e}") from None


def _reject_constant(name: str) -> Any:
    raise PolicyError(f"{name} is not valid JSON")


def rule(rule_id: str) -> Rule:
    return _BY_ID[rule_id]
