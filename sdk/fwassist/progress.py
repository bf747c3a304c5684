# SPDX-License-Identifier: Apache-2.0
"""Progress of long commands (export, verify, sbom) on a terminal.

Shown on stderr only when stderr is a terminal and the command is not ``-q``/``--quiet``, so
that pipes, logs and scripts see exactly the output they saw before. A phase is a line of its
own; a byte count or a wait rewrites one status line (``\\r``), at most ten times a second.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Optional, TextIO

__all__ = ["Progress"]

_MIB = float(1 << 20)
_INTERVAL = 0.1


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or replaced stream
        return False


class Progress:
    """Progress lines of the command ``prog`` (e.g. ``"fwassist verify"``)."""

    def __init__(self, prog: str, *, quiet: bool = False,
                 stream: Optional[TextIO] = None) -> None:
        self._prog = prog
        self._stream = stream if stream is not None else sys.stderr
        self.enabled = not quiet and _isatty(self._stream)
        self._open = False          # a status line is shown and not yet ended
        self._shown = 0.0
        self._lock = threading.Lock()

    def _write(self, text: str) -> None:
        try:
            self._stream.write(text)
            self._stream.flush()
        except (OSError, ValueError):  # the terminal went away: progress is not worth failing
            self.enabled = False

    def phase(self, message: str) -> None:
        """A line of its own: the start of a phase."""
        if self.enabled:
            with self._lock:
                self._write(("\r\x1b[K" if self._open else "") + f"{self._prog}: {message}\n")
                self._open = False

    def status(self, message: str, force: bool = False) -> None:
        """Rewrites the status line (at most every 0.1 s unless ``force``)."""
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._shown < _INTERVAL:
            return
        with self._lock:
            self._shown = now
            self._write(f"\r\x1b[K{self._prog}: {message}")
            self._open = True

    def end(self) -> None:
        """Ends the status line (the last message stays on screen)."""
        if self.enabled and self._open:
            with self._lock:
                self._write("\n")
                self._open = False

    def bytes_done(self, what: str, done: int, total: int, started: float) -> None:
        """``what 12.0/48.0 MiB (85.3 MiB/s)``; ``started`` is the time.monotonic() it began."""
        dt = max(time.monotonic() - started, 1e-9)
        self.status(f"{what} {done / _MIB:.1f}/{total / _MIB:.1f} MiB "
                    f"({done / _MIB / dt:.1f} MiB/s)", force=done >= total)

    @contextmanager
    def waiting(self, what: str, total: int) -> Iterator[None]:
        """Around one native call that works through ``total`` bytes without reporting back
        (the C++ verifier): the elapsed time while it runs, then the bytes and the rate."""
        if not self.enabled:
            yield
            return
        started = time.monotonic()
        stop = threading.Event()

        def tick() -> None:
            while not stop.wait(_INTERVAL):
                self.status(f"{what} {total / _MIB:.1f} MiB ... "
                            f"{time.monotonic() - started:.1f} s", force=True)

        ticker = threading.Thread(target=tick, name="fwassist-progress", daemon=True)
        ticker.start()
        ok = False
        try:
            yield
            ok = True
        finally:
            stop.set()
            ticker.join()
            if ok:
                self.bytes_done(what, total, total, started)
            self.end()
