# SPDX-License-Identifier: Apache-2.0
"""Canonical JSON of artifact manifests (docs/artifact-format.md §3.1).

:func:`dumps` writes one value in canonical form and refuses anything the form does not allow
(floats, NaN, non-string keys, integers outside ±2^53, lone surrogates). Keys are sorted by
code point, which is the byte order of their UTF-8 encoding the spec asks for.
:func:`normalize` is the step before it: it turns the Python values a caller naturally has
(floats, numpy scalars, tuples) into the allowed ones, a finite float becoming the string of
its shortest round-trip decimal (``repr``).
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

__all__ = ["dumps", "normalize", "digest", "float_str", "MAX_INT", "MAX_DEPTH", "MAX_STRING"]

MAX_INT = 1 << 53
MAX_DEPTH = 64                  # reader cap: arrays and objects nested (scalars do not count)
MAX_STRING = 4 << 20            # reader cap: UTF-8 bytes of any one string


def float_str(x: float) -> str:
    """The shortest decimal that round-trips to ``x`` (binary64), as the spec stores reals."""
    x = float(x)
    if not math.isfinite(x):
        raise ValueError(f"non-finite real number {x!r} cannot be stored in an artifact")
    return repr(x)


def normalize(value: Any, _path: str = "$", _depth: int = 0) -> Any:
    """A copy of ``value`` made of dict/list/str/int/bool/None only.

    Floats (Python or numpy) become :func:`float_str` strings, numpy integers and booleans
    become Python ones, tuples become lists. Anything else raises TypeError naming the path.
    """
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        try:
            return float_str(value)
        except ValueError as e:
            raise ValueError(f"{_path}: {e}") from None
    try:  # numpy scalars without importing numpy here
        import numpy as np

        if isinstance(value, np.bool_):
            return bool(value)
        if isinstance(value, np.integer):
            return int(value)
        if isinstance(value, np.floating):
            return normalize(float(value), _path)
    except ImportError:  # pragma: no cover - numpy is a dependency
        pass
    if isinstance(value, (dict, list, tuple)) and _depth >= MAX_DEPTH:
        # Refused here, before the recursion could reach Python's own limit.
        raise ValueError(f"{_path}: nesting of arrays and objects deeper than {MAX_DEPTH}")
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"{_path}: object key {k!r} is not a string")
            out[k] = normalize(v, f"{_path}.{k}", _depth + 1)
        return out
    if isinstance(value, (list, tuple)):
        return [normalize(v, f"{_path}[{i}]", _depth + 1) for i, v in enumerate(value)]
    raise TypeError(f"{_path}: {type(value).__name__} cannot be stored in an artifact manifest")


def _check(value: Any, depth: int, path: str) -> None:
    """``depth``: the arrays and objects around ``value``."""
    if isinstance(value, (dict, list)) and depth >= MAX_DEPTH:
        raise ValueError(f"{path}: nesting of arrays and objects deeper than {MAX_DEPTH}")
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, int):
        if not -MAX_INT <= value <= MAX_INT:
            raise ValueError(f"{path}: integer {value} outside [-2^53, 2^53]")
        return
    if isinstance(value, float):
        raise TypeError(f"{path}: float {value!r} (store reals as float_str() strings)")
    if isinstance(value, str):
        try:
            n = len(value.encode("utf-8"))
        except UnicodeEncodeError:
            raise ValueError(f"{path}: string is not valid Unicode (lone surrogate)") from None
        if n > MAX_STRING:
            raise ValueError(f"{path}: string of {n} bytes exceeds the {MAX_STRING}-byte cap")
        return
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"{path}: object key {k!r} is not a string")
            try:
                k.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError(f"{path}: object key is not valid Unicode") from None
            _check(v, depth + 1, f"{path}.{k}")
        return
    if isinstance(value, list):
        for i, v in enumerate(value):
            _check(v, depth + 1, f"{path}[{i}]")
        return
    raise TypeError(f"{path}: {type(value).__name__} is not a JSON value (normalize() first)")


def dumps(value: Any) -> bytes:
    """The canonical JSON bytes of ``value`` (dict/list/str/int/bool/None only)."""
    _check(value, 0, "$")
    # Code-point order (sort_keys) == UTF-8 byte order for strings without surrogates.
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False)
    return text.encode("utf-8")


def digest(value: Any) -> str:
    """sha256 (hex) of the canonical JSON of ``value``."""
    return hashlib.sha256(dumps(value)).hexdigest()
