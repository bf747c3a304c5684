# SPDX-License-Identifier: Apache-2.0
"""The file-based monotonic counter store (docs/releases.md "Counter contract"), for Linux
development boards and the command line; devices use RPMB or an HSM through the C callback.

The file holds the decimal value and "\\n", nothing else (no sign, no leading zero, at most
2^53). A missing, unreadable or malformed file is ``counter_unavailable``, never 0: the file
exists only once :meth:`FileCounter.init` created it. Writes go to a temporary file beside it,
fsync'ed and renamed over it, then the directory is fsync'ed; the value never decreases.
"""

from __future__ import annotations

import os
import re
import tempfile
from typing import Protocol, Union

from ..errors import ReleaseError
from ._formats import MAX_SECURITY_VERSION

__all__ = ["Counter", "FileCounter"]

_VALUE = re.compile(rb"(0|[1-9][0-9]{0,15})\n\Z")


class Counter(Protocol):
    """What the verifier reads the rollback counter through."""

    def read(self) -> int: ...


def _check_value(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or \
            not 0 <= value <= MAX_SECURITY_VERSION:
        raise ValueError(f"a counter value is an integer in [0, 2^53], got {value!r}")
    return value


def _fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_temp(directory: str, name: str, value: int) -> str:
    fd, tmp = tempfile.mkstemp(prefix="." + name + ".", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(b"%d\n" % value)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
    except BaseException:
        os.unlink(tmp)
        raise
    return tmp


class FileCounter:
    """A monotonic counter kept in the file at ``path``."""

    def __init__(self, path: Union[str, "os.PathLike[str]"]) -> None:
        self.path = os.fspath(path)

    def __repr__(self) -> str:
        return f"FileCounter({self.path!r})"

    def read(self) -> int:
        """The stored value; ReleaseError ``counter_unavailable`` if the file is missing,
        unreadable or not exactly a decimal value and a newline."""
        try:
            with open(self.path, "rb") as f:
                raw = f.read(32)
        except OSError as e:
            raise ReleaseError("counter_unavailable", f"cannot read the counter: "
                                                      f"{e.strerror or e}", self.path) from None
        m = _VALUE.match(raw)
        if not m or int(m.group(1)) > MAX_SECURITY_VERSION:
            raise ReleaseError("counter_unavailable", "the counter file does not hold a "
                                                      "decimal value in [0, 2^53] and a "
                                                      "newline", self.path)
        return int(m.group(1))

    @classmethod
    def init(cls, path: Union[str, "os.PathLike[str]"], value: int = 0) -> "FileCounter":
        """Creates the counter file holding `value`; refuses an existing file (resetting a
        counter would allow a rollback)."""
        p = os.fspath(path)
        _check_value(value)
        directory = os.path.dirname(os.path.abspath(p))
        tmp = _write_temp(directory, os.path.basename(p), value)
        try:
            os.link(tmp, p)                       # atomic, and fails if `p` exists
        except FileExistsError:
            raise ValueError(f"{p}: the counter exists already (it is never reset)") from None
        finally:
            os.unlink(tmp)
        _fsync_dir(directory)
        return cls(p)

    def advance(self, value: int) -> int:
        """Raises the counter to `value` (no change when equal) and returns it; ReleaseError
        ``rollback`` if `value` is lower than the stored one, ``counter_unavailable`` if the
        counter cannot be read."""
        _check_value(value)
        current = self.read()
        if value < current:
            raise ReleaseError("rollback", f"the counter is {current}; it never decreases "
                                           f"(asked for {value})", self.path)
        if value == current:
            return current
        directory = os.path.dirname(os.path.abspath(self.path))
        tmp = _write_temp(directory, os.path.basename(self.path), value)
        try:
            os.replace(tmp, self.path)
        except BaseException:
            os.unlink(tmp)
            raise
        _fsync_dir(directory)
        return value
