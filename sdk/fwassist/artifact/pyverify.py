"""A small, independent pure-Python reader and verifier of `.fwa` artifacts.

It follows docs/artifact-format.md §5 step by step with hashlib and the statuses of
``csrc/core/status.h`` (by name). It serves the artifact tools (inspect, diff, sbom) as their
reader, the tests as a second implementation next to the C++ loader, and the tools as their
verifier when ``fwassist.load_artifact`` is not available.
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

from . import canonical

__all__ = ["PyArtifactError", "VerifiedArtifact", "verify", "read_manifest", "packed_size",
           "HEADER", "MAGIC", "STATUSES"]

MAGIC = b"\x89FWA\r\n\x1a\n"
HEADER = struct.Struct("<8sHHIQQQQ32s48s")      # 128 bytes
assert HEADER.size == 128
VERSION = (1, 0)
MAX_MANIFEST = 16 << 20
MAX_TENSORS = 65536
MAX_BLOCKS = 65536
MAX_DIM = 1 << 31
PAGE = 4096
ALIGN = 64
TOP_KEYS = frozenset(("format", "format_version", "requires", "data_length", "config",
                      "tokenizer", "tensors", "expert_blocks", "sections", "provenance",
                      "model_card", "sbom", "evidence"))
SECTION_KEYS = ("config", "tokenizer", "tensors", "expert_blocks", "provenance", "model_card",
                "sbom", "evidence")
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


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _parse_manifest(raw: bytes) -> dict[str, Any]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _fail("malformed", f"manifest is not valid UTF-8: {e}") from None

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        obj: dict[str, Any] = {}
        for k, v in items:
            if k in obj:
                raise _fail("malformed", f"duplicate key {k!r} in the manifest")
            obj[k] = v
        return obj

    def no_float(s: str) -> Any:
        raise _fail("malformed", f"non-integer number {s} in the manifest")

    try:
        value = json.loads(text, object_pairs_hook=pairs, parse_float=no_float,
                           parse_constant=no_float)
    except PyArtifactError:
        raise
    except RecursionError:
        raise _fail("cap_exceeded", "manifest nesting too deep") from None
    except ValueError as e:
        raise _fail("malformed", f"manifest is not JSON: {e}") from None
    try:
        canon = canonical.dumps(value)
    except (TypeError, ValueError) as e:
        msg = str(e)
        status = "cap_exceeded" if ("cap" in msg or "deeper" in msg) else "malformed"
        raise _fail(status, f"manifest: {msg}") from None
    if canon != raw:
        raise _fail("malformed", "manifest is not in canonical form")
    if not isinstance(value, dict):
        raise _fail("malformed", "manifest is not a JSON object")
    return value


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
    verified_blocks: set = field(default_factory=set)
    _blocks: Optional[dict] = field(default=None, repr=False, compare=False)
    _members: Optional[dict] = field(default=None, repr=False, compare=False)
    _by_name: Optional[dict] = field(default=None, repr=False, compare=False)

    @property
    def tensors(self) -> list[dict[str, Any]]:
        return self.manifest["tensors"]

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


def _check_header(mv: memoryview, size: int, pin: Optional[str]) -> tuple[int, int, int, bytes]:
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
    return mlen, doff, dlen, raw


def _check_pin_syntax(pin: Optional[str]) -> None:
    if pin is not None and (not isinstance(pin, str) or not pin.startswith("sha256:")
                            or not _HEX64.match(pin[7:])):
        raise _fail("invalid_argument", f"a pin is 'sha256:' + 64 lowercase hex digits, got "
                                        f"{pin!r}")


def _check_manifest(m: dict[str, Any], dlen: int) -> None:
    keys = set(m)
    if keys != TOP_KEYS:
        extra, missing = sorted(keys - TOP_KEYS), sorted(TOP_KEYS - keys)
        raise _fail("malformed", f"top-level keys: unknown {extra}, missing {missing}")
    if m["format"] != "fwassist.artifact":
        raise _fail("malformed", f"format {m['format']!r}")
    if m["format_version"] != list(VERSION):
        raise _fail("malformed", f"format_version {m['format_version']!r} != header 1.0")
    if not isinstance(m["requires"], dict):
        raise _fail("malformed", "requires is not an object")
    if m["requires"] != REQUIRES:
        raise _fail("incompatible", f"requires {m['requires']!r}; this reader implements "
                                    f"{REQUIRES!r}")
    if not _is_int(m["data_length"]) or m["data_length"] != dlen or dlen % ALIGN:
        raise _fail("malformed", f"data_length {m['data_length']!r} (header {dlen}, must be a "
                                 f"multiple of 64)")
    if not isinstance(m["config"], dict):
        raise _fail("malformed", "config is not an object")
    if m["tokenizer"] is not None and not isinstance(m["tokenizer"], dict):
        raise _fail("malformed", "tokenizer is neither an object nor null")
    for k in ("provenance", "model_card", "sbom", "evidence", "sections"):
        if not isinstance(m[k], dict):
            raise _fail("malformed", f"{k} is not an object")
    lim = m["model_card"].get("known_limitations")
    if (not isinstance(lim, list) or not lim
            or not all(isinstance(s, str) and s for s in lim)):
        raise _fail("malformed", "model_card.known_limitations is not a non-empty array of "
                                 "strings")
    if set(m["sections"]) != set(SECTION_KEYS):
        raise _fail("malformed", "sections must name exactly " + ", ".join(SECTION_KEYS))
    for k in SECTION_KEYS:
        if m["sections"][k] != canonical.digest(m[k]):
            raise _fail("digest_mismatch", f"sections.{k} is not the digest of {k}")
    if not isinstance(m["tensors"], list) or not isinstance(m["expert_blocks"], list):
        raise _fail("malformed", "tensors and expert_blocks must be arrays")
    if len(m["tensors"]) > MAX_TENSORS or len(m["expert_blocks"]) > MAX_BLOCKS:
        raise _fail("cap_exceeded", "more than 65,536 tensors or expert blocks")


def _check_tensor(t: Any, i: int) -> None:
    if not isinstance(t, dict) or set(t) != TENSOR_KEYS:
        raise _fail("malformed", f"tensors[{i}] keys must be {sorted(TENSOR_KEYS)}")
    name = t["name"]
    if not isinstance(name, str) or not name:
        raise _fail("malformed", f"tensors[{i}].name")
    if not isinstance(t["role"], str) or not t["role"]:
        raise _fail("malformed", f"tensor {name}: role")
    for k in ("layer", "expert"):
        if t[k] is not None and (not _is_int(t[k]) or t[k] < 0):
            raise _fail("malformed", f"tensor {name}: {k} {t[k]!r}")
    if t["expert"] is not None and t["layer"] is None:
        raise _fail("malformed", f"tensor {name}: an expert index without a layer")
    shape = t["shape"]
    if not isinstance(shape, list) or not all(_is_int(d) for d in shape):
        raise _fail("malformed", f"tensor {name}: shape {shape!r}")
    if not 1 <= len(shape) <= 4 or any(d > MAX_DIM for d in shape):
        raise _fail("cap_exceeded", f"tensor {name}: shape {shape} outside rank 1..4, "
                                    f"dims 1..2^31")
    if any(d < 1 for d in shape):
        raise _fail("malformed", f"tensor {name}: shape {shape} has a dimension < 1")
    for k in ("offset", "length"):
        if not _is_int(t[k]) or t[k] < 0:
            raise _fail("malformed", f"tensor {name}: {k} {t[k]!r}")
    if t["offset"] % ALIGN:
        raise _fail("malformed", f"tensor {name}: offset {t['offset']} not a multiple of 64")
    if not isinstance(t["sha256"], str) or not _HEX64.match(t["sha256"]):
        raise _fail("malformed", f"tensor {name}: sha256")
    dtype, q = t["dtype"], t["quant"]
    if dtype == "packed":
        if (not isinstance(q, dict) or set(q) != QUANT_KEYS or q["bits"] not in (2, 3, 4, 8)
                or not _is_int(q["bits"]) or not _is_int(q["block"])
                or q["block"] not in (32, 64, 128) or not isinstance(q["zero_points"], bool)
                or q["scale"] not in ("f16", "f32")):
            raise _fail("malformed", f"tensor {name}: quant {q!r}")
        if len(shape) != 2:
            raise _fail("malformed", f"tensor {name}: a packed tensor has shape [N, K]")
        want = packed_size(shape[0], shape[1], q["bits"], q["block"], q["zero_points"],
                           q["scale"])
    elif dtype in FLOAT_SIZES:
        if q is not None:
            raise _fail("malformed", f"tensor {name}: quant must be null for {dtype}")
        want = FLOAT_SIZES[dtype]
        for d in shape:
            want *= d
    else:
        raise _fail("malformed", f"tensor {name}: dtype {dtype!r}")
    if t["length"] != want:
        raise _fail("malformed", f"tensor {name}: length {t['length']} != {want} for its "
                                 f"dtype, shape and quant")


def _check_table(m: dict[str, Any]) -> None:
    dlen = m["data_length"]
    names: set[str] = set()
    end = 0
    for i, t in enumerate(m["tensors"]):
        _check_tensor(t, i)
        if t["name"] in names:
            raise _fail("malformed", f"duplicate tensor name {t['name']}")
        names.add(t["name"])
        if t["offset"] < end and i:
            prev = m["tensors"][i - 1]
            if t["offset"] < prev["offset"]:
                raise _fail("malformed", "tensors are not sorted by offset")
            raise _fail("overlap", f"tensor {t['name']} overlaps {prev['name']}")
        if t["offset"] + t["length"] > dlen:
            raise _fail("out_of_bounds", f"tensor {t['name']} ends past the data region")
        end = t["offset"] + t["length"]
    blocks: dict[tuple[int, int], dict[str, Any]] = {}
    end = 0
    for i, b in enumerate(m["expert_blocks"]):
        if not isinstance(b, dict) or set(b) != BLOCK_KEYS:
            raise _fail("malformed", f"expert_blocks[{i}] keys must be {sorted(BLOCK_KEYS)}")
        if not all(_is_int(b[k]) and b[k] >= 0 for k in ("layer", "expert", "offset", "length")):
            raise _fail("malformed", f"expert_blocks[{i}]: integers expected")
        if not isinstance(b["sha256"], str) or not _HEX64.match(b["sha256"]):
            raise _fail("malformed", f"expert_blocks[{i}].sha256")
        if b["offset"] % PAGE or b["length"] % PAGE or b["length"] == 0:
            raise _fail("malformed", f"expert block ({b['layer']}, {b['expert']}): offset and "
                                     f"length must be non-zero multiples of 4096")
        key = (b["layer"], b["expert"])
        if key in blocks:
            raise _fail("malformed", f"duplicate expert block {key}")
        if i and b["offset"] < m["expert_blocks"][i - 1]["offset"]:
            raise _fail("malformed", "expert_blocks are not sorted by offset")
        if b["offset"] < end:
            raise _fail("overlap", f"expert block {key} overlaps the previous block")
        if b["offset"] + b["length"] > dlen:
            raise _fail("out_of_bounds", f"expert block {key} ends past the data region")
        end = b["offset"] + b["length"]
        blocks[key] = b
    starts = [b["offset"] for b in m["expert_blocks"]]      # sorted, non-overlapping
    for t in m["tensors"]:
        lo, hi = t["offset"], t["offset"] + t["length"]
        if t["expert"] is not None:
            b = blocks.get((t["layer"], t["expert"]))
            if b is None:
                raise _fail("malformed", f"tensor {t['name']}: no expert block "
                                         f"({t['layer']}, {t['expert']})")
            if lo < b["offset"] or hi > b["offset"] + b["length"]:
                raise _fail("out_of_bounds", f"tensor {t['name']} lies outside its expert "
                                             f"block")
        else:
            i = bisect.bisect_left(starts, hi) - 1          # the last block starting < hi
            if i >= 0:
                b = m["expert_blocks"][i]
                if lo < b["offset"] + b["length"]:
                    raise _fail("overlap", f"non-expert tensor {t['name']} overlaps expert "
                                           f"block ({b['layer']}, {b['expert']})")


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


def _expert_index(art: VerifiedArtifact) -> tuple[dict, dict]:
    """(layer, expert) -> block, and -> its tensors sorted by offset (built once)."""
    if art._blocks is None:
        art._blocks = {(b["layer"], b["expert"]): b for b in art.manifest["expert_blocks"]}
        art._members = {}
        for t in art.manifest["tensors"]:                  # sorted by offset
            if t["expert"] is not None:
                art._members.setdefault((t["layer"], t["expert"]), []).append(t)
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


def _open(path: Union[str, os.PathLike], pin: Optional[str], mv: memoryview,
          size: int) -> VerifiedArtifact:
    _check_pin_syntax(pin)
    mlen, doff, dlen, raw = _check_header(mv, size, pin)
    m = _parse_manifest(raw)
    _check_manifest(m, dlen)
    _check_table(m)
    return VerifiedArtifact(os.fspath(path), "sha256:" + hashlib.sha256(raw).hexdigest(), m,
                            doff, doff + dlen, mlen)


def read_manifest(path: Union[str, os.PathLike], pin: Optional[str] = None) -> VerifiedArtifact:
    """Header, root digest (and pin), manifest and table checks only: no data is read."""
    try:
        with _Mapped(os.fspath(path)) as mv:
            return _open(path, pin, mv, len(mv))
    except OSError as e:
        raise _fail("io_error", f"{path}: {e.strerror or e}") from None


def verify(path: Union[str, os.PathLike], pin: Optional[str] = None,
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
