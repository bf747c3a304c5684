# SPDX-License-Identifier: Apache-2.0
"""The exceptions of fwassist, one hierarchy (README "Errors")::

    Error                          every failure fwassist itself reports
    ├── ArtifactError              an artifact failed to open or verify (also a ValueError)
    │   └── ReleaseError           a signed release was refused (docs/releases.md)
    ├── ExportError                a source model cannot be exported (also a ValueError)
    ├── BatchError                 a BatchDecoder refused a request
    │   ├── BatchRequestError      bad ids, parameters, slot, or a prompt past the context
    │   │                          (also a ValueError)
    │   └── NoFreeSlotError        every slot is generating
    └── MissingExtraError          an optional package is not installed (also an ImportError)

``ArtifactError.status`` is the status name of csrc/core/status.h (``"digest_mismatch"`` ...),
``.message`` the reader's description and ``.path`` the file when there is one. Plain argument
errors stay the built-in ``ValueError``, ``TypeError`` and ``KeyError``.

Two internal carriers never reach user code: the native module's ``_core.ArtifactFailure`` and
the standalone verifier's ``pyverify.PyArtifactError`` (that module must import without the
package); every public entry point translates them into :class:`ArtifactError`.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType
from typing import Optional

__all__ = ["Error", "ArtifactError", "ReleaseError", "ExportError", "BatchError",
           "BatchRequestError", "NoFreeSlotError", "MissingExtraError", "require"]


class Error(Exception):
    """The base of every exception fwassist raises for a failure of its own."""


class ArtifactError(Error, ValueError):
    """An artifact failed to open or verify.

    ``status`` is the status name (one of :data:`fwassist.loader.STATUSES`, e.g.
    ``"digest_mismatch"``), ``message`` the description of the problem, ``path`` the file (None
    for a buffer)."""

    def __init__(self, status: str, message: str, path: Optional[str] = None) -> None:
        super().__init__(f"{path}: {status}: {message}" if path else f"{status}: {message}")
        self.status = status
        self.message = message
        self.path = path


class ReleaseError(ArtifactError):
    """A signed release was refused: the trust policy, the signature file, the statement, the
    signatures, the security version or the rollback counter (docs/releases.md). ``status`` is
    one of ``policy_malformed``, ``policy_unsatisfiable``, ``signature_malformed``,
    ``cap_exceeded``, ``subject_mismatch``, ``signature_invalid``, ``untrusted``, ``revoked``,
    ``rollback``, ``counter_unavailable``, ``no_crypto`` (``io_error`` when a file or an
    external verifier fails); ``verdict`` is the reference verifier's :class:`fwassist.release.ReleaseVerdict` so far (None elsewhere)."""

    def __init__(self, status: str, message: str, path: Optional[str] = None,
                 verdict: Optional[object] = None) -> None:
        super().__init__(status, message, path)
        self.verdict = verdict


class ExportError(Error, ValueError):
    """A source model (ONNX graph or checkpoint) cannot be exported exactly."""


class BatchError(Error):
    """A :class:`fwassist.BatchDecoder` refused a request (nothing changed)."""


class BatchRequestError(BatchError, ValueError):
    """A request a BatchDecoder cannot take: an empty prompt, a token id outside the vocabulary,
    a prompt longer than the context, a sampling parameter out of range, or a slot number
    that is not one of its slots."""


class NoFreeSlotError(BatchError):
    """Every slot of a BatchDecoder is generating: wait for one to finish (or cancel one)."""


class MissingExtraError(Error, ImportError):
    """An optional package is not installed; ``extra`` names the extra that installs it."""

    def __init__(self, package: str, extra: str, purpose: str) -> None:
        super().__init__(f"{purpose} needs the '{package}' package: "
                         f"pip install 'fwassist[{extra}]'")
        self.package = package
        self.extra = extra


def require(module: str, extra: str, purpose: str) -> ModuleType:
    """Imports an optional ``module``, or raises :class:`MissingExtraError` naming ``extra``."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        # A signal during the import (SIGTERM, Ctrl-C) can reach us wrapped in an ImportError
        # by an extension module's init: it is not a missing package, so it goes on as itself.
        cause = e.__cause__ or e.__context__
        while cause is not None:
            if not isinstance(cause, Exception):
                raise cause from None
            cause = cause.__cause__ or cause.__context__
        if importlib.util.find_spec(module.partition(".")[0]) is not None:
            raise  # installed, but broken: its own error says why
        raise MissingExtraError(module.partition(".")[0], extra, purpose) from None
