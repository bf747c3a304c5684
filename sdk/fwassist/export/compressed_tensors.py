# SPDX-License-Identifier: Apache-2.0
"""Hugging Face compressed-tensors ``pack-quantized`` weights: scheme resolution and unpacking.

``config.json`` ``quantization_config`` (``quant_method: compressed-tensors``) lists
``config_groups``, each with ``targets`` (module names, ``re:`` regexes matched from the start
of the name, or class names: ``Linear`` and ``Embedding``), ``weights`` (``num_bits``,
``type: int``, ``symmetric``, ``strategy``, ``group_size``, ``block_structure``, ``actorder``),
and ``ignore``. A quantized module ``M`` stores:

* ``M.weight_packed`` int32 ``[out, words]``: codes offset by 2^(bits-1) (so unsigned),
  packed least significant bits first along each row. compressed-tensors >= 0.18 packs
  densely (element i of a row at bit i*bits of the row's bit stream, crossing word
  boundaries; ``words = ceil(in * bits / 32)``); 0.17 put ``32 // bits`` elements in each word
  (3-bit: 10 per word, the top 2 bits zero; ``words = ceil(in / (32 // bits))``). Both are the
  same for 2, 4 and 8 bits. Every padding bit must be zero.
* ``M.weight_scale`` ``[out, groups]`` (group), ``[out, 1]`` (channel), ``[1]`` (tensor) or
  ``[ceil(out / bh), ceil(in / bw)]`` (block);
* ``M.weight_zero_point`` when asymmetric: for group/channel packed the same way along dim 0
  (``[words(out), groups]``), otherwise stored as integers of the scale's shape;
* ``M.weight_shape`` ``[out, in]``; optionally ``M.weight_g_idx`` ``[in]`` (activation
  reordering: the group of each input column).

Dequantization (compressed-tensors ``_dequantize``): ``w = (q - zp) * scale``; here in float32
with one multiply, the reference the export evidence uses.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Optional, cast

import numpy as np

from .model import QuantizedWeight
from .patterns import finish_quantized
from .safetensors_io import Checkpoint, CheckpointError
from .tensors import BFLOAT16, FLOAT, FLOAT16, quant_range

PARAM_SUFFIXES = ("weight_packed", "weight_scale", "weight_zero_point", "weight_shape",
                  "weight_g_idx")
SCALE_TYPES = {"F32": FLOAT, "F16": FLOAT16, "BF16": BFLOAT16}
DENSE_SINCE = (0, 18)     # compressed-tensors release that switched to dense packing


@dataclass(frozen=True)
class WeightScheme:
    group: str                          # the config_groups key
    bits: int
    symmetric: bool
    strategy: str                       # channel, group, tensor or block
    group_size: Optional[int]
    block_structure: Optional[tuple[int, int]]


def _version(v: Any) -> Optional[tuple[int, int]]:
    if not isinstance(v, str):
        return None
    m = re.match(r"(\d+)\.(\d+)", v)
    return (int(m.group(1)), int(m.group(2))) if m else None


class CompressedTensorsConfig:
    """The ``quantization_config`` of a compressed-tensors checkpoint."""

    def __init__(self, qc: dict[str, Any]) -> None:
        if qc.get("quant_method") != "compressed-tensors":
            raise CheckpointError(f"config: quantization_config.quant_method "
                                  f"{qc.get('quant_method')!r} is not supported (only "
                                  f"compressed-tensors pack-quantized)")
        fmt = qc.get("format")
        # mixed-precision: each config group names its own format (all must be pack-quantized)
        if fmt not in ("pack-quantized", "mixed-precision"):
            raise CheckpointError(f"config: compressed-tensors format {fmt!r} is not supported "
                                  f"(only pack-quantized: integer weights packed in int32)")
        self.mixed = fmt == "mixed-precision"
        status = qc.get("quantization_status")
        if status not in (None, "compressed"):
            raise CheckpointError(f"config: quantization_status {status!r}: the checkpoint's "
                                  f"weights are not stored compressed")
        if qc.get("kv_cache_scheme") is not None:
            raise CheckpointError("config: kv_cache_scheme is set (KV-cache quantization is not "
                                  "supported)")
        if qc.get("transform_config"):
            raise CheckpointError("config: transform_config is set (rotations such as "
                                  "SpinQuant/QuIP are not supported)")
        if qc.get("sparsity_config"):
            raise CheckpointError("config: sparsity_config is set (sparse formats are not "
                                  "supported)")
        self.version_text = qc.get("version")
        self.version = _version(self.version_text)
        ign = qc.get("ignore") or []
        if not isinstance(ign, list) or not all(isinstance(s, str) for s in ign):
            raise CheckpointError("config: quantization_config.ignore must be a list of strings")
        self.ignore: list[str] = ign
        groups = qc.get("config_groups")
        if not isinstance(groups, dict) or not groups:
            raise CheckpointError("config: quantization_config.config_groups is missing")
        self.groups: list[tuple[list[str], WeightScheme]] = []
        for gname, g in groups.items():
            self.groups.append(self._scheme(gname, g))
            if self.mixed and g.get("format") is None:
                raise CheckpointError(f"config: config_groups.{gname} names no format in a "
                                      f"mixed-precision checkpoint")

    @staticmethod
    def _scheme(gname: str, g: Any) -> tuple[list[str], WeightScheme]:
        what = f"config: config_groups.{gname}"
        if not isinstance(g, dict):
            raise CheckpointError(f"{what}: a preset given by name only; the checkpoint must "
                                  f"spell out the scheme (targets and weights)")
        targets = g.get("targets")
        if not isinstance(targets, list) or not all(isinstance(t, str) for t in targets):
            raise CheckpointError(f"{what}: targets must be a list of strings")
        for key in ("input_activations", "output_activations"):
            if g.get(key) is not None:
                raise CheckpointError(f"{what}: {key} are quantized; only weight-only schemes "
                                      f"are supported")
        if g.get("format") not in (None, "pack-quantized"):
            raise CheckpointError(f"{what}: format {g.get('format')!r} is not supported (only "
                                  f"pack-quantized)")
        w = g.get("weights")
        if not isinstance(w, dict):
            raise CheckpointError(f"{what}: no weights arguments")
        if w.get("type", "int") != "int":
            raise CheckpointError(f"{what}: weights.type {w.get('type')!r} is not supported "
                                  f"(int only)")
        if w.get("dynamic") not in (None, False):
            raise CheckpointError(f"{what}: dynamic weight quantization is not supported")
        bits = w.get("num_bits")
        if bits not in (2, 3, 4, 8):
            raise CheckpointError(f"{what}: weights.num_bits {bits!r} is not supported (2, 3, "
                                  f"4 or 8)")
        sym = w.get("symmetric", True)
        if not isinstance(sym, bool):
            raise CheckpointError(f"{what}: weights.symmetric must be true or false")
        strategy = w.get("strategy")
        gs = w.get("group_size")
        if strategy is None:
            strategy = "group" if gs is not None else "tensor"
        if strategy not in ("channel", "group", "tensor", "block"):
            raise CheckpointError(f"{what}: weights.strategy {strategy!r} is not supported "
                                  f"(channel, group, tensor, block)")
        if strategy == "group" and not (isinstance(gs, int) and not isinstance(gs, bool)
                                        and gs > 0):
            raise CheckpointError(f"{what}: group strategy needs a positive group_size, got "
                                  f"{gs!r}")
        bs = None
        if strategy == "block":
            b = w.get("block_structure")
            if not (isinstance(b, list) and len(b) == 2 and all(
                    isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in b)):
                raise CheckpointError(f"{what}: block strategy needs block_structure "
                                      f"[rows, cols], got {b!r}")
            bs = (b[0], b[1])
        return targets, WeightScheme(gname, bits, sym, strategy,
                                     gs if strategy == "group" else None, bs)

    def scheme_for(self, module: str, kind: str) -> Optional[WeightScheme]:
        """The scheme of ``module`` (``kind``: "Linear" or "Embedding"), None if no group
        targets it or it is ignored. Several groups with different schemes: refused."""
        def match(t: str) -> bool:
            if t.startswith("re:"):
                try:
                    return re.match(t[3:], module) is not None
                except re.error as e:
                    raise CheckpointError(f"config: target {t!r} is not a valid regex "
                                          f"({e})") from None
            return t == module or t == kind

        if any(match(t) for t in self.ignore):
            return None
        found = [s for targets, s in self.groups if any(match(t) for t in targets)]
        if not found:
            return None
        first = found[0]
        for s in found[1:]:
            if (s.bits, s.symmetric, s.strategy, s.group_size, s.block_structure) != (
                    first.bits, first.symmetric, first.strategy, first.group_size,
                    first.block_structure):
                raise CheckpointError(f"{module}: targeted by config groups {first.group!r} and "
                                      f"{s.group!r} with different schemes")
        return first


def _words_dense(n: int, bits: int) -> int:
    return -(-n * bits // 32)


def _words_padded(n: int, bits: int) -> int:
    return -(-n // (32 // bits))


def unpack_rows(packed: np.ndarray, n: int, bits: int, dense: bool, what: str) -> np.ndarray:
    """Unsigned values [rows, n] from int32 words [rows, words], LSB first. Refuses non-zero
    padding bits (a wrong layout or a corrupt tensor)."""
    rows, words = packed.shape
    w = packed.astype(np.int64) & 0xFFFFFFFF
    mask = (1 << bits) - 1
    if dense:
        # the bit stream of a row: word j holds bits [32j, 32j + 32)
        start = np.arange(n, dtype=np.int64) * bits
        wi, off = start // 32, start % 32
        vals = (w[:, wi] >> off) & mask
        spill = off + bits > 32
        if spill.any():
            nxt = np.minimum(wi + 1, words - 1)
            hi = (w[:, nxt] << (32 - off)) & mask
            vals = np.where(spill[None, :], vals | hi, vals)
        tail = n * bits - 32 * (words - 1)          # bits used in the last word
        pad_ok = tail >= 32 or not np.any(w[:, -1] >> tail)
    else:
        per = 32 // bits
        k = np.arange(n, dtype=np.int64)
        vals = (w[:, k // per] >> ((k % per) * bits)) & mask
        tail = (n - per * (words - 1)) * bits
        pad_ok = (not np.any(w >> (per * bits))) and (tail >= 32 or not np.any(w[:, -1] >> tail))
    if not pad_ok:
        raise CheckpointError(f"{what}: padding bits are not zero ("
                              f"{'dense' if dense else '32//bits-per-word'} layout, {bits}-bit, "
                              f"{n} values per line)")
    return vals


class PackedModule:
    """The quantized weight of one module of a compressed-tensors checkpoint."""

    def __init__(self, ck: Checkpoint, module: str, cfg: CompressedTensorsConfig, kind: str):
        self.ck, self.module, self.cfg = ck, module, cfg
        s = cfg.scheme_for(module, kind)
        if s is None:
            raise CheckpointError(f"{ck.label(module + '.weight_packed')}: packed weight of a "
                                  f"module no config group targets (or one the ignore list "
                                  f"names)")
        self.scheme = s

    def _name(self, p: str) -> str:
        return f"{self.module}.{p}"

    def _has(self, name: str) -> bool:
        return name in self.ck.where

    def _layout(self, words: int, n: int, bits: int, what: str) -> bool:
        """True for the dense layout, False for 32//bits per word."""
        d, p = _words_dense(n, bits), _words_padded(n, bits)
        if 32 % bits == 0:              # 2, 4, 8 bits: both layouts are the same
            if words != d:
                raise CheckpointError(f"{what}: {words} int32 words per line, {n} {bits}-bit "
                                      f"values need {d}")
            return True
        v = self.cfg.version
        by_version = None if v is None else v >= DENSE_SINCE
        if d == p == words:
            # the size fits both layouts: only the writer's version tells them apart
            if by_version is None:
                raise CheckpointError(
                    f"{what}: {n} {bits}-bit values in {words} int32 words fit both the dense "
                    f"layout (compressed-tensors >= 0.18) and the 32//bits-per-word one "
                    f"(0.17), and quantization_config records no version")
            return by_version
        if words == d and (by_version in (None, True)):
            return True
        if words == p and (by_version in (None, False)):
            return False
        raise CheckpointError(
            f"{what}: {words} int32 words per line for {n} {bits}-bit values: the dense layout "
            f"needs {d}, the 32//bits-per-word layout {p}"
            + (f", and compressed-tensors {self.cfg.version_text} writes the "
               f"{'dense' if by_version else '32//bits-per-word'} one" if v is not None else ""))

    def load(self) -> tuple[QuantizedWeight, list[str]]:
        ck, s = self.ck, self.scheme
        bits = s.bits
        what = ck.label(self._name("weight_packed"))
        for p in ("weight_scale", "weight_shape"):
            if not self._has(self._name(p)):
                raise CheckpointError(f"{what}: {self._name(p)} is missing")
        if ck.info(self._name("weight_packed")).dtype != "I32":
            raise CheckpointError(f"{what}: dtype {ck.info(self._name('weight_packed')).dtype}, "
                                  f"expected I32")
        packed = ck.read(self._name("weight_packed"))
        shape = ck.read(self._name("weight_shape"))
        if shape.dtype.kind not in "iu" or shape.shape != (2,) or shape.min() <= 0:
            raise CheckpointError(f"{ck.label(self._name('weight_shape'))}: must be two "
                                  f"positive integers [out, in], got {shape.tolist()}")
        N, K = int(shape[0]), int(shape[1])
        if packed.ndim != 2 or packed.shape[0] != N:
            raise CheckpointError(f"{what}: shape {list(packed.shape)} does not fit "
                                  f"weight_shape [{N}, {K}]")
        dense = self._layout(packed.shape[1], K, bits, what)
        off = 1 << (bits - 1)
        q = unpack_rows(packed, K, bits, dense, what) - off          # signed codes
        notes: list[str] = []
        if not dense:
            notes.append(f"{self.module}: {bits}-bit codes in the 32//bits-per-word layout of "
                         f"compressed-tensors {self.cfg.version_text or '< 0.18'}")
        sname = self._name("weight_scale")
        sinfo = ck.info(sname)
        if sinfo.dtype not in SCALE_TYPES:
            raise CheckpointError(f"{ck.label(sname)}: dtype {sinfo.dtype} is not a supported "
                                  f"scale type (F32, F16, BF16)")
        s_type = SCALE_TYPES[sinfo.dtype]
        sc = ck.read(sname)
        # per-element column -> scale column, and row -> scale row
        rows = np.arange(N)
        want: tuple[int, ...]
        if s.strategy == "group":
            group = cast(int, s.group_size)  # a positive int for this strategy (parse checks)
            G = -(-K // group)
            want = (N, G)
            cols = np.arange(K) // group
            src_block = group
        elif s.strategy == "channel":
            want, cols, src_block = (N, 1), np.zeros(K, np.int64), K
        elif s.strategy == "tensor":
            want, cols, src_block = (1,), np.zeros(K, np.int64), K
            rows = np.zeros(N, np.int64)
        else:
            bh, bw = s.block_structure  # type: ignore[misc]
            want = (-(-N // bh), -(-K // bw))
            cols, src_block = np.arange(K) // bw, bw
            rows = np.arange(N) // bh
        if s.strategy == "tensor" and sc.shape in ((), (1, 1)):
            sc = sc.reshape(1)
        if sc.shape != want:
            raise CheckpointError(f"{ck.label(sname)}: shape {list(sc.shape)}, the "
                                  f"{s.strategy} scheme of config group {s.group!r} needs "
                                  f"{list(want)} for weight_shape [{N}, {K}]")
        if s.strategy == "tensor":
            sc = sc.reshape(1, 1)
        gname = self._name("weight_g_idx")
        if self._has(gname):
            g = ck.read(gname)
            if g.dtype.kind not in "iu" or g.shape != (K,):
                raise CheckpointError(f"{ck.label(gname)}: must be {K} integers")
            if s.strategy != "group":
                raise CheckpointError(f"{ck.label(gname)}: activation reordering with the "
                                      f"{s.strategy} strategy")
            if g.min() < 0 or g.max() >= sc.shape[1]:
                raise CheckpointError(f"{ck.label(gname)}: group indices outside "
                                      f"[0, {sc.shape[1]})")
            if np.array_equal(g.astype(np.int64), cols):
                notes.append(f"{self.module}: weight_g_idx is the identity grouping (kept)")
            else:
                cols = g.astype(np.int64)
                src_block = 1
                notes.append(f"{self.module}: weight_g_idx (activation reordering) applied "
                             f"exactly: every stored block has one scale")
        s_el = sc[rows][:, cols]
        z_el = None
        zname = self._name("weight_zero_point")
        if s.symmetric:
            if self._has(zname):
                z = self._zero_points(zname, sc.shape, bits)
                if np.any(z):
                    raise CheckpointError(f"{ck.label(zname)}: non-zero zero points in the "
                                          f"symmetric scheme of config group {s.group!r}")
        else:
            if not self._has(zname):
                raise CheckpointError(f"{what}: the asymmetric scheme of config group "
                                      f"{s.group!r} needs {zname}")
            z = self._zero_points(zname, sc.shape, bits)
            z_el = z[rows][:, cols]
        lo, hi = quant_range(bits, True)
        declared = f"config group {s.group!r} ({bits}-bit {s.strategy})"
        try:
            # no ": " in the label, so that notes about many weights aggregate
            label = f"{self._name('weight_packed')} ({ck.where[self._name('weight_packed')].label})"
            qw, n2 = finish_quantized(q, np.ascontiguousarray(s_el), s_type, z_el, src_block,
                                      bits, True, lo, hi, label, declared)
        except ValueError as e:     # finish_quantized's refusal, named for this module
            if self._has(gname) and src_block == 1:
                raise CheckpointError(f"{ck.label(gname)}: activation reordering (weight_g_idx) "
                                      f"cannot be stored exactly: {e}") from None
            raise CheckpointError(str(e)) from None
        return qw, notes + n2

    def _zero_points(self, zname: str, sshape: tuple[int, ...], bits: int) -> np.ndarray:
        """Zero points of the scale's shape, signed. group/channel: int32 words packed along
        dim 0 like the codes; tensor/block (and older group/channel checkpoints): plain
        integers of the scale's shape."""
        ck, s = self.ck, self.scheme
        z = ck.read(zname)
        label = ck.label(zname)
        if z.dtype.kind not in "iu":
            raise CheckpointError(f"{label}: dtype {ck.info(zname).dtype} is not an integer "
                                  f"type")
        lo, hi = quant_range(bits, True)
        if s.strategy in ("group", "channel") and z.shape != sshape:
            # packed along dim 0 since compressed-tensors PR #296 (2025); before it, plain
            # integers of the scale's shape (the else branch)
            if ck.info(zname).dtype != "I32" or z.ndim != 2 or z.shape[1] != sshape[1]:
                raise CheckpointError(f"{label}: {ck.info(zname).dtype} {list(z.shape)}, "
                                      f"expected int32 words packed along dim 0 of "
                                      f"{list(sshape)}")
            dense = self._layout(z.shape[0], sshape[0], bits, label)
            z = unpack_rows(np.ascontiguousarray(z.T), sshape[0], bits, dense, label).T
            z = z - (1 << (bits - 1))
        else:
            if s.strategy == "tensor" and z.size == 1:
                z = z.reshape(sshape)
            if z.shape != sshape:
                raise CheckpointError(f"{label}: shape {list(z.shape)}, expected "
                                      f"{list(sshape)} (as the scale)")
        z = z.astype(np.int64)
        if z.size and (z.min() < lo or z.max() > hi):
            raise CheckpointError(f"{label}: zero points [{z.min()}, {z.max()}] outside the "
                                  f"{bits}-bit range [{lo}, {hi}]")
        return z
