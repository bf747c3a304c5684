# SPDX-License-Identifier: Apache-2.0
"""The ONNX QAT importer's weight patterns, bit for bit against onnxruntime (graph optimizations
disabled) and onnx.reference.

For every pattern x element type x encoding x granularity x scale dtype x orientation:
* the importer's integer codes equal the codes onnxruntime computes (fetched through a
  DequantizeLinear(scale=1), since ORT cannot return int4/int2 to numpy) and onnx.reference's;
* the dequantized weight, ``kernels.dequantize(kernels.pack(...))``, equals onnxruntime's
  DequantizeLinear output bit for bit (rounded to the DQ output dtype when it is float16).
Plus MatMulNBits (oracle: MatMulNBits(I_K) at accuracy_level 0), onnxruntime's own 4-bit
quantizer (QOperator and QDQ), the onnx Q/DQ conformance node cases, qonnx Quant, external
data, and the refusals.
"""

from __future__ import annotations

import os
import zlib

import numpy as np
import pytest

import onnx
import onnxruntime as ort
from onnx import TensorProto as TP  # noqa: E402
from onnx import helper, numpy_helper  # noqa: E402
from onnx.reference import ReferenceEvaluator  # noqa: E402

from fwassist import kernels  # noqa: E402
from fwassist.export import reference as fref  # noqa: E402
from fwassist.export.onnx_import import OnnxImportError, extract_weights  # noqa: E402
from fwassist.export.tensors import decode_tensor, pack_subbyte  # noqa: E402

TYPES = {"int2": (TP.INT2, 2, True), "uint2": (TP.UINT2, 2, False),
         "int4": (TP.INT4, 4, True), "uint4": (TP.UINT4, 4, False),
         "int8": (TP.INT8, 8, True), "uint8": (TP.UINT8, 8, False)}
GRANS = {"tensor": 0, "channel": None, "b32": 32, "b64": 64, "b128": 128, "b256": 256}
N_OUT, K_IN, M = 24, 300, 3   # 300: a short last block for every block size


def qrange(bits, signed):
    return (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)


def seed_of(*parts) -> int:
    return zlib.crc32(repr(parts).encode())


def ort_run(model, feeds=None):
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    s = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    names = [o.name for o in s.get_outputs()]
    return dict(zip(names, s.run(None, feeds or {})))


def ref_run(model, feeds=None):
    r = ReferenceEvaluator(model)
    return dict(zip([o.name for o in model.graph.output], r.run(None, feeds or {})))


def int_tensor(name, vals, ty, encoding):
    vals = np.asarray(vals, dtype=np.int64)
    if encoding == "int32":
        return helper.make_tensor(name, ty, list(vals.shape), vals.reshape(-1).tolist(), raw=False)
    t = TP()
    t.name, t.data_type = name, ty
    t.dims.extend(vals.shape)
    bits = TYPES[[k for k, v in TYPES.items() if v[0] == ty][0]][1]
    if bits < 8:
        t.raw_data = pack_subbyte(vals.reshape(-1), bits)
    else:
        t.raw_data = vals.astype(np.int8 if ty == TP.INT8 else np.uint8).tobytes()
    return t


def bf16_bits(x):
    u = np.asarray(x, np.float32).view(np.uint32).astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def scale_tensor(name, s32, sdt):
    """(TensorProto, exact float32 values) of scales in float32/float16/bfloat16."""
    if sdt == "f32":
        return numpy_helper.from_array(np.array(s32, np.float32, order="C"), name), s32
    if sdt == "f16":
        h = np.array(s32, np.float16, order="C")
        return numpy_helper.from_array(h, name), h.astype(np.float32)
    b = bf16_bits(s32)
    t = TP()
    t.name, t.data_type = name, TP.BFLOAT16
    t.dims.extend(np.shape(s32))
    t.raw_data = b.astype("<u2").tobytes()
    return t, (b.astype(np.uint32) << 16).view(np.float32)


class Case:
    """One weight pattern in a small graph: X[M,K] @ W -> y, exposing the DQ output ('w') and
    the codes ('codes' = DQ(codes, scale=1))."""

    def __init__(self, pattern, tname, gran, layout, zp, encoding="raw", sdt="f32",
                 out_f32=False, bits=None, signed=None, narrow=False, K=K_IN, N=N_OUT, seed=0,
                 container=8):
        rng = np.random.default_rng(seed)
        self.pattern, self.layout = pattern, layout
        if pattern == "qcdq":
            ty = {(8, True): TP.INT8, (8, False): TP.UINT8, (4, True): TP.INT4,
                  (4, False): TP.UINT4}[(container, bool(signed))]
            cbits, self.bits, self.signed = container, bits, signed
        else:
            ty, cbits, signed = TYPES[tname]
            self.bits, self.signed = cbits, signed
        lo, hi = qrange(self.bits, self.signed)
        if narrow:
            lo, hi = (lo + 1, hi) if self.signed else (lo, hi - 1)
        self.lo, self.hi = lo, hi
        W = rng.standard_normal((N, K)).astype(np.float32)
        B = GRANS[gran]
        nk = layout in ("gemm", "transpose")
        b = K if B in (0, None) else B
        nb = -(-K // b)
        amax = np.abs(np.pad(W, ((0, 0), (0, nb * b - K)))).reshape(N, nb, b).max(2)
        span = max(hi - lo, 1)
        s = (2.0 * amax / span * rng.uniform(0.6, 1.2, (N, nb))).astype(np.float32)
        s *= rng.choice([-1.0, 1.0], s.shape).astype(np.float32)           # negative scales
        if B == 0:
            s = s[:1, :1]
        elif B is None:
            s = s[:, :1]
        zpv = rng.integers((lo + hi) // 2 - 1, (lo + hi) // 2 + 2, s.shape) if zp else None
        if zp and not self.signed:
            zpv = rng.integers(lo, hi + 1, s.shape)
        # stored orientation
        if B == 0:
            s_st, z_st, axis, blk = s.reshape(()), (None if zpv is None else zpv.reshape(())), 0, 0
        elif B is None:
            s_st, z_st = s[:, 0], (None if zpv is None else zpv[:, 0])
            axis, blk = (0 if nk else 1), 0
        else:
            s_st = s if nk else s.T
            z_st = None if zpv is None else (zpv if nk else zpv.T)
            axis, blk = (1 if nk else 0), B
        s_t, s_exact = scale_tensor("s", np.ascontiguousarray(s_st), sdt)
        self.s_exact = s_exact
        attrs = {"axis": axis}
        if blk:
            attrs["block_size"] = blk
        dq_attrs = dict(attrs)
        sty = {"f32": TP.FLOAT, "f16": TP.FLOAT16, "bf16": TP.BFLOAT16}[sdt]
        out_ty = sty
        if out_f32 and sdt != "f32":
            dq_attrs["output_dtype"] = TP.FLOAT
            out_ty = TP.FLOAT
        self.out_ty = out_ty
        opset = 25 if self.bits == 2 and pattern != "qcdq" else (23 if out_f32 else 21)
        self.opset = opset
        inits = [s_t, numpy_helper.from_array(np.array(1.0, np.float32), "one")]
        nodes = []
        Wst = np.ascontiguousarray(W if nk else W.T)
        self.W = W
        zname = ""
        if z_st is not None or pattern in ("qdq", "qcdq"):
            zv = z_st if z_st is not None else np.zeros(np.shape(s_st), np.int64)
            if pattern in ("qdq", "qcdq") and z_st is None and pattern == "qdq":
                zname = ""
            else:
                inits.append(int_tensor("zp", np.asarray(zv), ty, encoding))
                zname = "zp"
        if pattern == "dq":
            codes = np.clip(np.rint(Wst / self._expand(s_exact, Wst.shape, axis, blk)
                                    ).astype(np.int64)
                            + (0 if z_st is None else self._expand(z_st, Wst.shape, axis, blk)),
                            lo, hi)
            inits.append(int_tensor("q", codes, ty, encoding))
            qname = "q"
        else:
            inits.append(numpy_helper.from_array(Wst, "W"))
            qin = ["W", "s"] + ([zname] if zname else [])
            qa = dict(attrs)
            if not zname:
                qa["output_dtype"] = ty
            nodes.append(helper.make_node("QuantizeLinear", qin, ["q0"], name="Q", **qa))
            qname = "q0"
            if pattern == "qcdq":
                inits.append(int_tensor("clo", np.asarray(lo), ty, encoding))
                inits.append(int_tensor("chi", np.asarray(hi), ty, encoding))
                nodes.append(helper.make_node("Clip", ["q0", "clo", "chi"], ["q1"], name="C"))
                qname = "q1"
        dq_in = [qname, "s"] + ([zname] if zname else [])
        nodes.append(helper.make_node("DequantizeLinear", dq_in, ["w"], name="DQ", **dq_attrs))
        nodes.append(helper.make_node("DequantizeLinear", [qname, "one"], ["codes"],
                                      name="DQ_codes"))
        wf = "w"
        if out_ty != TP.FLOAT:
            nodes.append(helper.make_node("Cast", ["w"], ["wf"], to=TP.FLOAT))
            wf = "wf"
        if layout == "matmul":
            nodes.append(helper.make_node("MatMul", ["x", wf], ["y"], name="MM"))
        elif layout == "gemm":
            nodes.append(helper.make_node("Gemm", ["x", wf], ["y"], name="MM", transB=1))
        else:
            nodes.append(helper.make_node("Transpose", [wf], ["wt"], perm=[1, 0]))
            nodes.append(helper.make_node("MatMul", ["x", "wt"], ["y"], name="MM"))
        outs = [helper.make_tensor_value_info("y", TP.FLOAT, None),
                helper.make_tensor_value_info("w", out_ty, None),
                helper.make_tensor_value_info("codes", TP.FLOAT, None)]
        g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TP.FLOAT, [M, K])],
                              outs, inits)
        self.model = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
        self.x = rng.standard_normal((M, K)).astype(np.float32)
        self.nk = nk

    @staticmethod
    def _expand(p, shape, axis, blk):
        p = np.asarray(p)
        if p.ndim == 0:
            return np.broadcast_to(p, shape)
        if blk == 0:
            sh = [1, 1]
            sh[axis] = -1
            return np.broadcast_to(p.reshape(sh), shape)
        return np.take(np.repeat(p, blk, axis=axis), np.arange(shape[axis]), axis=axis)

    def to_hf(self, a):
        return a if self.nk else a.T


def check_case(case: Case, run_ort=True):
    recs = [r for r in extract_weights(case.model) if r.kind == "linear"]
    assert len(recs) == 1
    rec = recs[0]
    qw = rec.value
    assert qw.bits == case.bits and qw.signed == case.signed and qw.block in (32, 64, 128)
    assert rec.transposed == (not case.nk)
    outs = [ref_run(case.model, {"x": case.x})]
    if run_ort:
        outs.insert(0, ort_run(case.model, {"x": case.x}))
    deq = kernels.dequantize(kernels.pack(qw.q, qw.scales, qw.zero_points, bits=qw.bits,
                                          block=qw.block, signed=qw.signed))
    assert np.array_equal(fref.dequantize(qw).view(np.uint32), deq.view(np.uint32))
    for out in outs:
        codes = case.to_hf(out["codes"])
        assert np.array_equal(qw.q.astype(np.float32), codes), "codes differ"
        w = case.to_hf(np.asarray(out["w"]))
        if case.out_ty == TP.FLOAT16:
            assert np.array_equal(deq.astype(np.float16).view(np.uint16),
                                  w.astype(np.float16).view(np.uint16))
        elif case.out_ty == TP.BFLOAT16:
            assert np.array_equal(bf16_bits(deq), np.asarray(w).view(np.uint16))
        else:
            assert np.array_equal(deq.view(np.uint32), w.astype(np.float32).view(np.uint32))
    return rec


@pytest.mark.parametrize("encoding", ["raw", "int32"])
@pytest.mark.parametrize("layout", ["matmul", "gemm", "transpose"])
@pytest.mark.parametrize("gran", list(GRANS))
@pytest.mark.parametrize("zp", [False, True])
@pytest.mark.parametrize("tname", list(TYPES))
def test_fake_quant_q_dq(tname, zp, gran, layout, encoding):
    case = Case("qdq", tname, gran, layout, zp, encoding,
                seed=seed_of("qdq", tname, zp, gran, layout, encoding))
    rec = check_case(case)
    assert rec.pattern.startswith("Q -> DQ")


@pytest.mark.parametrize("encoding", ["raw", "int32"])
@pytest.mark.parametrize("layout", ["matmul", "gemm", "transpose"])
@pytest.mark.parametrize("gran", list(GRANS))
@pytest.mark.parametrize("zp", [False, True])
@pytest.mark.parametrize("tname", list(TYPES))
def test_int_initializer_dq(tname, zp, gran, layout, encoding):
    case = Case("dq", tname, gran, layout, zp, encoding,
                seed=seed_of("dq", tname, zp, gran, layout, encoding))
    rec = check_case(case)
    assert rec.pattern == "int initializer -> DQ"


@pytest.mark.parametrize("layout", ["matmul", "gemm"])
@pytest.mark.parametrize("gran", ["tensor", "channel", "b32", "b256"])
@pytest.mark.parametrize("sdt,out_f32", [("f16", False), ("f16", True), ("bf16", False),
                                         ("bf16", True)])
@pytest.mark.parametrize("zp", [False, True])
@pytest.mark.parametrize("tname", list(TYPES))
def test_scale_dtypes(tname, zp, sdt, out_f32, gran, layout):
    """float16 / bfloat16 scales on integer initializers (onnxruntime has no bfloat16
    DequantizeLinear kernel: those are checked against onnx.reference only)."""
    case = Case("dq", tname, gran, layout, zp, "raw", sdt=sdt, out_f32=out_f32,
                seed=seed_of("sdt", tname, zp, sdt, out_f32, gran, layout))
    rec = check_case(case, run_ort=(sdt != "bf16"))
    assert rec.value.scales.dtype == (np.float16 if sdt == "f16" else np.float32)
    if not out_f32:
        assert any("rounds each dequantized weight" in n for n in rec.notes)


@pytest.mark.parametrize("layout", ["matmul", "gemm"])
@pytest.mark.parametrize("gran", ["tensor", "channel", "b32"])
@pytest.mark.parametrize("narrow", [False, True])
@pytest.mark.parametrize("signed", [True, False])
@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("encoding", ["raw", "int32"])
def test_qcdq_clip_declares_width(bits, signed, narrow, gran, layout, encoding):
    """Q(int8/uint8) -> Clip(lo, hi) -> DQ: the width comes from the Clip range."""
    case = Case("qcdq", None, gran, layout, zp=False, encoding=encoding, bits=bits,
                signed=signed, narrow=narrow,
                seed=seed_of("qcdq", bits, signed, narrow, gran, layout, encoding))
    rec = check_case(case)
    assert rec.value.bits == bits and rec.value.signed == signed
    assert rec.pattern == "Q -> Clip -> DQ"
    assert rec.value.q.min() >= case.lo and rec.value.q.max() <= case.hi


def test_reblocking_choices():
    """Source blocks 32/64/128 are kept, 256 and whole rows become 128, per-tensor too."""
    for gran, want in (("b32", 32), ("b64", 64), ("b128", 128), ("b256", 128),
                       ("channel", 128), ("tensor", 128)):
        case = Case("dq", "int4", gran, "matmul", False, seed=1)
        rec = check_case(case)
        assert rec.value.block == want, gran


# ---------------------------------------------------------------------------------------
# near ties: IEEE float32 division, not a reciprocal multiply, not float64


def test_fake_quant_near_ties_follow_float32_division():
    rng = np.random.default_rng(7)
    K, N = 256, 64
    s = rng.uniform(0.01, 0.3, N).astype(np.float32)
    k = rng.integers(-7, 7, (K, N))
    W = ((k + 0.5) * s).astype(np.float32)                 # x/s near .5
    W = np.nextafter(W, W + rng.choice([-1, 1], W.shape).astype(np.float32) * np.inf)
    W = W.astype(np.float32)
    div = np.clip(np.rint(W / s), -8, 7)
    rec_ = np.clip(np.rint(W * (np.float32(1) / s)), -8, 7)
    f64 = np.clip(np.rint(W.astype(np.float64) / s.astype(np.float64)), -8, 7)
    assert (div != rec_).sum() > 50 and (div != f64).sum() > 0   # the vectors discriminate
    inits = [numpy_helper.from_array(W, "W"), numpy_helper.from_array(s, "s"),
             numpy_helper.from_array(np.array(1.0, np.float32), "one")]
    nodes = [helper.make_node("QuantizeLinear", ["W", "s"], ["q"], axis=1,
                              output_dtype=TP.INT4),
             helper.make_node("DequantizeLinear", ["q", "s"], ["w"], axis=1),
             helper.make_node("DequantizeLinear", ["q", "one"], ["codes"]),
             helper.make_node("MatMul", ["x", "w"], ["y"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TP.FLOAT, [1, K])],
                          [helper.make_tensor_value_info(n, TP.FLOAT, None)
                           for n in ("y", "w", "codes")], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)])
    o = ort_run(m, {"x": np.ones((1, K), np.float32)})
    (rec,) = extract_weights(m)
    assert np.array_equal(o["codes"], div)
    assert np.array_equal(rec.value.q.T.astype(np.float32), o["codes"])
    # exact ties (power-of-two scale) round half to even
    W2 = (np.arange(-9, 9, dtype=np.float32) + 0.5).reshape(-1, 1) * np.float32(0.25)
    W2 = np.repeat(W2, 4, axis=1)
    m2 = helper.make_model(helper.make_graph(
        [helper.make_node("QuantizeLinear", ["W", "s"], ["q"], output_dtype=TP.INT4),
         helper.make_node("DequantizeLinear", ["q", "s"], ["w"]),
         helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TP.FLOAT, [1, 18])],
        [helper.make_tensor_value_info("y", TP.FLOAT, None)],
        [numpy_helper.from_array(W2, "W"),
         numpy_helper.from_array(np.array(0.25, np.float32), "s")]),
        opset_imports=[helper.make_opsetid("", 21)])
    (rec2,) = extract_weights(m2)
    want = np.clip(np.rint(np.arange(-9, 9) + 0.5), -8, 7)
    assert np.array_equal(rec2.value.q[0], want)


# ---------------------------------------------------------------------------------------
# MatMulNBits


def assert_bits_up_to_zero_sign(a, b):
    """Bit equality, except that the MatMulNBits(I_K) oracle sums -0.0 with +0.0 products,
    so it returns +0.0 where the weight is -0.0."""
    a = np.asarray(a, np.float32) + np.float32(0)
    b = np.asarray(b, np.float32) + np.float32(0)
    assert np.array_equal(a.view(np.uint32), b.view(np.uint32))


def nbits_model(W, bits, bs, asym, rng, K=None):
    N, K = W.shape
    kb = -(-K // bs)
    lo, hi = 0, (1 << bits) - 1
    Wp = np.zeros((N, kb * bs), np.float32)
    Wp[:, :K] = W
    blk = Wp.reshape(N, kb, bs)
    if asym:
        mn, mx = np.minimum(blk.min(2), 0), np.maximum(blk.max(2), 0)
        s = ((mx - mn) / hi).astype(np.float32)
        z = np.clip(np.rint(-mn / s), 0, hi).astype(np.int64)
    else:
        s = (np.abs(blk).max(2) / (1 << (bits - 1))).astype(np.float32)
        s *= rng.choice([-1, 1], s.shape).astype(np.float32)
        z = np.full(s.shape, 1 << (bits - 1), np.int64)
    u = np.clip(np.rint(blk / s[:, :, None]) + z[:, :, None], lo, hi).astype(np.int64)
    u = u.reshape(N, kb * bs)
    u[:, K:] = 0
    # independent LSB-first packing, column n contiguous along K
    per = 8 // bits
    flat = u.reshape(N, -1, per)
    Bb = np.zeros(flat.shape[:2], np.int64)
    for i in range(per):
        Bb |= flat[:, :, i] << (bits * i)
    Bb = Bb.astype(np.uint8).reshape(N, kb, bs * bits // 8)
    inits = [numpy_helper.from_array(Bb, "B"), numpy_helper.from_array(s, "scales")]
    ins = ["x", "B", "scales"]
    if asym:
        zb = -(-kb // per)
        zz = np.zeros((N, zb * per), np.int64)
        zz[:, :kb] = z
        zz = zz.reshape(N, zb, per)
        zbytes = np.zeros((N, zb), np.int64)
        for i in range(per):
            zbytes |= zz[:, :, i] << (bits * i)
        inits.append(numpy_helper.from_array(zbytes.astype(np.uint8), "zp"))
        ins.append("zp")
    node = helper.make_node("MatMulNBits", ins, ["y"], domain="com.microsoft", name="MNB",
                            K=K, N=N, bits=bits, block_size=bs, accuracy_level=0)
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TP.FLOAT, [None, K])],
                          [helper.make_tensor_value_info("y", TP.FLOAT, None)], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 21),
                                               helper.make_opsetid("com.microsoft", 1)])


@pytest.mark.parametrize("K", [256, 80])
@pytest.mark.parametrize("bs", [32, 64, 128, 256])
@pytest.mark.parametrize("asym", [False, True])
@pytest.mark.parametrize("bits", [2, 4, 8])
def test_matmulnbits(bits, asym, bs, K):
    rng = np.random.default_rng(seed_of("mnb", bits, asym, bs, K))
    N = 16
    W = rng.standard_normal((N, K)).astype(np.float32)
    m = nbits_model(W, bits, bs, asym, rng)
    (rec,) = extract_weights(m)
    qw = rec.value
    assert qw.bits == bits and qw.signed == (not asym) and qw.block == min(bs, 128)
    deq = kernels.dequantize(kernels.pack(qw.q, qw.scales, qw.zero_points, bits=qw.bits,
                                          block=qw.block, signed=qw.signed))
    y = ort_run(m, {"x": np.eye(K, dtype=np.float32)})["y"]          # = W^T, exactly
    assert_bits_up_to_zero_sign(deq.T, y)


# ---------------------------------------------------------------------------------------
# onnxruntime's own 4-bit quantizer


def _float_matmul_model(W):
    K, N = W.shape
    g = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")], "g",
                          [helper.make_tensor_value_info("x", TP.FLOAT, [None, K])],
                          [helper.make_tensor_value_info("y", TP.FLOAT, None)],
                          [numpy_helper.from_array(W, "W")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)])


def _ort_quantize(W, **kw):
    import onnx_ir  # noqa: F401  (onnxruntime.quantization.matmul_nbits_quantizer needs it)
    from onnxruntime.quantization import QuantFormat
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer
    fmt = kw.pop("fmt")
    q = MatMulNBitsQuantizer(_float_matmul_model(W), quant_format=getattr(QuantFormat, fmt),
                             **kw)
    q.process()
    return q.model.model if hasattr(q.model, "model") else q.model


def _dequant(qw):
    return kernels.dequantize(kernels.pack(qw.q, qw.scales, qw.zero_points, bits=qw.bits,
                                           block=qw.block, signed=qw.signed))


@pytest.mark.parametrize("sym", [False, True])
@pytest.mark.parametrize("bits,bs", [(4, 32), (4, 128), (2, 32), (8, 32), (4, 64)])
def test_ort_quantizer_qoperator(bits, bs, sym):
    rng = np.random.default_rng(seed_of("ortq", bits, bs, sym))
    W = rng.standard_normal((256, 48)).astype(np.float32)
    m = _ort_quantize(W, bits=bits, block_size=bs, is_symmetric=sym, fmt="QOperator")
    assert any(n.op_type == "MatMulNBits" for n in m.graph.node)
    (rec,) = extract_weights(m)
    deq = _dequant(rec.value)
    K = 256
    so_model = onnx.ModelProto()
    so_model.CopyFrom(m)
    for n in so_model.graph.node:
        for a in n.attribute:
            if a.name == "accuracy_level":
                a.i = 0
    y = ort_run(so_model, {"x": np.eye(K, dtype=np.float32)})["y"]
    assert_bits_up_to_zero_sign(deq.T, y)


@pytest.mark.parametrize("sym", [False, True])
@pytest.mark.parametrize("bs", [32, 128])
def test_ort_quantizer_qdq_matches_qoperator(bs, sym):
    rng = np.random.default_rng(seed_of("ortqdq", bs, sym))
    W = rng.standard_normal((256, 48)).astype(np.float32)
    mq = _ort_quantize(W, bits=4, block_size=bs, is_symmetric=sym, fmt="QDQ")
    mo = _ort_quantize(W, bits=4, block_size=bs, is_symmetric=sym, fmt="QOperator")
    (rq,) = extract_weights(mq)
    (ro,) = extract_weights(mo)
    assert np.array_equal(rq.value.q, ro.value.q)                        # bit-exact codes
    assert np.array_equal(_dequant(rq.value).view(np.uint32), _dequant(ro.value).view(np.uint32))
    # the codes equal the initializer as onnx decodes it, and ORT's DQ output
    dq = [n for n in mq.graph.node if n.op_type == "DequantizeLinear"][0]
    init = {t.name: t for t in mq.graph.initializer}[dq.input[0]]
    assert np.array_equal(numpy_helper.to_array(init).astype(np.int64).T, rq.value.q)
    m2 = onnx.ModelProto()
    m2.CopyFrom(mq)
    m2.graph.output.append(helper.make_tensor_value_info(dq.output[0], TP.FLOAT, None))
    w = ort_run(m2, {"x": np.zeros((1, 256), np.float32)})[dq.output[0]]
    assert np.array_equal(_dequant(rq.value).T.view(np.uint32), w.view(np.uint32))


def test_ort_quantizer_channel_wised_transpose():
    """channel_wised_quantize: DQ(INT4 [N, K], axis=1, block=K) -> Transpose -> MatMul."""
    rng = np.random.default_rng(3)
    W = rng.standard_normal((256, 48)).astype(np.float32)
    m = _ort_quantize(W, bits=4, block_size=32, is_symmetric=True, fmt="QDQ",
                      channel_wised_quantize=True)
    ops = [n.op_type for n in m.graph.node]
    assert "Transpose" in ops
    (rec,) = extract_weights(m)
    assert not rec.transposed and rec.value.q.shape == (48, 256)
    dq = [n for n in m.graph.node if n.op_type == "DequantizeLinear"][0]
    m2 = onnx.ModelProto()
    m2.CopyFrom(m)
    m2.graph.output.append(helper.make_tensor_value_info(dq.output[0], TP.FLOAT, None))
    w = ort_run(m2, {"x": np.zeros((1, 256), np.float32)})[dq.output[0]]
    assert np.array_equal(_dequant(rec.value).view(np.uint32), w.view(np.uint32))


# ---------------------------------------------------------------------------------------
# the onnx Q/DQ conformance node cases


@pytest.fixture(scope="module")
def conformance_dir(tmp_path_factory):
    """The Q/DQ node cases, written as onnx's backend-test-tools writes them (onnx 1.23 no
    longer ships the data files, but ships their generators)."""
    import warnings

    from onnx.backend.test.case.node import collect_testcases
    root = tmp_path_factory.mktemp("conformance")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = collect_testcases(None)
    for case in cases:
        if case.model.graph.node[0].op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        d = root / case.name
        (d / "test_data_set_0").mkdir(parents=True)
        (d / "model.onnx").write_bytes(case.model.SerializeToString())
        inputs, outputs = case.data_sets[0]
        for kind, vals, infos in (("input", inputs, case.model.graph.input),
                                  ("output", outputs, case.model.graph.output)):
            for j, v in enumerate(vals):
                t = v if isinstance(v, TP) else numpy_helper.from_array(v, infos[j].name)
                (d / "test_data_set_0" / f"{kind}_{j}.pb").write_bytes(t.SerializeToString())
    return root


def _load_case(d):
    model = onnx.load(str(d / "model.onnx"))
    ins, outs = [], []
    for kind, lst in (("input", ins), ("output", outs)):
        j = 0
        while (d / "test_data_set_0" / f"{kind}_{j}.pb").exists():
            t = TP()
            t.ParseFromString((d / "test_data_set_0" / f"{kind}_{j}.pb").read_bytes())
            lst.append(t)
            j += 1
    return model, ins, outs


def _bake(model, ins, opset=None):
    """Graph inputs -> initializers (sub-byte tensors cannot be fed to ORT)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    for vi, t in zip(list(g.input), ins):
        t2 = TP()
        t2.CopyFrom(t)
        t2.name = vi.name
        g.initializer.append(t2)
    del g.input[:]
    if opset:
        m.opset_import[0].version = opset
    return m


def test_conformance_cases_present(conformance_dir):
    names = {p.name for p in conformance_dir.iterdir()}
    for n in ("test_dequantizelinear_int4", "test_dequantizelinear_uint2",
              "test_quantizelinear_int2", "test_quantizelinear_blocked_asymmetric"):
        assert n in names


@pytest.mark.parametrize("name", ["test_dequantizelinear", "test_dequantizelinear_axis",
                                  "test_dequantizelinear_blocked", "test_dequantizelinear_int4",
                                  "test_dequantizelinear_uint4", "test_dequantizelinear_int2",
                                  "test_dequantizelinear_uint2"])
def test_conformance_dequantize(conformance_dir, name):
    """Our tensor decoding (these inputs use int32_data) and DQ arithmetic reproduce the
    expected outputs bit for bit; so do onnx.reference and (opset lowered to 25) onnxruntime."""
    from fwassist.export.patterns import Graph, Resolver
    model, ins, outs = _load_case(conformance_dir / name)
    m = _bake(model, ins)
    g = Graph(m, str(conformance_dir))
    v = Resolver(g).dq_values(0, name)
    codes, s_el, z_el = v.codes, v.s_el, v.z_el
    diff = codes - (0 if z_el is None else z_el)
    ours = np.multiply(diff.astype(np.float32), s_el.astype(np.float32), dtype=np.float32)
    want = decode_tensor(outs[0], name).array
    assert np.array_equal(ours.view(np.uint32), want.astype(np.float32).view(np.uint32))
    for t, vi in zip(ins, model.graph.input):   # our decoder agrees with onnx's
        assert np.array_equal(decode_tensor(t, name).array.astype(np.float64),
                              numpy_helper.to_array(t).astype(np.float64))
    r = ref_run(m)
    assert np.array_equal(np.asarray(list(r.values())[0]).view(np.uint32), want.view(np.uint32))
    y = list(ort_run(_bake(model, ins, opset=25)).values())[0]
    assert np.array_equal(y.view(np.uint32), want.view(np.uint32))


@pytest.mark.parametrize("name", ["test_quantizelinear", "test_quantizelinear_axis",
                                  "test_quantizelinear_int4", "test_quantizelinear_uint4",
                                  "test_quantizelinear_int2", "test_quantizelinear_uint2",
                                  "test_quantizelinear_blocked_asymmetric"])
def test_conformance_quantize(conformance_dir, name):
    """Our fake-quant codes equal the expected Q outputs, and onnxruntime's (opset 25, codes
    fetched through DQ(scale=1))."""
    from fwassist.export.patterns import Graph, Resolver
    model, ins, outs = _load_case(conformance_dir / name)
    m = _bake(model, ins)
    g = Graph(m, str(conformance_dir))
    codes, otype, _, _ = Resolver(g).quantize_linear(0, name)
    want = decode_tensor(outs[0], name)
    assert otype == want.onnx_type
    assert np.array_equal(codes, want.array.astype(np.int64))
    m25 = _bake(model, ins, opset=25)
    out = m25.graph.output[0].name
    m25.graph.initializer.append(numpy_helper.from_array(np.array(1.0, np.float32), "one"))
    m25.graph.node.append(helper.make_node("DequantizeLinear", [out, "one"], ["codes"]))
    m25.graph.output.append(helper.make_tensor_value_info("codes", TP.FLOAT, None))
    del m25.graph.output[0]
    y = ort_run(m25)["codes"]
    assert np.array_equal(y, want.array.astype(np.float32))


@pytest.mark.parametrize("name", ["test_quantizelinear_int4", "test_quantizelinear_uint4",
                                  "test_quantizelinear_int2", "test_quantizelinear_uint2"])
def test_conformance_as_weights(conformance_dir, name):
    """The per-axis sub-byte Q cases as a weight (x[3, 4] per output row, Gemm transB=1):
    the full importer gives the expected codes, and dequantizes as onnx.reference does."""
    model, ins, outs = _load_case(conformance_dir / name)
    m = _bake(model, ins)
    g = m.graph
    q = g.node[0]
    dq = helper.make_node("DequantizeLinear", [q.output[0]] + list(q.input[1:]), ["w"], axis=0)
    g.node.extend([dq, helper.make_node("Gemm", ["a", "w"], ["gy"], transB=1, name="gemm")])
    g.input.append(helper.make_tensor_value_info("a", TP.FLOAT, [1, 4]))
    del g.output[:]
    g.output.extend([helper.make_tensor_value_info("w", TP.FLOAT, None)])
    (rec,) = extract_weights(m)
    want = decode_tensor(outs[0], name).array.astype(np.int64)
    assert np.array_equal(rec.value.q.astype(np.int64), want)
    w = ref_run(m, {"a": np.zeros((1, 4), np.float32)})["w"]
    assert np.array_equal(_dequant(rec.value).view(np.uint32), w.view(np.uint32))


# ---------------------------------------------------------------------------------------
# qonnx Quant


def qonnx_model(W, s, z, bits, signed, narrow, mode="ROUND", gemm=True):
    inits = [numpy_helper.from_array(W, "W"), numpy_helper.from_array(s, "s"),
             numpy_helper.from_array(z, "z"),
             numpy_helper.from_array(np.array(float(bits), np.float32), "bw")]
    nodes = [helper.make_node("Quant", ["W", "s", "z", "bw"], ["wq"], name="Quant0",
                              domain="qonnx.custom_op.general", signed=int(signed),
                              narrow=int(narrow), rounding_mode=mode)]
    if gemm:
        nodes.append(helper.make_node("Gemm", ["x", "wq"], ["y"], transB=1, name="gemm"))
    else:
        nodes.append(helper.make_node("MatMul", ["x", "wq"], ["y"], name="mm"))
    K = W.shape[1] if gemm else W.shape[0]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TP.FLOAT, [1, K])],
                          [helper.make_tensor_value_info("y", TP.FLOAT, None)], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18),
                                               helper.make_opsetid("qonnx.custom_op.general", 2)])


def qonnx_reference(W, s, z, bits, signed, narrow):
    """qonnx.custom_op.general.quant semantics, in float32 as qonnx computes."""
    lo = -(1 << (bits - 1)) + narrow if signed else 0
    hi = (1 << (bits - 1)) - 1 if signed else (1 << bits) - 1 - narrow
    y = np.clip(W / s + z, lo, hi)
    q = np.rint(y)
    return q, ((q - z) * s).astype(np.float32)


@pytest.mark.parametrize("gemm", [True, False])
@pytest.mark.parametrize("per_channel", [True, False])
@pytest.mark.parametrize("narrow", [False, True])
@pytest.mark.parametrize("signed", [True, False])
@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_qonnx_quant(bits, signed, narrow, per_channel, gemm):
    rng = np.random.default_rng(seed_of("qonnx", bits, signed, narrow, per_channel, gemm))
    N, K = 16, 96
    W = rng.standard_normal((N, K)).astype(np.float32)
    s = (np.abs(W).max(1, keepdims=True) / (1 << (bits - 1))).astype(np.float32)
    if not per_channel:
        s = s.max().reshape(()).astype(np.float32)
    z = np.zeros(s.shape, np.float32) if signed else np.full(s.shape, float(1 << (bits - 1)),
                                                             np.float32)
    Wst, s_st, z_st = (W, s, z) if gemm else (W.T, s.T if s.ndim else s, z.T if z.ndim else z)
    m = qonnx_model(np.ascontiguousarray(Wst), np.ascontiguousarray(s_st),
                    np.ascontiguousarray(z_st), bits, signed, narrow, gemm=gemm)
    (rec,) = extract_weights(m)
    q, deq = qonnx_reference(W, np.broadcast_to(s, W.shape), np.broadcast_to(z, W.shape), bits,
                             signed, int(narrow))
    assert rec.value.bits == bits and rec.value.signed == signed
    assert np.array_equal(rec.value.q.astype(np.float32), q)
    # qonnx keeps codes as floats, so rint(-0.3) - 0 gives -0.0 where integer codes give +0.0
    assert_bits_up_to_zero_sign(_dequant(rec.value), deq)
    if signed:   # the same quantizer lowered to QCDQ (qonnx QuantToQCDQ) runs in onnxruntime
        lo = -(1 << (bits - 1)) + int(narrow)
        hi = (1 << (bits - 1)) - 1
        inits = [numpy_helper.from_array(W, "W"),
                 numpy_helper.from_array(s.reshape(-1) if per_channel else s, "s"),
                 numpy_helper.from_array(np.zeros(s.reshape(-1).shape if per_channel else (),
                                                  np.int8), "z"),
                 numpy_helper.from_array(np.array(lo, np.int8), "lo"),
                 numpy_helper.from_array(np.array(hi, np.int8), "hi"),
                 numpy_helper.from_array(np.array(1.0, np.float32), "one")]
        nodes = [helper.make_node("QuantizeLinear", ["W", "s", "z"], ["a"], axis=0),
                 helper.make_node("Clip", ["a", "lo", "hi"], ["b"]),
                 helper.make_node("DequantizeLinear", ["b", "one"], ["codes"])]
        g = helper.make_graph(nodes, "g", [], [helper.make_tensor_value_info("codes", TP.FLOAT,
                                                                             None)], inits)
        o = ort_run(helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)]))
        assert np.array_equal(o["codes"], rec.value.q.astype(np.float32))


# ---------------------------------------------------------------------------------------
# external data


def test_external_data_and_traversal(tmp_path):
    rng = np.random.default_rng(5)
    case = Case("dq", "int4", "b32", "matmul", True, seed=11)
    path = tmp_path / "m.onnx"
    mcopy = onnx.ModelProto()
    mcopy.CopyFrom(case.model)                   # saving externalizes the proto in place
    onnx.save_model(mcopy, str(path), save_as_external_data=True,
                    all_tensors_to_one_file=True, location="m.data", size_threshold=0)
    m = onnx.load(str(path), load_external_data=False)
    assert any(t.data_location == TP.EXTERNAL for t in m.graph.initializer)
    (rec,) = [r for r in extract_weights(str(path)) if r.kind == "linear"]
    (ref,) = [r for r in extract_weights(case.model) if r.kind == "linear"]
    assert np.array_equal(rec.value.q, ref.value.q)
    assert np.array_equal(rec.value.scales, ref.value.scales)

    def with_location(loc, name):
        m2 = onnx.load(str(path), load_external_data=False)
        for t in m2.graph.initializer:
            for e in t.external_data:
                if e.key == "location":
                    e.value = loc
        p = tmp_path / name
        onnx.save_model(m2, str(p))
        return p

    outside = tmp_path.parent / f"outside_{rng.integers(1 << 30)}.data"
    outside.write_bytes((tmp_path / "m.data").read_bytes())
    (tmp_path / "sub").mkdir()
    os.symlink(str(outside), str(tmp_path / "link.data"))
    os.symlink(str(tmp_path.parent), str(tmp_path / "sub" / "up"))
    for loc, why in ((f"../{outside.name}", "'..'"), (str(outside), "absolute"),
                     ("link.data", "symbolic link"), (f"sub/up/{outside.name}", "symbolic link"),
                     ("missing.data", "cannot be read")):
        p = with_location(loc, "bad.onnx")
        with pytest.raises(OnnxImportError) as ei:
            extract_weights(str(p))
        msg = str(ei.value)
        assert why in msg and "DQ" in msg and ("'q'" in msg or "'s'" in msg or "'zp'" in msg), msg


# ---------------------------------------------------------------------------------------
# refusals: node, tensor and reason in the message


def _single(nodes, inits, opset=21, K=64, domains=()):
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TP.FLOAT, [1, K])],
                          [helper.make_tensor_value_info("y", TP.FLOAT, None)], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)]
                             + [helper.make_opsetid(d, 1) for d in domains])


def _refused(model, *needles):
    with pytest.raises(OnnxImportError) as ei:
        extract_weights(model)
    msg = str(ei.value)
    for n in needles:
        assert n in msg, msg
    return msg


def _dq_case(q, s, zp=None, ty=TP.INT4, opset=21, **attrs):
    inits = [int_tensor("codes", q, ty, "raw"), numpy_helper.from_array(s, "scale")]
    ins = ["codes", "scale"]
    if zp is not None:
        inits.append(int_tensor("zp", zp, ty, "raw"))
        ins.append("zp")
    nodes = [helper.make_node("DequantizeLinear", ins, ["w"], name="deq", **attrs),
             helper.make_node("MatMul", ["x", "w"], ["y"], name="proj")]
    return _single(nodes, inits, opset=opset, K=q.shape[0])


def test_refuse_block_16():
    rng = np.random.default_rng(0)
    q = rng.integers(-8, 8, (64, 8))
    s = rng.uniform(0.1, 1, (4, 8)).astype(np.float32)
    _refused(_dq_case(q, s, axis=0, block_size=16), "deq", "'codes'", "block of 16")


def test_block_16_with_equal_pairs_is_reblocked_exactly():
    rng = np.random.default_rng(0)
    q = rng.integers(-8, 8, (64, 8))
    s = np.repeat(rng.uniform(0.1, 1, (2, 8)).astype(np.float32), 2, axis=0)
    (rec,) = extract_weights(_dq_case(q, s, axis=0, block_size=16))
    assert rec.value.block == 32 and any("re-blocked" in n for n in rec.notes)


def test_refuse_per_input_channel_scale():
    rng = np.random.default_rng(0)
    q = rng.integers(-8, 8, (64, 8))
    s = rng.uniform(0.1, 1, 64).astype(np.float32)       # axis 0 of [K, N]: varies along K
    _refused(_dq_case(q, s, axis=0), "deq", "'codes'", "block of 1")


def test_refuse_nan_and_inf():
    rng = np.random.default_rng(0)
    q = rng.integers(-8, 8, (64, 8))
    s = rng.uniform(0.1, 1, 8).astype(np.float32)
    s[3] = np.nan
    _refused(_dq_case(q, s, axis=1), "deq", "'codes'", "NaN or Inf")
    W = rng.standard_normal((64, 8)).astype(np.float32)
    W[5, 5] = np.inf
    nodes = [helper.make_node("QuantizeLinear", ["W", "s"], ["q"], name="quant", axis=1,
                              output_dtype=TP.INT4),
             helper.make_node("DequantizeLinear", ["q", "s"], ["w"], name="deq", axis=1),
             helper.make_node("MatMul", ["x", "w"], ["y"], name="proj")]
    s2 = np.ones(8, np.float32)
    m = _single(nodes, [numpy_helper.from_array(W, "W"), numpy_helper.from_array(s2, "s")])
    _refused(m, "quant", "'W'", "NaN or Inf")
    s2[0] = 0
    W[5, 5] = 0
    m = _single(nodes, [numpy_helper.from_array(W, "W"), numpy_helper.from_array(s2, "s")])
    _refused(m, "quant", "'s'", "zero")


def test_refuse_clip_declaring_5_bits():
    rng = np.random.default_rng(0)
    W = rng.standard_normal((64, 8)).astype(np.float32)
    inits = [numpy_helper.from_array(W, "W"), numpy_helper.from_array(np.float32(0.1), "s"),
             numpy_helper.from_array(np.int8(0), "z"), numpy_helper.from_array(np.int8(-16), "lo"),
             numpy_helper.from_array(np.int8(15), "hi")]
    nodes = [helper.make_node("QuantizeLinear", ["W", "s", "z"], ["q"], name="quant"),
             helper.make_node("Clip", ["q", "lo", "hi"], ["c"], name="clip5"),
             helper.make_node("DequantizeLinear", ["c", "s", "z"], ["w"], name="deq"),
             helper.make_node("MatMul", ["x", "w"], ["y"], name="proj")]
    _refused(_single(nodes, inits), "deq", "'W'", "[-16, 15]", "5-bit")


def test_refuse_types_below_their_opset():
    q = np.zeros((64, 8), np.int64)
    s = np.ones(8, np.float32)
    _refused(_dq_case(q, s, ty=TP.INT4, opset=19, axis=1), "deq", "int4", "opset >= 21")
    _refused(_dq_case(q, s, ty=TP.INT2, opset=23, axis=1), "deq", "int2", "opset >= 25")


def test_refuse_dq_output_with_other_consumers():
    q = np.zeros((64, 8), np.int64)
    inits = [int_tensor("codes", q, TP.INT4, "raw"), numpy_helper.from_array(np.ones(8, np.float32),
                                                                             "scale")]
    nodes = [helper.make_node("DequantizeLinear", ["codes", "scale"], ["w"], name="deq", axis=1),
             helper.make_node("MatMul", ["x", "w"], ["y0"], name="proj"),
             helper.make_node("ReduceSum", ["w"], ["r"], name="side"),
             helper.make_node("Add", ["y0", "r"], ["y"], name="add")]
    _refused(_single(nodes, inits), "proj", "'w'", "side")


def test_refuse_fake_quant_with_float16_scale():
    W = np.ones((64, 8), np.float32)
    inits = [numpy_helper.from_array(W, "W"),
             numpy_helper.from_array(np.ones(8, np.float16), "s")]
    nodes = [helper.make_node("QuantizeLinear", ["W", "s"], ["q"], name="quant", axis=1,
                              output_dtype=TP.INT8),
             helper.make_node("DequantizeLinear", ["q", "s"], ["w"], name="deq", axis=1,
                              output_dtype=TP.FLOAT),
             helper.make_node("MatMul", ["x", "w"], ["y"], name="proj")]
    _refused(_single(nodes, inits, opset=23), "quant", "float16 scale", "ambiguous")


def test_refuse_unsupported_types_and_ops():
    q = np.zeros((64, 8), np.int64)
    inits = [helper.make_tensor("codes", TP.INT16, [64, 8], q.reshape(-1).tolist()),
             numpy_helper.from_array(np.ones(8, np.float32), "scale")]
    nodes = [helper.make_node("DequantizeLinear", ["codes", "scale"], ["w"], name="deq", axis=1),
             helper.make_node("MatMul", ["x", "w"], ["y"], name="proj")]
    _refused(_single(nodes, inits), "deq", "'codes'", "int16")
    W = np.ones((64, 8), np.float32)
    nodes = [helper.make_node("Mul", ["W", "two"], ["w"], name="scale_up"),
             helper.make_node("MatMul", ["x", "w"], ["y"], name="proj")]
    _refused(_single(nodes, [numpy_helper.from_array(W, "W"),
                             numpy_helper.from_array(np.float32(2), "two")]),
             "proj", "scale_up", "unsupported")
    W3 = np.ones((2, 64, 8), np.float32)
    nodes = [helper.make_node("MatMul", ["x", "W"], ["y"], name="proj")]
    _refused(_single(nodes, [numpy_helper.from_array(W3, "W")]), "proj", "'W'", "rank 3")


def test_refuse_qonnx_rounding_mode_and_bits():
    W = np.ones((8, 64), np.float32)
    m = qonnx_model(W, np.float32(0.1), np.float32(0), 4, True, False, mode="FLOOR")
    _refused(m, "Quant0", "'W'", "FLOOR")
    m = qonnx_model(W, np.float32(0.1), np.float32(0), 6, True, False)
    _refused(m, "Quant0", "6-bit")


def test_refuse_matmulnbits_g_idx_and_gemm_bias():
    rng = np.random.default_rng(0)
    m = nbits_model(rng.standard_normal((16, 64)).astype(np.float32), 4, 32, False, rng)
    m.graph.initializer.append(numpy_helper.from_array(np.zeros(64, np.int32), "gidx"))
    n = m.graph.node[0]
    n.input.extend(["", "gidx"])
    _refused(m, "MNB", "g_idx", "'gidx'")
    nodes = [helper.make_node("Gemm", ["x", "W", "b"], ["y"], name="gemm_b", transB=1)]
    m = _single(nodes, [numpy_helper.from_array(np.ones((8, 64), np.float32), "W"),
                        numpy_helper.from_array(np.ones(8, np.float32), "b")])
    _refused(m, "gemm_b", "'W'", "bias")


def test_refuse_attributes_of_the_wrong_type():
    """An attribute stored with another type than the operator's (a float transB, a string
    axis) is refused by node and name instead of being misread or crashing."""
    W = numpy_helper.from_array(np.ones((8, 64), np.float32), "W")
    gemm = helper.make_node("Gemm", ["x", "W"], ["y"], name="gemm_f", transB=1.0)
    _refused(_single([gemm], [W]), "Gemm node 'gemm_f'", "attribute 'transB' must be an integer")
    rng = np.random.default_rng(0)
    q = rng.integers(-8, 8, (64, 8))
    s = rng.uniform(0.1, 1, 8).astype(np.float32)
    _refused(_dq_case(q, s, axis="1"), "DequantizeLinear node 'deq'",
             "attribute 'axis' must be an integer")


def test_refuse_integer_activation_quantization(tmp_path):
    """onnxruntime's quantize_dynamic (what optimum's ORTQuantizer runs) turns MatMul into
    MatMulInteger over int8 activations: not weight-only, refused by node and weight name."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    W = np.random.default_rng(0).standard_normal((64, 8)).astype(np.float32)
    onnx.save_model(_float_matmul_model(W), str(tmp_path / "f.onnx"))
    quantize_dynamic(str(tmp_path / "f.onnx"), str(tmp_path / "q.onnx"),
                     weight_type=QuantType.QInt8)
    _refused(onnx.load(str(tmp_path / "q.onnx")), "MatMulInteger node", "'W_quantized'",
             "integer activations", "weight-only")


def test_refuse_codes_out_of_declared_range():
    """Zero points (and codes) must fit the declared width."""
    W = np.ones((64, 8), np.float32)
    inits = [numpy_helper.from_array(W, "W"), numpy_helper.from_array(np.float32(0.1), "s"),
             numpy_helper.from_array(np.int8(5), "z"), numpy_helper.from_array(np.int8(-4), "lo"),
             numpy_helper.from_array(np.int8(3), "hi")]
    nodes = [helper.make_node("QuantizeLinear", ["W", "s", "z"], ["q"], name="quant"),
             helper.make_node("Clip", ["q", "lo", "hi"], ["c"], name="clip3"),
             helper.make_node("DequantizeLinear", ["c", "s", "z"], ["w"], name="deq"),
             helper.make_node("MatMul", ["x", "w"], ["y"], name="proj")]
    _refused(_single(nodes, inits), "deq", "zero points", "3-bit")


# ---------------------------------------------------------------------------------------
# tensor decoding


@pytest.mark.parametrize("shape", [(3, 5), (7,), (), (2, 0)])
@pytest.mark.parametrize("ty", [TP.FLOAT, TP.FLOAT16, TP.BFLOAT16, TP.INT8, TP.UINT8, TP.INT4,
                                TP.UINT4, TP.INT2, TP.UINT2, TP.INT16, TP.INT32, TP.INT64])
def test_decode_tensor_both_encodings(ty, shape):
    """raw_data and typed fields (int32_data: packed bytes for sub-byte types, bit patterns for
    float16/bfloat16) decode to what onnx.numpy_helper gives, for shapes whose rows do not end
    on a byte boundary."""
    rng = np.random.default_rng(ty)
    n = int(np.prod(shape)) if shape else 1
    if ty in (TP.FLOAT, TP.FLOAT16, TP.BFLOAT16):
        vals = rng.standard_normal(n).tolist()
    else:
        lo, hi = {TP.INT8: (-128, 127), TP.UINT8: (0, 255), TP.INT4: (-8, 7), TP.UINT4: (0, 15),
                  TP.INT2: (-2, 1), TP.UINT2: (0, 3), TP.INT16: (-999, 999),
                  TP.INT32: (-99999, 99999), TP.INT64: (-99999, 99999)}[ty]
        vals = rng.integers(lo, hi + 1, n).tolist()
    typed = helper.make_tensor("t", ty, list(shape), vals, raw=False)
    want = numpy_helper.to_array(typed)
    raw = numpy_helper.from_array(want, "t")
    assert raw.HasField("raw_data") or n == 0
    for t in (typed, raw):
        got = decode_tensor(t, "t").array
        assert got.shape == tuple(shape)
        if ty == TP.BFLOAT16:
            assert np.array_equal(got, want.view(np.uint16))
        elif ty in (TP.FLOAT, TP.FLOAT16):
            assert got.dtype == want.dtype and got.tobytes() == want.tobytes()
        else:
            assert np.array_equal(got.astype(np.int64), want.astype(np.int64))


def test_decode_tensor_refuses_malformed():
    t = helper.make_tensor("t", TP.INT4, [3, 5], [1] * 15, raw=False)
    del t.int32_data[-1]
    with pytest.raises(OnnxImportError, match="needs 8 packed bytes"):
        decode_tensor(t, "t")
    t = helper.make_tensor("t", TP.INT4, [3, 5], [1] * 15, raw=False)
    t.int32_data[0] = 300
    with pytest.raises(OnnxImportError, match="packed bytes"):
        decode_tensor(t, "t")
    t = numpy_helper.from_array(np.zeros((3, 5), np.int8), "t")
    t.raw_data = t.raw_data[:-1]
    with pytest.raises(OnnxImportError, match="raw data has 14 bytes"):
        decode_tensor(t, "t")
    t = helper.make_tensor("t", TP.FLOAT8E4M3FN, [2], [1.0, 2.0])
    with pytest.raises(OnnxImportError, match="float8e4m3fn is not supported"):
        decode_tensor(t, "t")


@pytest.mark.parametrize("layout", ["matmul", "gemm"])
@pytest.mark.parametrize("narrow", [False, True])
@pytest.mark.parametrize("signed", [True, False])
@pytest.mark.parametrize("bits", [2, 3])
def test_qcdq_on_int4_container(bits, signed, narrow, layout):
    """Q(int4/uint4) -> Clip -> DQ. onnxruntime has no int4 Clip kernel: onnx.reference is the
    oracle here."""
    case = Case("qcdq", None, "b32", layout, zp=False, bits=bits, signed=signed, narrow=narrow,
                container=4, seed=seed_of("qcdq4", bits, signed, narrow, layout))
    try:
        ort_run(case.model, {"x": case.x})
        run_ort = True
    except Exception:  # noqa: BLE001 - NOT_IMPLEMENTED for Clip(int4)
        run_ort = False
    rec = check_case(case, run_ort=run_ort)
    assert rec.value.bits == bits and rec.value.signed == signed
