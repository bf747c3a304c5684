# SPDX-License-Identifier: Apache-2.0
"""Checks of what names an artifact to open: the pin and the path (one place for the package).

The C++ reader's ``parse_pin`` applies the same rule to every C and C++ caller.

A pin names the certified artifact: ``"sha256:"`` followed by the 64 lowercase hex digits of
its root digest. ``None`` means "no pin"; every string, the empty one included, must be a
well-formed pin. A deployment script running ``--pin "$PIN"`` with ``PIN`` unset therefore
fails instead of accepting any model. :func:`load_artifact`, :meth:`Model.load` and the CLI
all check pins here.
"""

from __future__ import annotations

import os
import re
from typing import Optional, Union

__all__ = ["parse_pin", "check_path"]

_PIN = re.compile(r"sha256:[0-9a-f]{64}\Z")


def parse_pin(value: Optional[str]) -> Optional[str]:
    """Returns ``value`` unchanged if it is ``None`` (no pin) or a well-formed pin.

    Raises ValueError naming the bad value (an empty string included: it is not "no pin"),
    TypeError for a non-string."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"pin must be a string or None, got {type(value).__name__}")
    if not _PIN.match(value):
        hint = " (an empty pin is not 'no pin': pass None, or omit --pin)" if not value else ""
        raise ValueError("pin must be 'sha256:' followed by 64 lowercase hex digits, got "
                         f"{value!r}{hint}")
    return value


def check_path(path: Union[str, bytes, "os.PathLike[str]", "os.PathLike[bytes]"]) -> str:
    """The file-system path of ``path`` as a str. ValueError if it contains a NUL character
    (the operating system would see a shorter path and open another file), TypeError if it is
    not a str, bytes or os.PathLike."""
    try:
        p = os.fspath(path)
    except TypeError:
        raise TypeError("a model path must be a str, bytes or os.PathLike, got "
                        f"{type(path).__name__}") from None
    s = os.fsdecode(p)
    if "\0" in s:
        raise ValueError(f"the path {s!r} contains a NUL character")
    return s
