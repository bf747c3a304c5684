# SPDX-License-Identifier: Apache-2.0
"""Block-quantized weights and the sub-4-bit matmul kernels, on numpy arrays.

A weight matrix W (N rows, K columns) is stored as integer codes ``q`` with a scale ``s`` and an
optional zero point ``zp`` per row and block of ``block`` columns (the last block may be short):
``W[n, k] = (q[n, k] - zp[n, k // block]) * s[n, k // block]``, the ONNX DequantizeLinear
rule. :func:`pack` turns that into the canonical packed layout (docs/kernels.md), which every
kernel reads directly and which is also the on-disk layout of artifacts.

``matmul(w, x)`` computes ``x @ W.T`` in one of two modes, both bit-identical on every CPU:
``"exact"`` (fp32 activations) or ``"fast"`` (activations quantized per 32 to int8).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from . import _core

SUPPORTED_BITS = (2, 3, 4, 8)
SUPPORTED_BLOCKS = (32, 64, 128)
MODES = ("exact", "fast")

__all__ = [
    "PackedMatrix",
    "packed_size",
    "pack",
    "quantize_rtn",
    "unpack",
    "dequantize",
    "matmul",
    "quantize_activations",
]


@dataclass(frozen=True)
class PackedMatrix:
    """A packed N x K weight: ``data`` is the layout's bytes (uint8, 1-D, no copy is made)."""

    data: np.ndarray
    N: int
    K: int
    bits: int
    block: int
    has_zero: bool
    scale_dtype: str  # "f16" or "f32"

    @property
    def n_blocks(self) -> int:
        return -(-self.K // self.block)

    @property
    def nbytes(self) -> int:
        return int(self.data.nbytes)

    def _fmt(self) -> tuple[int, int, bool, str]:
        return self.bits, self.block, self.has_zero, self.scale_dtype

    @classmethod
    def from_buffer(cls, data: np.ndarray, N: int, K: int, *, bits: int, block: int,
                    has_zero: bool, scale_dtype: str) -> "PackedMatrix":
        """Wraps existing packed bytes (e.g. a view into a mapped file) after checking the size."""
        _check_format(bits, block)
        data = _as_contiguous(data, np.uint8, "data")
        if data.ndim != 1:
            raise ValueError(f"data must be 1-D, got shape {data.shape}")
        want = packed_size(N, K, bits=bits, block=block, has_zero=has_zero,
                           scale_dtype=scale_dtype)
        if data.size != want:
            raise ValueError(f"data has {data.size} bytes, the layout needs {want}")
        return cls(data, int(N), int(K), bits, block, has_zero, scale_dtype)


def _check_format(bits: int, block: int) -> None:
    if bits not in SUPPORTED_BITS:
        raise ValueError(f"bits must be one of {SUPPORTED_BITS}, got {bits}")
    if block not in SUPPORTED_BLOCKS:
        raise ValueError(f"block must be one of {SUPPORTED_BLOCKS}, got {block}")


def _as_contiguous(a: np.ndarray, dtype: type, name: str) -> np.ndarray:
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(a).__name__}")
    if a.dtype != np.dtype(dtype):
        raise TypeError(f"{name} must have dtype {np.dtype(dtype)}, got {a.dtype}")
    if not a.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous (use np.ascontiguousarray)")
    return a


def packed_size(N: int, K: int, *, bits: int, block: int, has_zero: bool = False,
                scale_dtype: str = "f16") -> int:
    """Bytes of the packed layout of an N x K matrix."""
    _check_format(bits, block)
    return int(_core.layout_info(bits, block, has_zero, scale_dtype, N, K)["total_bytes"])


def pack(q: np.ndarray, scales: np.ndarray, zero_points: Optional[np.ndarray] = None, *,
         bits: int, block: int, signed: bool = True) -> PackedMatrix:
    """Packs integer codes with their per-block scales (and zero points).

    q: integer array (N, K) in the declared range: [-2^(bits-1), 2^(bits-1)) when ``signed``,
    else [0, 2^bits). scales: float16 or float32 (N, ceil(K / block)), kept in that dtype.
    zero_points: integers (N, ceil(K / block)) in the same signedness, default 0. A signed
    matrix whose zero points are all 0 is stored symmetric (no zero-point bytes).
    """
    _check_format(bits, block)
    if not isinstance(q, np.ndarray) or q.ndim != 2 or q.dtype.kind not in "iu":
        raise TypeError("q must be a 2-D integer numpy array")
    N, K = q.shape
    nb = -(-K // block)
    if not isinstance(scales, np.ndarray) or scales.dtype not in (np.float16, np.float32):
        raise TypeError("scales must be a float16 or float32 numpy array")
    if scales.shape != (N, nb):
        raise ValueError(f"scales must have shape {(N, nb)}, got {scales.shape}")
    if not np.all(np.isfinite(scales)):
        raise ValueError("scales contain NaN or Inf")
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    qmin, qmax = (int(q.min()), int(q.max())) if q.size else (lo, lo)
    if qmin < lo or qmax > hi:
        raise ValueError(f"codes out of the {'signed' if signed else 'unsigned'} {bits}-bit "
                         f"range [{lo}, {hi}]: min {qmin}, max {qmax}")
    if zero_points is None:
        z = np.zeros((N, nb), dtype=np.int64)
    else:
        if not isinstance(zero_points, np.ndarray) or zero_points.dtype.kind not in "iu":
            raise TypeError("zero_points must be an integer numpy array")
        if zero_points.shape != (N, nb):
            raise ValueError(f"zero_points must have shape {(N, nb)}, got {zero_points.shape}")
        z = zero_points.astype(np.int64)
    # Stored form: u = q - lo in [0, 2^bits), stored zero point = zp - lo.
    # int16 holds every code of every supported width (and is 4x cheaper than int64 here).
    u = np.ascontiguousarray(q.astype(np.int16) - lo, dtype=np.uint8)
    zs = z - lo
    if zs.size and (zs.min() < 0 or zs.max() > 255):
        raise ValueError("zero points must satisfy 0 <= zp - qmin <= 255")
    has_zero = not (signed and not np.any(z))
    scale_dtype = "f16" if scales.dtype == np.float16 else "f32"
    s32 = np.ascontiguousarray(scales, dtype=np.float32)
    out = np.empty(packed_size(N, K, bits=bits, block=block, has_zero=has_zero,
                               scale_dtype=scale_dtype), dtype=np.uint8)
    zarg = np.ascontiguousarray(zs, dtype=np.uint8) if has_zero else None
    _core.pack(u, s32, zarg, bits, block, scale_dtype, out)
    return PackedMatrix(out, N, K, bits, block, has_zero, scale_dtype)


def quantize_rtn(w: np.ndarray, *, bits: int, block: int, symmetric: bool = True,
                 scale_dtype: type = np.float16) -> PackedMatrix:
    """Round-to-nearest block quantization of a float matrix (for tests and benchmarks; real
    models come quantized from QAT). Symmetric: s = amax / 2^(bits-1); asymmetric: min/max."""
    _check_format(bits, block)
    w = np.asarray(w, dtype=np.float32)
    if w.ndim != 2:
        raise ValueError("w must be 2-D")
    N, K = w.shape
    nb = -(-K // block)
    padded = np.zeros((N, nb * block), dtype=np.float32)
    padded[:, :K] = w
    blocks = padded.reshape(N, nb, block)
    if symmetric:
        half = 1 << (bits - 1)
        amax = np.abs(blocks).max(axis=2)
        s = (amax / half).astype(scale_dtype)
        s = np.where(s == 0, np.array(1, dtype=scale_dtype), s)
        q = np.clip(np.rint(blocks / s.astype(np.float32)[..., None]), -half, half - 1)
        q = q.reshape(N, nb * block)[:, :K].astype(np.int8)
        return pack(q, s, None, bits=bits, block=block, signed=True)
    lo, hi = blocks.min(axis=2), blocks.max(axis=2)
    qmax = (1 << bits) - 1
    s = ((hi - lo) / qmax).astype(scale_dtype)
    s = np.where(s == 0, np.array(1, dtype=scale_dtype), s)
    s32 = s.astype(np.float32)
    zp = np.clip(np.rint(-lo / s32), 0, qmax)
    q = np.clip(np.rint(blocks / s32[..., None]) + zp[..., None], 0, qmax)
    q = q.reshape(N, nb * block)[:, :K].astype(np.uint8)
    return pack(q, s, zp.astype(np.uint8), bits=bits, block=block, signed=False)


def unpack(w: PackedMatrix) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(codes, scales, zero_points) in stored form: uint8 codes in [0, 2^bits), scales in their
    dtype, uint8 zero points (2^(bits-1) for symmetric formats); W = (codes - zp) * scales."""
    codes = np.empty((w.N, w.K), dtype=np.uint8)
    scales = np.empty((w.N, w.n_blocks), dtype=np.float32)
    zeros = np.empty((w.N, w.n_blocks), dtype=np.uint8)
    _core.unpack(w.data, *w._fmt(), codes, scales, zeros)
    if w.scale_dtype == "f16":
        scales = scales.astype(np.float16)
    return codes, scales, zeros


def dequantize(w: PackedMatrix) -> np.ndarray:
    """The float32 (N, K) matrix: float32(q - zp) * float32(s), one rounding."""
    out = np.empty((w.N, w.K), dtype=np.float32)
    _core.dequantize(w.data, *w._fmt(), out)
    return out


def matmul(w: PackedMatrix, x: np.ndarray, *, mode: str = "fast", threads: int = 1,
           variant: Optional[str] = None, out: Optional[np.ndarray] = None) -> np.ndarray:
    """y = x @ W.T for x of shape (K,) or (M, K), float32, C-contiguous.

    mode: "exact" or "fast" (see the module doc). threads: worker count (results do not
    depend on it). variant: force a kernel variant by name (see cpu_info()["variants"]).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    x = _as_contiguous(x, np.float32, "x")
    if x.ndim not in (1, 2):
        raise ValueError(f"x must be 1-D (K,) or 2-D (M, K), got shape {x.shape}")
    x2 = x.reshape(1, -1) if x.ndim == 1 else x
    if x2.shape[1] != w.K:
        raise ValueError(f"x has {x2.shape[1]} columns but the weight has K={w.K}")
    if x2.shape[0] < 1:
        raise ValueError("x must have at least one row")
    shape = (w.N,) if x.ndim == 1 else (x2.shape[0], w.N)
    if out is None:
        out = np.empty(shape, dtype=np.float32)
    else:
        out = _as_contiguous(out, np.float32, "out")
        if out.shape != shape:
            raise ValueError(f"out must have shape {shape}, got {out.shape}")
    _core.matmul(w.data, *w._fmt(), w.N, x2, out.reshape(x2.shape[0], w.N), mode, int(threads),
                 variant or "")
    return out


def quantize_activations(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The fast mode's activation quantization of (M, K) float32 rows: per chunk of 32,
    d = amax / 127 and q = round_half_even(x * (127 / amax)). Returns (q int8 (M, Kpad),
    d float32 (M, chunks), sum(q) int32 (M, chunks)); Kpad = 32 * chunks, padding is 0."""
    x = _as_contiguous(x, np.float32, "x")
    if x.ndim != 2:
        raise ValueError("x must be 2-D (M, K)")
    M, K = x.shape
    kc = -(-K // 32)
    xq = np.empty((M, kc * 32), dtype=np.int8)
    xd = np.empty((M, kc), dtype=np.float32)
    xs = np.empty((M, kc), dtype=np.int32)
    _core.quantize_activations(x, xq, xd, xs)
    return xq, xd, xs
