# SPDX-License-Identifier: Apache-2.0
"""Input and output paths of the command line, checked before any work.

* An input must exist and be a regular file: a FIFO or a device would block or stream forever,
  a directory fails late with a confusing message.
* An output's directory must exist and be writable, so a run does not fail after minutes of
  work; an existing output is never an input of the same command (``export -o model.onnx``
  would replace its source), not even with ``--force``; an existing output is replaced only
  with ``--force`` (or appended to, for append-only outputs such as a CSV log).
* :func:`write_text_atomic` writes a temporary file beside the target and renames it over the
  target, so an interrupted write never leaves a partial file.
"""

from __future__ import annotations

import os
import stat
import tempfile
from typing import Iterable, Optional

from .textsafe import printable

__all__ = ["check_input_file", "check_output_file", "same_file", "write_text_atomic"]


def _check_syntax(path: str, what: str) -> None:
    if not isinstance(path, str) or not path:
        raise ValueError(f"{what or 'path'}: the path is empty")
    if "\x00" in path:
        raise ValueError(f"{what or 'path'}: the path {printable(path)} contains a NUL "
                         f"character")


def check_input_file(path: str, what: str) -> str:
    """Checks that ``path`` names an existing regular file (without opening it) and returns
    it. Raises ValueError naming ``what``."""
    _check_syntax(path, what)
    shown = f"{what} {printable(path)}" if what else printable(path)
    try:
        st = os.stat(path)
    except OSError as e:
        raise ValueError(f"{shown}: {e.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(f"{shown}: not a regular file")
    return path


def same_file(a: str, b: str) -> bool:
    """True when ``a`` and ``b`` are the same file (hard links, symbolic links and ``..``
    included); False when either does not exist."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


def check_output_file(path: str, what: str, inputs: Iterable[Optional[str]], *,
                      force: bool = False, append: bool = False) -> str:
    """Checks, before any work, that ``path`` can be written: its directory exists and is
    writable, it is not a directory or special file, it is none of ``inputs`` (None entries
    are skipped), and it does not exist unless ``force`` (replace) or ``append``. Returns
    ``path``; raises ValueError naming ``what`` and the path."""
    _check_syntax(path, what)
    shown = printable(path)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise ValueError(f"{what} {shown}: the directory {printable(directory)} does not exist")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise ValueError(f"{what} {shown}: the directory {printable(directory)} is not "
                         f"writable")
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return path
    except OSError as e:
        raise ValueError(f"{what} {shown}: {e.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(f"{what} {shown}: exists and is not a regular file")
    for p in inputs:
        if p is not None and same_file(path, p):
            raise ValueError(f"{what} {shown} is also an input of this command "
                             f"({printable(p)}); write the output elsewhere")
    if not (force or append):
        raise ValueError(f"{what} {shown} exists; pass --force to replace it")
    if append and not os.access(path, os.W_OK):
        raise ValueError(f"{what} {shown}: not writable")
    return path


def write_bytes_atomic(path: str, data: bytes, *, sync_directory: bool = False) -> None:
    """Writes ``data`` to a temporary file beside ``path``, then renames it over ``path``; on
    any failure the temporary file is removed and ``path`` is unchanged. ``sync_directory``
    also fsyncs the directory, so the rename itself survives a power loss."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp",
                               dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
        tmp = ""
    finally:
        if tmp:
            try:
                os.unlink(tmp)
            except OSError:
                pass
    if sync_directory:
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def write_text_atomic(path: str, text: str) -> None:
    """``write_bytes_atomic`` of ``text`` in UTF-8."""
    write_bytes_atomic(path, text.encode("utf-8"))
