# SPDX-License-Identifier: Apache-2.0
"""A seeded synthetic model at the exact Qwen3-Coder-30B-A3B shape, written without float
weights: our artifact from packed weights through the streaming C++ writer, and a GGUF for
llama.cpp written already quantized, tensor by tensor.

    python benchmarks/synth_30b.py --shape full --bits 3 [--out DIR] [--no-gguf]

``--out`` defaults to ``$FWA_BIG_DIR``, else ``benchmarks/.big``; ``--llama-lib`` (libggml for
the k-quants) to the build of benchmarks/llamacpp_build.py under ``$FWA_LLAMACPP_ROOT``, else
``benchmarks/.llamacpp`` (bench_paths.py).

Shapes: ``full`` is the real config (48 layers, 128 experts top-8, hidden 2048, expert width
768, 32 q / 4 kv heads of 128, vocabulary 151,936, norm_topk_prob, rope theta 1e7: 30.5 B
parameters); ``smoke`` the same code path at 2 layers, 8 experts, vocabulary 4096 (CI).

Ours: every projection (attention and experts) at ``bits`` (symmetric, block 32, float16
scales); embedding and lm_head at 8 bits, block 32; router and norms float32. Each packed tensor
is made directly in the canonical layout (docs/kernels.md): its code bytes are seeded random
bytes (every code uniform in its range), its scales seeded float16 values of random sign that
keep each output's expected square near its input's mean square, except the embedding (unit
weights) and the projections into the residual stream (smaller by depth): see :func:`_std`.
Seeds derive from (seed, bits, tensor name), so any tensor can be made alone and two builds
are identical.

llama.cpp (the same tensor names, shapes and metadata as ``gguf_qwen3moe.write_gguf``):

* 4 bits: Q4_0 holding our exact weights. A Q4_0 block is a float16 scale d and 32 codes x in
  [0, 16) with w = (x − 8)·d; ours stores u = q + 8 with w = (u − 8)·s per block of 32, so
  x = u and d = s (checked by dequantizing both, :func:`check_q4_0`).
* 3 and 2 bits: Q3_K and Q2_K (every projection, as ``llama-quantize --pure`` Q3_K_S / Q2_K
  gives) quantized by libggml's own ``ggml_quantize_chunk`` (ctypes) from seeded float chunks
  of the same shapes: the k-quant formats are not our layout, so these are other weights of
  the same shape and size. Quantizing 30 B floats takes libggml ~10 min of a core, so each
  role has a pool of :data:`POOL` quantized matrices that the layers and experts reuse in
  turn; every tensor still has its own bytes in the file, so decode reads the same amount.
* Embedding and output: Q8_0 holding our exact 8-bit weights (Q8_0 is int8 codes with a float16
  scale per 32, our symmetric 8-bit format); router and norms: our float32 values.
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import json
import os
import sys
import time
from functools import partial
from typing import Any, Callable, Iterator, Optional

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from fwassist import _core, kernels  # noqa: E402
from fwassist.artifact.model import ImportedModel, ModelTensor, PackedTensor  # noqa: E402
from fwassist.artifact.writer import write_artifact  # noqa: E402
from fwassist.export.mapping import hf_name  # noqa: E402

from bench_paths import BIG_DIR  # noqa: E402
from llamacpp_build import DEFAULT_ROOT, lib_dir  # noqa: E402

# 2: random scale signs, unit-scale embedding, output projections scaled by depth (_std):
# version 1 routed ~9 of 128 experts per layer over 16 random tokens at 48 layers.
GENERATOR_VERSION = 2
SEED = 20261207
BLOCK = 32
EMBED_BITS = 8
LLAMA_QUANT = {4: "Q4_0", 3: "Q3_K_S", 2: "Q2_K"}
POOL = 17   # distinct k-quant matrices per role (prime: layer and expert do not align)

# Qwen/Qwen3-Coder-30B-A3B-Instruct config.json (the hyper-parameters the runtimes use).
FULL = {"architecture": "qwen3_moe", "vocab_size": 151936, "hidden_size": 2048,
        "num_hidden_layers": 48, "num_attention_heads": 32, "num_key_value_heads": 4,
        "head_dim": 128, "intermediate_size": 6144, "moe_intermediate_size": 768,
        "num_experts": 128, "num_experts_per_tok": 8, "norm_topk_prob": True,
        "decoder_sparse_step": 1, "mlp_only_layers": [], "rms_norm_eps": 1e-6,
        "rope_theta": 10000000.0, "max_position_embeddings": 262144,
        "tie_word_embeddings": False}
SHAPES: dict[str, dict[str, Any]] = {
    "full": FULL,
    "smoke": dict(FULL, vocab_size=4096, hidden_size=256, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=64,
                  intermediate_size=512, moe_intermediate_size=256, num_experts=8,
                  num_experts_per_tok=2, max_position_embeddings=4096),
}
CARD = {"name": "synthetic Qwen3-Coder-30B-A3B-shaped model",
        "known_limitations": ["synthetic random weights for benchmarking: the outputs are "
                              "meaningless"]}


def log(msg: str) -> None:
    print(f"[synth_30b] {msg}", file=sys.stderr, flush=True)


def config(shape: str) -> dict[str, Any]:
    return dict(SHAPES[shape])


def tokenizer(vocab_size: int) -> dict[str, Any]:
    """Byte-level BPE with exactly ``vocab_size`` tokens (llama.cpp needs one per embedding
    row): the 256 bytes, ``<|endoftext|>``, then merges of byte pairs and, past 65,536 of
    them, of a pair and a byte."""
    from fwassist.export.synthetic import byte_tokenizer
    tok = byte_tokenizer()
    chars = sorted(tok["model"]["vocab"], key=lambda s: tok["model"]["vocab"][s])
    n_merge = vocab_size - 257
    if not 1 <= n_merge <= 65536 * 257:
        raise ValueError(f"vocab_size {vocab_size} out of range")
    merges, vocab = [], dict(tok["model"]["vocab"])
    for i in range(n_merge):
        if i < 65536:
            a, b = chars[i // 256], chars[i % 256]
        else:
            j = i - 65536
            a, b = chars[j // 256 // 256] + chars[j // 256 % 256], chars[j % 256]
        merges.append(f"{a} {b}")
        vocab[a + b] = 257 + i
    tok["model"]["vocab"] = vocab
    tok["model"]["merges"] = merges
    return tok


def _rng(seed: int, bits: int, name: str) -> np.random.Generator:
    key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little")
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, bits, key])))


# Wall and CPU (this process's) seconds spent making packed weights, so that a build can tell
# the writer's share: on a shared machine the wall time depends on the other jobs, the CPU
# time much less.
GEN_SECONDS = [0.0]
GEN_CPU_SECONDS = [0.0]


def packed_random(N: int, K: int, bits: int, seed: int, name: str,
                  std: Optional[float] = None) -> np.ndarray:
    """The packed bytes (docs/kernels.md) of a symmetric block-32 float16-scale N x K weight:
    uniform random codes, scales ~ std / sqrt(E[q²]) (std: 1/sqrt(K) unless given, which keeps
    each output's expected square near its input's mean square)."""
    t0, c0 = time.perf_counter(), time.process_time()
    out = _packed_random(N, K, bits, seed, name, 1.0 / np.sqrt(K) if std is None else std)
    GEN_SECONDS[0] += time.perf_counter() - t0
    GEN_CPU_SECONDS[0] += time.process_time() - c0
    return out


def _packed_random(N: int, K: int, bits: int, seed: int, name: str, std: float) -> np.ndarray:
    if N % 16 or K % 32:
        raise ValueError(f"{name}: N must be a multiple of 16 and K of 32 (no padding)")
    L = _core.layout_info(bits, BLOCK, False, "f16", N, K)
    n_tiles, tile, so, nb = L["n_tiles"], L["tile_bytes"], L["scales_offset"], L["n_blocks"]
    rng = _rng(seed, bits, name)
    data = rng.integers(0, 256, (n_tiles, tile), dtype=np.uint8)
    eq2 = (4 ** bits + 2) / 12.0        # E[(u - z)^2] for uniform codes
    s = (rng.uniform(0.8, 1.2, (n_tiles, nb, 16)) * std / np.sqrt(eq2)).astype(np.float16)
    # Random signs: the codes' mean is -1/2, so with positive scales every matrix adds a
    # component along the all-ones vector proportional to its input's sum, which grows layer
    # by layer into one direction shared by every token (and every token then routes alike).
    s *= rng.choice(np.array([-1, 1], dtype=np.float16), s.shape)
    data[:, so:so + nb * 32] = s.view(np.uint8).reshape(n_tiles, nb * 32)
    data[:, so + nb * 32:] = 0          # the tile tail
    out: np.ndarray = data.reshape(-1)
    return out


def _std(role: str, K: int, layers: int) -> Optional[float]:
    """Weight std of a role (None: 1/sqrt(K), output RMS ~ input RMS). The embedding has unit
    weights (as benchmarks/generate.py) and the projections into the residual stream 1/sqrt(2
    layers) of the default (as GPT-2's initialisation), so that the token's own row stays large
    next to the sum of the layers' outputs: otherwise the attention outputs, near the same
    average over the context for every token, drown it and consecutive tokens route alike
    (with both: ~81 of 128 experts per layer over 16 random tokens, random routing ~82)."""
    if role == "embed":
        return 1.0
    if role in ("o_proj", "expert_down"):
        return float(1.0 / np.sqrt(2 * layers * K))
    return None


def _norm(seed: int, name: str, n: int) -> np.ndarray:
    return (1.0 + 0.1 * _rng(seed, 0, name).standard_normal(n)).astype(np.float32)


def _router(seed: int, name: str, E: int, H: int) -> np.ndarray:
    w: np.ndarray = _rng(seed, 0, name).standard_normal((E, H)) / np.sqrt(H)
    return w.astype(np.float32)


def model(c: dict[str, Any], bits: int, seed: int = SEED) -> ImportedModel:
    """The model with every packed tensor made lazily (PackedTensor): holds only the norms and
    routers in memory."""
    H, hd, V = c["hidden_size"], c["head_dim"], c["vocab_size"]
    nh, nkv, E, I = (c["num_attention_heads"], c["num_key_value_heads"], c["num_experts"],
                     c["moe_intermediate_size"])
    tensors: list[ModelTensor] = []
    layers = int(c["num_hidden_layers"])

    def packed(role: str, layer: Optional[int], expert: Optional[int], N: int, K: int,
               b: int) -> None:
        name = hf_name(role, layer, expert)
        tensors.append(ModelTensor(name, role, layer, expert, PackedTensor(
            N, K, b, BLOCK, False, "f16",
            lambda: packed_random(N, K, b, seed, name, _std(role, K, layers)))))

    def floats(role: str, layer: Optional[int], value: Callable[[str], np.ndarray]) -> None:
        name = hf_name(role, layer, None)
        tensors.append(ModelTensor(name, role, layer, None, value(name)))

    packed("embed", None, None, V, H, EMBED_BITS)
    for L in range(c["num_hidden_layers"]):
        floats("input_norm", L, lambda n: _norm(seed, n, H))
        floats("post_attention_norm", L, lambda n: _norm(seed, n, H))
        floats("q_norm", L, lambda n: _norm(seed, n, hd))
        floats("k_norm", L, lambda n: _norm(seed, n, hd))
        packed("q_proj", L, None, nh * hd, H, bits)
        packed("k_proj", L, None, nkv * hd, H, bits)
        packed("v_proj", L, None, nkv * hd, H, bits)
        packed("o_proj", L, None, H, nh * hd, bits)
        floats("router", L, lambda n: _router(seed, n, E, H))
        for e in range(E):
            packed("expert_gate", L, e, I, H, bits)
            packed("expert_up", L, e, I, H, bits)
            packed("expert_down", L, e, H, I, bits)
    floats("final_norm", None, lambda n: _norm(seed, n, H))
    packed("lm_head", None, None, V, H, EMBED_BITS)
    ident = json.dumps({"v": GENERATOR_VERSION, "seed": seed, "bits": bits, "config": c},
                       sort_keys=True)
    return ImportedModel(config=c, tensors=tensors, tokenizer=tokenizer(V),
                         source_name="synthetic qwen3-coder-30b-a3b shape",
                         source_sha256=hashlib.sha256(ident.encode()).hexdigest(),
                         notes=["synthetic random weights: not a trained model"])


def write_fwa(path: str, c: dict[str, Any], bits: int, seed: int = SEED, *,
              native: bool = True, check: str = "lazy",
              progress: Optional[Callable[[int, int], None]] = None) -> str:
    """Writes our artifact; returns its pin."""
    return write_artifact(path, model(c, bits, seed), model_card=CARD,
                          options={"synthetic": "synth_30b", "bits": bits, "block": BLOCK,
                                   "seed": seed},
                          evidence={}, exporter_version=f"synth_30b-{GENERATOR_VERSION}",
                          native=native, check=check, progress=progress)


# --- GGUF ---------------------------------------------------------------------------------

def packed_to_q4_0(data: np.ndarray, N: int, K: int) -> np.ndarray:
    """Our 4-bit symmetric block-32 float16-scale weight as Q4_0 rows (uint8, N x K/32·18)."""
    return _packed_to_q(data, N, K, 4)


def packed_to_q8_0(data: np.ndarray, N: int, K: int) -> np.ndarray:
    """Our 8-bit symmetric block-32 float16-scale weight as Q8_0 rows (uint8, N x K/32·34)."""
    return _packed_to_q(data, N, K, 8)


def _packed_to_q(data: np.ndarray, N: int, K: int, bits: int) -> np.ndarray:
    pm = kernels.PackedMatrix(data, N, K, bits, BLOCK, False, "f16")
    u, s, _ = kernels.unpack(pm)
    nb = K // BLOCK
    d = s.astype(np.float16).reshape(N, nb, 1).view(np.uint8)          # (N, nb, 2)
    ub = u.reshape(N, nb, BLOCK)
    if bits == 4:   # Q4_0: byte j = x[j] | x[j + 16] << 4
        qs = ub[:, :, :16] | (ub[:, :, 16:] << 4)
    else:           # Q8_0: int8 x = u - 128
        qs = (ub.astype(np.int16) - 128).astype(np.int8).view(np.uint8)
    return np.concatenate([d, qs], axis=2).reshape(N, -1)


def check_q4_0(N: int = 64, K: int = 256, seed: int = SEED) -> float:
    """Max |difference| between our dequantized 4-bit weight and gguf's Q4_0 dequantization of
    the converted bytes (0.0 when the claim holds); likewise 8-bit vs Q8_0."""
    import gguf
    worst = 0.0
    for bits, qt in ((4, gguf.GGMLQuantizationType.Q4_0), (8, gguf.GGMLQuantizationType.Q8_0)):
        data = packed_random(N, K, bits, seed, f"check-{bits}")
        ours = kernels.dequantize(kernels.PackedMatrix(data, N, K, bits, BLOCK, False, "f16"))
        theirs = gguf.quants.dequantize(_packed_to_q(data, N, K, bits), qt)
        worst = max(worst, float(np.max(np.abs(ours - theirs.reshape(N, K)))))
    return worst


class _GgmlQuantizer:
    """libggml's ggml_quantize_chunk through ctypes."""

    def __init__(self, lib_dir: str) -> None:
        self.lib = ctypes.CDLL(os.path.join(lib_dir, "libggml-base.so"))
        f = self.lib.ggml_quantize_chunk
        f.restype = ctypes.c_size_t
        f.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                      ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]

    def quantize(self, qtype: int, w: np.ndarray, row_bytes: int) -> np.ndarray:
        N, K = w.shape
        out = np.empty((N, row_bytes), dtype=np.uint8)
        w = np.ascontiguousarray(w, dtype=np.float32)
        n = self.lib.ggml_quantize_chunk(qtype, w.ctypes.data, out.ctypes.data, 0, N, K, None)
        if n != out.nbytes:
            raise RuntimeError(f"ggml_quantize_chunk wrote {n} bytes, expected {out.nbytes}")
        return out


def _float_chunk(seed: int, name: str, N: int, K: int, std: Optional[float]) -> np.ndarray:
    """Seeded float weights (std as our weights of that role) for the k-quant GGUFs."""
    b = _rng(seed, 1, name).integers(-127, 128, (N, K), dtype=np.int8)
    return b.astype(np.float32) * np.float32((1.0 / np.sqrt(K) if std is None else std) / 73.6)


def gguf_tensors(c: dict[str, Any], bits: int, seed: int,
                 quantizer: Optional[_GgmlQuantizer]) -> Iterator[tuple[str, tuple[int, ...], int,
                                                                     Callable[[], np.ndarray]]]:
    """(GGUF name, numpy shape in elements, ggml type, producer of the bytes) in file order."""
    import gguf
    Q = gguf.GGMLQuantizationType
    H, hd, V = c["hidden_size"], c["head_dim"], c["vocab_size"]
    nh, nkv, E, I = (c["num_attention_heads"], c["num_key_value_heads"], c["num_experts"],
                     c["moe_intermediate_size"])
    qt = {4: Q.Q4_0, 3: Q.Q3_K, 2: Q.Q2_K}[bits]
    bsz, tsz = gguf.GGML_QUANT_SIZES[qt]
    layers = int(c["num_hidden_layers"])

    pool: dict[tuple[str, int], np.ndarray] = {}

    def proj(name: str, N: int, K: int, role: str, index: int) -> np.ndarray:
        if bits == 4:
            return packed_to_q4_0(packed_random(N, K, 4, seed, name, _std(role, K, layers)),
                                  N, K)
        # k-quants: POOL matrices per role quantized by libggml, reused in turn (each copy
        # still has its own place in the file, so llama.cpp reads as many bytes).
        key = (role, index % POOL)
        if key not in pool:
            assert quantizer is not None
            chunk = _float_chunk(seed, f"{role}-{key[1]}", N, K, _std(role, K, layers))
            pool[key] = quantizer.quantize(int(qt), chunk, K // bsz * tsz)
        return pool[key]

    def experts(L: int, role: str, N: int, K: int) -> np.ndarray:
        return np.stack([proj(hf_name(role, L, e), N, K, role, L * E + e) for e in range(E)])

    def eight(role: str, N: int, K: int) -> Callable[[], np.ndarray]:
        name = hf_name(role, None, None)
        std = _std(role, K, layers)
        return lambda: packed_to_q8_0(packed_random(N, K, EMBED_BITS, seed, name, std), N, K)

    yield ("token_embd.weight", (V, H), int(Q.Q8_0), eight("embed", V, H))
    for L in range(c["num_hidden_layers"]):
        b = f"blk.{L}"
        for gg, role, n in (("attn_norm", "input_norm", H), ("ffn_norm", "post_attention_norm", H),
                            ("attn_q_norm", "q_norm", hd), ("attn_k_norm", "k_norm", hd)):
            name = hf_name(role, L, None)
            yield (f"{b}.{gg}.weight", (n,), int(Q.F32), partial(_norm, seed, name, n))
        for gg, role, N, K in (("attn_q", "q_proj", nh * hd, H), ("attn_k", "k_proj", nkv * hd, H),
                               ("attn_v", "v_proj", nkv * hd, H),
                               ("attn_output", "o_proj", H, nh * hd)):
            name = hf_name(role, L, None)
            yield (f"{b}.{gg}.weight", (N, K), int(qt), partial(proj, name, N, K, role, L))
        rname = hf_name("router", L, None)
        yield (f"{b}.ffn_gate_inp.weight", (E, H), int(Q.F32),
               partial(_router, seed, rname, E, H))
        for gg, role, N, K in (("ffn_gate_exps", "expert_gate", I, H),
                               ("ffn_up_exps", "expert_up", I, H),
                               ("ffn_down_exps", "expert_down", H, I)):
            yield (f"{b}.{gg}.weight", (E, N, K), int(qt), partial(experts, L, role, N, K))
    yield ("output_norm.weight", (H,), int(Q.F32),
           partial(_norm, seed, hf_name("final_norm", None, None), H))
    yield ("output.weight", (V, H), int(Q.Q8_0), eight("lm_head", V, H))


def write_gguf(path: str, c: dict[str, Any], bits: int, seed: int = SEED,
               lib_dir: Optional[str] = None,
               progress: Optional[Callable[[int, int], None]] = None) -> None:
    """Writes the GGUF tensor by tensor (memory: one stacked expert tensor), atomically."""
    import gguf
    import gguf_qwen3moe
    quantizer = None if bits == 4 else _GgmlQuantizer(lib_dir or "")
    ftype = {4: gguf.LlamaFileType.MOSTLY_Q4_0, 3: gguf.LlamaFileType.MOSTLY_Q3_K_S,
             2: gguf.LlamaFileType.MOSTLY_Q2_K}[bits]
    tmp = path + ".part"
    try:
        w = gguf.GGUFWriter(tmp, "qwen3moe")
        w.add_name("fwassist synthetic qwen3moe (Qwen3-Coder-30B-A3B shape)")
        gguf_qwen3moe._add_metadata(w, c, False, int(ftype))
        w.add_quantization_version(gguf.GGML_QUANT_VERSION)
        gguf_qwen3moe._add_tokenizer(w, tokenizer(int(c["vocab_size"])), int(c["vocab_size"]))
        plan = list(gguf_tensors(c, bits, seed, quantizer))
        total = 0
        for name, shape, qt, _ in plan:
            bsz, tsz = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(qt)]
            nbytes = int(np.prod(shape)) // bsz * tsz
            total += nbytes
            if qt in (int(gguf.GGMLQuantizationType.F32),):
                w.add_tensor_info(name, shape, np.dtype(np.float32), nbytes)
            else:
                w.add_tensor_info(name, shape, np.dtype(np.float16), nbytes,
                                  raw_dtype=gguf.GGMLQuantizationType(qt))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
        done = 0
        for name, shape, qt, make in plan:
            arr = make()
            w.write_tensor_data(arr)
            done += arr.nbytes
            del arr
            if progress is not None:
                progress(done, total)
        w.close()
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _vm_hwm() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shape", choices=sorted(SHAPES), default="full")
    ap.add_argument("--bits", type=int, choices=(2, 3, 4), required=True)
    ap.add_argument("--out", default=BIG_DIR,
                    help="directory for <shape>-<bits>bit.fwa / .gguf")
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--no-fwa", action="store_true")
    ap.add_argument("--no-gguf", action="store_true")
    ap.add_argument("--llama-lib", default=lib_dir(DEFAULT_ROOT))
    ap.add_argument("--stats", help="write build timings and peak RSS (JSON) here")
    ap.add_argument("--layers", type=int, help="fewer decoder layers than the shape has (a "
                    "smaller file of the same per-layer shape, for measuring a writer)")
    args = ap.parse_args()
    c = config(args.shape)
    if args.layers:
        c["num_hidden_layers"] = args.layers
    os.makedirs(args.out, exist_ok=True)
    stats: dict[str, Any] = {"shape": args.shape, "bits": args.bits, "seed": args.seed,
                             "layers": c["num_hidden_layers"]}
    if not args.no_fwa:
        p = os.path.join(args.out, f"{args.shape}-{args.bits}bit.fwa")
        GEN_SECONDS[0] = GEN_CPU_SECONDS[0] = 0.0
        t0, c0 = time.perf_counter(), time.process_time()
        pin = write_fwa(p, c, args.bits, args.seed)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        size = os.path.getsize(p)
        # Every thread of the process: the writer and its final check, nothing else runs.
        writer_cpu = cpu - GEN_CPU_SECONDS[0]
        stats["fwa"] = {"path": p, "pin": pin, "bytes": size, "wall_s": wall,
                        "layers": c["num_hidden_layers"],
                        "generate_s": GEN_SECONDS[0], "writer_s": wall - GEN_SECONDS[0],
                        "writer_gb_per_s": size / 1e9 / (wall - GEN_SECONDS[0]),
                        "end_to_end_gb_per_s": size / 1e9 / wall, "peak_rss_bytes": _vm_hwm(),
                        "generate_cpu_s": GEN_CPU_SECONDS[0], "writer_cpu_s": writer_cpu,
                        "writer_gb_per_cpu_s": size / 1e9 / writer_cpu,
                        "loadavg": os.getloadavg()[0]}
        log(f"{p}: {size / 1e9:.2f} GB in {wall:.0f} s ({GEN_SECONDS[0]:.0f} s generating), "
            f"{pin}")
    if not args.no_gguf:
        p = os.path.join(args.out, f"{args.shape}-{LLAMA_QUANT[args.bits]}.gguf")
        t0 = time.perf_counter()
        write_gguf(p, c, args.bits, args.seed, args.llama_lib)
        wall = time.perf_counter() - t0
        stats["gguf"] = {"path": p, "bytes": os.path.getsize(p), "wall_s": wall,
                         "peak_rss_bytes": _vm_hwm()}
        log(f"{p}: {os.path.getsize(p) / 1e9:.2f} GB in {wall:.0f} s")
    if args.stats:
        with open(args.stats, "w") as f:
            json.dump(stats, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
