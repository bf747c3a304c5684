# SPDX-License-Identifier: Apache-2.0
"""torchao checkpoints in safetensors: ``IntxUnpackedToInt8Tensor`` weights (what
``quantize_(model, QATConfig(IntxWeightOnlyConfig(...), step="convert"))`` leaves), saved the way
transformers saves torchao models (``torchao.prototype.safetensors.flatten_tensor_state_dict``).

A weight ``M.weight`` becomes the tensors ``M._weight_qdata`` (int8 codes, [N, K]),
``M._weight_scale`` and ``M._weight_zero_point`` ([N / bh, K / bw]), and the safetensors
``__metadata__`` holds ``tensor_names`` (a JSON list) and, per name, a JSON object:
``{"_type": "IntxUnpackedToInt8Tensor", "_data": {"target_dtype": {"_type": "torch.dtype",
"_data": "int4"}, "block_size": [bh, bw], "dtype": ..., "activation_quantization": null},
"_tensor_data_names": [...]}``. Dequantization (torchao ``dequantize_affine``):
``w = (q - zp) * scale`` in the model's dtype; here in float32 with one multiply. Every other
torchao tensor type is refused by name.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from .model import QuantizedWeight
from .patterns import finish_quantized
from .safetensors_io import Checkpoint, CheckpointError
from .tensors import BFLOAT16, FLOAT, FLOAT16, quant_range

PARAMS = ("_weight_qdata", "_weight_scale", "_weight_zero_point")
INTX = "IntxUnpackedToInt8Tensor"
SCALE_TYPES = {"F32": FLOAT, "F16": FLOAT16, "BF16": BFLOAT16}


def torchao_metadata(ck: Checkpoint) -> dict[str, dict[str, Any]]:
    """Per weight name, its torchao description, merged over the files of the checkpoint
    (empty when no file carries torchao metadata)."""
    out: dict[str, dict[str, Any]] = {}
    for f in {id(f): f for f in ck.where.values()}.values():
        meta = f.metadata
        if "tensor_names" not in meta:
            continue
        try:
            names = json.loads(meta["tensor_names"])
        except ValueError:
            raise CheckpointError(f"{f.label}: __metadata__ tensor_names is not JSON") from None
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise CheckpointError(f"{f.label}: __metadata__ tensor_names is not a list of names")
        for n in names:
            try:
                d = json.loads(meta.get(n, ""))
            except ValueError:
                raise CheckpointError(f"{f.label}: __metadata__ entry for {n!r} is missing or "
                                      f"not JSON") from None
            if not isinstance(d, dict):
                raise CheckpointError(f"{f.label}: __metadata__ entry for {n!r} is not an object")
            if n in out and out[n] != d:
                raise CheckpointError(f"{f.label}: __metadata__ for {n!r} differs between files")
            out[n] = d
    return out


def _dtype_name(x: Any) -> str:
    if isinstance(x, dict) and x.get("_type") == "torch.dtype" and isinstance(x.get("_data"), str):
        return str(x["_data"])
    raise CheckpointError(f"not a torch.dtype description: {x!r}")


def load_intx(ck: Checkpoint, module: str, desc: dict[str, Any]) -> tuple[QuantizedWeight,
                                                                        list[str]]:
    """The QuantizedWeight of ``module`` from its torchao tensors and description."""
    qname = f"{module}._weight_qdata"
    what = ck.label(qname)
    if desc.get("_type") != INTX:
        raise CheckpointError(f"{what}: torchao tensor type {desc.get('_type')!r} is not "
                              f"supported (only {INTX}, torchao's intx weight-only form)")
    data = desc.get("_data")
    if not isinstance(data, dict):
        raise CheckpointError(f"{what}: torchao description has no _data object")
    if data.get("activation_quantization") is not None:
        raise CheckpointError(f"{what}: activation_quantization "
                              f"{data['activation_quantization']!r}: only weight-only")
    try:
        tdt = _dtype_name(data.get("target_dtype"))
    except CheckpointError as e:
        raise CheckpointError(f"{what}: target_dtype: {e}") from None
    if tdt not in ("int2", "int3", "int4", "int8"):
        raise CheckpointError(f"{what}: target_dtype {tdt} is not supported (int2, int3, int4, "
                              f"int8)")
    bits = int(tdt[3:])
    bs = data.get("block_size")
    if not (isinstance(bs, list) and len(bs) == 2 and all(
            isinstance(b, int) and not isinstance(b, bool) and b > 0 for b in bs)):
        raise CheckpointError(f"{what}: block_size {bs!r} is not two positive integers")
    for p in PARAMS:
        if f"{module}.{p}" not in ck.where:
            raise CheckpointError(f"{what}: {module}.{p} is missing")
    if ck.info(qname).dtype != "I8":
        raise CheckpointError(f"{what}: dtype {ck.info(qname).dtype}, expected I8")
    q = ck.read(qname)
    if q.ndim != 2:
        raise CheckpointError(f"{what}: shape {list(q.shape)} is not 2-D")
    N, K = q.shape
    bh, bw = bs
    if N % bh or K % bw:
        raise CheckpointError(f"{what}: block_size {bs} does not divide the shape [{N}, {K}]")
    lo, hi = quant_range(bits, True)
    sname, zname = f"{module}._weight_scale", f"{module}._weight_zero_point"
    sdt = ck.info(sname).dtype
    if sdt not in SCALE_TYPES:
        raise CheckpointError(f"{ck.label(sname)}: dtype {sdt} is not a scale type (F32, F16, "
                              f"BF16)")
    sc = ck.read(sname)
    want = (N // bh, K // bw)
    if sc.shape != want:
        raise CheckpointError(f"{ck.label(sname)}: shape {list(sc.shape)}, block_size {bs} "
                              f"needs {list(want)}")
    z = ck.read(zname)
    zdt = ck.info(zname).dtype
    if z.shape != want:
        raise CheckpointError(f"{ck.label(zname)}: shape {list(z.shape)}, expected {list(want)}")
    if zdt in ("F32", "F16", "BF16"):
        zf = ((z.astype(np.uint32) << 16).view(np.float32) if zdt == "BF16"
              else z.astype(np.float64))
        if not np.all(np.isfinite(zf)) or np.any(zf != np.round(zf)):
            raise CheckpointError(f"{ck.label(zname)}: float zero points that are not integers "
                                  f"cannot be stored as integer zero points")
        z = zf.astype(np.int64)
    elif zdt != "I8":
        raise CheckpointError(f"{ck.label(zname)}: dtype {zdt} is not I8 or a float type")
    z = z.astype(np.int64)
    if z.size and (z.min() < lo or z.max() > hi):
        raise CheckpointError(f"{ck.label(zname)}: zero points [{z.min()}, {z.max()}] outside "
                              f"the {tdt} range [{lo}, {hi}]")
    rows, cols = np.arange(N) // bh, np.arange(K) // bw
    label = f"{qname} ({ck.where[qname].label})"   # no ": ", so notes aggregate
    return finish_quantized(q.astype(np.int64), np.ascontiguousarray(sc[rows][:, cols]),
                            SCALE_TYPES[sdt], z[rows][:, cols], bw, bits, True, lo, hi, label,
                            f"torchao target_dtype {tdt}")
