# SPDX-License-Identifier: Apache-2.0
"""The corpus builder's export-control flag (examples/train_tiny_coder/crypto_gate.py): each
detector on code that implements its primitive and on look-alikes that do not (CRC tables,
random hex tables, hash-function rotations, scalar modpow), the reference constants against
the published values, and the manifest record and exclusion of corpus.py."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from test_corpus import load_example, pkg_info, read_jsonl, write_tar

gate = load_example("crypto_gate")
corpus = load_example("corpus")

# Published values (FIPS-197 Figure 7 and 14, FIPS 180-4 4.2.2/4.2.3/5.3.3/5.3.5, RFC 8439 2.3).
SBOX_HEAD = bytes.fromhex("637c777bf26b6fc53001672bfed7ab76ca82c97dfa5947f0add4a2af9ca472c0")
INV_SBOX_HEAD = bytes.fromhex("52096ad53036a538bf40a39e81f3d7fb7ce339829b2fff87348e4344c4dee9cb")
TE0_HEAD = [0xC66363A5, 0xF87C7C84, 0xEE777799, 0xF67B7B8D, 0xFFF2F20D, 0xD66B6BBD, 0xDE6F6FB1,
            0x91C5C554, 0x60303050, 0x02010103, 0xCE6767A9, 0x562B2B7D, 0xE7FEFE19, 0xB5D7D762,
            0x4DABABE6, 0xEC76769A]
SHA256_K_HEAD = [0x428A2F98, 0x71374491, 0xB5C0FBCF, 0xE9B5DBA5, 0x3956C25B, 0x59F111F1,
                 0x923F82A4, 0xAB1C5ED5]
SHA256_IV = [0x6A09E667, 0xBB67AE85, 0x3C6EF372, 0xA54FF53A, 0x510E527F, 0x9B05688C,
             0x1F83D9AB, 0x5BE0CD19]
SHA512_K_HEAD = [0x428A2F98D728AE22, 0x7137449123EF65CD, 0xB5C0FBCFEC4D3B2F, 0xE9B5DBA58189DBBC,
                 0x3956C25BF348B538, 0x59F111F1B605D019, 0x923F82A4AF194F9B, 0xAB1C5ED5DA6D8118]
SHA512_IV = [0x6A09E667F3BCC908, 0xBB67AE8584CAA73B, 0x3C6EF372FE94F82B, 0xA54FF53A5F1D36F1,
             0x510E527FADE682D1, 0x9B05688C2B3E6C1F, 0x1F83D9ABFB41BD6B, 0x5BE0CD19137E2179]


def c_array(name: str, ctype: str, values: list[int], digits: int) -> str:
    rows = [", ".join(f"0x{v:0{digits}x}" for v in values[i:i + 8])
            for i in range(0, len(values), 8)]
    return f"static const {ctype} {name}[{len(values)}] = {{\n    " + ",\n    ".join(rows) + "\n};\n"


def detectors(text: str) -> list[str]:
    return [r["detector"] for r in gate.crypto_reasons(text)]


def crc32_table() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (0xEDB88320 ^ (c >> 1)) if c & 1 else c >> 1
        table.append(c)
    return table


def crc8_table() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = ((c << 1) ^ 0x07) & 0xFF if c & 0x80 else (c << 1) & 0xFF
        table.append(c)
    return table


RNG = np.random.Generator(np.random.PCG64(20))
RANDOM_BYTES = [int(v) for v in RNG.integers(0, 256, size=1024)]
RANDOM_WORDS = [int(v) for v in RNG.integers(0, 2**32, size=1024, dtype=np.uint64)]
RANDOM_WORDS64 = [int(v) for v in RNG.integers(0, 2**63, size=1024, dtype=np.uint64)]

CHACHA_BLOCK = """
#define ROTL32(v, n) (((v) << (n)) | ((v) >> (32 - (n))))
#define QR(a, b, c, d) \\
    a += b; d ^= a; d = ROTL32(d, 16); \\
    c += d; b ^= c; b = ROTL32(b, 12); \\
    a += b; d ^= a; d = ROTL32(d, 8);  \\
    c += d; b ^= c; b = ROTL32(b, 7)

static void chacha_rounds(uint32_t x[16]) {
    for (int i = 0; i < 10; i++) {
        QR(x[0], x[4], x[8], x[12]); QR(x[1], x[5], x[9], x[13]);
        QR(x[0], x[5], x[10], x[15]); QR(x[1], x[6], x[11], x[12]);
    }
}
"""
SALSA_SHIFTS = """
static uint32_t salsa(uint32_t x0, uint32_t x4, uint32_t x8, uint32_t x12) {
    x4 ^= ((x0 + x12) << 7) | ((x0 + x12) >> 25);
    x8 ^= ((x4 + x0) << 9) | ((x4 + x0) >> 23);
    x12 ^= ((x8 + x4) << 13) | ((x8 + x4) >> 19);
    x0 ^= ((x12 + x8) << 18) | ((x12 + x8) >> 14);
    return x0 ^ x4 ^ x8 ^ x12;
}
"""
MURMUR3 = """
static uint32_t fmix(uint32_t k1, uint32_t h1) {
    k1 *= 0xcc9e2d51; k1 = ROTL32(k1, 15); k1 *= 0x1b873593;
    h1 ^= k1; h1 = ROTL32(h1, 13); h1 = h1 * 5 + 0xe6546b64;
    h1 ^= h1 >> 16; h1 *= 0x85ebca6b; h1 ^= h1 >> 13; h1 *= 0xc2b2ae35; h1 ^= h1 >> 16;
    return h1;
}
"""
MONT_MUL = """
/* r = a * b * R^-1 mod n, n0 = -n^-1 mod 2^32 (CIOS) */
static void bn_mont_mul(uint32_t *r, const uint32_t *a, const uint32_t *b,
                        const uint32_t *n, uint32_t n0, int len) {
    uint32_t t[34] = {0};
    for (int i = 0; i < len; i++) {
        uint64_t c = 0;
        for (int j = 0; j < len; j++) {
            c += (uint64_t)a[j] * b[i] + t[j];
            t[j] = (uint32_t)c; c >>= 32;
        }
        uint32_t m = t[0] * n0;
        c = (uint64_t)m * n[0] + t[0];
        for (int j = 1; j < len; j++) {
            c = (c >> 32) + (uint64_t)m * n[j] + t[j];
            t[j - 1] = (uint32_t)c;
        }
    }
    memcpy(r, t, len * sizeof(uint32_t));
}
"""
FIXED_POINT_MUL = """
static int32_t q16_mul(int32_t a, int32_t b) {
    return (int32_t)(((int64_t)a * b) >> 16);
}
static uint32_t hash_mul(uint32_t h, uint32_t k) { return (uint32_t)(((uint64_t)h * k) >> 7); }
"""
BN_MODEXP = """
void bn_mod_exp(uint32_t *r, const uint32_t *base, const uint32_t *exp, int bits,
                const uint32_t *n, uint32_t n0, int len) {
    uint32_t acc[32] = {1};
    for (int i = bits - 1; i >= 0; i--) {
        bn_mont_sqr(acc, acc, n, n0, len);
        if ((exp[i / 32] >> (i % 32)) & 1)
            bn_mont_mul(acc, acc, base, n, n0, len);
    }
    memcpy(r, acc, len * sizeof(uint32_t));
}
"""
SCALAR_POWMOD = """
/* Rabin-Karp: base^len mod a small prime, on one machine word */
static uint64_t pow_mod(uint64_t b, uint64_t e, uint64_t m) {
    uint64_t r = 1;
    while (e) { if (e & 1) r = r * b % m; b = b * b % m; e >>= 1; }
    return r;
}
"""


def test_reference_constants_match_the_standards() -> None:
    assert bytes(gate.AES_SBOX[:32]) == SBOX_HEAD
    assert bytes(gate.AES_INV_SBOX[:32]) == INV_SBOX_HEAD
    assert sorted(gate.AES_SBOX) == list(range(256))
    assert set(TE0_HEAD) <= max(gate.AES_TTABLES, key=lambda t: len(t & set(TE0_HEAD)))
    assert set(SHA256_K_HEAD) <= gate.SHA256_K and len(gate.SHA256_K) == 64
    assert set(SHA256_IV) == gate.SHA256_IV
    assert set(SHA512_K_HEAD) <= gate.SHA512_K and len(gate.SHA512_K) == 80
    assert set(SHA512_IV) == gate.SHA512_IV
    assert b"expand 32-byte k" == b"".join(
        w.to_bytes(4, "little") for w in (0x61707865, 0x3320646E, 0x79622D32, 0x6B206574))


def test_curve_constants_are_on_their_curves() -> None:
    p, n, b, gx, gy = gate.CURVES["P-256"]
    assert p == 2**256 - 2**224 + 2**192 + 2**96 - 1
    assert (gy * gy - (gx**3 - 3 * gx + b)) % p == 0
    p, n, gx, gy = gate.CURVES["secp256k1"]
    assert p == 2**256 - 2**32 - 977
    assert (gy * gy - (gx**3 + 7)) % p == 0
    q = gate.ED25519_P
    d, y = gate.ED25519_D, gate.ED25519_BASE_Y
    assert (d * 121666 + 121665) % q == 0
    assert gate.ED25519_SQRT_M1 ** 2 % q == q - 1
    # the base point's x from -x^2 + y^2 = 1 + d x^2 y^2 exists (the equation has a root)
    x2 = (y * y - 1) * pow(d * y * y + 1, -1, q) % q
    assert pow(x2, (q - 1) // 2, q) == 1


@pytest.mark.parametrize("table", [SBOX_HEAD, INV_SBOX_HEAD])
def test_aes_sbox(table: bytes) -> None:
    text = c_array("sbox", "uint8_t", list(table), 2)
    assert "aes-sbox" in detectors(text)
    assert "aes-sbox" in detectors(c_array("s", "uint8_t", gate.AES_SBOX, 2))
    # 15 entries in a row, or the entries out of order, are not the S-box
    assert detectors(c_array("sbox", "uint8_t", list(table[:15]), 2)) == []
    shuffled = list(table[:16])
    shuffled[3], shuffled[4] = shuffled[4], shuffled[3]
    assert detectors(c_array("sbox", "uint8_t", shuffled + list(table[17:]), 2)) == []


def test_aes_ttable() -> None:
    assert detectors(c_array("Te0", "uint32_t", TE0_HEAD, 8)) == ["aes-ttable"]
    swapped = [int.from_bytes(v.to_bytes(4, "big"), "little") for v in TE0_HEAD]
    assert detectors(c_array("lut", "uint32_t", swapped, 8)) == ["aes-ttable"]
    assert detectors(c_array("Te0", "uint32_t", TE0_HEAD[:15], 8)) == []


def test_aes_rcon() -> None:
    rcon = [0x8D, 0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80, 0x1B, 0x36]
    assert detectors(c_array("Rcon", "uint8_t", rcon, 2)) == ["aes-rcon"]
    assert detectors(c_array("rcon", "uint32_t", [v << 24 for v in rcon[1:]], 8)) == ["aes-rcon"]
    bit_masks = [1 << i for i in range(8)] + [0x1B]
    assert detectors(c_array("mask", "uint8_t", bit_masks, 2)) == []


@pytest.mark.parametrize("name, values, need, digits", [
    ("sha256-k", SHA256_K_HEAD, 8, 8), ("sha256-iv", SHA256_IV, 4, 8),
    ("sha512-k", SHA512_K_HEAD, 8, 16), ("sha512-iv", SHA512_IV, 4, 16)])
def test_sha2_constants(name: str, values: list[int], need: int, digits: int) -> None:
    assert detectors(c_array("K", "uint64_t", values[:need], digits)) == [name]
    # the constants as #defines and in calls count as well as in a table
    calls = "\n".join(f"    ROUND(a, b, c, 0x{v:0{digits}x}ULL);" for v in values[:need])
    assert detectors("void f(void) {\n" + calls + "\n}\n") == [name]
    assert detectors(c_array("K", "uint64_t", values[:need - 1], digits)) == []


def test_chacha_constant() -> None:
    assert detectors('static const char sigma[16] = "expand 32-byte k";') == ["chacha-constant"]
    assert detectors('static const char tau[16] = "expand 16-byte k";') == ["chacha-constant"]
    words = "x[0] = 0x61707865; x[1] = 0x3320646e; x[2] = 0x79622d32; x[3] = 0x6b206574;"
    assert detectors(words) == ["chacha-constant"]
    assert detectors("x[0] = 0x61707865; x[1] = 0x3320646e;") == []
    assert detectors('puts("expand the 32-byte key buffer");') == []


def test_quarter_round() -> None:
    assert detectors(CHACHA_BLOCK) == ["chacha-quarter-round"]
    assert detectors(SALSA_SHIFTS) == ["chacha-quarter-round"]
    assert detectors(MURMUR3) == []
    assert detectors(CHACHA_BLOCK.replace("ROTL32(b, 7)", "ROTL32(b, 5)")) == []


def test_curve_constant() -> None:
    n = gate.CURVES["P-256"][1]
    limbs32 = [(n >> (32 * i)) & 0xFFFFFFFF for i in range(8)]
    assert detectors(c_array("p256_n", "uint32_t", limbs32, 8)) == ["curve-constant"]
    prime = gate.CURVES["P-256"][0]
    limbs64 = [(prime >> (64 * i)) & (2**64 - 1) for i in range(4)]
    assert detectors(c_array("p256_p", "uint64_t", limbs64, 16)) == ["curve-constant"]
    assert detectors(c_array("p256_p", "uint8_t", list(prime.to_bytes(32, "big")), 2)) == [
        "curve-constant"]
    assert detectors(f'bn_from_hex(&p, "{prime:064X}");') == ["curve-constant"]
    ell = gate.ED25519_L.to_bytes(32, "little")
    assert detectors(c_array("L", "uint8_t", list(ell), 2)) == ["curve-constant"]
    # two limbs, or P-256's prime limbs out of order, or all-ones words, are not enough
    assert detectors(c_array("w", "uint32_t", limbs32[:2], 8)) == []
    assert detectors(c_array("w", "uint64_t", [limbs64[0], limbs64[2], limbs64[1]], 16)) == []
    assert detectors(c_array("w", "uint32_t", [0xFFFFFFFF, 0, 1, 0xFFFFFFFF] * 4, 8)) == []


def test_montgomery_multiplication() -> None:
    assert detectors(MONT_MUL) == ["montgomery-multiplication"]
    assert detectors(FIXED_POINT_MUL) == []
    assert detectors(MONT_MUL.replace("(uint64_t)", "")) == []


def test_modexp() -> None:
    assert detectors(BN_MODEXP) == ["modexp"]
    assert detectors(SCALAR_POWMOD) == []


@pytest.mark.parametrize("text", [
    c_array("crc_table", "uint32_t", crc32_table(), 8),
    c_array("crc8", "uint8_t", crc8_table(), 2),
    c_array("noise", "uint8_t", RANDOM_BYTES, 2),
    c_array("noise", "uint32_t", RANDOM_WORDS, 8),
    c_array("noise", "uint64_t", RANDOM_WORDS64, 16),
    c_array("ascii", "uint8_t", list(range(256)), 2),
    MURMUR3, FIXED_POINT_MUL, SCALAR_POWMOD,
])
def test_no_false_positive_on_lookalike_tables(text: str) -> None:
    assert detectors(text) == []


def test_reasons_name_detector_and_evidence() -> None:
    text = (c_array("K", "uint32_t", sorted(gate.SHA256_K), 8)
            + c_array("H0", "uint32_t", SHA256_IV, 8))
    assert gate.crypto_reasons(text) == [
        {"detector": "sha256-k", "evidence": "64 of the 64 SHA-256 round constants, e.g. "
                                             "0x6ca6351"},
        {"detector": "sha256-iv", "evidence": "8 of the 8 SHA-256 initial hash values, e.g. "
                                              "0x1f83d9ab"}]


def plain_c(tag: str) -> str:
    lines = [f"/* {tag}: ring buffer helpers */"]
    lines += [f"static int {tag}_{i}(int x) {{ return (x << {i % 7}) ^ 0x{i:04x}; }}"
              for i in range(12)]
    return "\n".join(lines) + "\n"


@pytest.fixture
def crypto_sdist(tmp_path: Path) -> Path:
    root = tmp_path / "sdists"
    root.mkdir()
    files = {
        "PKG-INFO": pkg_info("cpkg", "1.0", "License-Expression: MIT"),
        "src/chacha.c": ("/* stream cipher */\n" + CHACHA_BLOCK).encode(),
        "src/sha256.c": ("/* hash */\n" + c_array("K", "uint32_t", sorted(gate.SHA256_K), 8)
                         ).encode(),
        "src/crc.c": ("/* checksums */\n" + c_array("crc", "uint32_t", crc32_table(), 8)).encode(),
        "src/ring.c": plain_c("ring").encode(),
        "src/list.c": plain_c("list").encode(),
    }
    write_tar(root / "cpkg-1.0.tar.gz", "cpkg-1.0", files)
    return root


SOURCES = [{"name": "cpkg", "version": "1.0", "kind": "pypi-sdist"}]


def test_manifest_records_flagged_files(crypto_sdist: Path, tmp_path: Path) -> None:
    man = corpus.build_corpus(SOURCES, tmp_path / "out", sdist_dir=crypto_sdist, test_percent=50)
    assert man["crypto_policy"] == "flag" and man["crypto_excluded"] == []
    flagged = {f["path"]: [r["detector"] for r in f["crypto"]]
               for f in man["files"] if "crypto" in f}
    assert flagged == {"cpkg-1.0/src/chacha.c": ["chacha-quarter-round"],
                       "cpkg-1.0/src/sha256.c": ["sha256-k"]}
    assert len(man["files"]) == 5 and man["totals"]["files_crypto_flagged"] == 2
    assert "file:crypto" not in man["refused"]
    on_disk = json.loads((tmp_path / "out" / "manifest.json").read_text(encoding="utf-8"))
    assert on_disk == man


def test_exclude_crypto_drops_flagged_files(crypto_sdist: Path, tmp_path: Path) -> None:
    kept = corpus.build_corpus(SOURCES, tmp_path / "flag", sdist_dir=crypto_sdist,
                               test_percent=50)
    assert corpus.main(["--out", str(tmp_path / "excl"), "--sdist-dir", str(crypto_sdist),
                        "--sources", str(write_sources(tmp_path)), "--test-percent", "50",
                        "--exclude-crypto"]) == 0
    man = json.loads((tmp_path / "excl" / "manifest.json").read_text(encoding="utf-8"))
    assert man["crypto_policy"] == "exclude"
    assert sorted(f["path"] for f in man["files"]) == [
        "cpkg-1.0/src/crc.c", "cpkg-1.0/src/list.c", "cpkg-1.0/src/ring.c"]
    assert not any("crypto" in f for f in man["files"])
    excluded = {e["path"]: e["crypto"][0]["detector"] for e in man["crypto_excluded"]}
    assert excluded == {"cpkg-1.0/src/chacha.c": "chacha-quarter-round",
                        "cpkg-1.0/src/sha256.c": "sha256-k"}
    assert man["refused"]["file:crypto"] == 2
    assert man["totals"]["files_crypto_excluded"] == 2
    # the other files keep their split; the splits hold no excluded text
    splits = {f["sha256"]: f["split"] for f in kept["files"]}
    assert all(splits[f["sha256"]] == f["split"] for f in man["files"])
    texts = [r["path"] for s in ("train", "test") for r in read_jsonl(tmp_path / "excl" / f"{s}.jsonl")]
    assert sorted(texts) == sorted(f["path"] for f in man["files"])


def write_sources(tmp_path: Path) -> Path:
    path = tmp_path / "sources.json"
    path.write_text(json.dumps(SOURCES), encoding="utf-8")
    return path
