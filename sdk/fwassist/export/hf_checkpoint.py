# SPDX-License-Identifier: Apache-2.0
"""Imports a Hugging Face safetensors checkpoint directory of a Qwen3-MoE decoder into an
:class:`ImportedModel`: float checkpoints (F32/F16/BF16 weights stay float), compressed-tensors
``pack-quantized`` ones (:mod:`.compressed_tensors`) and torchao intx ones
(:mod:`.torchao_checkpoint`), single-file or sharded (:mod:`.safetensors_io`).

Roles come from the Hugging Face parameter names. Experts may be stored per expert, 2-D
(``mlp.experts.N.{gate,up,down}_proj.weight``, the hub layout) or fused, 3-D, as transformers
5.x holds them in memory (``mlp.experts.gate_up_proj`` ``[E, 2I, H]``, gate rows first, and
``mlp.experts.down_proj`` ``[E, H, I]``; also accepted transposed, ``[E, H, 2I]`` and
``[E, I, H]``, where the shape tells them apart). Every tensor of the checkpoint must find a
role; anything else is refused by name.
"""

from __future__ import annotations

import json
import os
import re
from collections import defaultdict
from typing import Any, Optional, Union, cast

import numpy as np

from .compressed_tensors import PARAM_SUFFIXES, CompressedTensorsConfig, PackedModule
from .mapping import (_aggregate, _kname, _required_keys, _sort_key, expected_shape, hf_name,
                      is_moe_layer, normalize_config, role_from_string)
from .model import BF16Array, ImportedModel, ModelTensor, QuantizedWeight
from .safetensors_io import Checkpoint, CheckpointError
from .torchao_checkpoint import PARAMS as TORCHAO_PARAMS
from .torchao_checkpoint import load_intx, torchao_metadata

__all__ = ["CheckpointError", "import_checkpoint"]

Value = Union[np.ndarray, QuantizedWeight, BF16Array]
FloatValue = Union[np.ndarray, BF16Array]
Key = tuple[str, Optional[int], Optional[int]]   # (role, layer, expert)
_FUSED = re.compile(r"^model\.layers\.(\d+)\.mlp\.experts$")
_EMBEDDING_MODULES = ("model.embed_tokens",)


def _float_value(arr: np.ndarray, dtype: str, what: str) -> FloatValue:
    if dtype == "BF16":
        return BF16Array(bits=np.ascontiguousarray(arr))
    if dtype not in ("F32", "F16"):
        raise CheckpointError(f"{what}: dtype {dtype} is not a float weight type the artifact "
                              f"stores (F32, F16, BF16)")
    f32 = arr.astype(np.float32)
    if not np.all(np.isfinite(f32)):
        raise CheckpointError(f"{what}: contains NaN or Inf")
    return np.ascontiguousarray(arr)


def _slice(v: FloatValue, sl: Any) -> FloatValue:
    if isinstance(v, BF16Array):
        return BF16Array(bits=np.ascontiguousarray(v.bits[sl]))
    return np.ascontiguousarray(v[sl])


def _transpose(v: FloatValue) -> FloatValue:
    if isinstance(v, BF16Array):
        return BF16Array(bits=np.ascontiguousarray(v.bits.T))
    return np.ascontiguousarray(v.T)


def _load_json(path: str, what: str) -> Any:
    try:
        with open(path, "r", encoding="utf-8") as f:
            return json.load(f)
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
        raise CheckpointError(f"{what}: not a readable JSON file ({e})") from None


class _Builder:
    def __init__(self, ck: Checkpoint, config: dict[str, Any],
                 qcfg: Optional[CompressedTensorsConfig]) -> None:
        self.ck, self.c, self.qcfg = ck, config, qcfg
        self.torchao = torchao_metadata(ck)
        self.values: dict[Key, Value] = {}
        self.source: dict[Key, str] = {}
        self.notes: list[str] = []

    def put(self, key: Key, value: Value, name: str) -> None:
        if key in self.values:
            raise CheckpointError(f"{self.ck.label(name)}: {_kname(key)} is already "
                                  f"{self.source[key]!r}")
        role, layer, expert = key
        L = self.c["num_hidden_layers"]
        what = self.ck.label(name)
        if layer is not None and not 0 <= layer < L:
            raise CheckpointError(f"{what}: layer {layer} but num_hidden_layers is {L}")
        # Expert, router and mlp roles always name a layer (_key).
        if role.startswith("expert_") or role == "router":
            if not is_moe_layer(self.c, cast(int, layer)):
                raise CheckpointError(f"{what}: {_kname(key)} but layer {layer} is a dense MLP "
                                      f"layer in the config")
            if expert is not None and not 0 <= expert < self.c["num_experts"]:
                raise CheckpointError(f"{what}: expert {expert} but num_experts is "
                                      f"{self.c['num_experts']}")
        if role.startswith("mlp_") and is_moe_layer(self.c, cast(int, layer)):
            raise CheckpointError(f"{what}: {_kname(key)} but layer {layer} is a MoE layer in "
                                  f"the config")
        shape = value.q.shape if isinstance(value, QuantizedWeight) else (
            value.bits.shape if isinstance(value, BF16Array) else value.shape)
        want = expected_shape(role, self.c)
        if tuple(shape) != want:
            raise CheckpointError(f"{what}: shape {list(shape)} does not match {_kname(key)} "
                                  f"{list(want)} from the config")
        self.values[key] = value
        self.source[key] = name

    def run(self) -> None:
        ck = self.ck
        modules: dict[str, set[str]] = defaultdict(set)
        for name in ck.names():
            mod, _, param = name.rpartition(".")
            modules[mod].add(param)
        n_q = n_tao = 0
        for mod in sorted(modules):
            params = modules[mod]
            fm = _FUSED.match(mod)
            if fm and params <= {"gate_up_proj", "down_proj"}:
                for p in sorted(params):
                    self._fused(int(fm.group(1)), p, f"{mod}.{p}")
                continue
            if params & set(TORCHAO_PARAMS):
                name = f"{mod}._weight_qdata"
                if params != set(TORCHAO_PARAMS) or f"{mod}.weight" not in self.torchao:
                    raise CheckpointError(f"{ck.label(mod + '.' + sorted(params)[0])}: the "
                                          f"torchao weight of {mod} needs exactly "
                                          f"{', '.join(TORCHAO_PARAMS)} and its __metadata__ "
                                          f"description")
                qw, notes = load_intx(ck, mod, self.torchao[f"{mod}.weight"])
                self.notes.extend(notes)
                self.put(self._key(mod, name), qw, name)
                n_tao += 1
                continue
            if "weight_packed" in params:
                extra = params - set(PARAM_SUFFIXES)
                if extra:
                    raise CheckpointError(f"{ck.label(mod + '.' + sorted(extra)[0])}: unexpected "
                                          f"beside the packed weight of {mod}")
                if self.qcfg is None:
                    raise CheckpointError(f"{ck.label(mod + '.weight_packed')}: packed weight "
                                          f"but config.json has no compressed-tensors "
                                          f"quantization_config")
                key = self._key(mod, f"{mod}.weight_packed")
                kind = "Embedding" if mod in _EMBEDDING_MODULES else "Linear"
                qw, notes = PackedModule(ck, mod, self.qcfg, kind).load()
                self.notes.extend(notes)
                self.put(key, qw, f"{mod}.weight_packed")
                n_q += 1
                continue
            for p in sorted(params):
                name = f"{mod}.{p}"
                if p != "weight":
                    raise CheckpointError(f"{ck.label(name)}: not a parameter of a Qwen3-MoE "
                                          f"decoder (no role for {p!r})")
                key = self._key(mod, name)
                info = ck.info(name)
                self.put(key, _float_value(ck.read(name), info.dtype, ck.label(name)), name)
        if n_tao:
            self.notes.append(f"torchao: {n_tao} IntxUnpackedToInt8Tensor weight(s)")
        if n_q and self.qcfg is not None:
            ver = self.qcfg.version_text or "(version not recorded)"
            self.notes.append(f"compressed-tensors {ver}: {n_q} packed weight(s)")

    def _key(self, mod: str, name: str) -> Key:
        k = role_from_string(mod + ".weight")
        if k is None or hf_name(*k) != mod + ".weight":
            raise CheckpointError(f"{self.ck.label(name)}: no Qwen3-MoE role for module "
                                  f"{mod!r}")
        return k

    def _fused(self, layer: int, p: str, name: str) -> None:
        ck, c = self.ck, self.c
        info = ck.info(name)
        what = ck.label(name)
        E, H, I = c["num_experts"], c["hidden_size"], c["moe_intermediate_size"]
        v = _float_value(ck.read(name), info.dtype, what)
        shape = info.shape
        if p == "gate_up_proj":
            out_in, in_out = (E, 2 * I, H), (E, H, 2 * I)
        else:
            out_in, in_out = (E, H, I), (E, I, H)
        if shape == out_in:
            transposed = False
        elif shape == in_out:
            transposed = True
        else:
            raise CheckpointError(f"{what}: shape {list(shape)}, fused experts need "
                                  f"{list(out_in)} (transformers 5.x) or {list(in_out)}")
        if out_in == in_out:
            self.notes.append(f"{name}: square fused experts read in the transformers 5.x "
                              f"orientation [experts, out, in]")
        elif transposed:
            self.notes.append(f"{name}: fused experts stored [experts, in, out] (transposed)")
        for e in range(E):
            m = _slice(v, e)
            if transposed:
                m = _transpose(m)
            if p == "gate_up_proj":
                self.put(("expert_gate", layer, e), _slice(m, slice(0, I)), name)
                self.put(("expert_up", layer, e), _slice(m, slice(I, 2 * I)), name)
            else:
                self.put(("expert_down", layer, e), m, name)

    def tensors(self) -> tuple[list[ModelTensor], dict[str, Any]]:
        cfg = dict(self.c)
        vals = self.values
        emb, lm = ("embed", None, None), ("lm_head", None, None)
        if lm not in vals:
            if not cfg["tie_word_embeddings"]:
                raise CheckpointError("checkpoint: no lm_head.weight and the config does not "
                                      "tie word embeddings")
        elif emb in vals and _same(vals[lm], vals[emb]):
            if not cfg["tie_word_embeddings"]:
                self.notes.append("config: tie_word_embeddings set to true: lm_head.weight "
                                  "equals the embedding")
                cfg["tie_word_embeddings"] = True
            del vals[lm]
        elif cfg["tie_word_embeddings"]:
            raise CheckpointError("checkpoint: the config ties word embeddings but "
                                  "lm_head.weight differs from model.embed_tokens.weight")
        required = _required_keys(cfg)
        if cfg["tie_word_embeddings"]:
            required.discard(lm)
        missing = sorted(required - set(vals), key=_sort_key)
        if missing:
            raise CheckpointError(f"checkpoint: missing {', '.join(_kname(k) for k in missing[:6])}"
                                  f"{' ...' if len(missing) > 6 else ''}")
        out = [ModelTensor(name=hf_name(*k), role=k[0], layer=k[1], expert=k[2], value=vals[k])
               for k in sorted(vals, key=_sort_key)]
        return out, cfg


def _same(a: Value, b: Value) -> bool:
    if type(a) is not type(b) or isinstance(a, QuantizedWeight):
        return False
    if isinstance(a, BF16Array) and isinstance(b, BF16Array):
        return bool(np.array_equal(a.bits, b.bits))
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        return a.dtype == b.dtype and bool(np.array_equal(a, b))
    return False


def import_checkpoint(path: str, *, config_path: Optional[str] = None,
                      tokenizer_path: Optional[str] = None) -> ImportedModel:
    """Imports the safetensors checkpoint directory ``path`` (config.json and tokenizer.json
    from the directory unless given)."""
    path = os.path.abspath(os.fspath(path))
    ck = Checkpoint(path)
    cp = config_path or os.path.join(path, "config.json")
    if not os.path.isfile(cp):
        raise CheckpointError(f"{os.path.basename(path)}: no config.json in the checkpoint "
                              f"directory and no --config given")
    raw = _load_json(cp, os.path.basename(cp))
    if not isinstance(raw, dict):
        raise CheckpointError(f"{os.path.basename(cp)}: not a JSON object")
    config, notes = normalize_config(raw)
    notes = [f"config: from {os.path.basename(cp)}"] + notes + list(ck.notes)
    qc = raw.get("quantization_config")
    if qc is None and isinstance(raw.get("text_config"), dict):
        qc = raw["text_config"].get("quantization_config")
    qcfg = None
    if qc is not None:
        if not isinstance(qc, dict):
            raise CheckpointError("config: quantization_config is not an object")
        # torchao describes its tensors in the safetensors metadata (torchao_checkpoint)
        if qc.get("quant_method") != "torchao":
            qcfg = CompressedTensorsConfig(qc)
    b = _Builder(ck, config, qcfg)
    b.run()
    tensors, config = b.tensors()
    notes += _aggregate(b.notes)
    if len(ck.files) > 1:
        notes.append(f"source: {len(ck.files)} files (index and shards) in the source digest")
    tokenizer = None
    tp = tokenizer_path or os.path.join(path, "tokenizer.json")
    if os.path.isfile(tp):
        tokenizer = _load_json(tp, os.path.basename(tp))
        if not isinstance(tokenizer, dict):
            raise CheckpointError(f"{tp}: tokenizer.json is not a JSON object")
    return ImportedModel(config=config, tensors=tensors, tokenizer=tokenizer,
                         source_name=os.path.basename(path), source_sha256=ck.sha256(),
                         notes=notes)
