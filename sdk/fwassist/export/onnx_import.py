# SPDX-License-Identifier: Apache-2.0
"""Imports a QAT ONNX model of a Qwen3-MoE decoder into an :class:`ImportedModel`.

``import_onnx(path)`` finds every weight (patterns in :mod:`.patterns`), computes integer
codes and scales bit-exactly (fake-quant codes as onnxruntime's QuantizeLinear computes them),
maps the weights to roles and Hugging Face names (:mod:`.mapping`), and reads the config
(ONNX metadata_props or a Hugging Face config.json) and the tokenizer (tokenizer.json).
float32 scales that are all exact float16 values are stored as float16 (lossless).
Anything it cannot represent exactly is refused with :class:`OnnxImportError`, whose message
names the node, the tensor and the reason.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from types import ModuleType
from typing import TYPE_CHECKING, Any, Optional, Union

import numpy as np

from .fused_experts import fused_expert_records
from .mapping import assign_roles, load_config, load_role_map
from .model import ImportedModel, ModelTensor, QuantizedWeight
from .patterns import Graph, WeightRecord, find_weights
from .jsonfile import load_file
from ..errors import require
from .tensors import ExternalData, ExternalDataError, OnnxImportError

if TYPE_CHECKING:
    from onnx import ModelProto

__all__ = ["OnnxImportError", "import_onnx", "load_graph", "extract_weights", "source_files"]


def _onnx() -> ModuleType:
    return require("onnx", "export", "importing ONNX models")


def _load(path: str) -> ModelProto:
    """The model without its external data; a file protobuf cannot parse is refused by name."""
    onnx = _onnx()
    try:
        model: ModelProto = onnx.load(path, load_external_data=False)
    except Exception as e:  # protobuf errors
        raise OnnxImportError(f"{path}: not a readable ONNX model ({e})") from None
    return model


def load_graph(path_or_model: Union[str, os.PathLike[str], ModelProto],
               base_dir: Optional[str] = None) -> Graph:
    """Loads a model (path or ModelProto) without its external data; external tensors are
    read on demand, only from inside the model's directory."""
    if isinstance(path_or_model, (str, os.PathLike)):
        path = os.fspath(path_or_model)
        model = _load(path)
        base = os.path.dirname(os.path.abspath(path))
    else:
        model = path_or_model
        base = base_dir or os.getcwd()
    return Graph(model, base)


def source_files(path: str) -> list[str]:
    """The model file and every external data file its tensors name (resolved; a location
    escaping the model's directory raises :class:`ExternalDataError`), without reading any
    tensor data: the files an output of the export must not be."""
    _onnx()  # first: a missing onnx is MissingExtraError, not a bare ImportError
    from onnx.external_data_helper import _get_all_tensors

    path = os.fspath(path)
    model = _load(path)
    ext = ExternalData(os.path.dirname(os.path.abspath(path)))
    out = [os.path.abspath(path)]
    for t in _get_all_tensors(model):
        if t.data_location == 1:  # EXTERNAL
            loc = next((e.value for e in t.external_data if e.key == "location"), "")
            real = ext.resolve(loc, f"tensor '{t.name}'")
            if real not in out:
                out.append(real)
    return out


def extract_weights(path_or_model: Union[str, os.PathLike[str], ModelProto], base_dir: Optional[str] = None) -> list[WeightRecord]:
    """Every weight use of a graph with its value (no role mapping): the pattern layer alone."""
    return find_weights(load_graph(path_or_model, base_dir))


def narrow_exact_scales(tensors: list[ModelTensor]) -> tuple[list[ModelTensor], int]:
    """float32 scales whose every value is a float16 value (finite, converts back to the
    same bits) become float16: the same dequantized weights at half the scale bytes. A QAT
    trainer with float16 scales must write float32 ones for QuantizeLinear."""
    out: list[ModelTensor] = []
    n = 0
    for t in tensors:
        v = t.value
        if isinstance(v, QuantizedWeight) and v.scales.dtype == np.float32:
            with np.errstate(over="ignore"):
                h = v.scales.astype(np.float16)
            if np.all(np.isfinite(h)) and np.array_equal(
                    h.astype(np.float32).view(np.uint32), v.scales.view(np.uint32)):
                t = dataclasses.replace(t, value=dataclasses.replace(v, scales=h))
                n += 1
        out.append(t)
    return out, n


def import_onnx(path: Union[str, os.PathLike[str]], *, config_path: Optional[str] = None,
                tokenizer_path: Optional[str] = None, strategy: str = "auto",
                map_path: Optional[str] = None,
                explain: Optional[list[dict[str, Any]]] = None) -> ImportedModel:
    """Imports the QAT ONNX model at ``path``.

    config_path: a Hugging Face config.json (default: the model's metadata_props, else
    config.json beside the model). tokenizer_path: a tokenizer.json (default: tokenizer.json
    beside the model, if any). strategy: role mapping, "auto" (names, then node metadata, then
    graph structure) or one of "names", "metadata", "structure" (for tests). map_path: a JSON
    role map (weight or node name -> Hugging Face parameter name) that overrides every other
    signal. explain: receives the mapping table (see mapping.assign_roles).
    """
    path = os.fspath(path)
    g = load_graph(path)
    records = find_weights(g)
    # A weight whose external data escapes the directory is refused as such, even where the
    # pattern layer keeps other failures of a candidate (a Gather may be unrelated).
    for r in records:
        if isinstance(r.error, ExternalDataError):
            raise r.error
    config, notes = load_config(g.model, path, config_path)
    records += fused_expert_records(g, config)
    role_map = load_role_map(map_path) if map_path is not None else None
    tensors, config, n2 = assign_roles(g, records, config, strategy, role_map, explain)
    if map_path is not None:
        n2.append(f"roles: {len(role_map or {})} named by the role map "
                  f"{os.path.basename(map_path)}")
    notes += n2
    tensors, narrowed = narrow_exact_scales(tensors)
    if narrowed:
        notes.append(f"scales: {narrowed} tensor(s) with float32 scales that are all exact "
                     f"float16 values stored as float16 (lossless)")
    tokenizer = None
    tp = tokenizer_path
    if tp is None:
        beside = os.path.join(os.path.dirname(os.path.abspath(path)), "tokenizer.json")
        tp = beside if os.path.isfile(beside) else None
    if tp is not None:
        tokenizer = load_file(tp, "tokenizer")
        if not isinstance(tokenizer, dict):
            raise OnnxImportError(f"{tp}: tokenizer.json is not a JSON object")
    h = hashlib.sha256()
    for p in [os.path.abspath(path)] + list(g.external.files):
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    if g.external.files:
        notes.append(f"source: {len(g.external.files)} external data file(s) included in the "
                     f"source digest")
    return ImportedModel(config=config, tensors=tensors, tokenizer=tokenizer,
                         source_name=os.path.basename(path), source_sha256=h.hexdigest(),
                         notes=notes)
