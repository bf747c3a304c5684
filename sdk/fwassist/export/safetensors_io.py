# SPDX-License-Identifier: Apache-2.0
"""A small, strict reader of safetensors files and Hugging Face checkpoint directories.

The format: an 8-byte little-endian header length N, N bytes of UTF-8 JSON mapping each tensor
name to ``{"dtype", "shape", "data_offsets": [begin, end]}`` (offsets relative to the byte
after the header) plus an optional ``"__metadata__"`` object of strings, then the raw
little-endian tensor data. Everything is checked against the file size before any data is
read: the header length is capped, keys must be unique, every tensor's byte range must match
its dtype and shape, lie inside the data region and not overlap another. No torch and no
``safetensors`` package are needed.

A checkpoint directory holds ``model.safetensors`` or shards listed by
``model.safetensors.index.json`` (``weight_map``: tensor name -> file). Shard names must be
plain file names inside the directory. Pickle checkpoints (``.bin``/``.pt``/``.pth``/``.ckpt``)
are refused and never opened.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from .tensors import OnnxImportError


class CheckpointError(OnnxImportError):
    """A checkpoint the importer refuses; the message names the file, the tensor and the
    reason."""


MAX_HEADER = 100 * 1024 * 1024          # the safetensors package's own cap
INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")

# safetensors dtype -> (numpy little-endian dtype, item size). F8/F4 types are listed so that
# their tensors are named in the refusal, not reported as malformed.
DTYPES: dict[str, Optional[str]] = {
    "F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2", "I64": "<i8", "I32": "<i4",
    "I16": "<i2", "I8": "i1", "U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "u1",
    "BOOL": "u1", "F8_E4M3": None, "F8_E5M2": None, "F8_E8M0": None, "F4": None,
    "F6_E2M3": None, "F6_E3M2": None, "C64": "<c8",
}
ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
            "U64": 8, "U32": 4, "U16": 2, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1,
            "F8_E8M0": 1, "C64": 8}


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k!r}")
        out[k] = v
    return out


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int                           # absolute file offsets
    end: int


class SafetensorsFile:
    """One safetensors file: the header is parsed and checked at open; tensors are read on
    demand."""

    def __init__(self, path: str):
        self.path = path
        self.label = os.path.basename(path)
        try:
            size = os.path.getsize(path)
            with open(path, "rb") as f:
                head = f.read(8)
                if len(head) < 8:
                    raise CheckpointError(f"{self.label}: not a safetensors file (shorter than "
                                          f"the 8-byte header length)")
                n = int.from_bytes(head, "little")
                if n < 2 or n > MAX_HEADER:
                    raise CheckpointError(f"{self.label}: safetensors header length {n} is "
                                          f"outside [2, {MAX_HEADER}]")
                if 8 + n > size:
                    raise CheckpointError(f"{self.label}: safetensors header length {n} runs "
                                          f"past the end of the file ({size} bytes)")
                raw = f.read(n)
        except OSError as e:
            raise CheckpointError(f"{self.label}: cannot be read: {e.strerror}") from None
        try:
            header = json.loads(raw.decode("utf-8"), object_pairs_hook=_unique_object)
        except (UnicodeDecodeError, ValueError, RecursionError) as e:
            raise CheckpointError(f"{self.label}: safetensors header is not valid JSON "
                                  f"({type(e).__name__}: {e})") from None
        if not isinstance(header, dict):
            raise CheckpointError(f"{self.label}: safetensors header is not a JSON object")
        data_start = 8 + n
        data_len = size - data_start
        meta = header.pop("__metadata__", None)
        if meta is not None and not (isinstance(meta, dict)
                                     and all(isinstance(v, str) for v in meta.values())):
            raise CheckpointError(f"{self.label}: __metadata__ must be an object of strings")
        self.metadata: dict[str, str] = dict(meta or {})
        self.tensors: dict[str, TensorInfo] = {}
        spans = []
        for name, entry in header.items():
            what = f"{self.label}: tensor {name!r}"
            if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
                raise CheckpointError(f"{what}: header entry must have exactly dtype, shape "
                                      f"and data_offsets")
            dt, shape, offs = entry["dtype"], entry["shape"], entry["data_offsets"]
            if dt not in ITEMSIZE and dt not in DTYPES:
                raise CheckpointError(f"{what}: unknown dtype {dt!r}")
            if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
                raise CheckpointError(f"{what}: shape {shape!r} is not a list of "
                                      f"non-negative integers")
            if (not isinstance(offs, list) or len(offs) != 2
                    or not all(_is_int(o) for o in offs) or not 0 <= offs[0] <= offs[1]):
                raise CheckpointError(f"{what}: data_offsets {offs!r} are not [begin, end] "
                                      f"with 0 <= begin <= end")
            if offs[1] > data_len:
                raise CheckpointError(f"{what}: data_offsets {offs} run past the data region "
                                      f"({data_len} bytes)")
            count = 1
            for d in shape:
                count *= d
            if dt in ITEMSIZE:
                need = count * ITEMSIZE[dt]
                if need != offs[1] - offs[0]:
                    raise CheckpointError(f"{what}: {dt} {shape} needs {need} bytes, "
                                          f"data_offsets give {offs[1] - offs[0]}")
            self.tensors[name] = TensorInfo(name, dt, tuple(shape), data_start + offs[0],
                                            data_start + offs[1])
            if offs[1] > offs[0]:
                spans.append((offs[0], offs[1], name))
        spans.sort()
        for (a0, a1, an), (b0, b1, bn) in zip(spans, spans[1:]):
            if b0 < a1:
                raise CheckpointError(f"{self.label}: tensors {an!r} and {bn!r} overlap")

    def read(self, name: str) -> np.ndarray:
        """The tensor as a native-endian numpy array; BF16 as its uint16 bit patterns."""
        t = self.tensors[name]
        np_dt = DTYPES.get(t.dtype)
        if np_dt is None or t.dtype == "C64":
            raise CheckpointError(f"{self.label}: tensor {name!r} has dtype {t.dtype}, which "
                                  f"the importer does not read")
        with open(self.path, "rb") as f:
            f.seek(t.begin)
            data = f.read(t.end - t.begin)
        if len(data) != t.end - t.begin:
            raise CheckpointError(f"{self.label}: tensor {name!r}: short read")
        dt = np.dtype(np_dt)
        arr = np.frombuffer(data, dtype=dt).astype(dt.newbyteorder("="))
        if t.dtype == "BOOL":
            if arr.size and arr.max() > 1:
                raise CheckpointError(f"{self.label}: tensor {name!r}: BOOL bytes must be 0 "
                                      f"or 1")
            arr = arr.astype(np.bool_)
        return arr.reshape(t.shape)


def _plain_file(directory: str, name: Any, what: str) -> str:
    """A regular file directly inside ``directory`` (no separators, no '..', no links)."""
    if (not isinstance(name, str) or not name or name in (".", "..") or "/" in name
            or "\\" in name or "\x00" in name):
        raise CheckpointError(f"{what}: shard name {name!r} is not a plain file name inside "
                              f"the checkpoint directory")
    p = os.path.join(directory, name)
    if os.path.islink(p):
        raise CheckpointError(f"{what}: shard {name!r} is a symbolic link (refused)")
    try:
        st = os.stat(p)
    except OSError as e:
        raise CheckpointError(f"{what}: shard {name!r} cannot be read: {e.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise CheckpointError(f"{what}: shard {name!r} is not a regular file")
    return p


class Checkpoint:
    """The tensors of a checkpoint directory, single-file or sharded."""

    def __init__(self, directory: str):
        self.dir = os.path.abspath(directory)
        names = sorted(os.listdir(self.dir))
        st_files = [n for n in names if n.endswith(".safetensors")]
        pickles = [n for n in names if n.lower().endswith(PICKLE_SUFFIXES)]
        self.notes: list[str] = []
        self.files: list[str] = []          # digest order
        self.where: dict[str, SafetensorsFile] = {}
        if INDEX_NAME in names:
            self._load_index()
        elif SINGLE_NAME in st_files or len(st_files) == 1:
            name = SINGLE_NAME if SINGLE_NAME in st_files else st_files[0]
            f = SafetensorsFile(_plain_file(self.dir, name, self.dir))
            self.files.append(f.path)
            self.where = {k: f for k in f.tensors}
        elif st_files:
            raise CheckpointError(f"{os.path.basename(self.dir)}: {len(st_files)} safetensors "
                                  f"files but no {INDEX_NAME} saying which tensor is where")
        elif pickles:
            raise CheckpointError(f"{os.path.basename(self.dir)}: only pickle checkpoint files "
                                  f"({', '.join(pickles[:3])}); pickle files are refused and "
                                  f"never unpickled (loading one can run arbitrary code): save "
                                  f"the model as safetensors (save_pretrained(..., "
                                  f"safe_serialization=True))")
        else:
            raise CheckpointError(f"{os.path.basename(self.dir)}: no model.safetensors, no "
                                  f"{INDEX_NAME} and no ONNX model")
        if pickles:
            self.notes.append(f"checkpoint: pickle files ignored, never opened: "
                              f"{', '.join(pickles[:3])}")

    def _load_index(self) -> None:
        ipath = _plain_file(self.dir, INDEX_NAME, self.dir)
        try:
            with open(ipath, "r", encoding="utf-8") as f:
                idx = json.load(f, object_pairs_hook=_unique_object)
        except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
            raise CheckpointError(f"{INDEX_NAME}: not a readable JSON object "
                                  f"({type(e).__name__}: {e})") from None
        wm = idx.get("weight_map") if isinstance(idx, dict) else None
        if not isinstance(wm, dict) or not wm:
            raise CheckpointError(f"{INDEX_NAME}: no weight_map object")
        self.files.append(ipath)
        shards: dict[str, SafetensorsFile] = {}
        for name, shard in wm.items():
            if shard not in shards:
                p = _plain_file(self.dir, shard, INDEX_NAME)
                shards[shard] = SafetensorsFile(p)
            sf = shards[shard]
            if name not in sf.tensors:
                raise CheckpointError(f"{INDEX_NAME}: tensor {name!r} is mapped to {shard!r}, "
                                      f"which does not hold it")
            self.where[name] = sf
        for shard in sorted(shards):
            sf = shards[shard]
            self.files.append(sf.path)
            extra = sorted(set(sf.tensors) - {n for n, g in self.where.items() if g is sf})
            if extra:
                raise CheckpointError(f"{shard}: tensor {extra[0]!r} is not in {INDEX_NAME}'s "
                                      f"weight_map for this shard")

    def names(self) -> list[str]:
        return sorted(self.where)

    def info(self, name: str) -> TensorInfo:
        return self.where[name].tensors[name]

    def read(self, name: str) -> np.ndarray:
        return self.where[name].read(name)

    def label(self, name: str) -> str:
        return f"{self.where[name].label}: tensor {name!r}"

    def sha256(self) -> str:
        """Digest of the index (if any) and the shards, in that order."""
        h = hashlib.sha256()
        for p in self.files:
            with open(p, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
        return h.hexdigest()
