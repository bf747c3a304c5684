# SPDX-License-Identifier: Apache-2.0
"""Deterministic tiny Qwen3-MoE models for the runtime tests, and their ONNX-side references.

A byte-level BPE tokenizer (Qwen2 pre-tokenizer) trained on a small source-code corpus kept in
this file, so the same bytes come out on every machine; random float weights quantized into a
QAT ONNX graph (fwassist.export.qat_builder) and exported to ``.fwa``; onnxruntime running that
graph unfused as the oracle; the numpy reference's router near-tie detection, which says from
which token on two correct implementations may legitimately pick different experts; and a numpy
model of the runtime's fast mode (int8 activations, docs/kernels.md), since onnxruntime has no
such arithmetic to compare with.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path
from typing import Any, NamedTuple, Optional, Sequence, Union

import numpy as np
import pytest

from fwassist.export.qat_builder import QuantSpec, build_qat_onnx, random_weights, tiny_config

QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+"
                 r"[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
EOT = "<|endoftext|>"
TOKENIZER_VOCAB = 448          # 256 byte tokens + 191 merges + <|endoftext|>
TIE_REL = 1e-5                 # router k-th vs (k+1)-th probability gap treated as a tie
CARD = {"name": "fwassist-test-moe",
        "known_limitations": ["random weights: a test fixture, not a useful model"]}

# ---------------------------------------------------------------------------------------------
# The tokenizer's training corpus: written for these tests, so it never changes under them.

C_SOURCE = r"""/* ring.c — a fixed-size ring buffer of bytes. Größe: immer eine Zweierpotenz. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    uint8_t *data;
    size_t head;   /* next byte to read */
    size_t tail;   /* next byte to write */
    size_t mask;   /* capacity - 1 */
} ring_t;

/* 初始化：容量必须是 2 的幂。 */
int ring_init(ring_t *r, size_t capacity) {
    if (capacity == 0 || (capacity & (capacity - 1)) != 0) {
        return -1;
    }
    r->data = (uint8_t *)malloc(capacity);
    if (r->data == NULL) {
        return -2;
    }
    r->head = 0;
    r->tail = 0;
    r->mask = capacity - 1;
    return 0;
}

void ring_free(ring_t *r) {
    free(r->data);
    r->data = NULL;
    r->head = r->tail = r->mask = 0;
}

size_t ring_size(const ring_t *r) {
    return r->tail - r->head;
}

size_t ring_space(const ring_t *r) {
    return r->mask + 1 - ring_size(r);
}

/* Écrit au plus n octets ; renvoie le nombre écrit. */
size_t ring_write(ring_t *r, const uint8_t *src, size_t n) {
    size_t i;
    size_t room = ring_space(r);
    if (n > room) {
        n = room;
    }
    for (i = 0; i < n; i++) {
        r->data[(r->tail + i) & r->mask] = src[i];
    }
    r->tail += n;
    return n;
}

size_t ring_read(ring_t *r, uint8_t *dst, size_t n) {
    size_t i;
    size_t have = ring_size(r);
    if (n > have) {
        n = have;
    }
    for (i = 0; i < n; i++) {
        dst[i] = r->data[(r->head + i) & r->mask];
    }
    r->head += n;
    return n;
}

/* hash.c — FNV-1a, 32 bits. */
uint32_t fnv1a(const char *s, size_t len) {
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < len; i++) {
        h ^= (uint8_t)s[i];
        h *= 16777619u;
    }
    return h;
}

struct entry {
    char *key;
    int value;
    struct entry *next;
};

struct table {
    struct entry **buckets;
    size_t nbuckets;
    size_t count;
};

static struct entry *find(struct table *t, const char *key) {
    size_t len = strlen(key);
    struct entry *e = t->buckets[fnv1a(key, len) % t->nbuckets];
    while (e != NULL) {
        if (strcmp(e->key, key) == 0) {
            return e;
        }
        e = e->next;
    }
    return NULL;
}

int table_get(struct table *t, const char *key, int *out) {
    struct entry *e = find(t, key);
    if (e == NULL) {
        return 0;
    }
    *out = e->value;
    return 1;
}

int table_put(struct table *t, const char *key, int value) {
    struct entry *e = find(t, key);
    if (e != NULL) {
        e->value = value;
        return 0;
    }
    e = (struct entry *)malloc(sizeof(*e));
    if (e == NULL) {
        return -1;
    }
    e->key = strdup(key);
    e->value = value;
    size_t b = fnv1a(key, strlen(key)) % t->nbuckets;
    e->next = t->buckets[b];
    t->buckets[b] = e;
    t->count++;
    return 1;
}

/* Сортировка вставками: достаточно для маленьких массивов. */
void insertion_sort(int *a, int n) {
    for (int i = 1; i < n; i++) {
        int x = a[i];
        int j = i - 1;
        while (j >= 0 && a[j] > x) {
            a[j + 1] = a[j];
            j--;
        }
        a[j + 1] = x;
    }
}

static int cmp_int(const void *a, const void *b) {
    int x = *(const int *)a;
    int y = *(const int *)b;
    return (x > y) - (x < y);
}

int *sorted_copy(const int *a, size_t n) {
    int *out = (int *)malloc(n * sizeof(int));
    if (out == NULL) {
        return NULL;
    }
    memcpy(out, a, n * sizeof(int));
    qsort(out, n, sizeof(int), cmp_int);
    return out;
}

/* 二分查找：返回第一个 >= key 的位置。 */
size_t lower_bound(const int *a, size_t n, int key) {
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (a[mid] < key) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return lo;
}

#include <stdio.h>

int main(int argc, char **argv) {
    ring_t r;
    uint8_t buf[16];
    if (ring_init(&r, 64) != 0) {
        fprintf(stderr, "ring_init failed\n");
        return 1;
    }
    for (int i = 1; i < argc; i++) {
        ring_write(&r, (const uint8_t *)argv[i], strlen(argv[i]));
    }
    size_t n = ring_read(&r, buf, sizeof(buf));
    printf("read %zu bytes: %.*s\n", n, (int)n, (const char *)buf);
    int values[8] = {5, 3, 9, 1, 7, 2, 8, 6};
    insertion_sort(values, 8);
    for (int i = 0; i < 8; i++) {
        printf("%d%c", values[i], i == 7 ? '\n' : ' ');
    }
    printf("lower_bound(7) = %zu\n", lower_bound(values, 8, 7));
    printf("fnv1a(\"hello\") = 0x%08x\n", fnv1a("hello", 5));
    ring_free(&r);
    return 0;
}
"""

PY_SOURCE = r'''"""Small utilities — a tokenizer-friendly sample of everyday Python."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Optional


@dataclass
class Config:
    """Runtime settings read from a JSON file."""

    name: str
    threads: int = 1
    verbose: bool = False
    paths: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, path: str) -> "Config":
        with open(path, "r", encoding="utf-8") as f:
            data = json.load(f)
        return cls(**data)

    def save(self, path: str) -> None:
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(self.__dict__, f, indent=2, sort_keys=True)
        os.replace(tmp, path)


def chunks(items: list[int], size: int) -> Iterator[list[int]]:
    """Yields consecutive slices of at most `size` items."""
    if size <= 0:
        raise ValueError(f"size must be positive, got {size}")
    for i in range(0, len(items), size):
        yield items[i:i + size]


def flatten(rows: Iterable[Iterable[int]]) -> list[int]:
    out: list[int] = []
    for row in rows:
        out.extend(row)
    return out


class LRUCache:
    """A least-recently-used cache. Größe begrenzt; älteste Einträge fliegen zuerst."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.items: dict[str, int] = {}

    def get(self, key: str) -> Optional[int]:
        if key not in self.items:
            return None
        value = self.items.pop(key)
        self.items[key] = value
        return value

    def put(self, key: str, value: int) -> None:
        if key in self.items:
            self.items.pop(key)
        elif len(self.items) >= self.capacity:
            oldest = next(iter(self.items))
            del self.items[oldest]
        self.items[key] = value


def fib(n: int) -> int:
    # 斐波那契数列：迭代版本，避免递归过深。
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


def is_prime(n: int) -> bool:
    if n < 2:
        return False
    i = 2
    while i * i <= n:
        if n % i == 0:
            return False
        i += 1
    return True


def primes(limit: int) -> list[int]:
    """Sieve of Eratosthenes."""
    sieve = [True] * (limit + 1)
    sieve[0:2] = [False, False]
    for i in range(2, int(limit ** 0.5) + 1):
        if sieve[i]:
            for j in range(i * i, limit + 1, i):
                sieve[j] = False
    return [i for i, ok in enumerate(sieve) if ok]


def word_counts(text: str) -> dict[str, int]:
    # Подсчёт слов без учёта регистра.
    counts: dict[str, int] = {}
    for word in text.lower().split():
        word = word.strip(".,;:!?\"'()[]{}")
        if word:
            counts[word] = counts.get(word, 0) + 1
    return counts


def binary_search(a: list[int], key: int) -> int:
    lo, hi = 0, len(a)
    while lo < hi:
        mid = (lo + hi) // 2
        if a[mid] < key:
            lo = mid + 1
        else:
            hi = mid
    return lo


class Node:
    def __init__(self, value: int, left: "Optional[Node]" = None,
                 right: "Optional[Node]" = None) -> None:
        self.value = value
        self.left = left
        self.right = right

    def insert(self, value: int) -> None:
        if value < self.value:
            if self.left is None:
                self.left = Node(value)
            else:
                self.left.insert(value)
        else:
            if self.right is None:
                self.right = Node(value)
            else:
                self.right.insert(value)

    def __iter__(self) -> Iterator[int]:
        if self.left is not None:
            yield from self.left
        yield self.value
        if self.right is not None:
            yield from self.right


def read_lines(path: str) -> list[str]:
    try:
        with open(path, "r", encoding="utf-8") as f:
            return [line.rstrip("\n") for line in f]
    except FileNotFoundError:
        return []
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 ({e})") from None


# Café, naïve, façade: accents survive NFC normalisation.
GREETINGS = {"en": "hello", "fr": "bonjour", "de": "grüß dich", "ja": "こんにちは", "el": "γειά"}


def main() -> int:
    cfg = Config(name="demo", threads=2)
    print(f"{cfg.name}: {cfg.threads} threads")
    for part in chunks(list(range(10)), 3):
        print(part, sum(part))
    cache = LRUCache(2)
    cache.put("a", 1)
    cache.put("b", 2)
    cache.get("a")
    cache.put("c", 3)
    print(sorted(cache.items))
    print(fib(20), primes(30), is_prime(97))
    root = Node(5)
    for v in (3, 8, 1, 4, 9):
        root.insert(v)
    print(list(root))
    for lang, word in sorted(GREETINGS.items()):
        print(f"{lang} -> {word}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
'''

CORPUS = (C_SOURCE, PY_SOURCE)


@functools.lru_cache(maxsize=None)
def tokenizer_json() -> str:
    """The tokenizer.json text: a Qwen2-style byte-level BPE trained on CORPUS (deterministic:
    the trainer breaks count ties by the pair itself and the corpus is fixed)."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
    from tokenizers import processors, trainers

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=TOKENIZER_VOCAB, special_tokens=[EOT],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    # Lines, repeated, so the merges favour code idioms; order fixed.
    lines = [ln for src in CORPUS for ln in src.splitlines(True)]
    tok.train_from_iterator(lines * 2, trainer=trainer)
    return tok.to_str()


def tokenizer_vocab_size(text: str) -> int:
    """Largest id + 1, added tokens included: the model's vocab_size."""
    from tokenizers import Tokenizer

    return Tokenizer.from_str(text).get_vocab_size(with_added_tokens=True)


# ---------------------------------------------------------------------------------------------
# Models


class BuiltModel(NamedTuple):
    fwa_path: str
    onnx_path: str
    config: dict[str, Any]


def quant_scheme(bits: int, block: int) -> dict[str, QuantSpec]:
    """Role-keyed specs: the projections at ``bits`` as fake quant (Q->DQ, or Q->Clip->DQ for
    3 bits, which no ONNX integer type declares), expert/dense down projections with zero
    points, and attention output projections as integer codes -> DQ with float16 scales (fake
    quant with float16 scales is ambiguous and refused by the importer; DQ has no 3-bit type,
    so the 3-bit model keeps those at 4 bits). The 2-bit model's lm_head is 8-bit; router,
    embedding and the other lm_heads stay float."""
    pattern = "qcdq" if bits == 3 else "qdq"
    scheme = {
        "default": QuantSpec(pattern=pattern, bits=bits, block=block),
        "expert_down": QuantSpec(pattern=pattern, bits=bits, block=block, symmetric=False),
        "mlp_down": QuantSpec(pattern=pattern, bits=bits, block=block, symmetric=False),
        "o_proj": QuantSpec(pattern="dq", bits=4 if bits == 3 else bits, block=block,
                            scale_dtype="float16"),
    }
    if bits == 2:
        scheme["lm_head"] = QuantSpec(pattern="qdq", bits=8, block=block)
    return scheme


def model_config(*, num_experts: int, top_k: int, layers: int, mlp_only_layers: Sequence[int],
                 tie: bool, vocab_size: int) -> dict[str, Any]:
    return tiny_config(vocab_size=vocab_size, num_hidden_layers=layers, num_experts=num_experts,
                       num_experts_per_tok=top_k, mlp_only_layers=sorted(mlp_only_layers),
                       tie_word_embeddings=tie, max_position_embeddings=256,
                       rope_theta=1000000.0)


def model_weights(config: dict[str, Any], seed: int) -> dict[str, np.ndarray]:
    """random_weights, rescaled so logits have a spread of a few units: a smaller embedding
    when it doubles as lm_head (N(0, 1) rows would give logits of std ~8 and one-hot softmax),
    a larger lm_head otherwise (std ~1 logits make sampling nearly uniform)."""
    w = random_weights(config, seed=seed)
    if config["tie_word_embeddings"]:
        w["model.embed_tokens.weight"] = (w["model.embed_tokens.weight"] * 0.3).astype(np.float32)
    else:
        w["lm_head.weight"] = (w["lm_head.weight"] * 2.5).astype(np.float32)
    return w


def check_logits_spread(onnx_path: str, vocab_size: int) -> None:
    """Refuses a degenerate fixture: top-1 margins ~0 everywhere (every comparison a coin
    flip) or a one-hot softmax (sampling tests would see only greedy)."""
    rng = np.random.default_rng(5)
    lg = OrtModel(onnx_path).logits([int(i) for i in rng.integers(0, vocab_size, 32)])
    margin = float(np.median(top1_margin(lg)))
    p = np.exp(lg - lg.max(axis=1, keepdims=True))
    pmax = float(np.median(np.max(p / p.sum(axis=1, keepdims=True), axis=1)))
    if not (margin > 0.02 * float(np.std(lg)) and pmax < 0.9):
        raise AssertionError(f"{onnx_path}: degenerate logits (median top-1 margin {margin:.3g}, "
                             f"logit std {float(np.std(lg)):.3g}, median max prob {pmax:.2f})")


def build_model(tmpdir: Union[str, "os.PathLike[str]"], *, bits: int = 4, block: int = 32, num_experts: int = 16, top_k: int = 4,
                layers: int = 3, mlp_only_layers: Sequence[int] = (1,), tie: bool = False,
                tokenizer: bool = True, seed: int = 1234,
                prebuilt_only: bool = False) -> BuiltModel:
    """Builds (or reuses, when already built in ``tmpdir``) a model: QAT ONNX + config.json
    (+ tokenizer.json) + card.json in a directory of its own, exported to model.fwa.
    Returns (fwa_path, onnx_path, config). ``prebuilt_only``: reuse only, never build."""
    from fwassist.export.pipeline import export_onnx

    key = json.dumps({"bits": bits, "block": block, "E": num_experts, "k": top_k, "L": layers,
                      "dense": sorted(mlp_only_layers), "tie": tie, "tok": tokenizer,
                      "seed": seed}, sort_keys=True)
    d = Path(tmpdir) / ("m_" + hashlib.sha256(key.encode()).hexdigest()[:12])
    fwa, onnx_path = d / "model.fwa", d / "model.onnx"
    if fwa.is_file():
        return BuiltModel(str(fwa), str(onnx_path),
                          json.loads((d / "config.json").read_text(encoding="utf-8")))
    if prebuilt_only:
        raise FileNotFoundError(f"{fwa}: this model ({key}) was not built beforehand "
                                "(tests/cross/make_tiny_models.py)")
    d.mkdir(parents=True, exist_ok=True)
    tok_text = tokenizer_json() if tokenizer else None
    vocab = tokenizer_vocab_size(tok_text) if tok_text else 300
    cfg = model_config(num_experts=num_experts, top_k=top_k, layers=layers,
                       mlp_only_layers=mlp_only_layers, tie=tie, vocab_size=vocab)
    build_qat_onnx(str(onnx_path), model_weights(cfg, seed), cfg, quant_scheme(bits, block))
    check_logits_spread(str(onnx_path), vocab)
    (d / "config.json").write_text(json.dumps(cfg, indent=1, sort_keys=True), encoding="utf-8")
    (d / "card.json").write_text(json.dumps(CARD), encoding="utf-8")
    if tok_text is not None:
        (d / "tokenizer.json").write_text(tok_text, encoding="utf-8")
    tmp = d / "model.fwa.part"
    export_onnx(str(onnx_path), str(tmp), evidence=False, quiet=True)
    os.replace(tmp, fwa)
    return BuiltModel(str(fwa), str(onnx_path), cfg)


# ---------------------------------------------------------------------------------------------
# ONNX-side references

# Tests that run onnxruntime themselves: skipped only in the aarch64 run under qemu-user
# (tests/cross/run_python_aarch64.sh sets FWA_UNDER_QEMU), where onnxruntime's aarch64 wheels
# crash on import; everywhere else onnxruntime is a test dependency and they run.
needs_onnxruntime = pytest.mark.skipif(
    bool(os.environ.get("FWA_UNDER_QEMU")),
    reason="runs onnxruntime, whose aarch64 wheels crash on import under qemu-user 7.2")


class OrtModel:
    """onnxruntime on the source graph, unfused (ORT_DISABLE_ALL: its DQ+MatMul fusion would
    switch to int8 activations) and single-threaded, so runs are repeatable."""

    def __init__(self, onnx_path: str) -> None:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        self.sess = ort.InferenceSession(onnx_path, so, providers=["CPUExecutionProvider"])
        self.input = self.sess.get_inputs()[0].name

    def logits(self, ids: Sequence[int]) -> np.ndarray:
        """float32 [len(ids), vocab]."""
        x = np.asarray(list(ids), dtype=np.int64).reshape(1, -1)
        out = self.sess.run(None, {self.input: x})[0]
        return np.asarray(out, dtype=np.float32).reshape(x.shape[1], -1)


def ort_greedy(ort_model: OrtModel, prompt_ids: Sequence[int], n: int) -> list[int]:
    """n greedy tokens, recomputing the whole sequence each step (no cache to get wrong)."""
    ids = list(prompt_ids)
    out: list[int] = []
    for _ in range(n):
        nxt = int(np.argmax(ort_model.logits(ids)[-1]))
        out.append(nxt)
        ids.append(nxt)
    return out


class RouterTies:
    """Router near-ties of a model, from the float64 numpy reference on the imported ONNX."""

    def __init__(self, onnx_path: str, tie_rel: float = TIE_REL) -> None:
        from fwassist.export.onnx_import import import_onnx
        from fwassist.export.reference import Reference

        d = os.path.dirname(os.path.abspath(onnx_path))
        tok = os.path.join(d, "tokenizer.json")
        self.ref = Reference(import_onnx(onnx_path, config_path=os.path.join(d, "config.json"),
                                         tokenizer_path=tok if os.path.isfile(tok) else None))
        self.tie_rel = tie_rel

    def first_ambiguous(self, ids: Sequence[int]) -> Optional[int]:
        """Position of the first token whose top-k expert choice is a near-tie (None if none):
        from there on, either choice is correct, so strict comparisons stop before it."""
        return self.ref.forward(np.asarray(list(ids), np.int64), tie_rel=self.tie_rel).first_ambiguous

    def keep(self, ids: Sequence[int]) -> int:
        """How many leading positions of ``ids`` are safe to compare strictly."""
        f = self.first_ambiguous(ids)
        return len(ids) if f is None else f


def fast_linear(x: np.ndarray, w) -> np.ndarray:
    """y = x @ W.T in the runtime's fast mode as docs/kernels.md specifies it, for a
    QuantizedWeight W: activations quantized per chunk of 32 along K (amax, d = amax / 127,
    q = round_half_even(x * (127 / amax)), float32), exact integer dot products per chunk, and
    the per-(row, chunk) products float32(s * d) accumulated (here in float64, a rounding away
    from the runtime's float32 fma chain). Independent of fwassist's kernels: numpy only."""
    x = np.asarray(x, np.float32)
    M, K = x.shape
    C = -(-K // 32)
    xp = np.zeros((M, C * 32), np.float32)
    xp[:, :K] = x
    xc = xp.reshape(M, C, 32)
    amax = np.max(np.abs(xc), axis=2)
    nz = amax > 0
    inv = np.divide(np.float32(127), amax, out=np.zeros_like(amax), where=nz)
    qx = np.rint(xc * inv[:, :, None]).astype(np.int64)                  # [M, C, 32]
    d = (amax / np.float32(127)).astype(np.float32)                      # [M, C]
    wi = w.q.astype(np.int64)
    if w.zero_points is not None:
        wi = wi - np.repeat(w.zero_points.astype(np.int64), w.block, axis=1)[:, :K]
    N = wi.shape[0]
    wp = np.zeros((N, C * 32), np.int64)
    wp[:, :K] = wi
    isum = np.einsum("ncj,mcj->mnc", wp.reshape(N, C, 32), qx)          # exact integers
    s = w.scales.astype(np.float32)[:, np.arange(C) * 32 // w.block]     # [N, C]
    sd = (s[None, :, :] * d[:, None, :]).astype(np.float32)              # float32 product
    return np.sum(isum.astype(np.float64) * sd.astype(np.float64), axis=2)


def rounding_gap(x: np.ndarray) -> np.ndarray:
    """Per row of x, the smallest distance of x * (127 / amax) to a rounding boundary (k + 1/2)
    over all elements: where it is within float noise, the runtime's float32 activations may
    round the other way, and from there on the two computations legitimately diverge at the
    int8 noise level (quantized activations are chaotic at that scale)."""
    x = np.asarray(x, np.float32)
    M, K = x.shape
    C = -(-K // 32)
    xp = np.zeros((M, C * 32), np.float32)
    xp[:, :K] = x
    xc = xp.reshape(M, C, 32)
    amax = np.max(np.abs(xc), axis=2)
    inv = np.divide(np.float32(127), amax, out=np.zeros_like(amax), where=amax > 0)
    v = (xc * inv[:, :, None]).astype(np.float64)
    return np.min(np.abs(v - np.floor(v) - 0.5), axis=(1, 2))


class FastOracle:
    """The model's forward with the fast mode's arithmetic in every quantized linear (see
    fast_linear) and float64 everywhere else: what a correct fast mode computes, up to float
    rounding, so a runtime bug (scales, zero points, chunking, routing) shows up as a large
    difference even where int8 activations legitimately move ONNX's top-1 or KL."""

    def __init__(self, onnx_path: str) -> None:
        from fwassist.export.mapping import is_moe_layer
        from fwassist.export.model import QuantizedWeight
        from fwassist.export.onnx_import import import_onnx
        from fwassist.export.reference import dequantize

        d = os.path.dirname(os.path.abspath(onnx_path))
        m = import_onnx(onnx_path, config_path=os.path.join(d, "config.json"))
        self.c = m.config
        self.moe = [is_moe_layer(self.c, l) for l in range(self.c["num_hidden_layers"])]
        self.w: dict = {}
        for t in m.tensors:
            v = t.value
            self.w[(t.role, t.layer, t.expert)] = (v if isinstance(v, QuantizedWeight)
                                                   else dequantize(v).astype(np.float64))
        if ("lm_head", None, None) not in self.w:
            self.w[("lm_head", None, None)] = self.w[("embed", None, None)]

    def _lin(self, key, x: np.ndarray, pos: np.ndarray) -> np.ndarray:
        """x [M, K] holds positions ``pos``; records their activation rounding gaps."""
        w = self.w[key]
        if isinstance(w, np.ndarray):
            return x @ w.T
        x32 = x.astype(np.float32)
        np.minimum.at(self._gap, pos, rounding_gap(x32))
        return fast_linear(x32, w)

    def _rms(self, x: np.ndarray, key) -> np.ndarray:
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + self.c["rms_norm_eps"]) \
            * self.w[key]

    def forward(self, ids: Sequence[int], tie_rel: float,
                round_eps: float) -> tuple[np.ndarray, Optional[int]]:
        """(logits float64 [T, vocab], first position whose expert choice is a near-tie within
        tie_rel or whose activations come within round_eps of a rounding boundary)."""
        c = self.c
        ids = np.asarray(list(ids), np.int64)
        T = ids.size
        allpos = np.arange(T)
        self._gap = np.full(T, np.inf)

        def lin(key, x, pos=allpos):
            return self._lin(key, x, pos)

        nh, nkv, hd = c["num_attention_heads"], c["num_key_value_heads"], c["head_dim"]
        h = self.w[("embed", None, None)][ids]
        inv = 1.0 / (c["rope_theta"] ** (np.arange(0, hd, 2, dtype=np.float64) / hd))
        f = np.arange(T, dtype=np.float64)[:, None] * inv[None, :]
        f = np.concatenate([f, f], axis=-1)
        cos, sin = np.cos(f)[:, None, :], np.sin(f)[:, None, :]
        mask = np.triu(np.full((T, T), -np.inf), k=1)
        first: Optional[int] = None

        def rope(x):
            return x * cos + np.concatenate([-x[..., hd // 2:], x[..., :hd // 2]], axis=-1) * sin

        for l in range(c["num_hidden_layers"]):
            x = self._rms(h, ("input_norm", l, None))
            q = self._rms(lin(("q_proj", l, None), x).reshape(T, nh, hd), ("q_norm", l, None))
            k = self._rms(lin(("k_proj", l, None), x).reshape(T, nkv, hd), ("k_norm", l, None))
            v = lin(("v_proj", l, None), x).reshape(T, nkv, hd)
            q, k = rope(q), rope(k)
            kh = np.repeat(k.transpose(1, 0, 2), nh // nkv, axis=0)
            vh = np.repeat(v.transpose(1, 0, 2), nh // nkv, axis=0)
            sc = q.transpose(1, 0, 2) @ kh.transpose(0, 2, 1) / np.sqrt(hd) + mask
            p = np.exp(sc - sc.max(axis=-1, keepdims=True))
            p /= p.sum(axis=-1, keepdims=True)
            o = (p @ vh).transpose(1, 0, 2).reshape(T, nh * hd)
            h = h + lin(("o_proj", l, None), o)
            x = self._rms(h, ("post_attention_norm", l, None))
            if self.moe[l]:
                E, K = c["num_experts"], c["num_experts_per_tok"]
                lg = lin(("router", l, None), x)
                pr = np.exp(lg - lg.max(axis=-1, keepdims=True))
                pr /= pr.sum(axis=-1, keepdims=True)
                order = np.argsort(-pr, axis=-1, kind="stable")
                top = order[:, :K]
                tv = np.take_along_axis(pr, top, axis=-1)
                if K < E:
                    nxt = np.take_along_axis(pr, order[:, K:K + 1], axis=-1)[:, 0]
                    amb = np.nonzero((tv[:, -1] - nxt) / tv[:, -1] <= tie_rel)[0]
                    if amb.size:
                        first = int(amb[0]) if first is None else min(first, int(amb[0]))
                if c["norm_topk_prob"]:
                    tv = tv / tv.sum(axis=-1, keepdims=True)
                m = np.zeros_like(h)
                for t in range(T):
                    xt, pt = x[t:t + 1], allpos[t:t + 1]
                    for j in range(K):
                        e = int(top[t, j])
                        g = lin(("expert_gate", l, e), xt, pt)
                        u = lin(("expert_up", l, e), xt, pt)
                        a = g / (1 + np.exp(-g)) * u
                        m[t] += tv[t, j] * lin(("expert_down", l, e), a, pt)[0]
            else:
                g = lin(("mlp_gate", l, None), x)
                u = lin(("mlp_up", l, None), x)
                m = lin(("mlp_down", l, None), g / (1 + np.exp(-g)) * u)
            h = h + m
        x = self._rms(h, ("final_norm", None, None))
        logits = lin(("lm_head", None, None), x)
        near = np.nonzero(self._gap <= round_eps)[0]
        if near.size:
            first = int(near[0]) if first is None else min(first, int(near[0]))
        return logits, first


def top1_margin(logits: np.ndarray) -> np.ndarray:
    """Per position, top-1 minus top-2 logit."""
    s = np.sort(logits, axis=-1)
    return s[:, -1] - s[:, -2]
