# SPDX-License-Identifier: Apache-2.0
"""Export-control flag of the corpus builder: recognises C files that implement cryptographic
primitives by their constants and structures (``corpus.py`` records each in the manifest and
drops them under ``--exclude-crypto``).

Every reference constant is derived here from its definition, not copied from a table: the AES
S-box from the inverse in GF(2^8) and the affine map, the T-tables and round constants from it;
the SHA-2 round constants and initial hash values from the cube and square roots of the primes;
the Ed25519 constants from their field equations. The NIST/SEC curve constants are the
published values (the tests check them on their curves).

Detectors (``DETECTORS``), each returning the evidence it found or None:

* ``aes-sbox``       16 consecutive integer literals equal to 16 consecutive entries of the AES
                     S-box or its inverse (a CRC or random byte table does not match);
* ``aes-ttable``     >= 16 distinct 32-bit entries of one of the AES T-table layouts;
* ``aes-rcon``       the round constants 0x10 0x20 0x40 0x80 0x1b 0x36 in sequence (also
                     shifted into the top byte of a word);
* ``sha256-k`` / ``sha512-k``   >= 8 distinct round constants of SHA-256 / SHA-512;
* ``sha256-iv`` / ``sha512-iv`` >= 4 distinct initial hash values (BLAKE2s/2b share them);
* ``chacha-constant`` "expand 32-byte k" / "expand 16-byte k" as text or as >= 3 of its words;
* ``chacha-quarter-round``  rotations by 16, 12, 8, 7 (ChaCha) or 7, 9, 13, 18 (Salsa20) in
                     sequence, as ``ROTL(x, n)``-style calls or ``(x << n) | (x >> (32 - n))``;
* ``curve-constant`` >= 3 distinct non-trivial words (32-bit, 64-bit or 51-bit limbs), 12
                     consecutive bytes, every limb or byte in order, or the hex string of
                     one curve's constants (P-256, secp256k1, Ed25519);
* ``montgomery-multiplication``  a function named like Montgomery multiplication/reduction in
                     a file that forms double-width products (``(uint64_t)a * b``, ``__int128``);
* ``modexp``         a function named like modular exponentiation whose body tests exponent
                     bits and indexes limbs.

Standard library only.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence

# ---------------------------------------------------------------------------------------
# Reference constants
# ---------------------------------------------------------------------------------------


def _gf_mul(a: int, b: int) -> int:
    """Product in GF(2^8) modulo x^8 + x^4 + x^3 + x + 1."""
    r = 0
    while b:
        if b & 1:
            r ^= a
        a = ((a << 1) ^ 0x11B) if a & 0x80 else a << 1
        b >>= 1
    return r


def aes_sbox() -> list[int]:
    """S(x) = affine(x^-1) with 0^-1 = 0 (FIPS-197 5.1.1)."""
    inv = [0] * 256
    for x in range(1, 256):
        inv[x] = next(y for y in range(1, 256) if _gf_mul(x, y) == 1)
    box = []
    for x in range(256):
        b = inv[x]
        s = b
        for k in range(1, 5):
            s ^= ((b << k) | (b >> (8 - k))) & 0xFF
        box.append(s ^ 0x63)
    return box


AES_SBOX = aes_sbox()
AES_INV_SBOX = [AES_SBOX.index(i) for i in range(256)]


def aes_ttables() -> list[frozenset[int]]:
    """The 32-bit T-table layouts: (2s, s, s, 3s) rotated by 0..3 bytes, both byte orders."""
    tables = []
    for order in ((2, 1, 1, 3), (3, 1, 1, 2)):
        for rot in range(4):
            coeffs = order[rot:] + order[:rot]
            words: set[int] = set()
            for s in AES_SBOX:
                w = 0
                for c in coeffs:
                    w = (w << 8) | _gf_mul(s, c)
                words.add(w)
            tables.append(frozenset(words))
    return tables


AES_TTABLES = aes_ttables()
AES_RCON_TAIL = (0x10, 0x20, 0x40, 0x80, 0x1B, 0x36)


def _primes(n: int) -> list[int]:
    found: list[int] = []
    k = 2
    while len(found) < n:
        if all(k % p for p in found if p * p <= k):
            found.append(k)
        k += 1
    return found


def _iroot(x: int, k: int) -> int:
    """floor(x ** (1/k)) for integers."""
    lo, hi = 0, 1 << (x.bit_length() // k + 1)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if mid ** k <= x:
            lo = mid
        else:
            hi = mid - 1
    return lo


def sha2_constants(bits: int, count: int, root: int) -> list[int]:
    """The first ``bits`` bits of the fractional part of the ``root``-th root of the first
    ``count`` primes (FIPS 180-4 4.2.2/4.2.3, 5.3.3/5.3.5)."""
    mask = (1 << bits) - 1
    return [_iroot(p << (root * bits), root) & mask for p in _primes(count)]


SHA256_K = frozenset(sha2_constants(32, 64, 3))
SHA256_IV = frozenset(sha2_constants(32, 8, 2))
SHA512_K = frozenset(sha2_constants(64, 80, 3))
SHA512_IV = frozenset(sha2_constants(64, 8, 2))

CHACHA_WORDS = frozenset((0x61707865, 0x3320646E, 0x79622D32, 0x6B206574, 0x3120646E,
                          0x79622D36))

ED25519_P = 2**255 - 19
ED25519_L = 2**252 + 27742317777372353535851937790883648493
ED25519_D = (-121665 * pow(121666, -1, ED25519_P)) % ED25519_P
ED25519_BASE_Y = (4 * pow(5, -1, ED25519_P)) % ED25519_P
ED25519_SQRT_M1 = pow(2, (ED25519_P - 1) // 4, ED25519_P)

CURVES: dict[str, tuple[int, ...]] = {
    "P-256": (
        0xFFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFF,   # p
        0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551,   # n
        0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B,   # b
        0x6B17D1F2E12C4247F8BCE6E563A440F277037D812DEB33A0F4A13945D898C296,   # Gx
        0x4FE342E2FE1A7F9B8EE7EB4A7C0F9E162BCE33576B315ECECBB6406837BF51F5,   # Gy
    ),
    "secp256k1": (
        0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEFFFFFC2F,
        0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141,
        0x79BE667EF9DCBBAC55A06295CE870B07029BFCDB2DCE28D959F2815B16F81798,
        0x483ADA7726A3C4655DA4FBFC0E1108A8FD17B448A68554199C47D08FFB10D4B8,
    ),
    "Ed25519": (ED25519_L, ED25519_D, ED25519_BASE_Y, ED25519_SQRT_M1),
}


def _limbs(value: int, width: int, count: int) -> list[int]:
    mask = (1 << width) - 1
    return [(value >> (width * i)) & mask for i in range(count)]


def _distinctive(word: int, width: int) -> bool:
    """A limb that identifies its constant: not small, a power of two, or a run of ones."""
    inverse = ((1 << width) - 1) ^ word
    return (word >= 1 << 12 and word & (word - 1) != 0 and (word + 1) & word != 0
            and (inverse + 1) & inverse != 0)


def curve_words() -> dict[str, frozenset[int]]:
    """Per curve, the distinctive 32-bit, 64-bit and 51-bit limbs of its constants."""
    out = {}
    for name, values in CURVES.items():
        words: set[int] = set()
        for v in values:
            for width, count in ((32, 8), (64, 4), (51, 5)):
                words.update(w for w in _limbs(v, width, count) if _distinctive(w, width))
        out[name] = frozenset(words)
    return out


CURVE_WORDS = curve_words()
CURVE_BYTES = {name: [v.to_bytes(32, "big") for v in values] for name, values in CURVES.items()}
# Every limb of a constant in order, most or least significant first: identifies even a
# constant of trivial-looking limbs such as P-256's prime.
CURVE_LIMB_RUNS = {name: [seq for v in values for width, count in ((32, 8), (64, 4))
                          for seq in (_limbs(v, width, count), _limbs(v, width, count)[::-1])]
                   for name, values in CURVES.items()}

# ---------------------------------------------------------------------------------------
# Text scanning
# ---------------------------------------------------------------------------------------

INT_LITERAL = re.compile(r"(?<![\w.])(0[xX][0-9a-fA-F]+|[0-9]+)(?:[uU]?[lL]{0,2}[uU]?)(?![\w.])")
FUNCTION_DEF = re.compile(r"\b([A-Za-z_]\w*)\s*\(([^;{}()]|\([^()]*\))*\)\s*\{")
ROTATE_CALL = re.compile(
    r"\b(?:[A-Za-z_]\w*_)?(?:rot[lr]?|rotate(?:_?left|_?right)?|ro[lr])(?:32|64)?(?:_\w+)?"
    r"\s*\((?:[^(),]|\([^()]*\))*,\s*(\d+)\s*\)", re.IGNORECASE)
SHIFT_ROTATE = re.compile(
    r"<<\s*(\d+)\s*\)\s*\|\s*\([^|;{}]*?>>\s*(?:\(\s*32\s*-\s*(\d+)\s*\)|(\d+))")
MONTGOMERY_NAME = re.compile(
    r"mont(?:gomery)?_?(?:mul|mult|multiply|sqr|square|red|redc|reduce)|(?:^|_)redc(?:_|$)",
    re.IGNORECASE)
WIDE_PRODUCT = re.compile(
    r"\(\s*(?:uint64_t|u64|unsigned\s+long\s+long|uint128_t|__uint128_t|unsigned\s+__int128"
    r"|__int128|u128)\s*\)\s*[\w\[\]]+\s*\*|\b(?:__int128|uint128_t|__uint128_t)\b")
MODEXP_NAME = re.compile(
    r"mod_?exp|exp_?mod|pow_?mod|mod_?pow|exptmod|powm|mod_?exponent", re.IGNORECASE)
BIT_TEST = re.compile(r"&\s*1\b|>>=?\s*1\b|\bbit\w*\b", re.IGNORECASE)


def int_literals(text: str) -> list[int]:
    """Every integer literal of the text in order (decimal and hex, suffixes dropped)."""
    return [int(m.group(1), 0) if m.group(1).lower().startswith("0x") else int(m.group(1), 10)
            for m in INT_LITERAL.finditer(text)]


def _joined(values: Sequence[int]) -> str:
    """The values as ",v1,v2,...," so that a run of consecutive values is a substring."""
    return "," + ",".join(map(str, values)) + ","


def _contains_seq(joined: str, seq: Sequence[int]) -> bool:
    return _joined(seq) in joined


class Literals:
    """The integer literals of a text: in order, as a set, as pairs of neighbours (a quick
    filter) and joined for run searches."""

    def __init__(self, text: str) -> None:
        self.values = int_literals(text)
        self.present = frozenset(self.values)
        self.pairs = frozenset(zip(self.values, self.values[1:]))
        self.joined = _joined(self.values)

    def has_run(self, seq: Sequence[int]) -> bool:
        """True if ``seq`` appears as consecutive literals."""
        return all(p in self.pairs for p in zip(seq, seq[1:])) and _contains_seq(self.joined, seq)


def _run_in(lit: Literals, table: Sequence[int], length: int) -> int | None:
    """Offset into ``table`` of the first run of ``length`` consecutive entries that appears
    as consecutive literals, else None."""
    for j in range(len(table) - length + 1):
        if lit.has_run(table[j:j + length]):
            return j
    return None


def detect_aes_sbox(text: str, lit: Literals) -> str | None:
    for name, table in (("S-box", AES_SBOX), ("inverse S-box", AES_INV_SBOX)):
        at = _run_in(lit, table, 16)
        if at is not None:
            return f"16 consecutive entries of the AES {name} from index {at}"
    return None


def detect_aes_ttable(text: str, lit: Literals) -> str | None:
    best = max(len(t & lit.present) for t in AES_TTABLES)
    return f"{best} entries of an AES T-table" if best >= 16 else None


def detect_aes_rcon(text: str, lit: Literals) -> str | None:
    for shift in (0, 24):
        if lit.has_run([c << shift for c in AES_RCON_TAIL]):
            return f"AES round constants 0x10..0x36{' << 24' if shift else ''}"
    return None


def _count_detector(table: frozenset[int], need: int, what: str
                    ) -> Callable[[str, Literals], str | None]:
    def detect(text: str, lit: Literals) -> str | None:
        found = table & lit.present
        if len(found) < need:
            return None
        return f"{len(found)} of the {len(table)} {what}, e.g. 0x{min(found):x}"
    return detect


def detect_chacha_constant(text: str, lit: Literals) -> str | None:
    for phrase in ("expand 32-byte k", "expand 16-byte k"):
        if phrase in text:
            return f'the string "{phrase}"'
    found = CHACHA_WORDS & lit.present
    if len(found) >= 3:
        return f'{len(found)} words of "expand 32-byte k", e.g. 0x{min(found):08x}'
    return None


def rotation_amounts(text: str) -> list[int]:
    """Rotation counts of rotate calls and of (x << n) | (x >> (32 - n)), in text order."""
    found = [(m.start(), int(m.group(1))) for m in ROTATE_CALL.finditer(text)]
    for m in SHIFT_ROTATE.finditer(text):
        left = int(m.group(1))
        right = m.group(2) or m.group(3)
        if m.group(2) is not None and int(right) == left or m.group(3) and left + int(right) == 32:
            found.append((m.start(), left))
    return [n for _, n in sorted(found)]


def detect_quarter_round(text: str, lit: Literals) -> str | None:
    amounts = _joined(rotation_amounts(text))
    for name, seq in (("ChaCha", (16, 12, 8, 7)), ("Salsa20", (7, 9, 13, 18))):
        if _contains_seq(amounts, seq):
            return f"{name} quarter-round rotations {', '.join(map(str, seq))}"
    return None


def _byte_run(lit: Literals, const: bytes, length: int) -> bool:
    """A run of ``length`` consecutive bytes of the constant (either byte order) with at least
    8 distinct values (runs of 0x00/0xff, as in P-256's prime, are everywhere)."""
    for data in (const, const[::-1]):
        for i in range(len(data) - length + 1):
            window = data[i:i + length]
            if len(set(window)) >= 8 and lit.has_run(list(window)):
                return True
    return False


def detect_curve(text: str, lit: Literals) -> str | None:
    for name, words in CURVE_WORDS.items():
        found = words & lit.present
        if len(found) >= 3:
            return f"{len(found)} limbs of {name} constants, e.g. 0x{min(found):x}"
    lowered = text.lower()
    for name, consts in CURVE_BYTES.items():
        if any(c.hex() in lowered for c in consts):
            return f"a {name} constant as a hex string"
        if any(lit.has_run(seq) for seq in CURVE_LIMB_RUNS[name]):
            return f"every limb of a {name} constant in order"
        if any(lit.has_run(list(c)) or lit.has_run(list(c[::-1])) for c in consts):
            return f"every byte of a {name} constant in order"
        if any(_byte_run(lit, c, 12) for c in consts):
            return f"12 consecutive bytes of a {name} constant"
    return None


def _defined_functions(text: str) -> Iterable[tuple[str, int]]:
    """(name, offset of its opening brace) of each function-definition-shaped match."""
    for m in FUNCTION_DEF.finditer(text):
        if m.group(1) not in ("if", "for", "while", "switch", "return", "sizeof"):
            yield m.group(1), m.end() - 1


def _body(text: str, brace: int) -> str:
    depth = 0
    for i in range(brace, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return text[brace:i + 1]
    return text[brace:]


def detect_montgomery(text: str, lit: Literals) -> str | None:
    wide = WIDE_PRODUCT.search(text) if MONTGOMERY_NAME.search(text) else None
    if wide is None:
        return None
    for name, _ in _defined_functions(text):
        if MONTGOMERY_NAME.search(name):
            return f"defines {name}() with double-width products ({wide.group(0).strip()})"
    return None


def detect_modexp(text: str, lit: Literals) -> str | None:
    if not MODEXP_NAME.search(text):
        return None
    for name, brace in _defined_functions(text):
        if MODEXP_NAME.search(name):
            body = _body(text, brace)
            if BIT_TEST.search(body) and "[" in body:
                return f"defines {name}(): exponent-bit loop over limbs"
    return None


DETECTORS: dict[str, Callable[[str, Literals], str | None]] = {
    "aes-sbox": detect_aes_sbox,
    "aes-ttable": detect_aes_ttable,
    "aes-rcon": detect_aes_rcon,
    "sha256-k": _count_detector(SHA256_K, 8, "SHA-256 round constants"),
    "sha256-iv": _count_detector(SHA256_IV, 4, "SHA-256 initial hash values"),
    "sha512-k": _count_detector(SHA512_K, 8, "SHA-512 round constants"),
    "sha512-iv": _count_detector(SHA512_IV, 4, "SHA-512 initial hash values"),
    "chacha-constant": detect_chacha_constant,
    "chacha-quarter-round": detect_quarter_round,
    "curve-constant": detect_curve,
    "montgomery-multiplication": detect_montgomery,
    "modexp": detect_modexp,
}


def crypto_reasons(text: str) -> list[dict[str, str]]:
    """Every detector that fires on the text, as {"detector", "evidence"} in DETECTORS order."""
    lit = Literals(text)
    reasons = []
    for name, detect in DETECTORS.items():
        evidence = detect(text, lit)
        if evidence is not None:
            reasons.append({"detector": name, "evidence": evidence})
    return reasons
