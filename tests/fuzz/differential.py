# SPDX-License-Identifier: Apache-2.0
"""Differential fuzzing of the two artifact readers: the C++ loader (``fwassist.load_artifact``)
and the pure-Python verifier (``fwassist.artifact.pyverify``). Both must give the same verdict
on every input: accept, or refuse with the same status (docs/artifact-format.md §5 fixes the
order of the checks, so a file with several faults has one status). Any disagreement, or any
exception other than the readers' own error types, fails the run and is saved.

Seeds: the kept corpus (tests/fuzz/corpus), small artifacts built with tests/artifact_fixtures.py,
and one carrying the bundled model's tokenizer and config. Each iteration stacks one to three
mutations:

* manifest bytes (bit flips, bytes and JSON fragments inserted, ranges deleted or duplicated),
  with the header re-sealed (digest, lengths, offsets) so the mutation reaches the manifest
  validator instead of stopping at the digest check;
* the manifest's JSON structure (values replaced by boundary values and other types, keys
  added and removed, elements duplicated and swapped, values wrapped in nested arrays up to
  the depth cap and one beyond), re-serialised canonically or not, with the section digests
  fixed or not;
* header bytes and data-region bytes;
* the format's minor version (1.0 <-> 1.1) with the manifest kept, so that a `generation`
  section (§3.9) meets a header that does not allow it and the reverse.

Format 1.1 seeds carry a `generation` object (end-of-sequence ids, chat template) at and near
its caps, so the structural mutations reach each of its rules.

A quarter of the inputs are opened lazily; each expert block is then verified on its own, as
on first use, and those verdicts are compared too.

Inputs that both readers accept join the pool, so mutations stack on valid artifacts.

    python tests/fuzz/differential.py [--seconds 60] [--seed N] [--out DIR]

FWA_DIFF_SECONDS and FWA_DIFF_SEED set the defaults (60 s; a seed from the clock, printed).
Exit status 0: no disagreement; 1: disagreements (saved to --out, default build-fuzz/differential).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Optional

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import artifact_fixtures as fx  # noqa: E402
from fwassist import ArtifactError, load_artifact  # noqa: E402
from fwassist.artifact import pyverify  # noqa: E402

SECTION_KEYS = fx.SECTION_KEYS + ("generation",)
INTERESTING_INTS = [0, 1, -1, 2, 3, 4, 8, 16, 31, 32, 63, 64, 127, 128, 4095, 4096, 4097,
                    65535, 65536, 65537, (1 << 20), (1 << 21) - 1, 1 << 21, (1 << 21) + 1,
                    (1 << 22) + 1, (1 << 24) + 1, (1 << 31) - 1, 1 << 31, (1 << 31) + 1,
                    1 << 32, (1 << 53) - 1, 1 << 53, -(1 << 53), 100_000_000]
INTERESTING_STRS = ["", " ", "a", "f16", "f32", "bf16", "packed", "little", "big",
                    "fwassist.artifact", "qwen3_moe", "\u0000", "\n", "\u001f", "\u007f", "é",
                    "Ġthe", "\U0001F600", "0" * 64, "g" * 64, "\"", "\\"]
FRAGMENTS = [b"[", b"]", b"{", b"}", b",", b":", b"\"", b"\\", b" ", b"\n", b"0", b"-0", b"01",
             b"1.5", b"1e5", b"-", b"true", b"null", b"nul", b"\\u0041", b"\\u000a", b"\\u001F",
             b"\\u001f", b"\\/", b"\xc3", b"\xc3\xa9", b"\xed\xa0\x80", b"\xf4\x90\x80\x80",
             b"\xc0\x80", b"9007199254740993", b"9007199254740992", b"18446744073709551616",
             b"[[[[[[[[", b"\"\"", b"{}", b"[]", b"\x00", b"\x1f", b"\x7f"]
KNOWN_KEYS = ["extra", "format", "requires", "config", "tokenizer", "tensors", "expert_blocks",
              "sections", "sbom", "name", "role", "layer", "expert", "dtype", "shape", "quant",
              "offset", "length", "sha256", "bits", "block", "scale", "zero_points",
              "known_limitations", "vocab", "merges", "added_tokens", "id", "model",
              "vocab_size", "num_experts", "max_position_embeddings", "endianness",
              "kernel_layout", "architecture", "generation", "eos_token_ids", "bos_token_id",
              "pad_token_id", "chat_template", "sources", "chat_template.jinja",
              "generation_config.json", "tokenizer_config.json", ""]


# ---- Building and re-sealing files

def seal(manifest: bytes, data: bytes, minor: int = 0) -> bytes:
    """The file for these manifest bytes and data region, the header derived from them
    (format version 1.<minor>)."""
    h = fx.header(len(manifest), len(data), hashlib.sha256(manifest).digest(),
                  version=(1, minor))
    gap = fx.roundup(128 + len(manifest), 4096) - 128 - len(manifest)
    return bytes(h) + manifest + b"\0" * gap + data


def minor_of(blob: bytes) -> int:
    """The header's minor version (a mutated header may hold any)."""
    return int.from_bytes(blob[10:12], "little") if len(blob) >= 12 else 0


def split(blob: bytes) -> Optional[tuple[bytes, bytes]]:
    """(manifest bytes, data region) of a file whose header lengths are usable."""
    if len(blob) < 128:
        return None
    ml, doff = int.from_bytes(blob[16:24], "little"), int.from_bytes(blob[24:32], "little")
    if ml > len(blob) or doff > len(blob) or 128 + ml > doff:
        return None
    return blob[128:128 + ml], blob[doff:]


def fix_sections(m: dict[str, Any]) -> None:
    if isinstance(m.get("sections"), dict):
        for k in SECTION_KEYS:
            if k in m:
                m["sections"][k] = fx.sha(fx.canonical(m[k]))


def seeds() -> list[bytes]:
    out = [p.read_bytes() for p in sorted((HERE / "corpus").iterdir()) if p.is_file()]
    out.append(fx.build(fx.small_tensors(seed=3)))
    # A small artifact with the bundled model's tokenizer and config (the §3.8 fields).
    try:
        from fwassist.models import tiny_coder_path

        bundled, _ = fx.split(Path(tiny_coder_path()).read_bytes())
        m, data = fx.split(fx.build(fx.small_tensors(seed=5)))
        m["tokenizer"], m["config"] = bundled["tokenizer"], bundled["config"]
        out.append(fx.assemble(m, data))
    except (ImportError, OSError):
        pass
    # Nesting at the depth cap (64 containers, the manifest being the first), a value at the
    # bottom; and limitations at the edge of the rules.
    m, data = fx.split(fx.build(fx.small_tensors(seed=7)))
    deep: Any = 0
    for _ in range(62):
        deep = [deep]
    m["evidence"]["deep"] = deep
    m["model_card"]["known_limitations"] = ["x", "\u0001 é"]
    out.append(fx.assemble(m, data))
    # Format 1.1: generation metadata, plain and at its caps (64 ids, a 256 KiB template with
    # multi-byte characters and escapes).
    out.append(fx.build(fx.small_tensors(seed=9), generation=fx.GENERATION))
    gen = dict(fx.GENERATION, eos_token_ids=list(range(64)), bos_token_id=31,
               chat_template="é\n" * ((256 << 10) // 3) + "x",
               sources={k: None for k in fx.GENERATION["sources"]})
    m, data = fx.split(fx.build(fx.small_tensors(seed=11), generation=gen))
    m["config"]["vocab_size"] = 64
    out.append(fx.assemble(m, data))
    return out


# ---- Mutations

def _random_path(rng: random.Random, v: Any) -> list[Any]:
    path: list[Any] = []
    while isinstance(v, (dict, list)) and v and rng.random() < 0.8:
        k = rng.choice(list(v)) if isinstance(v, dict) else rng.randrange(len(v))
        path.append(k)
        v = v[k]
    return path


def _get(v: Any, path: list[Any]) -> Any:
    for k in path:
        v = v[k]
    return v


def _depth(path: list[Any]) -> int:
    return len(path)


def _new_value(rng: random.Random, old: Any, depth: int) -> Any:
    r = rng.random()
    if r < 0.35:
        return rng.choice(INTERESTING_INTS)
    if r < 0.55:
        return rng.choice(INTERESTING_STRS)
    if r < 0.65:
        return rng.choice([None, True, False, [], {}, [0], {"a": 0}])
    if r < 0.75 and isinstance(old, int) and not isinstance(old, bool):
        return old + rng.choice([-4096, -64, -1, 1, 64, 4096])
    if r < 0.85:
        # Nesting around the cap: the value ends up under 63..65 containers in total.
        n = max(0, rng.choice([62, 63, 64, 65]) - depth)
        v: Any = old if rng.random() < 0.5 else 0
        for _ in range(n):
            v = [v]
        return v
    if r < 0.9:
        return "x" * rng.choice([1, 100, 4096, 4096, 4096, (256 << 10), (256 << 10) + 1])
    if r < 0.95:   # id lists for generation.eos_token_ids: empty, at the cap, beyond, unsorted
        n = rng.choice([0, 1, 2, 63, 64, 65])
        ids = list(range(n))
        if n > 1 and rng.random() < 0.3:
            ids[0], ids[1] = ids[1], ids[0]
        return ids
    return copy_value(old)


def copy_value(v: Any) -> Any:
    return json.loads(json.dumps(v))


def mutate_structure(rng: random.Random, blob: bytes) -> Optional[bytes]:
    parts = split(blob)
    if parts is None:
        return None
    raw, data = parts
    try:
        m = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError):
        return None
    path = _random_path(rng, m)
    target = _get(m, path[:-1]) if path else None
    op = rng.random()
    if not path:
        if isinstance(m, dict) and rng.random() < 0.5:
            m[rng.choice(KNOWN_KEYS)] = _new_value(rng, None, 1)
        else:
            return None
    elif op < 0.5:
        target[path[-1]] = _new_value(rng, target[path[-1]], _depth(path))
    elif op < 0.65 and isinstance(target, dict):
        del target[path[-1]]
    elif op < 0.75 and isinstance(target, dict):
        target[rng.choice(KNOWN_KEYS)] = _new_value(rng, None, _depth(path))
    elif op < 0.85 and isinstance(target, list):
        target.insert(path[-1], copy_value(target[path[-1]]))
    elif op < 0.95 and isinstance(target, list) and len(target) > 1:
        j = rng.randrange(len(target))
        target[path[-1]], target[j] = target[j], target[path[-1]]
    elif isinstance(target, list):
        del target[path[-1]]
    else:
        target[path[-1]] = _new_value(rng, target[path[-1]], _depth(path))
    try:         # a value json cannot write back (1e999 read as inf, too deep): skip it
        if rng.random() < 0.8 and isinstance(m, dict):
            fix_sections(m)
        if rng.random() < 0.9:
            text = fx.canonical(m)
        else:
            text = json.dumps(m, sort_keys=rng.random() < 0.5, ensure_ascii=rng.random() < 0.5,
                              separators=rng.choice([(",", ":"), (", ", ": ")])).encode("utf-8")
    except (ValueError, RecursionError):
        return None
    if len(text) > (16 << 20):
        return None
    if rng.random() < 0.1 and data:           # a data_length that follows the manifest's
        data = data[:-64] if rng.random() < 0.5 else data + bytes(64)
    return seal(text, data, minor_of(blob))


def mutate_manifest_bytes(rng: random.Random, blob: bytes) -> Optional[bytes]:
    parts = split(blob)
    if parts is None:
        return None
    raw, data = bytearray(parts[0]), parts[1]
    if not raw:
        return None
    i = rng.randrange(len(raw))
    op = rng.random()
    if op < 0.25:
        raw[i] ^= 1 << rng.randrange(8)
    elif op < 0.45:
        raw[i] = rng.choice(b"[]{},:\"\\0123456789-.eEtfnu \x00\x1f\x7f\x80\xc3\xff")
    elif op < 0.7:
        raw[i:i] = rng.choice(FRAGMENTS)
    elif op < 0.85:
        del raw[i:i + rng.randrange(1, 16)]
    else:
        j = rng.randrange(len(raw))
        raw[i:i] = raw[j:j + rng.randrange(1, 64)]
    if len(raw) < 2:
        return None
    return seal(bytes(raw), data, minor_of(blob))


def mutate_minor(rng: random.Random, blob: bytes) -> Optional[bytes]:
    """The other minor version, the manifest (and its format_version) kept."""
    parts = split(blob)
    if parts is None:
        return None
    return seal(parts[0], parts[1], 1 - min(minor_of(blob), 1))


def mutate_header(rng: random.Random, blob: bytes) -> Optional[bytes]:
    b = bytearray(blob)
    if len(b) < 128:
        return None
    i = rng.randrange(128)
    b[i] = rng.choice([0, 1, 0xFF, b[i] ^ (1 << rng.randrange(8))])
    return bytes(b)


def mutate_data(rng: random.Random, blob: bytes) -> Optional[bytes]:
    parts = split(blob)
    if parts is None or not parts[1]:
        return None
    b = bytearray(blob)
    i = len(blob) - len(parts[1]) + rng.randrange(len(parts[1]))
    b[i] ^= 1 << rng.randrange(8)
    return bytes(b)


def mutate_length(rng: random.Random, blob: bytes) -> Optional[bytes]:
    n = rng.choice([-1, 1, -64, 64, -4096])
    return blob[:n] if n < 0 else blob + bytes(n)


MUTATIONS: list[tuple[float, Callable[[random.Random, bytes], Optional[bytes]]]] = [
    (0.48, mutate_structure), (0.3, mutate_manifest_bytes), (0.07, mutate_header),
    (0.07, mutate_data), (0.04, mutate_length), (0.04, mutate_minor)]


def mutate(rng: random.Random, blob: bytes) -> bytes:
    for _ in range(rng.choice([1, 1, 2, 3])):
        r, acc = rng.random(), 0.0
        for w, fn in MUTATIONS:
            acc += w
            if r < acc:
                out = fn(rng, blob)
                if out is not None:
                    blob = out
                break
    return blob


# ---- The two readers

def native_verdict(blob: bytes, lazy: bool) -> tuple[str, str]:
    """The C++ reader's verdict; lazy: then each expert block's, on first use, in table
    order (the first failure decides)."""
    try:
        art = load_artifact(blob, lazy=lazy)
        if lazy:
            for layer, expert in _blocks(blob):
                art.verify_expert(layer, expert)
        return "ok", ""
    except ArtifactError as e:
        return e.status, e.message


def python_verdict(path: str, lazy: bool) -> tuple[str, str]:
    try:
        art = pyverify.verify(path, lazy=lazy)
        if lazy:
            for b in art.manifest["expert_blocks"]:
                art.verify_expert(b["layer"], b["expert"])
        return "ok", ""
    except pyverify.PyArtifactError as e:
        return e.status, e.message


def _blocks(blob: bytes) -> list[tuple[int, int]]:
    """(layer, expert) of each expert block of a file the C++ reader opened."""
    manifest = json.loads(split(blob)[0])
    return [(b["layer"], b["expert"]) for b in manifest["expert_blocks"]]


def compare(blob: bytes, path: str, lazy: bool) -> Optional[str]:
    """None if both readers agree on `blob`, else a description of the disagreement."""
    with open(path, "wb") as f:
        f.write(blob)
    try:
        n = native_verdict(blob, lazy)
    except Exception as e:  # noqa: BLE001 - any other exception is a finding
        n = (f"exception {type(e).__name__}", str(e))
    try:
        p = python_verdict(path, lazy)
    except Exception as e:  # noqa: BLE001
        p = (f"exception {type(e).__name__}", str(e))
    if n[0] == p[0] and not n[0].startswith("exception"):
        return None
    return (f"lazy={lazy}: C++ {n[0]}: {n[1][:300]} | Python {p[0]}: {p[1][:300]}")


def run(seconds: float, seed: int, out: Optional[Path], max_findings: int = 20,
        log: Callable[[str], None] = print) -> list[tuple[bytes, str]]:
    """Fuzzes for `seconds`; returns the disagreements (input, description)."""
    rng = random.Random(seed)
    base = seeds()
    pool = list(base)
    findings: list[tuple[bytes, str]] = []
    stats: dict[str, int] = {}
    n = 0
    with tempfile.TemporaryDirectory(prefix="fwa-diff-") as d:
        path = os.path.join(d, "input.fwa")
        end = time.monotonic() + seconds
        while time.monotonic() < end and len(findings) < max_findings:
            blob = mutate(rng, rng.choice(pool if rng.random() < 0.5 else base))
            lazy = rng.random() < 0.25
            why = compare(blob, path, lazy)
            n += 1
            if why is None:
                st = native_verdict(blob, lazy)[0]
                stats[st] = stats.get(st, 0) + 1
                if st == "ok" and len(pool) < 2000 and blob not in pool:
                    pool.append(blob)
                continue
            findings.append((blob, why))
            log(f"DISAGREEMENT #{len(findings)}: {why}")
            if out is not None:
                out.mkdir(parents=True, exist_ok=True)
                name = hashlib.sha256(blob).hexdigest()[:16]
                (out / f"diff-{name}.fwa").write_bytes(blob)
                (out / f"diff-{name}.txt").write_text(why + "\n", encoding="utf-8")
    log(f"differential: seed {seed}, {n} inputs in {seconds:.0f} s, verdicts "
        + ", ".join(f"{k} {v}" for k, v in sorted(stats.items()))
        + f"; {len(findings)} disagreement(s)")
    return findings


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float,
                    default=float(os.environ.get("FWA_DIFF_SECONDS", "60")))
    ap.add_argument("--seed", type=int, default=int(os.environ.get("FWA_DIFF_SEED",
                                                                   time.time_ns() % (1 << 32))))
    ap.add_argument("--out", type=Path, default=HERE.parent.parent / "build-fuzz" /
                    "differential")
    args = ap.parse_args(argv)
    findings = run(args.seconds, args.seed, args.out)
    if findings:
        print(f"FAILED: {len(findings)} disagreement(s) between the C++ reader and the Python "
              f"verifier, inputs in {args.out}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
