# SPDX-License-Identifier: Apache-2.0
"""Loading `.fwa` artifacts through the fail-closed C++ reader (docs/artifact-format.md).

:func:`load_artifact` opens a regular file (mapped read-only, or with ``copy=True`` read into
private memory) or a bytes-like object and verifies it before anything is handed out: header, root digest against the optional pin,
manifest, tables, zero padding and the sha256 of every tensor; with ``lazy=True`` the expert
blocks are verified on first use instead (a tensor of an unverified expert is never returned
unverified). Any failure raises :class:`ArtifactError` with the status name and a message that
names the field, tensor or block and the expected and actual values.

Tensors are zero-copy, read-only numpy views into the artifact (float32, float16, bf16 as
uint16 bit patterns) or :class:`fwassist.kernels.PackedMatrix` for packed weights. A view keeps
the underlying memory alive on its own, even after :meth:`Artifact.close`.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Optional, TypeVar, Union

import numpy as np

from . import _core
from .errors import ArtifactError
from .kernels import PackedMatrix
from .pin import check_path, parse_pin

__all__ = ["ArtifactError", "Artifact", "load_artifact", "STATUSES"]

# The artifact statuses of csrc/core/status.h, by name.
STATUSES = ("io_error", "truncated", "bad_magic", "unsupported_version", "malformed",
            "cap_exceeded", "trailing_bytes", "out_of_bounds", "overlap", "nonzero_padding",
            "digest_mismatch", "pin_mismatch", "incompatible", "non_finite")

PathOrBuffer = Union[str, bytes, "os.PathLike[str]", bytearray, memoryview, np.ndarray, Any]
T = TypeVar("T")


def _native(fn: Callable[..., T], *args: Any) -> T:
    """Calls into _core, turning its failures into the typed errors of this module."""
    try:
        return fn(*args)
    except _core.ArtifactFailure as e:
        status, message = e.args
        if status == "invalid_argument":  # a caller error, not a bad artifact
            raise KeyError(message) from None
        raise ArtifactError(status, message) from None


class Artifact:
    """A verified artifact. Use :func:`load_artifact` to open one; close it (or use ``with``)
    to release the mapping once no view is left."""

    def __init__(self, handle: _core.ArtifactHandle, source: str):
        self._h: Optional[_core.ArtifactHandle] = handle
        self._source = source
        self._root = handle.root_digest().hex()
        self._manifest: Optional[dict[str, Any]] = None

    # -- identity -------------------------------------------------------------------------

    @property
    def root_digest(self) -> str:
        """sha256 of the manifest bytes, 64 lowercase hex digits (also after close)."""
        return self._root

    @property
    def pin(self) -> str:
        """``"sha256:" + root_digest``: pass it to :func:`load_artifact` to require this file."""
        return "sha256:" + self.root_digest

    @property
    def manifest_bytes(self) -> bytes:
        return self._handle().manifest()

    @property
    def manifest(self) -> dict[str, Any]:
        """The verified manifest (real numbers are strings, as stored)."""
        if self._manifest is None:
            m: dict[str, Any] = json.loads(self._handle().manifest().decode("utf-8"))
            self._manifest = m
        return self._manifest

    @property
    def config(self) -> dict[str, Any]:
        c: dict[str, Any] = self.manifest["config"]
        return c

    @property
    def lazy(self) -> bool:
        return bool(self._handle().lazy)

    @property
    def protection(self) -> str:
        """What keeps the bytes as verified until close: "copy", "caller-memory" (a buffer you
        passed: keep it unchanged), "fs-verity", "immutable", "read-only-mount",
        "memfd-sealed", or "none" (a mapped file that can still change; docs/runtime.md)."""
        return str(self._handle().protection)

    @property
    def closed(self) -> bool:
        return self._h is None or self._h.closed

    # -- tensors --------------------------------------------------------------------------

    def tensor_names(self) -> list[str]:
        """Names in table (offset) order."""
        return list(self._handle().tensor_names())

    def tensor_info(self, name: str) -> dict[str, Any]:
        """name, role, dtype, shape, quant, offset, length, layer, expert, sha256."""
        return dict(_native(self._handle().tensor_info, name))

    def tensor(self, name: str) -> Union[np.ndarray, PackedMatrix]:
        """The tensor, verified (its expert block first, when lazy), without a copy: a
        read-only numpy array (float32, float16, or uint16 bf16 bit patterns) in its shape, or a
        PackedMatrix over the packed bytes. KeyError for an unknown name."""
        h = self._handle()
        info = _native(h.tensor_info, name)
        arr: np.ndarray = _native(h.tensor_array, name)
        if info["dtype"] != "packed":
            return arr
        q = info["quant"]
        N, K = info["shape"]
        return PackedMatrix.from_buffer(arr, N, K, bits=q["bits"], block=q["block"],
                                        has_zero=q["zero_points"], scale_dtype=q["scale"])

    def tensor_bytes(self, name: str) -> np.ndarray:
        """The tensor's raw bytes as a read-only uint8 view (verified like :meth:`tensor`)."""
        b: np.ndarray = _native(self._handle().tensor_bytes, name)
        return b

    # -- experts --------------------------------------------------------------------------

    def expert_blocks(self) -> list[dict[str, Any]]:
        """layer, expert, offset, length, sha256 and verified for every expert block."""
        return [dict(b) for b in self._handle().expert_blocks()]

    def verify_expert(self, layer: int, expert: int) -> None:
        """Verifies the block of (layer, expert) now if not done yet (a no-op for a fully
        verified artifact). Raises ArtifactError on a mismatch, and on every later access to
        that expert; KeyError if the artifact has no such block."""
        _native(self._handle().verify_expert, int(layer), int(expert))

    # -- lifetime -------------------------------------------------------------------------

    def close(self) -> None:
        """Releases the handle. Views already taken stay valid (they hold the memory)."""
        if self._h is not None:
            self._h.close()
            self._h = None

    def __enter__(self) -> "Artifact":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        if self.closed:
            return f"<fwassist.Artifact {self._source} (closed)>"
        return (f"<fwassist.Artifact {self._source} {self.pin} "
                f"{len(self.tensor_names())} tensors{' lazy' if self.lazy else ''}>")

    def _handle(self) -> _core.ArtifactHandle:
        if self._h is None or self._h.closed:
            raise ValueError("the artifact is closed")
        return self._h


def load_artifact(path_or_buffer: PathOrBuffer, pin: Optional[str] = None,
                  lazy: bool = False, copy: bool = False, strict: bool = False) -> Artifact:
    """Opens and verifies an artifact.

    path_or_buffer: a path (str or os.PathLike) of a regular file, or a bytes-like object
    (bytes, bytearray, memoryview, contiguous numpy array; borrowed without a copy and held
    until the artifact and all its views are gone: keep it unchanged).
    pin: None, or ``"sha256:<64 lowercase hex>"`` (:func:`fwassist.pin.parse_pin`; "" is an
    error, not "no pin"); the root digest must equal it (checked before the manifest is
    parsed), else ArtifactError("pin_mismatch"). lazy: verify expert blocks on first use
    instead of now. copy: read the file (or copy the buffer) into private memory and verify
    that, so later changes to the file cannot reach the views. strict: refuse to map a file
    whose bytes could still change (:attr:`Artifact.protection` "none"), ArtifactError
    ("io_error", "unprotected mapping: ...").

    Without ``copy`` a file stays mapped: its bytes are the verified ones only while nobody
    writes the file (see :attr:`Artifact.protection` and docs/runtime.md).

    Raises ArtifactError (``.status``, ``.message``) for a file that fails any check or is not
    a regular file, ValueError for a malformed pin or a path with a NUL character, TypeError
    for an unsupported argument type.
    """
    pin = parse_pin(pin)
    if isinstance(path_or_buffer, (str, os.PathLike)):
        path = check_path(path_or_buffer)
        handle = _native(_core.ArtifactHandle.open_path, path, pin, bool(lazy), bool(copy),
                         bool(strict))
        return Artifact(handle, repr(path))
    buf: Any = path_or_buffer  # any object with the buffer protocol, checked here
    try:
        memoryview(buf)
    except TypeError:
        raise TypeError("load_artifact needs a path or a bytes-like object, got "
                        f"{type(path_or_buffer).__name__}") from None
    try:
        handle = _native(_core.ArtifactHandle.open_buffer, buf, pin, bool(lazy),
                         bool(copy))
    except BufferError as e:
        raise TypeError(f"the buffer must be C-contiguous bytes: {e}") from None
    return Artifact(handle, f"<buffer of {memoryview(buf).nbytes} bytes>")
