"""The pin syntax shared by every entry point: None (no pin) or ``sha256:`` + 64 lowercase hex
digits. An empty string is an error, never "no pin": ``--pin "$PIN"`` with PIN unset must not
run whatever model it is given."""

from __future__ import annotations

import re
from typing import Optional

__all__ = ["parse_pin"]

_PIN = re.compile(r"sha256:[0-9a-f]{64}")


def parse_pin(value: Optional[str]) -> Optional[str]:
    """``value`` when it is None or a well-formed pin; ValueError otherwise (``""`` included)."""
    if value is None:
        return None
    if not isinstance(value, str) or not _PIN.fullmatch(value):
        shown = value if isinstance(value, str) and len(value) <= 80 else "a malformed value"
        raise ValueError(f"a pin is 'sha256:' + 64 lowercase hex digits, got {shown!r}")
    return value
