/* SPDX-License-Identifier: Apache-2.0 */
// The 16-bit KV cache formats (docs/runtime.md, "KV cache storage"): IEEE binary16 (f16) and
// bfloat16 (bf16), converted from float32 by these scalar definitions, in integer arithmetic
// only, so every ISA, compiler and FPU mode (FTZ/DAZ, ARM FPCR.FZ16) stores the same bits.
// Narrowing rounds to nearest, ties to even; subnormal results are kept exactly (never
// flushed); a value past the largest finite one rounds to infinity as IEEE does; every NaN
// becomes the quiet NaN sign | 0x7e00 (f16) or sign | 0x7fc0 (bf16), payload dropped.
// Widening to float32 is exact (every f16 and bf16 value is a float32 value); NaN widens to
// the float32 quiet NaN of the same sign and payload, shifted.
#pragma once
#include <cstdint>
#include <cstring>

namespace fwa {

enum class KvType : int { f32 = 0, f16 = 1, bf16 = 2 };

inline uint32_t f32_bits(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  return u;
}

inline float f32_from_bits(uint32_t u) {
  float x;
  std::memcpy(&x, &u, 4);
  return x;
}

inline uint16_t f32_to_f16(float x) {
  const uint32_t u = f32_bits(x);
  const uint16_t sign = uint16_t((u >> 16) & 0x8000u);
  const uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return uint16_t(sign | 0x7e00u);  // NaN
  if (a >= 0x477ff000u) return uint16_t(sign | 0x7c00u);  // >= 65520 (max + half ulp), inf
  if (a < 0x38800000u) {  // below 2^-14: an f16 subnormal (or zero), units of 2^-24
    if (a <= 0x33000000u) return sign;  // <= 2^-25: zero (2^-25 itself is a tie to even 0)
    const uint32_t m = (a & 0x7fffffu) | 0x800000u;  // value = m * 2^(e - 150)
    const uint32_t shift = 126u - (a >> 23);          // 14..24
    uint32_t q = m >> shift;
    const uint32_t rem = m & ((1u << shift) - 1u), half = 1u << (shift - 1u);
    q += uint32_t(rem > half || (rem == half && (q & 1u)));
    return uint16_t(sign | q);  // q == 0x400 is the smallest normal, correctly encoded
  }
  uint32_t h = (a - (112u << 23)) >> 13;  // rebias 127 -> 15, drop 13 mantissa bits
  const uint32_t rem = a & 0x1fffu;
  h += uint32_t(rem > 0x1000u || (rem == 0x1000u && (h & 1u)));  // a carry moves the exponent
  return uint16_t(sign | h);
}

inline float f16_to_f32(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  const uint32_t e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
  if (e == 31) return f32_from_bits(sign | 0x7f800000u | (m << 13));  // inf, NaN
  if (e == 0) {  // m * 2^-24: m is exact in float32 and so is the power-of-two product
    const float v = float(m) * 5.9604644775390625e-8f;
    return f32_from_bits(sign | f32_bits(v));
  }
  return f32_from_bits(sign | ((e + 112u) << 23) | (m << 13));
}

inline uint16_t f32_to_bf16(float x) {
  const uint32_t u = f32_bits(x);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t(((u >> 16) & 0x8000u) | 0x7fc0u);
  // Round to nearest even on the low 16 bits; a carry moves the exponent, up to infinity.
  return uint16_t((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

inline float bf16_to_f32(uint16_t b) { return f32_from_bits(uint32_t(b) << 16); }

}  // namespace fwa
