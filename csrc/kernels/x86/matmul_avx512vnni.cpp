// SPDX-License-Identifier: Apache-2.0
// AVX-512 VNNI fast-mode matmul: int8 activations x packed weight codes (kernels/kernel.h).
//
// Data flow, per 16-row tile and 32-wide chunk: each 64-byte bit plane is one zmm whose 32-bit
// lane r is row r (byte j = k 4g+j), exactly the operand form of VPDPBUSD (u8 x s8 -> s32).
// The codes of group g are isolated with AND (and a few shifts) and VPDPBUSD multiplies them by
// the broadcast activation group xq[4g..4g+3]; the accumulator starts at -z*xsum (a broadcast
// for symmetric formats, VPMADDWD of the 16 zero points by -xsum otherwise), so the sum is the
// exact int32 isum of the chunk. Then acc = fma(float(isum), s * xd, acc), per chunk, in order.
//  - GEMV (M == 1): 4 tiles per pass (4 streams, activation broadcasts shared), prefetch into L2
//    ahead of each stream. Codes are masked in place, not shifted (group g holds u << q), and
//    the partial sums of each shift class q are combined exactly with arithmetic right shifts.
//  - GEMM: a tile chunk is unpacked once into 8 registers of byte codes and reused for up to 8
//    activation rows (4 tiles x 2-3 rows for M <= 3, 2 tiles x 4 rows for M < 8).
// Scales (fp16 via VCVTPH2PS, or fp32) and zero points are loaded once per block.
#if !defined(__AVX512F__) || !defined(__AVX512BW__) || !defined(__AVX512VL__) || \
    !defined(__AVX512VNNI__)
#error "matmul_avx512vnni.cpp needs -mavx512f -mavx512bw -mavx512vl -mavx512vnni"
#endif

#include <immintrin.h>

#include <cstring>

#include "kernels/kernel.h"
#include "kernels/x86/gemv_prefetch.h"
#include "kernels/variants.h"

// GCC 12 warns about the deliberately undefined pass-through operand inside its own AVX-512
// headers (_mm512_undefined_*, GCC PR 105593) once they are inlined; it is a false positive.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

namespace fwa {
namespace {

// The code-unpacking and dot helpers must inline into the kernels: out of line, GCC passes
// the eight unpacked code registers through the stack (measured: unpack<3> at 8 % of prefill).
#define FWA_VNNI_INLINE inline __attribute__((always_inline))

constexpr int kPrefetchAhead = 3072;  // bytes ahead in each tile stream, prefetched into L2

struct Ctx {
  const uint8_t* w;
  size_t tile_bytes, chunk_bytes, scales_off, zeros_off;
  int64_t N, k_chunks, cpb;
  bool f16;
  const int8_t* xq;
  const float* xd;
  const int32_t* xs;
  int64_t xq_stride, xd_stride;
  float* y;
  int64_t y_stride;
};

FWA_VNNI_INLINE __m512i ld(const uint8_t* p) { return _mm512_loadu_si512(p); }

FWA_VNNI_INLINE __m512i bcast4(const int8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return _mm512_set1_epi32(v);
}

FWA_VNNI_INLINE __m512i dp(__m512i acc, __m512i w, const int8_t* x) {
  return _mm512_dpbusd_epi32(acc, w, bcast4(x));
}

// GEMV form: isum of one tile chunk with one activation row, starting from `init`. Codes are
// masked in place so that group g holds u << q_g; accumulators of one class q are exact
// multiples of 2^q and are folded together with arithmetic shifts.
template <int BITS>
FWA_VNNI_INLINE __m512i dot_scaled(const uint8_t* p, const int8_t* x, __m512i init) {
  const __m512i zero = _mm512_setzero_si512();
  if constexpr (BITS == 8) {
    __m512i a0 = dp(init, ld(p), x), a1 = dp(zero, ld(p + 64), x + 4);
    a0 = dp(a0, ld(p + 128), x + 8);
    a1 = dp(a1, ld(p + 192), x + 12);
    a0 = dp(a0, ld(p + 256), x + 16);
    a1 = dp(a1, ld(p + 320), x + 20);
    a0 = dp(a0, ld(p + 384), x + 24);
    a1 = dp(a1, ld(p + 448), x + 28);
    return _mm512_add_epi32(a0, a1);
  } else if constexpr (BITS == 4) {  // plane q: group q low nibble, group q+4 high nibble
    const __m512i lo = _mm512_set1_epi8(0x0F);
    const __m512i v0 = ld(p), v1 = ld(p + 64), v2 = ld(p + 128), v3 = ld(p + 192);
    __m512i a0 = dp(init, _mm512_and_si512(v0, lo), x);
    __m512i a1 = dp(zero, _mm512_andnot_si512(lo, v0), x + 16);
    a0 = dp(a0, _mm512_and_si512(v1, lo), x + 4);
    a1 = dp(a1, _mm512_andnot_si512(lo, v1), x + 20);
    a0 = dp(a0, _mm512_and_si512(v2, lo), x + 8);
    a1 = dp(a1, _mm512_andnot_si512(lo, v2), x + 24);
    a0 = dp(a0, _mm512_and_si512(v3, lo), x + 12);
    a1 = dp(a1, _mm512_andnot_si512(lo, v3), x + 28);
    return _mm512_add_epi32(a0, _mm512_srai_epi32(a1, 4));
  } else if constexpr (BITS == 2) {
    // plane g%2 holds group g at bits 2*(g/2); groups 4..7 read from the planes shifted down
    // by 4, so groups 0,1,4,5 have q = 0 and 2,3,6,7 have q = 2.
    const __m512i v0 = ld(p), v1 = ld(p + 64);
    const __m512i u0 = _mm512_srli_epi16(v0, 4), u1 = _mm512_srli_epi16(v1, 4);
    const __m512i m0 = _mm512_set1_epi8(0x03), m1 = _mm512_set1_epi8(0x0C);
    __m512i a0 = dp(init, _mm512_and_si512(v0, m0), x);
    __m512i a1 = dp(zero, _mm512_and_si512(v0, m1), x + 8);
    a0 = dp(a0, _mm512_and_si512(v1, m0), x + 4);
    a1 = dp(a1, _mm512_and_si512(v1, m1), x + 12);
    a0 = dp(a0, _mm512_and_si512(u0, m0), x + 16);
    a1 = dp(a1, _mm512_and_si512(u0, m1), x + 24);
    a0 = dp(a0, _mm512_and_si512(u1, m0), x + 20);
    a1 = dp(a1, _mm512_and_si512(u1, m1), x + 28);
    return _mm512_add_epi32(a0, _mm512_srai_epi32(a1, 2));
  } else {
    // 3 bits: the low 2 bits as for 2-bit, bit 2 of group g is bit g of the high plane h,
    // moved to bit q + 2 by one of four shifted copies of h and isolated before the merge.
    const __m512i v0 = ld(p), v1 = ld(p + 64), h = ld(p + 128);
    const __m512i u0 = _mm512_srli_epi16(v0, 4), u1 = _mm512_srli_epi16(v1, 4);
    const __m512i hA = _mm512_slli_epi16(h, 2), hB = _mm512_slli_epi16(h, 1);
    const __m512i hC = _mm512_srli_epi16(h, 2), hD = _mm512_srli_epi16(h, 3);
    const __m512i c0 = _mm512_set1_epi8(0x03), c1 = _mm512_set1_epi8(0x0C);
    const __m512i b2 = _mm512_set1_epi8(0x04), b4 = _mm512_set1_epi8(0x10);
    // (a & c) | hb in one VPTERNLOGD, or as AND + OR (different execution ports).
    auto tl = [](__m512i a, __m512i c, __m512i hb) {
      return _mm512_ternarylogic_epi32(hb, a, c, 0xF8);
    };
    auto ao = [](__m512i a, __m512i c, __m512i hb) {
      return _mm512_or_si512(_mm512_and_si512(a, c), hb);
    };
    __m512i a0 = dp(init, tl(v0, c0, _mm512_and_si512(hA, b2)), x);
    __m512i a1 = dp(zero, ao(v0, c1, _mm512_and_si512(hA, b4)), x + 8);
    a0 = dp(a0, ao(v1, c0, _mm512_and_si512(hB, b2)), x + 4);
    a1 = dp(a1, ao(v1, c1, _mm512_and_si512(hB, b4)), x + 12);
    a0 = dp(a0, tl(u0, c0, _mm512_and_si512(hC, b2)), x + 16);
    a1 = dp(a1, ao(u0, c1, _mm512_and_si512(hC, b4)), x + 24);
    a0 = dp(a0, ao(u1, c0, _mm512_and_si512(hD, b2)), x + 20);
    a1 = dp(a1, ao(u1, c1, _mm512_and_si512(hD, b4)), x + 28);
    return _mm512_add_epi32(a0, _mm512_srai_epi32(a1, 2));
  }
}

// GEMM form: w[g] = the codes of group g as unsigned bytes.
template <int BITS>
FWA_VNNI_INLINE void unpack(const uint8_t* p, __m512i* w) {
  if constexpr (BITS == 8) {
    for (int g = 0; g < 8; ++g) w[g] = ld(p + 64 * g);
  } else if constexpr (BITS == 4) {
    const __m512i m = _mm512_set1_epi8(0x0F);
    for (int q = 0; q < 4; ++q) {
      const __m512i v = ld(p + 64 * q);
      w[q] = _mm512_and_si512(v, m);
      w[q + 4] = _mm512_and_si512(_mm512_srli_epi16(v, 4), m);
    }
  } else if constexpr (BITS == 2) {
    const __m512i m = _mm512_set1_epi8(0x03);
    const __m512i v0 = ld(p), v1 = ld(p + 64);
    w[0] = _mm512_and_si512(v0, m);
    w[1] = _mm512_and_si512(v1, m);
    w[2] = _mm512_and_si512(_mm512_srli_epi16(v0, 2), m);
    w[3] = _mm512_and_si512(_mm512_srli_epi16(v1, 2), m);
    w[4] = _mm512_and_si512(_mm512_srli_epi16(v0, 4), m);
    w[5] = _mm512_and_si512(_mm512_srli_epi16(v1, 4), m);
    w[6] = _mm512_and_si512(_mm512_srli_epi16(v0, 6), m);
    w[7] = _mm512_and_si512(_mm512_srli_epi16(v1, 6), m);
  } else {
    const __m512i m3 = _mm512_set1_epi8(0x03), m7 = _mm512_set1_epi8(0x07);
    const __m512i v0 = ld(p), v1 = ld(p + 64), h = ld(p + 128);
    // ((a & 3) | (b & ~3)) & 7: low bits from a, bit 2 from b (b = h with bit g moved to 2).
    auto merge = [&](__m512i a, __m512i b) {
      return _mm512_and_si512(_mm512_ternarylogic_epi32(a, b, m3, 0xE4), m7);
    };
    w[0] = merge(v0, _mm512_slli_epi16(h, 2));
    w[1] = merge(v1, _mm512_slli_epi16(h, 1));
    w[2] = merge(_mm512_srli_epi16(v0, 2), h);
    w[3] = merge(_mm512_srli_epi16(v1, 2), _mm512_srli_epi16(h, 1));
    w[4] = merge(_mm512_srli_epi16(v0, 4), _mm512_srli_epi16(h, 2));
    w[5] = merge(_mm512_srli_epi16(v1, 4), _mm512_srli_epi16(h, 3));
    w[6] = merge(_mm512_srli_epi16(v0, 6), _mm512_srli_epi16(h, 4));
    w[7] = merge(_mm512_srli_epi16(v1, 6), _mm512_srli_epi16(h, 5));
  }
}

inline void store_tile(const Ctx& c, int64_t t, float* yrow, __m512 v) {
  const int64_t n0 = t * kTileRows;
  const int64_t rows = c.N - n0;
  const __mmask16 mask = rows >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << rows) - 1);
  _mm512_mask_storeu_ps(yrow + n0, mask, v);
}

// NT tiles from t0, MB activation rows from m0, the whole K.
template <int BITS, bool ZP, int NT, int MB>
void fast_kernel(const Ctx& c, int64_t t0, int64_t m0) {
  constexpr int32_t Z = 1 << (BITS - 1);
  // GEMV: gemv_prefetch.h; GEMM (a tile is reused by every row block): ahead in memory.
  GemvPrefetch<NT> gemv_pf(c.w, c.tile_bytes, c.N, t0, kPrefetchAhead);
  const uint8_t* p[NT];
  const uint8_t* sp[NT];
  const uint8_t* zp[NT];
  for (int t = 0; t < NT; ++t) {
    p[t] = c.w + size_t(t0 + t) * c.tile_bytes;
    sp[t] = p[t] + c.scales_off;
    zp[t] = p[t] + c.zeros_off;
  }
  const int8_t* xq = c.xq + m0 * c.xq_stride;
  const float* xd = c.xd + m0 * c.xd_stride;
  const int32_t* xs = c.xs + m0 * c.xd_stride;
  const int64_t xqs = c.xq_stride, xds = c.xd_stride;
  const size_t cb = c.chunk_bytes;
  __m512 facc[NT][MB];
  for (int t = 0; t < NT; ++t)
    for (int m = 0; m < MB; ++m) facc[t][m] = _mm512_setzero_ps();
  __m512 s[NT];
  __m512i zv[NT];
  int64_t left = 0;  // chunks left in the current block
  for (int64_t ch = 0; ch < c.k_chunks; ++ch) {
    if (left == 0) {  // next block: its 16 scales (and zero points) per tile
      left = c.cpb;
      for (int t = 0; t < NT; ++t) {
        if (c.f16) {
          s[t] = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(sp[t])));
          sp[t] += 32;
        } else {
          s[t] = _mm512_loadu_ps(reinterpret_cast<const float*>(sp[t]));
          sp[t] += 64;
        }
        if constexpr (ZP) {
          zv[t] = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(zp[t])));
          zp[t] += 16;
        }
      }
    }
    --left;
    const int8_t* x = xq + ch * kChunk;
    if constexpr (MB == 1) gemv_pf.next_chunk(BITS, cb);
    for (int t = 0; t < NT; ++t) {
      if constexpr (MB > 1) {
        for (int l = 0; l < BITS; ++l)
          _mm_prefetch(reinterpret_cast<const char*>(p[t] + kPrefetchAhead + 64 * l), _MM_HINT_T1);
      }
      if constexpr (MB == 1) {
        // zv holds z in the low 16 bits of each lane, so VPMADDWD gives z * (-xsum).
        const __m512i init = ZP ? _mm512_madd_epi16(zv[t], _mm512_set1_epi32(-xs[ch]))
                                : _mm512_set1_epi32(-Z * xs[ch]);
        const __m512i isum = dot_scaled<BITS>(p[t], x, init);
        facc[t][0] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum),
                                     _mm512_mul_ps(s[t], _mm512_set1_ps(xd[ch])), facc[t][0]);
      } else {
        __m512i w[8];
        unpack<BITS>(p[t], w);
        for (int m = 0; m < MB; ++m) {
          const int8_t* xm = x + m * xqs;
          const int32_t xsum = xs[m * xds + ch];
          __m512i a0 = ZP ? _mm512_madd_epi16(zv[t], _mm512_set1_epi32(-xsum))
                          : _mm512_set1_epi32(-Z * xsum);
          __m512i a1 = dp(_mm512_setzero_si512(), w[1], xm + 4);
          a0 = dp(a0, w[0], xm);
          a0 = dp(a0, w[2], xm + 8);
          a1 = dp(a1, w[3], xm + 12);
          a0 = dp(a0, w[4], xm + 16);
          a1 = dp(a1, w[5], xm + 20);
          a0 = dp(a0, w[6], xm + 24);
          a1 = dp(a1, w[7], xm + 28);
          const __m512i isum = _mm512_add_epi32(a0, a1);
          facc[t][m] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum),
                                       _mm512_mul_ps(s[t], _mm512_set1_ps(xd[m * xds + ch])),
                                       facc[t][m]);
        }
      }
      p[t] += cb;
    }
  }
  for (int t = 0; t < NT; ++t)
    for (int m = 0; m < MB; ++m) store_tile(c, t0 + t, c.y + (m0 + m) * c.y_stride, facc[t][m]);
}

// All M rows for the NT tiles at t, MB rows at a time (remainders in blocks of 4, 3, 2, 1).
template <int BITS, bool ZP, int NT, int MB>
void all_rows(const Ctx& c, int64_t t, int64_t M) {
  int64_t m = 0;
  for (; m + MB <= M; m += MB) fast_kernel<BITS, ZP, NT, MB>(c, t, m);
  if constexpr (MB > 4) {
    if (m + 4 <= M) {
      fast_kernel<BITS, ZP, NT, 4>(c, t, m);
      m += 4;
    }
  }
  switch (M - m) {
    case 3: fast_kernel<BITS, ZP, NT, 3>(c, t, m); break;
    case 2: fast_kernel<BITS, ZP, NT, 2>(c, t, m); break;
    case 1: fast_kernel<BITS, ZP, NT, 1>(c, t, m); break;
    default: break;
  }
}

template <int BITS, bool ZP>
void fast_run(const Ctx& c, int64_t tb, int64_t te, int64_t M) {
  int64_t t = tb;
  if (M == 1) {
    for (; t + 4 <= te; t += 4) fast_kernel<BITS, ZP, 4, 1>(c, t, 0);
    for (; t < te; ++t) fast_kernel<BITS, ZP, 1, 1>(c, t, 0);
  } else if (M <= 3) {  // nearly GEMV: keep 4 tile streams
    for (; t + 4 <= te; t += 4) all_rows<BITS, ZP, 4, 3>(c, t, M);
    for (; t < te; ++t) all_rows<BITS, ZP, 1, 3>(c, t, M);
  } else if (M < 8) {
    for (; t + 2 <= te; t += 2) all_rows<BITS, ZP, 2, 4>(c, t, M);
    for (; t < te; ++t) all_rows<BITS, ZP, 1, 4>(c, t, M);
  } else {  // one tile (in L1/L2) against 8 rows at a time
    for (; t < te; ++t) all_rows<BITS, ZP, 1, 8>(c, t, M);
  }
}

template <int BITS>
void fast_bits(const Ctx& c, int64_t tb, int64_t te, int64_t M, bool zp) {
  if (zp) {
    fast_run<BITS, true>(c, tb, te, M);
  } else {
    fast_run<BITS, false>(c, tb, te, M);
  }
}

}  // namespace

void matmul_fast_avx512vnni(const MatmulArgs& a) {
  const PackedLayout& L = *a.layout;
  Ctx c;
  c.w = a.w;
  c.tile_bytes = L.tile_bytes;
  c.chunk_bytes = L.chunk_bytes;
  c.scales_off = L.scales_offset;
  c.zeros_off = L.zeros_offset;
  c.N = L.N;
  c.k_chunks = L.k_chunks;
  c.cpb = L.chunks_per_block;
  c.f16 = L.fmt.scale == ScaleType::f16;
  c.xq = a.xq;
  c.xd = a.xd;
  c.xs = a.xsum;
  c.xq_stride = a.xq_stride;
  c.xd_stride = a.xd_stride;
  c.y = a.y;
  c.y_stride = a.y_stride;
  const bool zp = L.fmt.has_zero;
  switch (L.fmt.bits) {
    case 2: fast_bits<2>(c, a.tile_begin, a.tile_end, a.M, zp); break;
    case 3: fast_bits<3>(c, a.tile_begin, a.tile_end, a.M, zp); break;
    case 4: fast_bits<4>(c, a.tile_begin, a.tile_end, a.M, zp); break;
    default: fast_bits<8>(c, a.tile_begin, a.tile_end, a.M, zp); break;
  }
}

}  // namespace fwa
