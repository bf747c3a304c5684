# SPDX-License-Identifier: Apache-2.0
"""The checker: parses C with tree-sitter's C grammar and applies the rules of
:mod:`fwassist.codecheck.rules` to the syntax tree (docs/code-policy.md).

The source is not preprocessed: a macro's body is scanned as text for the banned calls, code
under ``#if`` is checked on every branch, and an all-capitals identifier is taken to be a macro.
A file with a syntax error is refused (:class:`CodeParseError`, with its line and column)
rather than checked in part.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass
from typing import Any, List, Optional, Sequence, Tuple

from ..errors import Error, require
from ..textsafe import printable
from .rules import BANNED_CALLS, POLICIES, Policy

__all__ = ["Finding", "CodeParseError", "check_source", "check_file", "check_files",
           "MAX_SOURCE_BYTES"]

MAX_SOURCE_BYTES = 16 << 20

SAFETY_MARKER = re.compile(r"fwassist:\s*safety-related(-file)?\b")
ALLOCATORS = frozenset(("malloc", "calloc", "realloc", "aligned_alloc", "strdup", "strndup"))
DYNAMIC_MEMORY = frozenset(("malloc", "calloc", "realloc", "aligned_alloc", "free"))
# Argument index of the size that a multiplication can wrap.
SIZE_ARG = {"malloc": 0, "realloc": 1, "aligned_alloc": 1}
# Argument index of the format string. The va_list forms (vprintf ...) forward their caller's
# format and are not checked.
PRINTF_FORMAT = {"printf": 0, "fprintf": 1, "dprintf": 1, "sprintf": 1, "snprintf": 2,
                 "syslog": 1, "wprintf": 0, "fwprintf": 1, "swprintf": 2}
SCANF_FORMAT = {"scanf": 0, "fscanf": 1, "sscanf": 1, "vscanf": 0, "vfscanf": 1, "vsscanf": 1,
                "wscanf": 0, "fwscanf": 1, "swscanf": 1}
# Functions that read or write through every pointer argument.
DEREFERENCING = frozenset((
    "memcpy", "memmove", "memset", "memcmp", "memchr", "strcpy", "strncpy", "strcat", "strncat",
    "strlen", "strcmp", "strncmp", "strchr", "strrchr", "strstr", "sprintf", "vsprintf", "fgets",
    "fread", "fwrite", "gets", "wcscpy", "wcslen"))
# Translation wrappers: their argument is the format (gcc's format_arg).
TRANSLATORS = frozenset(("_", "N_", "gettext", "dgettext", "ngettext"))
_SCANF_CONV = re.compile(r"%(?:\d+\$)?(\*)?(\d*)(m)?(?:hh|h|ll|l|j|z|t|L|q)?(\[|[a-zA-Z%])")
_MACRO_NAME = re.compile(r"[A-Z_][A-Z0-9_]*\Z")
_CREDENTIAL = re.compile(
    r"(?:^|_)(?:password|passwd|passphrase|pwd|secret|credentials?"
    r"|(?:api|private|priv|secret|auth|access|encryption|signing|client)_?key"
    r"|(?:auth|access|api|bearer|refresh|session)_?token)\Z")
# In a macro body: string and character literals and comments (skipped), identifiers.
_MACRO_TOKEN = re.compile(r'"(?:[^"\\\n]|\\.)*"|\'(?:[^\'\\\n]|\\.)*\'|/\*.*?\*/|//[^\n]*'
                          r'|([A-Za-z_][A-Za-z0-9_]*)(?=\s*\()', re.S)


class CodeParseError(Error, ValueError):
    """A C file does not parse: ``path``, ``line`` and ``column`` (1-based) locate the first
    syntax error, ``what`` says what was found there."""

    def __init__(self, path: str, line: int, column: int, what: str) -> None:
        super().__init__(f"{printable(path)}:{line}:{column}: syntax error: {what}")
        self.path = path
        self.line = line
        self.column = column
        self.what = what


@dataclass(frozen=True)
class Finding:
    """One violation: 1-based line and column (columns count Unicode code points)."""
    path: str
    line: int
    column: int
    end_line: int
    end_column: int
    rule: str
    severity: str
    message: str


_language: Any = None


def _parser() -> Any:
    global _language
    ts = require("tree_sitter", "check", "fwassist check-code")
    if _language is None:
        tsc = require("tree_sitter_c", "check", "fwassist check-code")
        _language = ts.Language(tsc.language())
    return ts.Parser(_language)


def _children(node: Any) -> List[Any]:
    return [c for c in node.named_children if c.type != "comment"]


def _declared_name(decl: Any) -> Optional[Any]:
    """The identifier a declarator declares (through pointers, arrays, parentheses)."""
    while decl is not None and decl.type != "identifier":
        if decl.type not in ("pointer_declarator", "array_declarator", "function_declarator",
                             "parenthesized_declarator", "attributed_declarator",
                             "init_declarator"):
            return None
        inner = decl.child_by_field_name("declarator")
        if inner is None:  # parenthesized_declarator has no field
            named = _children(decl)
            inner = named[0] if named else None
        decl = inner
    return decl


def _strip(node: Any) -> Any:
    while node.type in ("parenthesized_expression", "cast_expression"):
        node = node.child_by_field_name("value") if node.type == "cast_expression" \
            else _children(node)[0]
    return node


class _File:
    def __init__(self, path: str, source: bytes, policy: Policy) -> None:
        self.path = path
        self.source = source
        self.policy = policy
        self.findings: List[Finding] = []
        self.line_starts = [0] + [m.end() for m in re.finditer(b"\n", source)]
        self.macro_strings: set[str] = set()  # #define NAME "literal"
        self.safety_file = policy.safety_related == "all"
        self.variables: set[str] = set()  # names declared as objects: `int system;`
        # const char fmt[] = "...", const char *const fmt = "...": constant formats
        self.constant_strings: set[str] = set()

    # -- positions ------------------------------------------------------------------------
    def _point(self, offset: int) -> Tuple[int, int]:
        row = bisect.bisect_right(self.line_starts, offset) - 1
        start = self.line_starts[row]
        col = len(self.source[start:offset].decode("utf-8", "replace"))
        return row + 1, col + 1

    def add(self, rule: str, start: int, end: int, message: str) -> None:
        if not self.policy.enabled(rule):
            return
        line, col = self._point(start)
        end_line, end_col = self._point(end)
        self.findings.append(Finding(self.path, line, col, end_line, end_col, rule,
                                     self.policy.severities[rule], message))

    def text(self, node: Any) -> str:
        return self.source[node.start_byte:node.end_byte].decode("utf-8", "replace")

    # -- rules ----------------------------------------------------------------------------
    def banned(self, name: str, start: int, end: int, called: bool) -> None:
        rule = BANNED_CALLS.get(name)
        if rule is not None:
            how = "call of" if called else "reference to"
            self.add(rule, start, end, f"{how} {name}")

    def literal_format(self, node: Any) -> bool:
        """True when every value ``node`` can take is a string literal (iterative: generated
        code nests conditionals thousands deep)."""
        stack = [node]
        while stack:
            n = stack.pop()
            while n.type == "parenthesized_expression" and _children(n):
                n = _children(n)[0]
            if n.type == "string_literal":
                continue
            if n.type == "concatenated_string":
                # "%" PRId64 "\n": a name between literals can only be a macro for a literal
                if not all(c.type in ("string_literal", "identifier") for c in _children(n)):
                    return False
            elif n.type == "identifier":
                name = self.text(n)
                if not (name in self.macro_strings or name in self.constant_strings or
                        _MACRO_NAME.match(name) is not None):
                    return False
            elif n.type == "conditional_expression":
                stack.extend(n.child_by_field_name(f) for f in ("consequence", "alternative"))
            elif n.type == "call_expression":
                fn = n.child_by_field_name("function")
                args = _children(n.child_by_field_name("arguments"))
                if fn.type != "identifier" or self.text(fn) not in TRANSLATORS or not args:
                    return False
                # ngettext(singular, plural, n) may return either; the others their message
                stack.extend(args[:2] if self.text(fn) == "ngettext" else args[-1:])
            else:
                return False
        return True

    def literal_text(self, node: Any) -> Optional[str]:
        """The characters of a string literal or a concatenation of literals, escapes kept."""
        parts = [node] if node.type == "string_literal" else \
            _children(node) if node.type == "concatenated_string" else None
        if parts is None or any(p.type != "string_literal" for p in parts):
            return None
        return "".join(self.text(c) for p in parts for c in p.named_children
                       if c.type in ("string_content", "escape_sequence"))

    def call(self, node: Any, function: Optional[str], in_safety: bool) -> None:
        fn = node.child_by_field_name("function")
        if fn is None or fn.type != "identifier":
            return
        name = self.text(fn)
        arguments = node.child_by_field_name("arguments")
        args = _children(arguments)
        if name == "system" and len(args) == 1 and self.text(args[0]) in ("NULL", "0"):
            pass  # system(NULL) asks whether a shell exists (ENV33-C exception)
        else:
            self.banned(name, fn.start_byte, fn.end_byte, True)
        if in_safety and name in DYNAMIC_MEMORY:
            self.add("safety-dynamic-memory", fn.start_byte, fn.end_byte,
                     f"{name} in safety-related code")
        if function is not None and name == function:
            self.add("recursion", fn.start_byte, fn.end_byte, f"{name} calls itself")
        if arguments.has_error or any(a.type.startswith("preproc") for a in args):
            return  # `#if` or an unparsed region among the arguments: positions unknown
        if name in PRINTF_FORMAT and len(args) > PRINTF_FORMAT[name]:
            fmt = args[PRINTF_FORMAT[name]]
            if not self.literal_format(fmt):
                self.add("format-nonliteral", fmt.start_byte, fmt.end_byte,
                         f"format argument of {name} is not a string literal")
        if name in SCANF_FORMAT and len(args) > SCANF_FORMAT[name]:
            fmt = self.literal_text(args[SCANF_FORMAT[name]])
            for m in _SCANF_CONV.finditer(fmt or ""):
                if m.group(4) in ("s", "[") and not m.group(1) and not m.group(2) \
                        and not m.group(3):
                    a = args[SCANF_FORMAT[name]]
                    self.add("scanf-unbounded-string", a.start_byte, a.end_byte,
                             f"{name} conversion {m.group(0)} has no field width")
                    break
        if name in SIZE_ARG and len(args) > SIZE_ARG[name]:
            size = args[SIZE_ARG[name]]
            if self.variable_product(size):
                self.add("allocation-size-arithmetic", size.start_byte, size.end_byte,
                         f"size of {name} multiplies a non-constant operand")

    def constant(self, node: Any) -> bool:
        """True when every leaf of ``node`` is a constant (a number, sizeof, a macro name)."""
        stack = [node]
        while stack:
            n = stack.pop()
            if n.type in ("number_literal", "char_literal", "sizeof_expression",
                          "alignof_expression", "offsetof_expression"):
                continue
            if n.type == "identifier":
                if _MACRO_NAME.match(self.text(n)) is None:
                    return False
            elif n.type in ("binary_expression", "parenthesized_expression", "unary_expression",
                            "cast_expression"):
                stack.extend(c for c in _children(n) if c.type != "type_descriptor")
            else:
                return False
        return True

    def variable_product(self, node: Any) -> bool:
        stack = [node]
        while stack:
            n = stack.pop()
            if n.type == "sizeof_expression":
                continue
            if n.type == "binary_expression" and n.child_by_field_name("operator").type == "*" \
                    and not self.constant(n):
                return True
            stack.extend(_children(n))
        return False

    def credential(self, name_node: Any, value: Any, target: str) -> None:
        name = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", target).lower()
        if not _CREDENTIAL.search(name):
            return
        value = _strip(value) if value.type == "parenthesized_expression" else value
        text = self.literal_text(value) if value.type in ("string_literal",
                                                           "concatenated_string") else None
        if text:  # a non-empty literal
            self.add("hardcoded-credential", name_node.start_byte, value.end_byte,
                     f"string literal assigned to {target}")

    def allocation(self, name: Any, value: Any, stmt: Any) -> None:
        """``p = malloc(...)`` (or a declaration): the first later statement of the block that
        mentions p decides: a dereference there is a finding, anything else (a test, a call
        that may test, a reassignment) ends the search."""
        call = _strip(value)
        if call.type != "call_expression":
            return
        fn = call.child_by_field_name("function")
        if fn.type != "identifier" or self.text(fn) not in ALLOCATORS:
            return
        var = self.text(name)
        sibling = stmt.next_named_sibling
        while sibling is not None:
            if sibling.has_error:
                return  # an unparsed statement may hold the test (tolerant mode)
            verdict = self.first_use(sibling, var)
            if verdict is not None:
                if verdict[0]:
                    line, _ = self._point(verdict[1].start_byte)
                    self.add("unchecked-allocation", call.start_byte, call.end_byte,
                             f"result of {self.text(fn)} in {var} is dereferenced on line "
                             f"{line} before it is checked for NULL")
                return
            sibling = sibling.next_named_sibling

    def first_use(self, node: Any, var: str) -> Optional[Tuple[bool, Any]]:
        """(True, node) when the first mention of ``var`` in ``node`` dereferences it,
        (False, node) for any other mention, None when there is none."""
        stack = [node]
        while stack:
            n = stack.pop()
            if n.type == "sizeof_expression":
                continue  # not evaluated
            if n.type == "identifier" and self.text(n) == var:
                return self.dereferenced(n), n
            stack.extend(reversed(n.children))
        return None

    def dereferenced(self, ident: Any) -> bool:
        parent = ident.parent
        if parent.type == "field_expression" and parent.child_by_field_name("argument") == ident:
            return bool(parent.child_by_field_name("operator").type == "->")
        if parent.type == "pointer_expression":
            return bool(parent.child_by_field_name("operator").type == "*")
        if parent.type == "subscript_expression":
            return bool(parent.child_by_field_name("argument") == ident)
        if parent.type == "argument_list":
            fn = parent.parent.child_by_field_name("function")
            return fn.type == "identifier" and self.text(fn) in DEREFERENCING
        return False

    # -- traversal ------------------------------------------------------------------------
    def macro_body(self, arg: Any) -> None:
        # latin-1: one character per byte, so match offsets are byte offsets
        text = self.source[arg.start_byte:arg.end_byte].decode("latin-1")
        for m in _MACRO_TOKEN.finditer(text):
            if m.group(1):
                self.banned(m.group(1), arg.start_byte + m.start(1), arg.start_byte + m.end(1),
                            True)

    def run(self, root: Any) -> None:
        self.prepare(root)
        stack: List[Tuple[Any, Optional[str], bool]] = [(root, None, self.safety_file)]
        while stack:
            node, function, safety = stack.pop()
            t = node.type
            if t == "function_definition":
                ident = _declared_name(node.child_by_field_name("declarator"))
                # A definition with an unparsed region may be macro calls read as one
                # (`MAKE_FUNC(a) MAKE_FUNC(b)`): its name is not trusted.
                function = self.text(ident) if ident is not None and not node.has_error \
                    and not _macro_named(ident) else None
                safety = safety or self.marked(node)
            elif t == "call_expression":
                self.call(node, function, safety)
            elif t == "identifier" and node.parent is not None and \
                    node.parent.type in _VALUE_PARENTS and not self.is_callee(node) and \
                    self.text(node) not in self.variables:
                self.banned(self.text(node), node.start_byte, node.end_byte, False)
            elif t == "goto_statement":
                self.add("goto", node.start_byte, node.end_byte, "goto statement")
            elif t == "preproc_arg" and node.parent is not None and \
                    node.parent.type in ("preproc_def", "preproc_function_def"):
                self.macro_body(node)
            elif t == "init_declarator":
                ident = _declared_name(node.child_by_field_name("declarator"))
                value = node.child_by_field_name("value")
                if ident is not None and value is not None:
                    self.credential(ident, value, self.text(ident))
                    if node.parent.type == "declaration":
                        self.allocation(ident, value, node.parent)
            elif t == "assignment_expression" and \
                    node.child_by_field_name("operator").type == "=":
                left, right = node.child_by_field_name("left"), \
                    node.child_by_field_name("right")
                target = left.child_by_field_name("field") \
                    if left.type == "field_expression" else left
                if target.type in ("identifier", "field_identifier"):
                    self.credential(target, right, self.text(target))
                if left.type == "identifier" and node.parent.type == "expression_statement":
                    self.allocation(left, right, node.parent)
            elif t == "initializer_pair":
                designator = node.child_by_field_name("designator")
                value = node.child_by_field_name("value")
                if designator is not None and designator.type == "field_designator" and \
                        value is not None:
                    field = _children(designator)[0]
                    self.credential(field, value, self.text(field))
            elif t == "preproc_def":
                name, value = node.child_by_field_name("name"), \
                    node.child_by_field_name("value")
                if value is not None:
                    self.macro_credential(name, value)
            for child in reversed(node.children):
                stack.append((child, function, safety))

    def is_callee(self, ident: Any) -> bool:
        parent = ident.parent
        return bool(parent.type == "call_expression" and
                    parent.child_by_field_name("function") == ident)

    def macro_credential(self, name: Any, value: Any) -> None:
        target = self.text(name)
        body = self.text(value).strip()
        if re.fullmatch(r'"(?:[^"\\\n]|\\.)+"', body) and \
                _CREDENTIAL.search(re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", target).lower()):
            self.add("hardcoded-credential", name.start_byte, value.end_byte,
                     f"string literal assigned to {target}")

    def constant_string(self, init: Any, const: bool) -> bool:
        """``const char NAME[] = "..."`` or ``const char *const NAME = "..."``: a name that
        always holds the literal."""
        value = init.child_by_field_name("value")
        if value is None or self.literal_text(value) is None:
            return False
        d = init.child_by_field_name("declarator")
        if d.type == "array_declarator":
            return const
        return d.type == "pointer_declarator" and any(
            c.type == "type_qualifier" and self.text(c) == "const" for c in d.children)

    def marked(self, fn: Any) -> bool:
        """A function is marked safety-related by a comment holding the marker directly
        before it (only comments between)."""
        prev = fn.prev_sibling
        while prev is not None and prev.type == "comment":
            if SAFETY_MARKER.search(self.text(prev)):
                return True
            prev = prev.prev_sibling
        return False

    def prepare(self, root: Any) -> None:
        """File-wide facts: the safety-related-file marker, macros that are string literals,
        the names declared as objects (a variable named like a banned function is no
        reference to it)."""
        stack = [root]
        while stack:
            n = stack.pop()
            if n.type == "comment":
                m = SAFETY_MARKER.search(self.text(n))
                if m is not None and m.group(1):
                    self.safety_file = True
            elif n.type in ("parameter_declaration", "declaration", "field_declaration"):
                const = any(c.type == "type_qualifier" and self.text(c) == "const"
                            for c in n.children)
                for d in n.children_by_field_name("declarator"):
                    ident = _declared_name(d)
                    if ident is not None and ident.parent.type == "function_declarator":
                        continue  # a function declaration: `char *strcpy(char *, ...);`
                    if ident is not None and d.type == "init_declarator" and \
                            self.constant_string(d, const):
                        self.constant_strings.add(self.text(ident))
                    if ident is not None:
                        self.variables.add(self.text(ident))
            elif n.type == "preproc_def":
                value = n.child_by_field_name("value")
                if value is not None and value.type == "preproc_arg" and \
                        re.fullmatch(r'\s*"(?:[^"\\\n]|\\.)*"(?:\s*"(?:[^"\\\n]|\\.)*")*\s*',
                                     self.text(value)):
                    self.macro_strings.add(self.text(n.child_by_field_name("name")))
            stack.extend(n.children)


def _macro_named(ident: Any) -> bool:
    """A definition named by a macro call: ``int FN(Name)(args) {...}`` (the identifier is
    ``FN``, inside two function declarators), ``TEST_IMPL(name) {...}`` (no function
    declarator at all) or ``LJLIB_CF(os_exit) {...}`` (a name in capitals, the C convention
    for a macro)."""
    parent = ident.parent
    if parent.type != "function_declarator":
        return True  # `TEST_IMPL(name) {...}`: a type and a parenthesized name, no parameters
    return bool(parent.parent is not None and parent.parent.type == "function_declarator") or \
        _MACRO_NAME.match(ident.text.decode("utf-8", "replace")) is not None


# Where an identifier is a value (a function named there is referenced, e.g. as a pointer).
_VALUE_PARENTS = frozenset(("argument_list", "init_declarator", "assignment_expression",
                            "initializer_list", "initializer_pair", "return_statement",
                            "cast_expression", "pointer_expression", "conditional_expression",
                            "comma_expression", "parenthesized_expression"))


def _syntax_errors(path: str, source: bytes, root: Any) -> List[CodeParseError]:
    """Every region tree-sitter could not parse (an ERROR node, a missing token), in order."""
    out: List[CodeParseError] = []
    stack = [root]
    while stack:
        node = stack.pop()
        if node.type == "ERROR" or node.is_missing:
            row, col = node.start_point
            start = source.rfind(b"\n", 0, node.start_byte) + 1
            column = len(source[start:node.start_byte].decode("utf-8", "replace")) + 1
            if node.is_missing:
                what = f"missing {node.type!r}"
            else:
                snippet = source[node.start_byte:node.end_byte].decode("utf-8", "replace")
                snippet = snippet.split("\n", 1)[0][:40]
                what = f"unexpected {snippet!r}" if snippet else "unexpected end of input"
            out.append(CodeParseError(path, row + 1, column, what))
        elif node.has_error:
            stack.extend(reversed(node.children))
    return out


def check_source(source: bytes, path: str = "<source>", policy: Policy = POLICIES["default"],
                 syntax_errors: Optional[List[CodeParseError]] = None) -> List[Finding]:
    """The findings of ``policy`` on one C source (bytes), sorted by position.

    A source with a syntax error raises :class:`CodeParseError` (the first error's line and
    column), unless ``syntax_errors`` is a list: then every unparsed region is appended to it
    and the rules run on the rest of the tree (tolerant mode, for macro-heavy code a
    preprocessor-free parser cannot read whole). MissingExtraError without the ``check``
    extra."""
    if not isinstance(source, bytes):
        raise TypeError("check_source: source must be bytes")
    if len(source) > MAX_SOURCE_BYTES:
        raise ValueError(f"{printable(path)}: larger than {MAX_SOURCE_BYTES} bytes")
    tree = _parser().parse(source)
    if tree.root_node.has_error:
        errors = _syntax_errors(path, source, tree.root_node)
        if syntax_errors is None:
            raise errors[0]
        syntax_errors.extend(errors)
    f = _File(path, source, policy)
    f.run(tree.root_node)
    return sorted(f.findings, key=lambda x: (x.line, x.column, x.rule))


def check_file(path: str, policy: Policy = POLICIES["default"],
               syntax_errors: Optional[List[CodeParseError]] = None) -> List[Finding]:
    """:func:`check_source` on a file."""
    with open(path, "rb") as fh:
        source = fh.read(MAX_SOURCE_BYTES + 1)
    return check_source(source, path, policy, syntax_errors)


def check_files(paths: Sequence[str], policy: Policy = POLICIES["default"],
                syntax_errors: Optional[List[CodeParseError]] = None) -> List[Finding]:
    """:func:`check_file` on each path, findings in path order."""
    out: List[Finding] = []
    for p in paths:
        out.extend(check_file(p, policy, syntax_errors))
    return out
