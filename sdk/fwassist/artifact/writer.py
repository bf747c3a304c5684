# SPDX-License-Identifier: Apache-2.0
"""Writes an :class:`~fwassist.artifact.model.ImportedModel` as a `.fwa` artifact
(docs/artifact-format.md), deterministically and atomically.

Layout of the data region:

1. the non-expert tensors, ordered by (position, layer, role, name): ``embed`` and other
   layer-less tensors whose role comes before the per-layer roles first, then layer 0, 1, …,
   then the remaining layer-less tensors (``final_norm``, ``lm_head``); roles in the order of
   :data:`fwassist.artifact.model.ROLES`. Each tensor starts at a multiple of 64 bytes.
2. the expert blocks, ordered by (layer, expert), each starting at a multiple of 4096 and
   holding that expert's ``gate``, ``up`` and ``down`` projections (in that order, each at a
   multiple of 64 from the block start), its length rounded up to 4096.

Every gap is zero. Packed tensors hold :func:`fwassist.kernels.pack`'s bytes, float tensors
their little-endian values (bf16: the :class:`BF16Array` bit patterns). The manifest is built
from normalized (float-free) copies of the inputs; nothing depends on time, host, locale,
hash seed or thread count.

The file is written to a temporary file in the target's directory, fsynced, verified in full
by the independent reader (:mod:`.pyverify`) and renamed over the target with
:func:`os.replace`; on any failure the temporary file is removed and the target is left as
it was. ``native=True`` streams the data through the C++ writer (csrc/artifact/writer.h) with
the same plan and manifest, so the bytes are the same.
"""

from __future__ import annotations

import hashlib
import os
import re
import struct
import tempfile
from dataclasses import dataclass
from typing import Any, Callable, Optional, Union

import numpy as np

from .. import kernels
from . import canonical, pyverify
from .model import EXPERT_ROLES, ROLES, BF16Array, ImportedModel, PackedTensor, QuantizedWeight
from .sbom import build_sbom

__all__ = ["write_artifact", "EXPORTER_NAME", "tensor_order_key"]

EXPORTER_NAME = "fwassist"
# The format as the writer reads docs/artifact-format.md. The verifier (pyverify) keeps its own
# copy on purpose: it is the independent second implementation that checks this one.
MAGIC = b"\x89FWA\r\n\x1a\n"
HEADER = struct.Struct("<8sHHIQQQQ32s48s")      # 128 bytes
VERSION = (1, 1)                # the highest version written: with generation metadata
VERSION_1_0 = (1, 0)            # without it, so that such artifacts keep their bytes and pin
ALIGN = 64                      # tensor offsets, data_length
PAGE = 4096                     # data_offset, expert blocks
MAX_MANIFEST = 16 << 20
MAX_TENSORS = 65536
MAX_BLOCKS = 65536
MAX_DIM = 1 << 31
SECTION_KEYS = ("config", "tokenizer", "tensors", "expert_blocks", "provenance", "model_card",
                "sbom", "evidence")
REQUIRES = {"endianness": "little", "kernel_layout": 1}
_HEX64 = re.compile(r"[0-9a-f]{64}\Z")
# §3.8: caps on the sizes a manifest declares (a reader refuses an artifact exceeding them).
MAX_TOKEN_ID = 1 << 21
MAX_VOCAB_ENTRIES = 1 << 21
MAX_MERGES = 1 << 21
MAX_ADDED_TOKENS = 65536
CONFIG_CAPS = {"vocab_size": 1 << 21, "hidden_size": 1 << 20, "num_hidden_layers": 4096,
               "num_attention_heads": 4096, "num_key_value_heads": 4096, "head_dim": 4096,
               "intermediate_size": 1 << 22, "moe_intermediate_size": 1 << 22,
               "num_experts": 65536, "num_experts_per_tok": 65536,
               "decoder_sparse_step": 4096, "max_position_embeddings": 1 << 24}
# §3.9: generation metadata (format 1.1).
MAX_EOS_IDS = 64
MAX_CHAT_TEMPLATE = 256 << 10
GENERATION_SOURCES = ("chat_template.jinja", "generation_config.json", "tokenizer_config.json")
_ROLE_INDEX = {r: i for i, r in enumerate(ROLES)}
_FIRST_LAYER_ROLE = _ROLE_INDEX["q_proj"]
_ZEROS = bytes(1 << 16)


def _roundup(x: int, a: int) -> int:
    return -(-x // a) * a


def tensor_order_key(role: str, layer: Optional[int], name: str) -> tuple[Any, ...]:
    """Sort key of a non-expert tensor: layer-less tensors whose role precedes the per-layer
    roles (``embed``) first, then by layer, then the other layer-less ones; then role order
    and name."""
    r = _ROLE_INDEX[role]
    if layer is None:
        group, lay = (0 if r < _FIRST_LAYER_ROLE else 2), 0
    else:
        group, lay = 1, layer
    return (group, lay, r, name)


@dataclass
class _Entry:
    name: str
    role: str
    layer: Optional[int]
    expert: Optional[int]
    dtype: str
    shape: list[int]
    quant: Optional[dict[str, Any]]
    length: int
    produce: Callable[[], memoryview]   # the tensor's bytes, computed when written
    offset: int = 0
    sha256: str = ""

    def table(self) -> dict[str, Any]:
        return {"name": self.name, "role": self.role, "layer": self.layer,
                "expert": self.expert, "dtype": self.dtype, "shape": self.shape,
                "quant": self.quant, "offset": self.offset, "length": self.length,
                "sha256": self.sha256}


def _index(v: Any, what: str) -> Optional[int]:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or int(v) < 0:
        raise ValueError(f"{what} must be a non-negative integer or None, got {v!r}")
    return int(v)


def _shape(shape: tuple[int, ...], name: str) -> list[int]:
    if not 1 <= len(shape) <= 4 or any(d < 1 or d > MAX_DIM for d in shape):
        raise ValueError(f"tensor {name}: shape {tuple(shape)} is outside rank 1..4 with "
                         f"dimensions 1..2^31")
    return [int(d) for d in shape]


def _entry(t: Any) -> _Entry:
    name = t.name
    if not isinstance(name, str) or not name:
        raise ValueError(f"tensor name must be a non-empty string, got {name!r}")
    if t.role not in _ROLE_INDEX:
        raise ValueError(f"tensor {name}: unknown role {t.role!r} (one of {', '.join(ROLES)})")
    layer = _index(t.layer, f"tensor {name}: layer")
    expert = _index(t.expert, f"tensor {name}: expert")
    if (expert is not None) != (t.role in EXPERT_ROLES):
        raise ValueError(f"tensor {name}: role {t.role} {'needs' if expert is None else 'has'}"
                         f" an expert index")
    if expert is not None and layer is None:
        raise ValueError(f"tensor {name}: an expert tensor needs a layer")
    v = t.value
    if isinstance(v, PackedTensor):
        shape = _shape((int(v.N), int(v.K)), name)
        if v.scale not in ("f16", "f32"):
            raise ValueError(f"tensor {name}: scale must be 'f16' or 'f32', got {v.scale!r}")
        try:
            length = kernels.packed_size(shape[0], shape[1], bits=v.bits, block=v.block,
                                         has_zero=bool(v.has_zero), scale_dtype=v.scale)
        except ValueError as e:
            raise ValueError(f"tensor {name}: {e}") from None
        quant = {"bits": int(v.bits), "block": int(v.block), "zero_points": bool(v.has_zero),
                 "scale": v.scale}

        def produce_packed(v: PackedTensor = v) -> memoryview:
            return memoryview(v.produce()).cast("B")

        return _Entry(name, t.role, layer, expert, "packed", shape, quant, length,
                      produce_packed)
    if isinstance(v, QuantizedWeight):
        if not isinstance(v.q, np.ndarray) or v.q.ndim != 2:
            raise ValueError(f"tensor {name}: codes must be a 2-D array")
        N, K = (int(d) for d in v.q.shape)
        shape = _shape((N, K), name)
        # pack() stores signed codes whose zero points are all 0 as symmetric.
        zp = v.zero_points
        has_zero = not (v.signed and (zp is None or not np.any(zp)))
        if not isinstance(v.scales, np.ndarray) or v.scales.dtype not in (np.float16,
                                                                          np.float32):
            raise ValueError(f"tensor {name}: scales must be float16 or float32")
        scale = "f16" if v.scales.dtype == np.float16 else "f32"
        try:
            length = kernels.packed_size(N, K, bits=v.bits, block=v.block, has_zero=has_zero,
                                         scale_dtype=scale)
        except ValueError as e:
            raise ValueError(f"tensor {name}: {e}") from None
        quant = {"bits": int(v.bits), "block": int(v.block), "zero_points": has_zero,
                 "scale": scale}

        def produce(v: QuantizedWeight = v) -> memoryview:
            try:
                pm = kernels.pack(v.q, v.scales, v.zero_points, bits=v.bits, block=v.block,
                                  signed=v.signed)
            except (TypeError, ValueError) as e:
                raise ValueError(f"tensor {name}: {e}") from None
            if (pm.nbytes != length or pm.has_zero != has_zero or pm.scale_dtype != scale):
                raise RuntimeError(f"tensor {name}: packed layout differs from the plan")
            return pm.data.data.cast("B")

        return _Entry(name, t.role, layer, expert, "packed", shape, quant, length, produce)
    le: np.dtype[Any]
    if isinstance(v, BF16Array):
        arr, dtype, le = v.bits, "bf16", np.dtype("<u2")
        if not isinstance(arr, np.ndarray) or arr.dtype != np.uint16:
            raise ValueError(f"tensor {name}: BF16Array.bits must be a uint16 array")
    elif isinstance(v, np.ndarray):
        arr = v
        if arr.dtype == np.float32:
            dtype, le = "f32", np.dtype("<f4")
        elif arr.dtype == np.float16:
            dtype, le = "f16", np.dtype("<f2")
        else:
            raise ValueError(f"tensor {name}: float tensors must be float32, float16 or "
                             f"BF16Array, got {arr.dtype}")
    else:
        raise TypeError(f"tensor {name}: value must be a numpy array, BF16Array or "
                        f"QuantizedWeight, got {type(v).__name__}")
    shape = _shape(arr.shape, name)
    length = int(arr.size) * le.itemsize

    def produce_float(arr: np.ndarray = arr, le: np.dtype = le) -> memoryview:
        return np.ascontiguousarray(arr, dtype=le).data.cast("B")

    return _Entry(name, t.role, layer, expert, dtype, shape, None, length, produce_float)


def _check_model_card(card: Any) -> None:
    if not isinstance(card, dict):
        raise ValueError("model_card must be a dict")
    lim = card.get("known_limitations")
    if lim is None:
        raise ValueError("model_card has no known_limitations: an artifact for certified "
                         "firmware must state the model's known limitations (a non-empty "
                         "list of strings)")
    if (isinstance(lim, str) or not isinstance(lim, (list, tuple)) or not lim
            or not all(isinstance(s, str) and s.strip() for s in lim)):
        raise ValueError("model_card.known_limitations must be a non-empty list of non-empty "
                         f"strings, got {lim!r}")


def _check_declared_sizes(config: dict[str, Any], tokenizer: Optional[dict[str, Any]]) -> None:
    """§3.8: an artifact whose config or tokenizer declares more than a reader accepts is not
    written (every reader would refuse it, after allocating nothing for it)."""
    for key, cap in CONFIG_CAPS.items():
        v = config.get(key)
        if isinstance(v, int) and not isinstance(v, bool) and v > cap:
            raise ValueError(f"config.{key} = {v} exceeds the artifact format's cap of {cap}")
    if tokenizer is None:
        return

    def token_id(v: Any, what: str) -> None:
        if isinstance(v, int) and not isinstance(v, bool) and v >= MAX_TOKEN_ID:
            raise ValueError(f"tokenizer: {what} has token id {v}; the artifact format caps "
                             f"token ids below {MAX_TOKEN_ID} (2^21)")

    def count(v: Any, cap: int, what: str) -> None:
        if len(v) > cap:
            raise ValueError(f"tokenizer: {what} has {len(v)} entries; the artifact format's "
                             f"cap is {cap}")

    model = tokenizer.get("model")
    model = model if isinstance(model, dict) else {}
    vocab = model.get("vocab")
    if isinstance(vocab, dict):
        count(vocab, MAX_VOCAB_ENTRIES, "model.vocab")
        for k, v in vocab.items():
            token_id(v, f"model.vocab entry {k!r}")
    if isinstance(model.get("merges"), list):
        count(model["merges"], MAX_MERGES, "model.merges")
    added = tokenizer.get("added_tokens")
    if isinstance(added, list):
        count(added, MAX_ADDED_TOKENS, "added_tokens")
        for a in added:
            if isinstance(a, dict):
                token_id(a.get("id"), f"added token {a.get('content')!r}")


def _generation(g: Any, vocab_size: Any) -> dict[str, Any]:
    """The manifest's ``generation`` object (§3.9) from an ImportedModel's, checked so that no
    reader would refuse it."""
    if not isinstance(g, dict):
        raise ValueError("model.generation must be a dict or None")
    keys = {"bos_token_id", "chat_template", "eos_token_ids", "pad_token_id", "sources"}
    if set(g) != keys:
        raise ValueError(f"model.generation must have exactly the keys {sorted(keys)}, got "
                         f"{sorted(g)}")
    if not isinstance(vocab_size, int) or isinstance(vocab_size, bool):
        raise ValueError("generation metadata needs config.vocab_size, an integer")

    def token_id(v: Any, what: str) -> int:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) \
                or not 0 <= int(v) < vocab_size:
            raise ValueError(f"generation: {what} {v!r} is not a token id in "
                             f"[0, {vocab_size})")
        return int(v)

    eos = g["eos_token_ids"]
    if isinstance(eos, (str, bytes)) or not isinstance(eos, (list, tuple)) or not eos:
        raise ValueError(f"generation: eos_token_ids must be a non-empty list, got {eos!r}")
    ids = sorted({token_id(v, "eos token id") for v in eos})
    if len(ids) > MAX_EOS_IDS:
        raise ValueError(f"generation: {len(ids)} eos token ids exceed the artifact format's "
                         f"cap of {MAX_EOS_IDS}")
    tmpl = g["chat_template"]
    if tmpl is not None:
        if not isinstance(tmpl, str) or not tmpl:
            raise ValueError("generation: chat_template must be a non-empty string or None")
        n = len(tmpl.encode("utf-8"))
        if n > MAX_CHAT_TEMPLATE:
            raise ValueError(f"generation: the chat template has {n} bytes; the artifact "
                             f"format's cap is {MAX_CHAT_TEMPLATE} (256 KiB)")
    src = g["sources"]
    if not isinstance(src, dict) or set(src) != set(GENERATION_SOURCES) or not all(
            v is None or (isinstance(v, str) and _HEX64.match(v)) for v in src.values()):
        raise ValueError(f"generation: sources must map {', '.join(GENERATION_SOURCES)} to a "
                         f"sha256 (64 lowercase hex digits) or None, got {src!r}")
    return {
        "bos_token_id": None if g["bos_token_id"] is None else token_id(g["bos_token_id"],
                                                                        "bos_token_id"),
        "chat_template": tmpl,
        "eos_token_ids": ids,
        "pad_token_id": None if g["pad_token_id"] is None else token_id(g["pad_token_id"],
                                                                        "pad_token_id"),
        "sources": {k: src[k] for k in GENERATION_SOURCES},
    }


def _check_config(config: dict[str, Any], entries: list[_Entry]) -> None:
    n_layers = config.get("num_hidden_layers")
    n_experts = config.get("num_experts")
    for e in entries:
        if isinstance(n_layers, int) and e.layer is not None and e.layer >= n_layers:
            raise ValueError(f"tensor {e.name}: layer {e.layer} but num_hidden_layers is "
                             f"{n_layers}")
        if isinstance(n_experts, int) and e.expert is not None and e.expert >= n_experts:
            raise ValueError(f"tensor {e.name}: expert {e.expert} but num_experts is "
                             f"{n_experts}")


def _plan(entries: list[_Entry]) -> tuple[list[_Entry], list[dict[str, Any]], int]:
    """Orders the tensors, assigns offsets; returns (tensors, blocks, data_length)."""
    names: set[str] = set()
    for e in entries:
        if e.name in names:
            raise ValueError(f"duplicate tensor name {e.name}")
        names.add(e.name)
    dense = sorted((e for e in entries if e.expert is None),
                   key=lambda e: tensor_order_key(e.role, e.layer, e.name))
    experts: dict[tuple[Optional[int], int], dict[str, _Entry]] = {}
    for e in entries:
        if e.expert is not None:
            slot = experts.setdefault((e.layer, e.expert), {})
            if e.role in slot:
                raise ValueError(f"expert ({e.layer}, {e.expert}) has two {e.role} tensors: "
                                 f"{slot[e.role].name}, {e.name}")
            slot[e.role] = e
    cursor = 0
    ordered: list[_Entry] = []
    for e in dense:
        cursor = _roundup(cursor, ALIGN)
        e.offset = cursor
        cursor += e.length
        ordered.append(e)
    blocks = []
    for key in sorted(experts):
        slot = experts[key]
        missing = [r for r in EXPERT_ROLES if r not in slot]
        if missing:
            raise ValueError(f"expert {key} (layer, expert) lacks {', '.join(missing)}: an "
                             f"expert block holds gate, up and down")
        cursor = _roundup(cursor, PAGE)
        start = cursor
        for role in EXPERT_ROLES:
            e = slot[role]
            cursor = _roundup(cursor, ALIGN)
            e.offset = cursor
            cursor += e.length
            ordered.append(e)
        cursor = start + _roundup(cursor - start, PAGE)
        blocks.append({"layer": key[0], "expert": key[1], "offset": start,
                       "length": cursor - start, "sha256": ""})
    if len(ordered) > MAX_TENSORS or len(blocks) > MAX_BLOCKS:
        raise ValueError("more than 65,536 tensors or expert blocks")
    return ordered, blocks, _roundup(cursor, ALIGN)


def _quant_formats(entries: list[_Entry]) -> list[str]:
    fmts = set()
    for e in entries:
        if e.quant:
            q = e.quant
            fmts.add(f"{q['bits']}-bit block {q['block']} scale {q['scale']} "
                     f"{'asymmetric' if q['zero_points'] else 'symmetric'}")
    return sorted(fmts)


def _manifest(fixed: dict[str, Any], tensors: list[_Entry], blocks: list[dict[str, Any]],
              data_length: int, placeholder: bool) -> bytes:
    if placeholder:
        table = [dict(e.table(), sha256="0" * 64) for e in tensors]
        blks = [dict(b, sha256="0" * 64) for b in blocks]
    else:
        table = [e.table() for e in tensors]
        blks = blocks
    m = dict(fixed, data_length=data_length, tensors=table, expert_blocks=blks)
    sections = {k: canonical.digest(m[k]) for k in SECTION_KEYS + tuple(
        k for k in ("generation",) if k in m) if k != "sbom"}
    m["sbom"] = build_sbom(config=m["config"], model_card=m["model_card"],
                           source_name=fixed["provenance"]["source"]["name"],
                           source_sha256=fixed["provenance"]["source"]["sha256"],
                           exporter_version=fixed["provenance"]["exporter"]["version"],
                           quant_formats=_quant_formats(tensors), sections=sections)
    sections["sbom"] = canonical.digest(m["sbom"])
    m["sections"] = sections
    raw = canonical.dumps(m)
    if len(raw) > MAX_MANIFEST:
        raise ValueError(f"manifest of {len(raw)} bytes exceeds the 16 MiB cap")
    return raw


def _write_all(fd: int, data: Union[bytes, memoryview]) -> None:
    mv = memoryview(data)
    while mv:
        n = os.write(fd, mv)
        mv = mv[n:]


def _write_zeros(fd: int, n: int) -> None:
    while n > 0:
        k = min(n, len(_ZEROS))
        _write_all(fd, _ZEROS[:k])
        n -= k


def write_artifact(path: Union[str, "os.PathLike[str]"], model: ImportedModel, *,
                   model_card: dict[str, Any], options: dict[str, Any],
                   evidence: dict[str, Any],
                   exporter_version: str,
                   progress: Optional[Callable[[int, int], None]] = None,
                   native: bool = False, check: str = "full") -> str:
    """Writes ``model`` to ``path`` and returns its pin ``"sha256:<root digest>"``.

    model_card: must hold a non-empty ``known_limitations`` list of strings (else ValueError);
    other keys are free-form, see :mod:`fwassist.artifact.sbom` for those mapped into the
    CycloneDX model card. options: the exporter options, recorded in the provenance.
    evidence: the equivalence evidence measured at export. Floats anywhere in config, options,
    tokenizer, model card or evidence are stored as their shortest round-trip decimal string.
    progress: called with (data bytes written, data bytes in all) after each tensor.
    ``model.generation`` (EOS ids, chat template: §3.9) makes a format 1.1 artifact; without
    it the artifact is format 1.0, byte for byte as before.
    native: place, hash, fsync and rename the data with the C++ writer (the same bytes, a
    streaming rate bound by storage rather than Python). check: the reader the finished file
    must pass before it replaces the target, "full" (every byte, the Python verifier) or
    "lazy" (the C++ reader, expert blocks not re-read: for models larger than memory).
    Tensors whose value is a :class:`~fwassist.artifact.model.PackedTensor` are produced one
    at a time while writing, so the model need not fit in memory.
    """
    if check not in ("full", "lazy"):
        raise ValueError(f"check must be 'full' or 'lazy', got {check!r}")
    _check_model_card(model_card)
    for what, v in (("options", options), ("evidence", evidence)):
        if not isinstance(v, dict):
            raise ValueError(f"{what} must be a dict")
    if not isinstance(model, ImportedModel):
        raise TypeError("model must be a fwassist.artifact.model.ImportedModel")
    if not isinstance(model.config, dict):
        raise ValueError("model.config must be a dict")
    if not isinstance(exporter_version, str) or not exporter_version:
        raise ValueError("exporter_version must be a non-empty string")
    if not isinstance(model.source_sha256, str) or not _HEX64.match(model.source_sha256):
        raise ValueError("model.source_sha256 must be the source checkpoint's sha256 (64 "
                         f"lowercase hex digits), got {model.source_sha256!r}")
    if model.tokenizer is not None and not isinstance(model.tokenizer, dict):
        raise ValueError("model.tokenizer must be a dict (tokenizer.json content) or None")
    if not model.tensors:
        raise ValueError("the model has no tensors")

    entries = [_entry(t) for t in model.tensors]
    config = canonical.normalize(model.config, "config")
    tokenizer = canonical.normalize(model.tokenizer, "tokenizer")
    _check_declared_sizes(config, tokenizer)
    _check_config(config, entries)
    generation = (None if model.generation is None
                  else _generation(model.generation, config.get("vocab_size")))
    version = VERSION_1_0 if generation is None else VERSION
    tensors, blocks, data_length = _plan(entries)
    fixed = {
        "format": "fwassist.artifact",
        "format_version": list(version),
        "requires": dict(REQUIRES),
        "config": config,
        "tokenizer": tokenizer,
        "provenance": {
            "source": {"name": str(model.source_name), "sha256": model.source_sha256},
            "exporter": {"name": EXPORTER_NAME, "version": exporter_version,
                         "options": canonical.normalize(options, "options")},
            "importer_notes": canonical.normalize(list(model.notes), "notes"),
        },
        "model_card": canonical.normalize(model_card, "model_card"),
        "evidence": canonical.normalize(evidence, "evidence"),
    }
    if generation is not None:
        fixed["generation"] = generation
    # Digests have a fixed width, so the manifest length is known before any tensor is packed;
    # the data can then be streamed to its final place one tensor at a time.
    manifest_length = len(_manifest(fixed, tensors, blocks, data_length, placeholder=True))
    data_offset = _roundup(HEADER.size + manifest_length, PAGE)

    path = os.fspath(path)
    if native:
        return _write_native(path, fixed, version, tensors, blocks, data_offset, data_length,
                             manifest_length, progress, check)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp",
                               dir=directory)
    try:
        os.lseek(fd, data_offset, os.SEEK_SET)
        pos = 0
        by_block = {(b["layer"], b["expert"]): b for b in blocks}
        block_hash: Optional[Any] = None
        current: Optional[dict[str, Any]] = None
        for e in tensors:
            if e.expert is not None and current is None:
                current = by_block[(e.layer, e.expert)]   # the block's first tensor (gate)
                _write_zeros(fd, current["offset"] - pos)
                pos = current["offset"]
                block_hash = hashlib.sha256()
            gap = e.offset - pos
            _write_zeros(fd, gap)
            data = e.produce()
            if len(data) != e.length:
                raise RuntimeError(f"tensor {e.name}: {len(data)} bytes, planned {e.length}")
            e.sha256 = hashlib.sha256(data).hexdigest()
            _write_all(fd, data)
            if progress is not None:
                progress(e.offset + e.length, data_length)
            if block_hash is not None:
                block_hash.update(bytes(gap))
                block_hash.update(data)
            pos = e.offset + e.length
            del data
            if current is not None and block_hash is not None and e.role == EXPERT_ROLES[-1]:
                # down: the block's last
                end = current["offset"] + current["length"]
                _write_zeros(fd, end - pos)
                block_hash.update(bytes(end - pos))
                current["sha256"] = block_hash.hexdigest()
                pos, block_hash, current = end, None, None
        _write_zeros(fd, data_length - pos)
        head, root = _head(fixed, version, tensors, blocks, data_offset, data_length,
                           manifest_length)
        os.lseek(fd, 0, os.SEEK_SET)
        _write_all(fd, head)
        _write_zeros(fd, data_offset - len(head))
        if os.fstat(fd).st_size != data_offset + data_length:
            raise RuntimeError("written file size differs from the planned file_length")
        os.fsync(fd)
        os.close(fd)
        fd = -1
        _final_check(tmp, root, data_length, check)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
        tmp = ""
    except BaseException:
        if fd >= 0:
            os.close(fd)
        if tmp:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        raise
    _fsync_dir(directory)
    return "sha256:" + root.hex()


def _head(fixed: dict[str, Any], version: tuple[int, int], tensors: list[_Entry],
          blocks: list[dict[str, Any]], data_offset: int, data_length: int,
          manifest_length: int) -> tuple[bytes, bytes]:
    """(header + manifest, root digest) once every digest is known."""
    raw = _manifest(fixed, tensors, blocks, data_length, placeholder=False)
    if len(raw) != manifest_length:
        raise RuntimeError("manifest length changed between planning and writing")
    root = hashlib.sha256(raw).digest()
    header = HEADER.pack(MAGIC, version[0], version[1], 0, manifest_length, data_offset,
                         data_length, data_offset + data_length, root, bytes(48))
    return header + raw, root


def _final_check(tmp: str, root: bytes, data_length: int, check: str) -> None:
    """Fail closed: the finished file must pass a reader before it replaces anything.
    "full": the independent Python reader (:mod:`.pyverify`) checks every byte. "lazy": the
    C++ reader checks everything but the bytes of expert blocks (read back only on use; their
    digests were computed from the very buffers written), for models too large to re-read."""
    pin = "sha256:" + root.hex()
    if check == "full":
        try:
            manifest = pyverify.verify(tmp, pin=pin).manifest
        except pyverify.PyArtifactError as e:
            raise RuntimeError(f"the written artifact does not verify: {e}") from None
    else:
        from ..errors import ArtifactError
        from ..loader import load_artifact
        try:
            art = load_artifact(tmp, pin=pin, lazy=True)
        except ArtifactError as e:
            raise RuntimeError(f"the written artifact does not verify: {e}") from None
        manifest = art.manifest
        art.close()
    if manifest["data_length"] != data_length:
        raise RuntimeError("the written artifact does not match its plan")


def _write_native(path: str, fixed: dict[str, Any], version: tuple[int, int],
                  tensors: list[_Entry], blocks: list[dict[str, Any]], data_offset: int,
                  data_length: int, manifest_length: int,
                  progress: Optional[Callable[[int, int], None]], check: str) -> str:
    """The same file as the Python path, its data placed, hashed, fsynced and renamed by the
    C++ writer (csrc/artifact/writer.h)."""
    from .. import _core
    index = {(b["layer"], b["expert"]): i for i, b in enumerate(blocks)}
    plan = [(t.offset, t.length, -1 if t.expert is None else index[(t.layer, t.expert)])
            for t in tensors]
    try:
        w = _core.ArtifactWriter(path, data_offset, data_length, plan,
                                 [(b["offset"], b["length"]) for b in blocks])
    except _core.ArtifactFailure as err:
        raise _native_error(err) from None
    try:
        for t in tensors:
            data = t.produce()
            if len(data) != t.length:
                raise RuntimeError(f"tensor {t.name}: {len(data)} bytes, planned {t.length}")
            t.sha256 = w.write_tensor(data).hex()
            del data
            if progress is not None:
                progress(t.offset + t.length, data_length)
        for i, b in enumerate(blocks):
            b["sha256"] = w.block_digest(i).hex()
        head, root = _head(fixed, version, tensors, blocks, data_offset, data_length,
                           manifest_length)
        w.finish(head)
        _final_check(w.tmp_path(), root, data_length, check)
        w.publish()
    except _core.ArtifactFailure as err:
        w.abort()
        raise _native_error(err) from None
    except BaseException:
        w.abort()
        raise
    return "sha256:" + root.hex()


def _native_error(e: Exception) -> Exception:
    """The C++ writer's failure as the Python writer's: OSError for I/O, else RuntimeError."""
    status, message = (e.args + ("", ""))[:2]
    return OSError(message) if status == "io_error" else RuntimeError(message)


def _fsync_dir(directory: str) -> None:
    try:
        dfd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)
