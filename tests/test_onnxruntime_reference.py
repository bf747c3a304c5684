# SPDX-License-Identifier: Apache-2.0
"""Dequantization and exact-mode matmul against onnxruntime (graph optimizations disabled, so
DequantizeLinear and MatMul run unfused) and onnx.reference."""

from __future__ import annotations

import numpy as np
import pytest

import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from onnx.reference import ReferenceEvaluator  # noqa: E402

from fwassist import kernels  # noqa: E402

ONNX_TYPES = {(4, True): TensorProto.INT4, (4, False): TensorProto.UINT4,
              (8, True): TensorProto.INT8, (8, False): TensorProto.UINT8}


def dq_matmul_model(q, s, zp, bits, block, signed, M):
    """x[M,K] @ DequantizeLinear(q[K,N] blocked along axis 0). ONNX stores the weight as
    [K, N] for MatMul, so q/s/zp are passed transposed."""
    K, N = q.shape
    elem = ONNX_TYPES[(bits, signed)]
    w = helper.make_tensor("q", elem, [K, N], q.flatten().tolist())
    sc = numpy_helper.from_array(s, "s")
    inits = [w, sc]
    inputs = ["q", "s"]
    if zp is not None:
        inits.append(helper.make_tensor("zp", elem, list(zp.shape), zp.flatten().tolist()))
        inputs.append("zp")
    nodes = [helper.make_node("DequantizeLinear", inputs, ["w"], axis=0, block_size=block),
             helper.make_node("MatMul", ["x", "w"], ["y"])]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [M, K])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [M, N]),
         helper.make_tensor_value_info("w", TensorProto.FLOAT, [K, N])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])


def run_ort(model, x):
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), so,
                                providers=["CPUExecutionProvider"])
    return sess.run(["y", "w"], {"x": x})


@pytest.mark.parametrize("bits,signed", sorted(ONNX_TYPES))
@pytest.mark.parametrize("block", [32, 128])
@pytest.mark.parametrize("with_zp", [False, True])
def test_dequantize_and_exact_matmul_match_onnxruntime(bits, signed, block, with_zp):
    rng = np.random.default_rng(bits * 1000 + block + with_zp)
    N, K, M = 40, 2 * block + 24, 3  # short last block
    nb = -(-K // block)
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    q = rng.integers(lo, hi + 1, size=(N, K)).astype(np.int8 if signed else np.uint8)
    s = (rng.uniform(0.001, 0.1, (N, nb)) * rng.choice([-1, 1], (N, nb))).astype(np.float32)
    zp = rng.integers(lo, hi + 1, size=(N, nb)).astype(q.dtype) if with_zp else None
    x = rng.standard_normal((M, K)).astype(np.float32)
    pm = kernels.pack(q, s, zp, bits=bits, block=block, signed=signed)

    model = dq_matmul_model(q.T.copy(), s.T.copy(), None if zp is None else zp.T.copy(),
                            bits, block, signed, M)
    y_ort, w_ort = run_ort(model, x)
    # Dequantized weights: bit for bit.
    assert kernels.dequantize(pm).tobytes() == np.ascontiguousarray(w_ort.T).tobytes()
    # And onnx.reference agrees on the weights too.
    w_ref = ReferenceEvaluator(model).run(["w"], {"x": x})[0]
    assert np.ascontiguousarray(w_ref.T).tobytes() == kernels.dequantize(pm).tobytes()
    # Exact mode: within fp32 summation-order rounding of ORT's MatMul.
    y = kernels.matmul(pm, x, mode="exact")
    mag = np.abs(x) @ np.abs(w_ort)
    assert np.max(np.abs(y - y_ort) / mag) < 1e-6
