# SPDX-License-Identifier: Apache-2.0
"""JSON inputs of the exporter (config.json, tokenizer.json, the model card, ONNX metadata
values), parsed with a bound on nesting depth.

Python's parser recurses once per level, so a file of 100,000 ``[`` raises RecursionError deep
in the import; the artifact's manifest may not nest deeper than 64 levels anyway
(docs/artifact-format.md, reader caps).
The depth is measured first (brackets outside strings, vectorized), then the text is parsed.
"""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np

from .tensors import OnnxImportError

__all__ = ["loads", "load_file", "nesting_depth", "MAX_DEPTH"]

MAX_DEPTH = 64   # the manifest's nesting cap; no import of fwassist.artifact from export/
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_DELTA = np.zeros(256, np.int8)
_DELTA[[ord("["), ord("{")]] = 1
_DELTA[[ord("]"), ord("}")]] = -1


def nesting_depth(text: str) -> int:
    """The deepest nesting of arrays and objects in JSON ``text`` (brackets inside strings do
    not count). For text that is not JSON the number is meaningless but finite."""
    outside = _STRING.sub("", text).encode("utf-8", "surrogatepass")
    if not outside:
        return 0
    steps = _DELTA[np.frombuffer(outside, np.uint8)]
    return int(max(0, np.cumsum(steps, dtype=np.int64).max()))


def loads(text: str, what: str, max_depth: int = MAX_DEPTH) -> Any:
    """Parses ``text``; OnnxImportError naming ``what`` when it nests deeper than
    ``max_depth`` or is not JSON."""
    depth = nesting_depth(text)
    if depth > max_depth:
        raise OnnxImportError(f"{what}: JSON nested {depth} levels deep; at most {max_depth} "
                              f"are accepted")
    try:
        return json.loads(text)
    except ValueError as e:
        raise OnnxImportError(f"{what}: not valid JSON ({e})") from None


def load_file(path: str, what: str) -> Any:
    """Reads and parses the UTF-8 JSON file ``path`` (see :func:`loads`)."""
    try:
        with open(path, "r", encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError as e:
        raise OnnxImportError(f"{what} {path}: not UTF-8 ({e.reason} at byte {e.start})") \
            from None
    return loads(text, f"{what} {path}")
