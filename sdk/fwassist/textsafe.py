# SPDX-License-Identifier: Apache-2.0
"""Printable escaping of untrusted text before it reaches a terminal.

An artifact's manifest, an ONNX model's names and a tokenizer's pieces are attacker-chosen
strings. Printed raw, an ESC sequence can clear the screen, rewrite earlier lines or set the
window title, a bidi override (U+202E) can make ``evil.fwa`` read as another name, and a lone
surrogate makes ``print`` raise. :func:`printable` (text) and :func:`json_text` (JSON) turn
every such character into a visible escape: ``\\xNN`` below U+0100, else ``\\uNNNN`` (or
``\\UNNNNNNNN``), and ``\\`` into ``\\\\`` so the escaped form is unambiguous.

Escaped: Unicode categories Cc (C0 controls, DEL, C1 controls), Cf (format characters: bidi
embeddings, overrides and isolates U+202A-U+202E, U+2066-U+2069, zero-width characters, BOM),
Cs (lone surrogates), Zl and Zp (line and paragraph separators).
"""

from __future__ import annotations

import json
import re
import unicodedata
from typing import Any

__all__ = ["printable", "json_text", "is_unsafe_char"]

_UNSAFE_CATEGORIES = frozenset(("Cc", "Cf", "Cs", "Zl", "Zp"))


def is_unsafe_char(ch: str) -> bool:
    """True for a character that must not reach a terminal raw."""
    return unicodedata.category(ch) in _UNSAFE_CATEGORIES


def _escape(ch: str) -> str:
    o = ord(ch)
    if o < 0x100:
        return f"\\x{o:02x}"
    if o < 0x10000:
        return f"\\u{o:04x}"
    return f"\\U{o:08x}"


# Everything printable ASCII but the backslash passes without a per-character lookup.
_FAST = re.compile(r"[^\x20-\x5b\x5d-\x7e]")


def printable(value: Any, *, keep: str = "") -> str:
    """``str(value)`` with every unsafe character (see the module doc) and the backslash
    escaped. ``keep``: characters to pass unchanged (e.g. ``"\\n\\t"`` for multi-line text)."""
    s = value if isinstance(value, str) else str(value)
    if not _FAST.search(s):
        return s
    out = []
    for ch in s:
        if ch == "\\":
            out.append("\\\\")
        elif ch in keep or not is_unsafe_char(ch):
            out.append(ch)
        else:
            out.append(_escape(ch))
    return "".join(out)


def json_text(obj: Any, **kwargs: Any) -> str:
    """``json.dumps(obj, ensure_ascii=False, **kwargs)`` with every unsafe character written as
    a JSON ``\\uXXXX`` escape: the same JSON value, safe to show. (json.dumps already escapes
    C0 controls; DEL, C1, format characters, separators and lone surrogates it writes raw.)"""
    s = json.dumps(obj, ensure_ascii=False, **kwargs)
    if not _FAST.search(s):
        return s
    out = []
    for ch in s:
        # json.dumps escapes C0 controls inside strings: a raw newline is indentation.
        if ch not in "\\\n" and is_unsafe_char(ch):
            o = ord(ch)
            if o < 0x10000:
                out.append(f"\\u{o:04x}")
            else:  # above the BMP (tag characters): a UTF-16 surrogate pair, as JSON spells it
                hi, lo = divmod(o - 0x10000, 0x400)
                out.append(f"\\u{0xd800 + hi:04x}\\u{0xdc00 + lo:04x}")
        else:
            out.append(ch)
    return "".join(out)
