# SPDX-License-Identifier: Apache-2.0
"""Decoding ONNX tensors (initializers, Constant attributes, external data) into numpy arrays.

Every element type the importer can meet is decoded by hand, without ``onnx.numpy_helper``,
so that each encoding rule is explicit and checked:

* ``raw_data``: little-endian; sub-byte types (INT4/UINT4/INT2/UINT2) are packed LSB-first
  across row boundaries (element 0 in the lowest bits), only the last byte padded;
* typed fields: ``float_data``, ``double_data``, ``int64_data``, ``uint64_data`` and
  ``int32_data``, which holds 8/16-bit integers one per entry, float16/bfloat16 as their
  bit patterns, and sub-byte types as **packed bytes**, one byte per entry;
* external data: ``location``/``offset``/``length`` relative to the model's directory. Absolute
  paths, ``..``, symbolic links anywhere on the path and anything resolving outside the
  directory are refused (path traversal).

bfloat16 tensors decode to their ``uint16`` bit patterns (``Decoded.dtype == "bfloat16"``);
:func:`as_float32` widens them exactly.
"""

from __future__ import annotations

import math
import os
import stat
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from ..errors import ExportError


class OnnxImportError(ExportError):
    """A model the importer refuses. The message names the node, the tensor and the reason."""


class ExternalDataError(OnnxImportError):
    """An external data reference that names no readable file inside the model's directory.
    Always fatal, whichever weight it belongs to: it is never a question of graph structure."""


_ESCAPES = "external data location escapes the model directory"


# onnx.TensorProto.DataType values (kept here so that this module needs no onnx import).
FLOAT, UINT8, INT8, UINT16, INT16, INT32, INT64, STRING, BOOL = 1, 2, 3, 4, 5, 6, 7, 8, 9
FLOAT16, DOUBLE, UINT32, UINT64, COMPLEX64, COMPLEX128, BFLOAT16 = 10, 11, 12, 13, 14, 15, 16
FLOAT8E4M3FN, FLOAT8E4M3FNUZ, FLOAT8E5M2, FLOAT8E5M2FNUZ = 17, 18, 19, 20
UINT4, INT4, FLOAT4E2M1, FLOAT8E8M0, UINT2, INT2 = 21, 22, 23, 24, 25, 26

TYPE_NAMES = {
    FLOAT: "float32", UINT8: "uint8", INT8: "int8", UINT16: "uint16", INT16: "int16",
    INT32: "int32", INT64: "int64", STRING: "string", BOOL: "bool", FLOAT16: "float16",
    DOUBLE: "float64", UINT32: "uint32", UINT64: "uint64", COMPLEX64: "complex64",
    COMPLEX128: "complex128", BFLOAT16: "bfloat16", FLOAT8E4M3FN: "float8e4m3fn",
    FLOAT8E4M3FNUZ: "float8e4m3fnuz", FLOAT8E5M2: "float8e5m2", FLOAT8E5M2FNUZ: "float8e5m2fnuz",
    UINT4: "uint4", INT4: "int4", FLOAT4E2M1: "float4e2m1", FLOAT8E8M0: "float8e8m0",
    UINT2: "uint2", INT2: "int2", 27: "float6e2m3", 28: "float6e3m2",
}

# Integer code types usable as quantized weights: (bits, signed).
QUANT_TYPES = {INT2: (2, True), UINT2: (2, False), INT4: (4, True), UINT4: (4, False),
               INT8: (8, True), UINT8: (8, False)}
SUBBYTE_TYPES = {INT2: (2, True), UINT2: (2, False), INT4: (4, True), UINT4: (4, False)}
FLOAT_TYPES = (FLOAT, FLOAT16, BFLOAT16, DOUBLE)

# Types stored one element per int32_data entry: numpy dtype and allowed range.
_INT32_FIELD = {INT8: (np.int8, -128, 127), UINT8: (np.uint8, 0, 255),
                INT16: (np.int16, -32768, 32767), UINT16: (np.uint16, 0, 65535),
                INT32: (np.int32, -(1 << 31), (1 << 31) - 1), BOOL: (np.bool_, 0, 1)}
_RAW_DTYPE = {FLOAT: "<f4", UINT8: "u1", INT8: "i1", UINT16: "<u2", INT16: "<i2", INT32: "<i4",
              INT64: "<i8", BOOL: "u1", FLOAT16: "<f2", DOUBLE: "<f8", UINT32: "<u4",
              UINT64: "<u8", BFLOAT16: "<u2"}


def type_name(t: int) -> str:
    return TYPE_NAMES.get(int(t), f"type {t}")


def quant_range(bits: int, signed: bool) -> tuple[int, int]:
    return (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)


@dataclass(frozen=True)
class Decoded:
    """A decoded tensor: ``array`` has the tensor's shape. Integer types decode to int8/uint8
    (sub-byte types sign- or zero-extended), int16..., floats to float32/float16/float64,
    bfloat16 to its uint16 bit patterns."""

    array: np.ndarray
    onnx_type: int

    @property
    def dtype(self) -> str:
        return type_name(self.onnx_type)

    @property
    def is_float(self) -> bool:
        return self.onnx_type in FLOAT_TYPES

    @property
    def is_quant_int(self) -> bool:
        return self.onnx_type in QUANT_TYPES


def as_float32(d: Decoded) -> np.ndarray:
    """Exact float32 values of a float tensor (bfloat16 and float16 widen exactly; float64 is
    refused by the callers that need float32 exactness)."""
    if d.onnx_type == BFLOAT16:
        return (d.array.astype(np.uint32) << 16).view(np.float32)
    if d.onnx_type in (FLOAT, FLOAT16):
        return d.array.astype(np.float32)
    if d.onnx_type == DOUBLE:
        return d.array.astype(np.float32)
    raise TypeError(f"not a float tensor: {type_name(d.onnx_type)}")


def unpack_subbyte(buf: np.ndarray, n: int, bits: int, signed: bool) -> np.ndarray:
    """LSB-first unpacking of ``n`` elements of ``bits`` (2 or 4) from uint8 ``buf``."""
    per = 8 // bits
    mask = (1 << bits) - 1
    b = buf.astype(np.uint8)
    vals = np.stack([(b >> (bits * i)) & mask for i in range(per)], axis=-1).reshape(-1)[:n]
    if signed:
        v = vals.astype(np.int8)
        v = np.where(v >= (1 << (bits - 1)), v - (1 << bits), v).astype(np.int8)
        return v
    return vals.astype(np.uint8)


def pack_subbyte(values: np.ndarray, bits: int) -> bytes:
    """Inverse of :func:`unpack_subbyte` (for writers and tests): LSB-first, last byte padded."""
    per = 8 // bits
    v = (np.asarray(values).astype(np.int64).reshape(-1) & ((1 << bits) - 1)).astype(np.uint8)
    pad = (-v.size) % per
    v = np.concatenate([v, np.zeros(pad, np.uint8)]).reshape(-1, per)
    out = np.zeros(v.shape[0], np.uint8)
    for i in range(per):
        out |= (v[:, i] << (bits * i)).astype(np.uint8)
    return out.tobytes()


class ExternalData:
    """Reads external tensor data from files inside ``base_dir`` only, and remembers which
    files were read (in first-use order) for the source digest."""

    def __init__(self, base_dir: str):
        self.base_dir = os.path.realpath(base_dir)
        self.files: list[str] = []

    def resolve(self, location: str, what: str) -> str:
        if not isinstance(location, str) or not location or "\x00" in location:
            raise ExternalDataError(f"{what}: external data location {location!r} is invalid")
        if (os.path.isabs(location) or location.startswith(("/", "\\"))
                or (len(location) > 1 and location[1] == ":")):
            raise ExternalDataError(f"{what}: external data location {location!r} is an absolute "
                                    f"path: {_ESCAPES} (path traversal refused)")
        parts = location.replace("\\", "/").split("/")
        if any(p == ".." for p in parts):
            raise ExternalDataError(f"{what}: external data location {location!r} contains '..' "
                                    f"({_ESCAPES}: path traversal refused)")
        if location.startswith("*/"):
            raise ExternalDataError(f"{what}: external data location {location!r} is an "
                                    f"in-memory reference, not a file")
        cur = self.base_dir
        for p in parts:
            if p in ("", "."):
                continue
            cur = os.path.join(cur, p)
            if os.path.islink(cur):
                raise ExternalDataError(f"{what}: external data location {location!r} goes "
                                        f"through a symbolic link ({p}) ({_ESCAPES}: path "
                                        f"traversal refused)")
        real = os.path.realpath(cur)
        if not (real == self.base_dir or real.startswith(self.base_dir + os.sep)):
            raise ExternalDataError(f"{what}: external data location {location!r} resolves "
                                    f"outside the model's directory ({_ESCAPES}: path traversal "
                                    f"refused)")
        try:
            st = os.stat(real)
        except OSError as e:
            raise ExternalDataError(f"{what}: external data file {location!r} cannot be read: "
                                    f"{e.strerror}") from None
        if not stat.S_ISREG(st.st_mode):
            raise ExternalDataError(f"{what}: external data location {location!r} is not a "
                                    f"regular file")
        return real

    def read(self, tensor: Any, what: str) -> bytes:
        info = {e.key: e.value for e in tensor.external_data}
        unknown = set(info) - {"location", "offset", "length", "checksum", "basepath"}
        if unknown:
            raise ExternalDataError(f"{what}: unknown external data keys {sorted(unknown)}")
        path = self.resolve(info.get("location", ""), what)
        size = os.path.getsize(path)
        try:
            offset = int(info.get("offset", "0"))
            length = int(info["length"]) if "length" in info else size - offset
        except ValueError:
            raise ExternalDataError(f"{what}: external data offset/length are not "
                                    f"integers") from None
        if offset < 0 or length < 0 or offset + length > size:
            raise ExternalDataError(f"{what}: external data range [{offset}, {offset + length}) "
                                    f"lies outside {info['location']!r} ({size} bytes)")
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read(length)
        if len(data) != length:
            raise ExternalDataError(f"{what}: short read from external data file")
        if path not in self.files:
            self.files.append(path)
        return data


def decode_tensor(tensor: Any, what: str, external: Optional[ExternalData] = None) -> Decoded:
    """Decodes a TensorProto. ``what`` names it (node and tensor) in error messages."""
    t = int(tensor.data_type)
    dims = [int(d) for d in tensor.dims]
    if any(d < 0 for d in dims):
        raise OnnxImportError(f"{what}: negative dimension in {dims}")
    n = math.prod(dims)  # Python ints: a numpy int64 product wraps for huge dims
    if tensor.HasField("segment"):
        raise OnnxImportError(f"{what}: segmented tensors are not supported")
    if t not in _RAW_DTYPE and t not in SUBBYTE_TYPES:
        raise OnnxImportError(f"{what}: element type {type_name(t)} is not supported")
    raw: Optional[bytes] = None
    if tensor.data_location == 1:  # EXTERNAL
        if external is None:
            raise OnnxImportError(f"{what}: external data but no model directory")
        raw = external.read(tensor, what)
    elif tensor.HasField("raw_data"):
        raw = tensor.raw_data
    if t in SUBBYTE_TYPES:
        bits, signed = SUBBYTE_TYPES[t]
        nbytes = (n * bits + 7) // 8
        if raw is not None:
            if len(raw) != nbytes:
                raise OnnxImportError(f"{what}: {type_name(t)} raw data has {len(raw)} bytes, "
                                      f"{dims} needs {nbytes} (packed across rows)")
            buf = np.frombuffer(raw, dtype=np.uint8)
        else:
            src = np.asarray(tensor.int32_data, dtype=np.int64)
            if src.size != nbytes:
                raise OnnxImportError(f"{what}: {type_name(t)} int32_data has {src.size} "
                                      f"entries, {dims} needs {nbytes} packed bytes")
            if src.size and (src.min() < 0 or src.max() > 255):
                raise OnnxImportError(f"{what}: {type_name(t)} int32_data entries must be "
                                      f"packed bytes in [0, 255]")
            buf = src.astype(np.uint8)
        return Decoded(unpack_subbyte(buf, n, bits, signed).reshape(dims), t)
    dt = np.dtype(_RAW_DTYPE[t])
    if raw is not None:
        if len(raw) != n * dt.itemsize:
            raise OnnxImportError(f"{what}: {type_name(t)} raw data has {len(raw)} bytes, "
                                  f"{dims} needs {n * dt.itemsize}")
        arr = np.frombuffer(raw, dtype=dt).astype(dt.newbyteorder("="))
        if t == BOOL:
            arr = arr.astype(np.bool_)
        return Decoded(arr.reshape(dims), t)
    if t == FLOAT:
        src = np.asarray(tensor.float_data, dtype=np.float32)
    elif t == DOUBLE:
        src = np.asarray(tensor.double_data, dtype=np.float64)
    elif t == INT64:
        src = np.asarray(tensor.int64_data, dtype=np.int64)
    elif t in (UINT32, UINT64):
        src = np.asarray(tensor.uint64_data, dtype=np.uint64).astype(dt.newbyteorder("="))
    elif t in (FLOAT16, BFLOAT16):
        v = np.asarray(tensor.int32_data, dtype=np.int64)
        if v.size and (v.min() < 0 or v.max() > 65535):
            raise OnnxImportError(f"{what}: {type_name(t)} int32_data entries must be 16-bit "
                                  f"patterns")
        src = v.astype(np.uint16)
        if t == FLOAT16:
            src = src.view(np.float16)
    else:
        npdt, lo, hi = _INT32_FIELD[t]
        v = np.asarray(tensor.int32_data, dtype=np.int64)
        if v.size and (v.min() < lo or v.max() > hi):
            raise OnnxImportError(f"{what}: {type_name(t)} int32_data value out of range "
                                  f"[{lo}, {hi}]")
        src = v.astype(npdt)
    if src.size != n:
        raise OnnxImportError(f"{what}: {type_name(t)} has {src.size} values, {dims} needs {n}")
    return Decoded(src.reshape(dims), t)
