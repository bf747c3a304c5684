# SPDX-License-Identifier: Apache-2.0
"""fwassist.kernels against independent references: numpy (formulas written out here),
onnxruntime's DequantizeLinear (blocked) and an unfused DQ -> MatMul graph, and bit-identity
of every kernel variant to the scalar reference."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import fwassist
from fwassist import kernels

FORMATS = [(bits, block) for bits in (2, 3, 4, 8) for block in (32, 64, 128)]


def random_codes(rng: np.random.Generator, N: int, K: int, bits: int, block: int,
                 signed: bool, with_zp: bool, scale_dtype: type):
    nb = -(-K // block)
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    q = rng.integers(lo, hi + 1, size=(N, K)).astype(np.int8 if signed else np.uint8)
    s = (rng.uniform(0.001, 0.1, size=(N, nb)) * rng.choice([-1, 1], size=(N, nb)))
    s = s.astype(scale_dtype)
    zp = rng.integers(lo, hi + 1, size=(N, nb)).astype(q.dtype) if with_zp else None
    return q, s, zp


def numpy_dequantize(q, s, zp, block):
    K = q.shape[1]
    col_block = np.arange(K) // block
    z = np.zeros_like(s, dtype=np.int64) if zp is None else zp.astype(np.int64)
    diff = (q.astype(np.int64) - z[:, col_block]).astype(np.float32)
    return diff * s.astype(np.float32)[:, col_block]


def test_cpu_info_reports_features_and_kernels():
    info = fwassist.cpu_info()
    assert info["arch"] in ("x86_64", "aarch64", "other")
    assert set(info["features"]) <= set(info["detected"])
    assert info["variants"][-1] == "ref"
    assert set(info["kernels"]) == {"gemv_exact", "gemv_fast", "gemm_exact", "gemm_fast"}
    assert set(info["kernels"].values()) <= set(info["variants"])


def test_cpu_features_env_can_only_lower():
    code = "import fwassist, json; print(json.dumps(fwassist.cpu_info()))"
    detected = fwassist.cpu_info()["detected"]
    for keep in ("", "avx2", "neon", "avx2,avx512f,avx512bw,avx512vl", "bogus,avx2"):
        env = dict(os.environ, FWA_CPU_FEATURES=keep)
        out = subprocess.run([sys.executable, "-c", code], env=env, check=True,
                             capture_output=True, text=True).stdout
        import json
        info = json.loads(out)
        wanted = {f for f in keep.split(",") if f}
        assert set(info["features"]) <= wanted & set(detected)
        if not info["features"]:
            assert info["variants"] == ["ref"]
            assert set(info["kernels"].values()) == {"ref"}


@pytest.mark.parametrize("bits,block", FORMATS)
@pytest.mark.parametrize("signed,with_zp", [(True, False), (True, True), (False, True)])
def test_pack_roundtrip_and_dequantize_match_numpy(rng, bits, block, signed, with_zp):
    N, K = 37, 3 * block + 5  # short last block, partial tile
    for scale_dtype in (np.float16, np.float32):
        q, s, zp = random_codes(rng, N, K, bits, block, signed, with_zp, scale_dtype)
        pm = kernels.pack(q, s, zp, bits=bits, block=block, signed=signed)
        assert pm.scale_dtype == ("f16" if scale_dtype == np.float16 else "f32")
        assert pm.nbytes == kernels.packed_size(N, K, bits=bits, block=block,
                                                has_zero=pm.has_zero,
                                                scale_dtype=pm.scale_dtype)
        codes, scales, zeros = kernels.unpack(pm)
        lo = -(1 << (bits - 1)) if signed else 0
        np.testing.assert_array_equal(codes.astype(np.int64) + lo, q)
        np.testing.assert_array_equal(scales, s)
        zp_expect = np.zeros_like(s, dtype=np.int64) if zp is None else zp.astype(np.int64)
        np.testing.assert_array_equal(zeros.astype(np.int64) + lo, zp_expect)
        w = kernels.dequantize(pm)
        assert w.tobytes() == numpy_dequantize(q, s, zp, block).tobytes()


def test_symmetric_signed_stores_no_zero_points(rng):
    q, s, _ = random_codes(rng, 16, 64, 4, 32, True, False, np.float16)
    assert not kernels.pack(q, s, None, bits=4, block=32).has_zero
    assert not kernels.pack(q, s, np.zeros((16, 2), np.int8), bits=4, block=32).has_zero
    assert kernels.pack(q.astype(np.int16) + 8, s, None, bits=4, block=32, signed=False).has_zero


def numpy_quantize_activations(x):
    M, K = x.shape
    kc = -(-K // 32)
    xp = np.zeros((M, kc * 32), np.float32)
    xp[:, :K] = x
    ch = xp.reshape(M, kc, 32)
    amax = np.abs(ch).max(axis=2)
    with np.errstate(divide="ignore"):
        inv = np.where(amax > 0, np.float32(127) / amax, np.float32(0)).astype(np.float32)
    q = np.rint(ch * inv[..., None]).astype(np.int8)  # np.rint rounds half to even
    return q.reshape(M, kc * 32), (amax / np.float32(127)).astype(np.float32), \
        q.astype(np.int32).sum(axis=2)


def test_activation_quantization_matches_numpy(rng):
    x = rng.standard_normal((5, 200)).astype(np.float32)
    x[1, 40:72] = 0.0  # an all-zero chunk
    x[2, :32] = np.arange(32, dtype=np.float32) - 15.5  # halves: exercises round-half-even
    x[2, 0] = 127.0
    got = kernels.quantize_activations(x)
    want = numpy_quantize_activations(x)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize("bits,block", [(2, 32), (3, 64), (4, 128), (8, 32), (4, 32)])
@pytest.mark.parametrize("M", [1, 3, 8, 64])
def test_matmul_matches_numpy(rng, bits, block, M):
    N, K = 45, 300
    q, s, zp = random_codes(rng, N, K, bits, block, True, bits == 3, np.float16)
    pm = kernels.pack(q, s, zp, bits=bits, block=block)
    w = numpy_dequantize(q, s, zp, block).astype(np.float64)
    x = rng.standard_normal((M, K)).astype(np.float32)
    exact = kernels.matmul(pm, x, mode="exact")
    ref = x.astype(np.float64) @ w.T
    mag = np.abs(x.astype(np.float64)) @ np.abs(w).T
    assert np.max(np.abs(exact - ref) / mag) < 1e-6
    # fast: the same weights against the numpy-quantized activations, computed in float64.
    xq, xd, _ = numpy_quantize_activations(x)
    xf = (xq.reshape(M, -1, 32).astype(np.float64) * xd[..., None]).reshape(M, -1)[:, :K]
    ref_fast = xf @ w.T
    fast = kernels.matmul(pm, x, mode="fast")
    assert np.max(np.abs(fast - ref_fast) / (np.abs(xf) @ np.abs(w).T)) < 1e-6


@pytest.mark.parametrize("mode", kernels.MODES)
def test_every_variant_and_thread_count_is_bit_identical(rng, mode):
    variants = fwassist.cpu_info()["variants"]
    for bits, block in [(2, 32), (3, 32), (4, 64), (8, 128)]:
        pm = kernels.quantize_rtn(rng.standard_normal((70, 333)).astype(np.float32),
                                  bits=bits, block=block, symmetric=bits != 3)
        for M in (1, 5, 64):
            x = rng.standard_normal((M, 333)).astype(np.float32)
            ref = kernels.matmul(pm, x, mode=mode, variant="ref").tobytes()
            for v in variants:
                for threads in (1, 2, 3):
                    got = kernels.matmul(pm, x, mode=mode, variant=v, threads=threads)
                    assert got.tobytes() == ref, (v, bits, block, M, threads)
            # one row of the batch alone gives the same bits (GEMV vs GEMM)
            alone = kernels.matmul(pm, x[M - 1], mode=mode)
            assert alone.tobytes() == kernels.matmul(pm, x, mode=mode)[M - 1].tobytes()


def test_matmul_writes_into_out(rng):
    pm = kernels.quantize_rtn(rng.standard_normal((20, 64)).astype(np.float32), bits=4, block=32)
    x = rng.standard_normal((2, 64)).astype(np.float32)
    out = np.full((2, 20), np.nan, np.float32)
    assert kernels.matmul(pm, x, out=out) is out
    assert out.tobytes() == kernels.matmul(pm, x).tobytes()


def test_bad_input_raises_clear_errors(rng):
    pm = kernels.quantize_rtn(rng.standard_normal((16, 64)).astype(np.float32), bits=4, block=32)
    x = rng.standard_normal(64).astype(np.float32)
    with pytest.raises(TypeError, match="dtype float32"):
        kernels.matmul(pm, x.astype(np.float64))
    with pytest.raises(ValueError, match="C-contiguous"):
        kernels.matmul(pm, np.ascontiguousarray(np.stack([x, x], axis=1))[:, 0])
    with pytest.raises(ValueError, match="K=64"):
        kernels.matmul(pm, x[:63])
    with pytest.raises(ValueError, match="mode"):
        kernels.matmul(pm, x, mode="turbo")
    with pytest.raises(ValueError, match="not available"):
        kernels.matmul(pm, x, variant="no-such-isa")
    with pytest.raises(ValueError, match="NaN or Inf"):
        kernels.matmul(pm, np.full(64, np.inf, np.float32))
    with pytest.raises(ValueError, match="NaN or Inf"):
        kernels.matmul(pm, np.where(np.arange(64) == 7, np.nan, x).astype(np.float32))
    with pytest.raises(ValueError, match="out must have shape"):
        kernels.matmul(pm, x, out=np.empty(15, np.float32))
    with pytest.raises(ValueError, match="threads"):
        kernels.matmul(pm, x, threads=0)
    q = np.zeros((4, 64), np.int8)
    s = np.ones((4, 2), np.float16)
    with pytest.raises(ValueError, match="bits must be one of"):
        kernels.pack(q, s, bits=5, block=32)
    with pytest.raises(ValueError, match="block must be one of"):
        kernels.pack(q, s, bits=4, block=48)
    with pytest.raises(ValueError, match="out of the signed 4-bit range"):
        kernels.pack(q + 8, s, bits=4, block=32)
    with pytest.raises(ValueError, match="scales must have shape"):
        kernels.pack(q, s[:, :1], bits=4, block=32)
    with pytest.raises(ValueError, match="NaN or Inf"):
        kernels.pack(q, np.full((4, 2), np.inf, np.float16), bits=4, block=32)
    with pytest.raises(TypeError, match="float16 or float32"):
        kernels.pack(q, s.astype(np.float64), bits=4, block=32)
    with pytest.raises(ValueError, match="bytes, the layout needs"):
        kernels.PackedMatrix.from_buffer(pm.data[:-1], 16, 64, bits=4, block=32,
                                         has_zero=False, scale_dtype="f16")


def test_from_buffer_wraps_without_copy(rng):
    pm = kernels.quantize_rtn(rng.standard_normal((16, 64)).astype(np.float32), bits=2, block=64)
    view = kernels.PackedMatrix.from_buffer(pm.data, 16, 64, bits=2, block=64,
                                            has_zero=False, scale_dtype="f16")
    assert np.shares_memory(view.data, pm.data)
    x = rng.standard_normal(64).astype(np.float32)
    assert kernels.matmul(view, x).tobytes() == kernels.matmul(pm, x).tobytes()


def test_forced_variant_falls_through_to_a_usable_one():
    from fwassist import _core

    info = fwassist.cpu_info()
    for op, chosen in info["kernels"].items():
        assert _core.kernel_for(op, "") == chosen
        for v in info["variants"]:
            ran = _core.kernel_for(op, v)
            # the forced variant itself, or one after it in priority order
            assert info["variants"].index(ran) >= info["variants"].index(v)
    with pytest.raises(ValueError, match="unknown operation"):
        _core.kernel_for("conv", "")
