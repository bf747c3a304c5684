# SPDX-License-Identifier: Apache-2.0
"""One entry point for "verify this artifact, then let me read its manifest and tensors".

Verification uses the C++ loader (``fwassist.load_artifact``) when the package provides it,
else the pure-Python reader (:mod:`.pyverify`). Either way the tools then read the (already
verified) manifest and tensor bytes through :mod:`.pyverify`, whose own header and manifest
checks run as well, so a file that either reader rejects is rejected.
"""

from __future__ import annotations

import os
from typing import Any, Optional, Union

from ..errors import ArtifactError
from . import pyverify

__all__ = ["verify", "status_name", "native_loader"]


def status_name(err: BaseException) -> str:
    """The status name of a loader error (a name, an enum or an integer code)."""
    s: Any = getattr(err, "status", None)
    if s is None:
        return "error"
    if isinstance(s, int) and not isinstance(s, bool):
        return pyverify.STATUSES.get(int(s), str(int(s)))
    name = getattr(s, "name", None)
    return str(name if name is not None else s)


def native_loader() -> Optional[Any]:
    """``fwassist.load_artifact`` when this build has it, else None."""
    import fwassist

    return getattr(fwassist, "load_artifact", None)


def verify(path: Union[str, "os.PathLike[str]"], pin: Optional[str] = None, lazy: bool = False,
           *, native: Optional[bool] = None) -> pyverify.VerifiedArtifact:
    """Verifies ``path`` (every byte, or all but the expert blocks when ``lazy``) and returns
    the reader of its manifest and data. Raises :class:`fwassist.ArtifactError` (with ``path``).

    native: True to require the C++ loader, False to use only the Python reader, None (default)
    to use the C++ loader when present."""
    p = os.fspath(path)
    load = native_loader() if native is not False else None
    if native and load is None:
        raise RuntimeError("fwassist.load_artifact is not available in this build")
    if load is not None:
        try:
            handle = load(p, pin=pin, lazy=lazy)
        except ArtifactError as e:
            raise ArtifactError(e.status, e.message, p) from None
        close = getattr(handle, "close", None)
        if callable(close):
            close()
        try:
            art = pyverify.read_manifest(p, pin=pin)
        except pyverify.PyArtifactError as e:
            raise ArtifactError(e.status, e.message, p) from None
        art.lazy = lazy
        return art
    try:
        return pyverify.verify(p, pin=pin, lazy=lazy)
    except pyverify.PyArtifactError as e:
        raise ArtifactError(e.status, e.message, p) from None
