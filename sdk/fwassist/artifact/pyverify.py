# SPDX-License-Identifier: Apache-2.0
"""A small, independent pure-Python reader and verifier of `.fwa` artifacts.

It follows docs/artifact-format.md §5 step by step with hashlib and the statuses of
``csrc/core/status.h`` (by name). It serves the artifact tools (inspect, diff, sbom) as their
reader, the tests as a second implementation next to the C++ loader, and the tools as their
verifier when ``fwassist.load_artifact`` is not available.

It is the second implementation that checks the first (the writer): every constant, cap and
rule below is taken from the spec, not imported from the writer or its canonical-JSON module,
so a mistake in one is caught by the other. It reaches the same verdict (status) as the C++
reader on every input: the checks run in the same order (tests/fuzz/differential.py).
"""

from __future__ import annotations

import bisect
import hashlib
import json
import mmap
import os
import re
import struct
from dataclasses import dataclass, field
from typing import Any, Optional, Union

__all__ = ["PyArtifactError", "VerifiedArtifact", "verify", "read_manifest", "packed_size",
           "HEADER", "MAGIC", "STATUSES"]

MAGIC = b"\x89FWA\r\n\x1a\n"
HEADER = struct.Struct("<8sHHIQQQQ32s48s")      # 128 bytes
assert HEADER.size == 128
VERSION = (1, 1)                    # the highest version read; 1.1 adds `generation`
MAX_MANIFEST = 16 << 20
MAX_TENSORS = 65536
MAX_BLOCKS = 65536
MAX_DIM = 1 << 31
MAX_RANK = 4
# §3.8: sizes the manifest declares.
MAX_TOKEN_ID = 1 << 21              # token ids lie in [0, MAX_TOKEN_ID)
MAX_VOCAB_ENTRIES = 1 << 21
MAX_MERGES = 1 << 21
MAX_ADDED_TOKENS = 65536
CONFIG_CAPS = (("vocab_size", 1 << 21), ("hidden_size", 1 << 20), ("num_hidden_layers", 4096),
               ("num_attention_heads", 4096), ("num_key_value_heads", 4096),
               ("head_dim", 4096), ("intermediate_size", 1 << 22),
               ("moe_intermediate_size", 1 << 22), ("num_experts", 65536),
               ("num_experts_per_tok", 65536), ("decoder_sparse_step", 4096),
               ("max_position_embeddings", 1 << 24))
# §3.9 (1.1): generation metadata.
MAX_EOS_IDS = 64
MAX_CHAT_TEMPLATE = 256 << 10       # UTF-8 bytes
GENERATION_KEYS = frozenset(("bos_token_id", "chat_template", "eos_token_ids", "pad_token_id",
                             "sources"))
GENERATION_SOURCES = frozenset(("chat_template.jinja", "generation_config.json",
                                "tokenizer_config.json"))
PAGE = 4096
ALIGN = 64
TOP_KEYS = frozenset(("format", "format_version", "requires", "data_length", "config",
                      "tokenizer", "tensors", "expert_blocks", "sections", "provenance",
                      "model_card", "sbom", "evidence"))
SECTION_KEYS = ("config", "tokenizer", "tensors", "expert_blocks", "provenance", "model_card",
                "sbom", "evidence")
# Keys a 1.1 manifest adds, at the top level and in `sections`.
KEYS_1_1 = ("generation",)
TENSOR_KEYS = frozenset(("name", "role", "layer", "expert", "dtype", "shape", "quant",
                         "offset", "length", "sha256"))
BLOCK_KEYS = frozenset(("layer", "expert", "offset", "length", "sha256"))
QUANT_KEYS = frozenset(("bits", "block", "zero_points", "scale"))
REQUIRES = {"endianness": "little", "kernel_layout": 1}
FLOAT_SIZES = {"f32": 4, "f16": 2, "bf16": 2}
_HEX64 = re.compile(r"[0-9a-f]{64}\Z")

# csrc/core/status.h, by value.
STATUSES = {
    0: "ok", 1: "invalid_argument", 10: "io_error", 11: "truncated", 12: "bad_magic",
    13: "unsupported_version", 14: "malformed", 15: "cap_exceeded", 16: "trailing_bytes",
    17: "out_of_bounds", 18: "overlap", 19: "nonzero_padding", 20: "digest_mismatch",
    21: "pin_mismatch", 22: "incompatible",
}


class PyArtifactError(Exception):
    """Verification failed: ``status`` is the status name of csrc/core/status.h."""

    def __init__(self, status: str, message: str):
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


def _fail(status: str, message: str) -> PyArtifactError:
    return PyArtifactError(status, message)


def _roundup(x: int, a: int) -> int:
    return -(-x // a) * a


def packed_size(N: int, K: int, bits: int, block: int, zero_points: bool, scale: str) -> int:
    """Bytes of the packed layout (docs/kernels.md §2), computed independently of the core."""
    n_tiles, k_chunks, n_blocks = -(-N // 16), -(-K // 32), -(-K // block)
    ssize = 2 if scale == "f16" else 4
    end = k_chunks * 64 * bits + n_blocks * 16 * ssize + (n_blocks * 16 if zero_points else 0)
    return n_tiles * _roundup(end, 64)


# ---- Canonical JSON (§3.1), checked independently of the writer's serializer.

_MAX_DEPTH = 64                 # arrays and objects nested (scalars do not count)
_MAX_STRING = 4 << 20           # UTF-8 bytes of one string, key or value, unescaped
_MAX_INT = 1 << 53
_PLAIN = re.compile(rb'[^"\\\x00-\x1f\x80-\xff]+')
_UTF8 = re.compile(rb"[\xc2-\xdf][\x80-\xbf]|\xe0[\xa0-\xbf][\x80-\xbf]"
                   rb"|[\xe1-\xec\xee\xef][\x80-\xbf]{2}|\xed[\x80-\x9f][\x80-\xbf]"
                   rb"|\xf0[\x90-\xbf][\x80-\xbf]{2}|[\xf1-\xf3][\x80-\xbf]{3}"
                   rb"|\xf4[\x80-\x8f][\x80-\xbf]{2}")
_SHORT_ESC = {ord('"'): 0x22, ord("\\"): 0x5C, ord("b"): 8, ord("f"): 12, ord("n"): 10,
              ord("r"): 13, ord("t"): 9}
_HEXL = b"0123456789abcdef"
_DIGITS = b"0123456789"


def _canon(value: Any) -> bytes:
    """The canonical bytes of a value already known to be canonical-compatible."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


_LONG_INT = re.compile(rb"[0-9]{16,}")


def _caps_ok(value: Any, raw: bytes) -> bool:
    """The caps and integer range of `value`, parsed from `raw`, a canonical document (the
    fast path's checks after the re-dump): container depth level by level; integers and
    string lengths only when `raw` could hold an offender at all."""
    ints = _LONG_INT.search(raw) is not None      # no run of 16 digits: every |int| < 2^53
    strs = len(raw) > _MAX_STRING                 # else no string is longer than the cap

    def scalar_ok(v: Any) -> bool:
        if ints and type(v) is int and not -_MAX_INT <= v <= _MAX_INT:
            return False
        return not (strs and type(v) is str and len(v) > _MAX_STRING // 4
                    and len(v.encode("utf-8")) > _MAX_STRING)

    level = [value] if isinstance(value, (dict, list)) else []
    if not level:
        return scalar_ok(value)
    depth = 0
    while level:
        depth += 1                                # the containers in `level` are this deep
        if depth > _MAX_DEPTH:
            return False
        below = []
        for c in level:
            if type(c) is dict:
                if strs and not all(scalar_ok(k) for k in c):
                    return False
                c = list(c.values())
            for v in c:
                if type(v) is dict or type(v) is list:
                    below.append(v)
                elif (ints or strs) and not scalar_ok(v):
                    return False
        level = below
    return True


def _scan_string(raw: bytes, pos: int) -> tuple[int, bytes]:
    """The string literal at raw[pos] ('"'): (position after it, unescaped bytes)."""
    start, p, n = pos, pos + 1, len(raw)
    out = bytearray()
    while True:
        if p >= n:
            raise _fail("malformed", f"manifest byte {start}: unterminated string")
        m = _PLAIN.match(raw, p)
        if m:
            out += m.group()
            p = m.end()
        else:
            c = raw[p]
            if c == 0x22:
                return p + 1, bytes(out)
            if c == 0x5C:
                if p + 1 >= n:
                    raise _fail("malformed", f"manifest byte {start}: unterminated string")
                e = raw[p + 1]
                if e in _SHORT_ESC:
                    out.append(_SHORT_ESC[e])
                    p += 2
                elif e == ord("u"):
                    h = raw[p + 2:p + 6]
                    if len(h) < 4 or any(x not in _HEXL for x in h):
                        raise _fail("malformed", f"manifest byte {p}: \\u escape needs 4 "
                                                 f"lowercase hex digits")
                    v = int(h, 16)
                    if v >= 0x20 or v in (8, 9, 10, 12, 13):
                        raise _fail("malformed", f"manifest byte {p}: non-canonical \\u escape")
                    out.append(v)
                    p += 6
                else:
                    raise _fail("malformed", f"manifest byte {p}: invalid or non-canonical "
                                             f"escape")
            elif c < 0x20:
                raise _fail("malformed", f"manifest byte {p}: unescaped control character")
            else:
                u = _UTF8.match(raw, p)
                if not u:
                    raise _fail("malformed", f"manifest byte {p}: invalid UTF-8 in a string")
                out += u.group()
                p = u.end()
        if len(out) > _MAX_STRING:
            raise _fail("cap_exceeded", f"manifest byte {start}: string longer than the cap "
                                        f"of {_MAX_STRING} bytes")


def _scan_number(raw: bytes, pos: int) -> int:
    p, n = pos, len(raw)
    neg = raw[p] == 0x2D
    if neg:
        p += 1
    if p >= n or raw[p] not in _DIGITS:
        raise _fail("malformed", f"manifest byte {pos}: invalid number")
    if raw[p] == 0x30:
        p += 1
        if p < n and raw[p] in _DIGITS:
            raise _fail("malformed", f"manifest byte {pos}: number with a leading zero")
        if neg:
            raise _fail("malformed", f"manifest byte {pos}: -0 is not canonical")
    else:
        q = p
        while q < n and raw[q] in _DIGITS:
            q += 1
        if q - p > 16 or int(raw[p:q]) > _MAX_INT:
            raise _fail("malformed", f"manifest byte {pos}: integer outside [-2^53, 2^53]")
        p = q
    if p < n and raw[p] in b".eE":
        raise _fail("malformed", f"manifest byte {pos}: non-integer number")
    return p


def _scan(raw: bytes) -> None:
    """Finds the first departure from the canonical form in document order, as a one-pass
    reader meets it (so a cap and a syntax error get the same precedence in every reader);
    returns if there is none."""
    n, p = len(raw), 0
    stack: list[list[Any]] = []          # [is_object, previous key (unescaped) or None]
    state = "value"
    while True:
        if state == "key":
            if p >= n or raw[p] != 0x22:
                raise _fail("malformed", f"manifest byte {p}: expected a key")
            kpos = p
            p, key = _scan_string(raw, p)
            prev = stack[-1][1]
            if prev is not None and key <= prev:
                what = "duplicate key" if key == prev else "object keys not sorted"
                raise _fail("malformed", f"manifest byte {kpos}: {what}")
            stack[-1][1] = key
            if p >= n or raw[p] != 0x3A:
                raise _fail("malformed", f"manifest byte {p}: expected ':'")
            p += 1
            state = "value"
            continue
        if state == "value":
            if p >= n:
                raise _fail("malformed", f"manifest byte {p}: unexpected end")
            c = raw[p]
            if c in b"{[":
                if len(stack) >= _MAX_DEPTH:
                    raise _fail("cap_exceeded", f"manifest byte {p}: nesting deeper than the "
                                                f"cap of {_MAX_DEPTH}")
                stack.append([c == 0x7B, None])
                p += 1
                if p < n and raw[p] == (0x7D if c == 0x7B else 0x5D):
                    state = "after"
                else:
                    state = "key" if c == 0x7B else "value"
                continue
            if c == 0x22:
                p = _scan_string(raw, p)[0]
            elif c == 0x2D or c in _DIGITS:
                p = _scan_number(raw, p)
            elif raw.startswith(b"true", p) or raw.startswith(b"null", p):
                p += 4
            elif raw.startswith(b"false", p):
                p += 5
            else:
                raise _fail("malformed", f"manifest byte {p}: unexpected character")
            state = "after"
            continue
        if not stack:
            if p != n:
                raise _fail("malformed", f"manifest byte {p}: data after the top-level value")
            return
        if p >= n:
            raise _fail("malformed", f"manifest byte {p}: unclosed container")
        obj = stack[-1][0]
        if raw[p] == (0x7D if obj else 0x5D):
            stack.pop()
            p += 1
        elif raw[p] == 0x2C:
            p += 1
            state = "key" if obj else "value"
        else:
            raise _fail("malformed", f"manifest byte {p}: expected ',' or a closing bracket")


def _parse_manifest(raw: bytes) -> Any:
    """The manifest's value, if it is canonical JSON within the caps; else PyArtifactError
    with the first departure in document order. Fast path: the json module, a re-dump that
    must give the same bytes, and a walk for the caps; the scanner names the failure."""
    try:
        def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
            obj = dict(items)
            if len(obj) != len(items):
                raise ValueError("duplicate key")
            return obj

        def no_float(s: str) -> Any:
            raise ValueError("non-integer number")

        value = json.loads(raw.decode("utf-8"), object_pairs_hook=pairs, parse_float=no_float,
                           parse_constant=no_float)
        if _canon(value) == raw and _caps_ok(value, raw):
            return value
    except (ValueError, RecursionError):
        pass
    _scan(raw)
    raise _fail("malformed", "manifest is not in canonical form")


@dataclass
class VerifiedArtifact:
    """An artifact whose header and manifest were checked (and, after :func:`verify`, every
    byte, or every byte outside the expert blocks when ``lazy``)."""

    path: str
    pin: str
    manifest: dict[str, Any]
    data_offset: int
    file_length: int
    manifest_length: int
    lazy: bool = False
    verified_blocks: set[tuple[int, int]] = field(default_factory=set)
    _blocks: Optional[dict[tuple[int, int], dict[str, Any]]] = field(
        default=None, repr=False, compare=False)
    _members: Optional[dict[tuple[int, int], list[dict[str, Any]]]] = field(
        default=None, repr=False, compare=False)
    _by_name: Optional[dict[str, dict[str, Any]]] = field(default=None, repr=False,
                                                         compare=False)

    @property
    def tensors(self) -> list[dict[str, Any]]:
        tensors: list[dict[str, Any]] = self.manifest["tensors"]
        return tensors

    def tensor(self, name: str) -> dict[str, Any]:
        if self._by_name is None:
            self._by_name = {t["name"]: t for t in self.manifest["tensors"]}
        return self._by_name[name]

    def read(self, offset: int, length: int) -> bytes:
        """``length`` bytes at ``offset`` from the data region start."""
        with open(self.path, "rb") as f:
            f.seek(self.data_offset + offset)
            b = f.read(length)
        if len(b) != length:
            raise _fail("truncated", f"{self.path}: short read")
        return b

    def tensor_bytes(self, name: str) -> bytes:
        t = self.tensor(name)
        b = self.read(t["offset"], t["length"])
        if hashlib.sha256(b).hexdigest() != t["sha256"]:
            raise _fail("digest_mismatch", f"tensor {name} changed since verification")
        return b

    def verify_expert(self, layer: int, expert: int) -> None:
        """Checks one expert block (digest, its tensors' digests, zero padding): the lazy
        reader's first-use check."""
        with _Mapped(self.path) as mv:
            _verify_block(self, mv, layer, expert)


class _Mapped:
    def __init__(self, path: str):
        self.path = path

    def __enter__(self) -> memoryview:
        self.f = open(self.path, "rb")
        size = os.fstat(self.f.fileno()).st_size
        self.mm = mmap.mmap(self.f.fileno(), 0, access=mmap.ACCESS_READ) if size else None
        self.mv = memoryview(self.mm) if self.mm is not None else memoryview(b"")
        return self.mv

    def __exit__(self, *exc: Any) -> None:
        self.mv.release()
        if self.mm is not None:
            self.mm.close()
        self.f.close()


def _check_header(mv: memoryview, size: int,
                  pin: Optional[str]) -> tuple[int, int, int, int, bytes]:
    if size < HEADER.size:
        raise _fail("truncated", f"file of {size} bytes is shorter than the 128-byte header")
    (magic, vmaj, vmin, flags, mlen, doff, dlen, flen, digest,
     reserved) = HEADER.unpack(mv[:HEADER.size])
    if magic != MAGIC:
        raise _fail("bad_magic", "not a fwassist artifact")
    if vmaj != VERSION[0] or vmin > VERSION[1]:
        raise _fail("unsupported_version", f"format version {vmaj}.{vmin}")
    if flags != 0 or reserved != bytes(48):
        raise _fail("malformed", "non-zero header flags or reserved bytes")
    if mlen > MAX_MANIFEST:
        raise _fail("cap_exceeded", f"manifest of {mlen} bytes exceeds 16 MiB")
    if mlen < 2:
        raise _fail("malformed", f"manifest_length {mlen} < 2")
    if doff != _roundup(HEADER.size + mlen, PAGE):
        raise _fail("malformed", f"data_offset {doff} != roundup(128 + {mlen}, 4096)")
    if dlen % ALIGN:
        raise _fail("malformed", f"data_length {dlen} is not a multiple of 64")
    if flen != doff + dlen:
        raise _fail("malformed", f"file_length {flen} != data_offset + data_length")
    if size < flen:
        raise _fail("truncated", f"file of {size} bytes, header declares {flen}")
    if size > flen:
        raise _fail("trailing_bytes", f"{size - flen} bytes after file_length {flen}")
    raw = bytes(mv[HEADER.size:HEADER.size + mlen])
    root = hashlib.sha256(raw).hexdigest()
    if pin is not None and pin != "sha256:" + root:
        raise _fail("pin_mismatch", f"root digest sha256:{root} is not the pin {pin}")
    if digest != bytes.fromhex(root):
        raise _fail("digest_mismatch", "manifest digest differs from the header")
    return vmin, mlen, doff, dlen, raw


def _check_pin_syntax(pin: Optional[str]) -> None:
    if pin is not None and (not isinstance(pin, str) or not pin.startswith("sha256:")
                            or not _HEX64.match(pin[7:])):
        raise _fail("invalid_argument", f"a pin is 'sha256:' + 64 lowercase hex digits, got "
                                        f"{pin!r}")


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _index(v: Any) -> bool:               # an integer in [0, 2^31)
    return _int(v) and 0 <= v < MAX_DIM


def _u64(v: Any) -> bool:
    return _int(v) and v >= 0


def _digest(v: Any) -> bool:
    return isinstance(v, str) and _HEX64.match(v) is not None


def _type(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    return {int: "integer", str: "string", list: "array", dict: "object"}.get(type(v), "?")


def _exact_keys(obj: dict[str, Any], keys: frozenset[str], where: str) -> None:
    for k in obj:                               # document (= sorted) order
        if k not in keys:
            raise _fail("malformed", f"{where}: unknown key {k!r}")
    for k in sorted(keys):
        if k not in obj:
            raise _fail("malformed", f"{where}: missing key {k!r}")


def _check_declared_sizes(m: dict[str, Any]) -> None:
    """§3.8, in the spec's order: config caps, then the tokenizer's."""
    config = m["config"]
    v: Any
    for key, cap in CONFIG_CAPS:
        v = config.get(key)
        if _int(v) and v > cap:
            raise _fail("cap_exceeded", f"config.{key} = {v} exceeds the cap of {cap}")
    tok = m["tokenizer"]
    if not isinstance(tok, dict):
        return
    model = tok.get("model")
    vocab = model.get("vocab") if isinstance(model, dict) else None
    if isinstance(vocab, dict):
        if len(vocab) > MAX_VOCAB_ENTRIES:
            raise _fail("cap_exceeded", f"tokenizer.model.vocab has {len(vocab)} entries, the "
                                        f"cap is {MAX_VOCAB_ENTRIES}")
        for k, v in vocab.items():
            if _int(v) and v >= MAX_TOKEN_ID:
                raise _fail("cap_exceeded", f"tokenizer.model.vocab holds token id {v} "
                                            f"({k!r}), ids must be below {MAX_TOKEN_ID}")
    merges = model.get("merges") if isinstance(model, dict) else None
    if isinstance(merges, list) and len(merges) > MAX_MERGES:
        raise _fail("cap_exceeded", f"tokenizer.model.merges has {len(merges)} entries, the "
                                    f"cap is {MAX_MERGES}")
    added = tok.get("added_tokens")
    if isinstance(added, list):
        if len(added) > MAX_ADDED_TOKENS:
            raise _fail("cap_exceeded", f"tokenizer.added_tokens has {len(added)} entries, the "
                                        f"cap is {MAX_ADDED_TOKENS}")
        for a in added:
            v = a.get("id") if isinstance(a, dict) else None
            if _int(v) and v >= MAX_TOKEN_ID:
                raise _fail("cap_exceeded", f"tokenizer.added_tokens holds token id {v}, ids "
                                            f"must be below {MAX_TOKEN_ID}")


def _check_generation(m: dict[str, Any]) -> None:
    """§3.9, in its order."""
    g = m["generation"]
    if not isinstance(g, dict):
        raise _fail("malformed", f"manifest: generation must be an object, got {_type(g)}")
    _exact_keys(g, GENERATION_KEYS, "manifest: generation")
    vocab = m["config"].get("vocab_size")
    if not _int(vocab):
        raise _fail("malformed", "manifest: generation needs config.vocab_size, an integer, to "
                                 "check its token ids")

    def token_id(v: Any, what: str) -> None:
        if not _int(v):
            raise _fail("malformed", f"manifest: generation.{what} must be an integer, got "
                                     f"{_type(v)}")
        if not 0 <= v < vocab:
            raise _fail("malformed", f"manifest: generation.{what} = {v} is outside "
                                     f"[0, vocab_size {vocab})")

    if g["bos_token_id"] is not None:
        token_id(g["bos_token_id"], "bos_token_id")
    t = g["chat_template"]
    if t is not None:
        if not isinstance(t, str):
            raise _fail("malformed", f"manifest: generation.chat_template must be a string or "
                                     f"null, got {_type(t)}")
        if not t:
            raise _fail("malformed", "manifest: generation.chat_template is empty (null "
                                     "states no template)")
        n = len(t.encode("utf-8"))
        if n > MAX_CHAT_TEMPLATE:
            raise _fail("cap_exceeded", f"manifest: generation.chat_template has {n} bytes, "
                                        f"the cap is {MAX_CHAT_TEMPLATE}")
    eos = g["eos_token_ids"]
    if not isinstance(eos, list):
        raise _fail("malformed", f"manifest: generation.eos_token_ids must be an array, got "
                                 f"{_type(eos)}")
    if not eos:
        raise _fail("malformed", "manifest: generation.eos_token_ids is empty")
    if len(eos) > MAX_EOS_IDS:
        raise _fail("cap_exceeded", f"manifest: generation.eos_token_ids has {len(eos)} "
                                    f"entries, the cap is {MAX_EOS_IDS}")
    prev = -1
    for i, v in enumerate(eos):
        token_id(v, f"eos_token_ids[{i}]")
        if v <= prev:
            raise _fail("malformed", f"manifest: generation.eos_token_ids must be strictly "
                                     f"increasing, [{i}] = {v} follows {prev}")
        prev = v
    if g["pad_token_id"] is not None:
        token_id(g["pad_token_id"], "pad_token_id")
    src = g["sources"]
    if not isinstance(src, dict):
        raise _fail("malformed", f"manifest: generation.sources must be an object, got "
                                 f"{_type(src)}")
    _exact_keys(src, GENERATION_SOURCES, "manifest: generation.sources")
    for k in sorted(GENERATION_SOURCES):
        if src[k] is not None and not _digest(src[k]):
            raise _fail("malformed", f"manifest: generation.sources[{k!r}] must be null or 64 "
                                     f"lowercase hex digits")


def _check_manifest(m: Any, dlen: int, minor: int) -> None:
    """§3.2-3.3, 3.6, 3.8 in the order of §5."""
    if not isinstance(m, dict):
        raise _fail("malformed", "manifest: the top-level value must be an object")
    if "requires" not in m:
        raise _fail("malformed", "manifest: missing key 'requires'")
    req = m["requires"]
    if not isinstance(req, dict):
        raise _fail("malformed", "manifest: 'requires' must be an object")
    for k, v in req.items():
        if k == "endianness":
            if not isinstance(v, str):
                raise _fail("malformed", "manifest: requires.endianness must be a string")
            if v != REQUIRES[k]:
                raise _fail("incompatible", f"manifest: requires endianness {v!r}, this reader "
                                            f"implements 'little'")
        elif k == "kernel_layout":
            if not _int(v):
                raise _fail("malformed", "manifest: requires.kernel_layout must be an integer")
            if v != REQUIRES[k]:
                raise _fail("incompatible", f"manifest: requires kernel_layout {v}, this "
                                            f"reader implements 1")
        else:
            raise _fail("incompatible", f"manifest: requires {k!r}, which this reader does "
                                        f"not implement")
    for k in REQUIRES:
        if k not in req:
            raise _fail("malformed", f"manifest: requires.{k} is missing")
    _exact_keys(m, TOP_KEYS | frozenset(KEYS_1_1 if minor >= 1 else ()), "manifest")
    if m["format"] != "fwassist.artifact":
        raise _fail("malformed", f"manifest: format {m['format']!r}")
    fv = m["format_version"]
    if not (isinstance(fv, list) and len(fv) == 2 and _int(fv[0]) and _int(fv[1])
            and fv[0] == VERSION[0] and fv[1] == minor):
        raise _fail("malformed", f"manifest: format_version {fv!r}, the header says "
                                 f"[{VERSION[0]},{minor}]")
    if not _u64(m["data_length"]) or m["data_length"] != dlen:
        raise _fail("malformed", f"manifest: data_length {m['data_length']!r}, the header "
                                 f"says {dlen}")
    for k in ("config", "provenance", "sbom", "evidence", "model_card"):
        if not isinstance(m[k], dict):
            raise _fail("malformed", f"manifest: {k} must be an object, got {_type(m[k])}")
    if not isinstance(m["config"].get("architecture"), str):
        raise _fail("malformed", "manifest: config.architecture must be a string")
    if m["tokenizer"] is not None and not isinstance(m["tokenizer"], dict):
        raise _fail("malformed", f"manifest: tokenizer must be an object or null, got "
                                 f"{_type(m['tokenizer'])}")
    lim = m["model_card"].get("known_limitations")
    if (not isinstance(lim, list) or not lim
            or not all(isinstance(s, str) and s for s in lim)):
        raise _fail("malformed", "manifest: model_card.known_limitations must be a non-empty "
                                 "array of non-empty strings")
    _check_declared_sizes(m)
    section_keys = SECTION_KEYS + (KEYS_1_1 if minor >= 1 else ())
    if minor >= 1:
        _check_generation(m)
    secs = m["sections"]
    if not isinstance(secs, dict):
        raise _fail("malformed", "manifest: sections must be an object")
    _exact_keys(secs, frozenset(section_keys), "manifest: sections")
    for k in sorted(section_keys):
        if not _digest(secs[k]):
            raise _fail("malformed", f"manifest: sections.{k} must be 64 lowercase hex digits")
        if secs[k] != hashlib.sha256(_canon(m[k])).hexdigest():
            raise _fail("digest_mismatch", f"sections.{k} is not the digest of {k}")


def _check_tensors(m: dict[str, Any], dlen: int) -> None:
    ts = m["tensors"]
    if not isinstance(ts, list):
        raise _fail("malformed", "manifest: tensors must be an array")
    if len(ts) > MAX_TENSORS:
        raise _fail("cap_exceeded", f"manifest: {len(ts)} tensors, the cap is {MAX_TENSORS}")
    prev: Optional[dict[str, Any]] = None
    for i, t in enumerate(ts):
        where = f"tensor #{i}"
        if not isinstance(t, dict):
            raise _fail("malformed", f"{where}: must be an object")
        _exact_keys(t, TENSOR_KEYS, where)
        name = t["name"]
        if not isinstance(name, str) or not name:
            raise _fail("malformed", f"{where}: name must be a non-empty string")
        where = f"tensor {name!r}"
        if not isinstance(t["role"], str) or not t["role"]:
            raise _fail("malformed", f"{where}: role must be a non-empty string")
        for k in ("layer", "expert"):
            if t[k] is not None and not _index(t[k]):
                raise _fail("malformed", f"{where}: {k} must be null or an integer in "
                                         f"[0, 2^31), got {t[k]!r}")
        if t["expert"] is not None and t["layer"] is None:
            raise _fail("malformed", f"{where}: an expert tensor needs a layer")
        dtype = t["dtype"]
        if not isinstance(dtype, str) or (dtype != "packed" and dtype not in FLOAT_SIZES):
            raise _fail("malformed", f"{where}: dtype {dtype!r}")
        shape = t["shape"]
        if not isinstance(shape, list):
            raise _fail("malformed", f"{where}: shape must be an array")
        if not shape:
            raise _fail("malformed", f"{where}: shape is empty (rank 0)")
        if len(shape) > MAX_RANK:
            raise _fail("cap_exceeded", f"{where}: rank {len(shape)} exceeds the cap of 4")
        for r, d in enumerate(shape):
            if not _int(d):
                raise _fail("malformed", f"{where}: shape holds a non-integer")
            if d < 1:
                raise _fail("malformed", f"{where}: dimension {r} is {d}, must be >= 1")
            if d > MAX_DIM:
                raise _fail("cap_exceeded", f"{where}: dimension {r} is {d}, the cap is 2^31")
        q = t["quant"]
        if dtype == "packed":
            if len(shape) != 2:
                raise _fail("malformed", f"{where}: a packed tensor has shape [N, K]")
            if not isinstance(q, dict):
                raise _fail("malformed", f"{where}: quant must be an object for dtype packed")
            _exact_keys(q, QUANT_KEYS, f"{where}: quant")
            if not (_int(q["bits"]) and _int(q["block"]) and isinstance(q["zero_points"], bool)
                    and isinstance(q["scale"], str)):
                raise _fail("malformed", f"{where}: quant needs integer bits and block, "
                                         f"boolean zero_points and a string scale")
            if q["scale"] not in ("f16", "f32"):
                raise _fail("incompatible", f"{where}: quant scale {q['scale']!r}")
            if q["bits"] not in (2, 3, 4, 8) or q["block"] not in (32, 64, 128):
                raise _fail("incompatible", f"{where}: quant bits={q['bits']} "
                                            f"block={q['block']} is not supported")
            want = packed_size(shape[0], shape[1], q["bits"], q["block"], q["zero_points"],
                               q["scale"])
        else:
            if q is not None:
                raise _fail("malformed", f"{where}: quant must be null for dtype {dtype}")
            want = FLOAT_SIZES[dtype]
            for d in shape:
                want *= d
            if want >= 1 << 64:
                raise _fail("malformed", f"{where}: byte size of the shape overflows")
        if not _u64(t["offset"]) or not _u64(t["length"]):
            raise _fail("malformed", f"{where}: offset and length must be non-negative "
                                     f"integers")
        if t["length"] != want:
            raise _fail("malformed", f"{where}: length {t['length']} != {want} for its dtype, "
                                     f"shape and quant")
        if t["offset"] % ALIGN:
            raise _fail("malformed", f"{where}: offset {t['offset']} is not a multiple of 64")
        if t["offset"] + t["length"] > dlen:
            raise _fail("out_of_bounds", f"{where} lies outside the data region")
        if not _digest(t["sha256"]):
            raise _fail("malformed", f"{where}: sha256 must be 64 lowercase hex digits")
        if prev is not None:
            if t["offset"] < prev["offset"]:
                raise _fail("malformed", f"{where}: tensors are not sorted by offset")
            if t["offset"] < prev["offset"] + prev["length"]:
                raise _fail("overlap", f"{where} overlaps tensor {prev['name']!r}")
        prev = t
    names: set[str] = set()
    for t in sorted(ts, key=lambda t: t["name"].encode("utf-8")):
        if t["name"] in names:
            raise _fail("malformed", f"tensor {t['name']!r}: duplicate name")
        names.add(t["name"])


def _check_blocks(m: dict[str, Any], dlen: int) -> None:
    bs = m["expert_blocks"]
    if not isinstance(bs, list):
        raise _fail("malformed", "manifest: expert_blocks must be an array")
    if len(bs) > MAX_BLOCKS:
        raise _fail("cap_exceeded", f"manifest: {len(bs)} expert blocks, the cap is "
                                    f"{MAX_BLOCKS}")
    prev: Optional[dict[str, Any]] = None
    for i, b in enumerate(bs):
        where = f"expert block #{i}"
        if not isinstance(b, dict):
            raise _fail("malformed", f"{where}: must be an object")
        _exact_keys(b, BLOCK_KEYS, where)
        if not _index(b["layer"]) or not _index(b["expert"]):
            raise _fail("malformed", f"{where}: layer and expert must be integers in [0, 2^31)")
        where = f"expert block ({b['layer']}, {b['expert']})"
        if not _u64(b["offset"]) or not _u64(b["length"]):
            raise _fail("malformed", f"{where}: offset and length must be non-negative "
                                     f"integers")
        if b["offset"] % PAGE or b["length"] % PAGE or b["length"] == 0:
            raise _fail("malformed", f"{where}: offset and length must be multiples of 4096, "
                                     f"the length non-zero")
        if b["offset"] + b["length"] > dlen:
            raise _fail("out_of_bounds", f"{where} lies outside the data region")
        if not _digest(b["sha256"]):
            raise _fail("malformed", f"{where}: sha256 must be 64 lowercase hex digits")
        if prev is not None:
            if b["offset"] < prev["offset"]:
                raise _fail("malformed", f"{where}: expert blocks are not sorted by offset")
            if b["offset"] < prev["offset"] + prev["length"]:
                raise _fail("overlap", f"{where} overlaps the previous block")
        prev = b
    seen: set[tuple[int, int]] = set()
    for b in sorted(bs, key=lambda b: (b["layer"], b["expert"])):
        key = (b["layer"], b["expert"])
        if key in seen:
            raise _fail("malformed", f"expert block {key}: listed twice")
        seen.add(key)


def _check_layout(m: dict[str, Any]) -> None:
    """Every expert tensor inside its own block; no other tensor touches a block (§3.5)."""
    blocks = {(b["layer"], b["expert"]): b for b in m["expert_blocks"]}
    starts = [b["offset"] for b in m["expert_blocks"]]      # sorted, non-overlapping
    for t in m["tensors"]:
        lo, hi = t["offset"], t["offset"] + t["length"]
        if t["expert"] is not None:
            b = blocks.get((t["layer"], t["expert"]))
            if b is None:
                raise _fail("malformed", f"tensor {t['name']!r} ({t['layer']}, {t['expert']}) "
                                         f"has no expert block")
            if lo < b["offset"] or hi > b["offset"] + b["length"]:
                raise _fail("out_of_bounds", f"tensor {t['name']!r} is not inside its expert "
                                             f"block")
        else:
            i = bisect.bisect_left(starts, hi) - 1          # the last block starting < hi
            if i >= 0:
                b = m["expert_blocks"][i]
                if b["offset"] + b["length"] > lo:
                    raise _fail("overlap", f"tensor {t['name']!r} overlaps expert block "
                                           f"({b['layer']}, {b['expert']})")


def _zero(mv: memoryview, lo: int, hi: int, what: str) -> None:
    step = 1 << 22
    for a in range(lo, hi, step):
        chunk = bytes(mv[a:min(hi, a + step)])
        if chunk.count(0) != len(chunk):
            raise _fail("nonzero_padding", f"non-zero byte in {what} at file offset "
                                           f"{a + len(chunk) - len(chunk.lstrip(bytes(1)))}")


def _sha(mv: memoryview, lo: int, hi: int) -> str:
    h = hashlib.sha256()
    step = 1 << 24
    for a in range(lo, hi, step):
        h.update(mv[a:min(hi, a + step)])
    return h.hexdigest()


def _expert_index(art: VerifiedArtifact) -> tuple[dict[tuple[int, int], dict[str, Any]],
                                                  dict[tuple[int, int], list[dict[str, Any]]]]:
    """(layer, expert) -> block, and -> its tensors sorted by offset (built once)."""
    if art._blocks is None or art._members is None:
        members: dict[tuple[int, int], list[dict[str, Any]]] = {}
        for t in art.manifest["tensors"]:                  # sorted by offset
            if t["expert"] is not None:
                members.setdefault((t["layer"], t["expert"]), []).append(t)
        art._blocks = {(b["layer"], b["expert"]): b for b in art.manifest["expert_blocks"]}
        art._members = members
    return art._blocks, art._members


def _find_block(art: VerifiedArtifact, layer: int, expert: int) -> dict[str, Any]:
    b = _expert_index(art)[0].get((layer, expert))
    if b is None:
        raise KeyError(f"no expert block ({layer}, {expert})")
    return b


def _members(art: VerifiedArtifact, layer: int, expert: int) -> list[dict[str, Any]]:
    return _expert_index(art)[1].get((layer, expert), [])


def _block_padding(art: VerifiedArtifact, mv: memoryview, layer: int, expert: int) -> None:
    b, base = _find_block(art, layer, expert), art.data_offset
    pos = base + b["offset"]
    for t in _members(art, layer, expert):       # sorted by offset, as the table is
        _zero(mv, pos, base + t["offset"], f"padding of expert block ({layer}, {expert})")
        pos = base + t["offset"] + t["length"]
    _zero(mv, pos, base + b["offset"] + b["length"],
          f"padding of expert block ({layer}, {expert})")


def _block_digests(art: VerifiedArtifact, mv: memoryview, layer: int, expert: int) -> None:
    b, base = _find_block(art, layer, expert), art.data_offset
    if _sha(mv, base + b["offset"], base + b["offset"] + b["length"]) != b["sha256"]:
        raise _fail("digest_mismatch", f"expert block ({layer}, {expert})")
    for t in _members(art, layer, expert):
        if _sha(mv, base + t["offset"], base + t["offset"] + t["length"]) != t["sha256"]:
            raise _fail("digest_mismatch", f"tensor {t['name']}")


def _verify_block(art: VerifiedArtifact, mv: memoryview, layer: int, expert: int) -> None:
    _block_padding(art, mv, layer, expert)
    _block_digests(art, mv, layer, expert)
    art.verified_blocks.add((layer, expert))


def _open(path: Union[str, "os.PathLike[str]"], pin: Optional[str], mv: memoryview,
          size: int) -> VerifiedArtifact:
    _check_pin_syntax(pin)
    minor, mlen, doff, dlen, raw = _check_header(mv, size, pin)
    m = _parse_manifest(raw)
    _check_manifest(m, dlen, minor)
    _check_tensors(m, dlen)
    _check_blocks(m, dlen)
    _check_layout(m)
    return VerifiedArtifact(os.fspath(path), "sha256:" + hashlib.sha256(raw).hexdigest(), m,
                            doff, doff + dlen, mlen)


def read_manifest(path: Union[str, "os.PathLike[str]"], pin: Optional[str] = None) -> VerifiedArtifact:
    """Header, root digest (and pin), manifest and table checks only: no data is read."""
    try:
        with _Mapped(os.fspath(path)) as mv:
            return _open(path, pin, mv, len(mv))
    except OSError as e:
        raise _fail("io_error", f"{path}: {e.strerror or e}") from None


def verify(path: Union[str, "os.PathLike[str]"], pin: Optional[str] = None,
           lazy: bool = False) -> VerifiedArtifact:
    """Every check of §5, in its order; raises :class:`PyArtifactError` on the first failure.
    ``lazy``: expert blocks are left for :meth:`VerifiedArtifact.verify_expert`."""
    try:
        with _Mapped(os.fspath(path)) as mv:
            art = _open(path, pin, mv, len(mv))
            art.lazy = lazy
            m, base = art.manifest, art.data_offset
            _zero(mv, HEADER.size + art.manifest_length, base, "the gap before the data region")
            # Padding outside expert blocks (inside them: with the block).
            regions = sorted([(t["offset"], t["offset"] + t["length"]) for t in m["tensors"]
                              if t["expert"] is None]
                             + [(b["offset"], b["offset"] + b["length"])
                                for b in m["expert_blocks"]])
            pos = 0
            for lo, hi in regions:
                _zero(mv, base + pos, base + lo, "padding")
                pos = max(pos, hi)
            _zero(mv, base + pos, art.file_length, "padding")
            blocks = [] if lazy else [(b["layer"], b["expert"]) for b in m["expert_blocks"]]
            for key in blocks:
                _block_padding(art, mv, *key)
            for t in m["tensors"]:
                if t["expert"] is None:
                    lo = base + t["offset"]
                    if _sha(mv, lo, lo + t["length"]) != t["sha256"]:
                        raise _fail("digest_mismatch", f"tensor {t['name']}")
            for key in blocks:
                _block_digests(art, mv, *key)
                art.verified_blocks.add(key)
            return art
    except OSError as e:
        raise _fail("io_error", f"{path}: {e.strerror or e}") from None
