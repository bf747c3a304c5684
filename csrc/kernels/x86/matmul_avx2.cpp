// SPDX-License-Identifier: Apache-2.0
// AVX2 + FMA + F16C matmul, exact and fast modes (kernels/kernel.h); no AVX-512.
//
// Lanes = rows: the 64-byte bit planes are read as two ymm halves (rows 0-7, rows 8-15) whose
// 32-bit lane r is row r (byte j of the lane = k 4g+j); every output row is one lane and its
// fp32 chain runs in order.
// Fast mode, per tile chunk and half: the codes of group g are isolated with AND (and shifts),
// VPMADDUBSW multiplies them (u8) by the broadcast activation group (s8) into int16 pair sums,
// the 8 groups are added in int16 and VPMADDWD(ones) gives the int32 dot per row; the
// accumulator starts at -z*xsum. No saturation: every int16 partial sum stays below 2^15
// (codes < 16: 8 * 2*15*127 = 30480; 2-bit codes of groups 2,3,6,7 are kept in place as
// u << 2 and their class sum is folded with an exact arithmetic shift; 3-bit codes are merged
// two groups per byte (nibble_merge3) and groups 4-7 kept as u << 4, each of their pair sums
// shifted down by 4; 8-bit codes are split into nibbles, the high one weighted 16 in
// VPMADDWD). Then acc = fma(float(isum), s*xd, acc).
// Exact mode, per k in order: float(u - z) for 8 rows by VPERMPS from an 8-entry table (2/3
// bits), shift/AND/VPSUBD/VCVTDQ2PS (4 bits) or VPSHUFB/VPSUBD/VCVTDQ2PS (8 bits), then
// bacc = fma(d, x[k], bacc); acc = fma(s, bacc, acc) at each block end.
// GEMV runs 4 tiles (8 halves) per pass with L2 prefetch ahead of each stream (M <= 3: row by
// row over the same 4 tiles, re-read from L2); GEMM works on one half tile at a time (16 ymm
// registers), unpacking a half chunk once for 4 activation rows.
#if !defined(__AVX2__) || !defined(__FMA__) || !defined(__F16C__)
#error "matmul_avx2.cpp needs -mavx2 -mfma -mf16c"
#endif
#if defined(__AVX512F__)  // the compiler could then emit EVEX code into the AVX2 variant
#error "matmul_avx2.cpp must be compiled without AVX-512"
#endif

#include <immintrin.h>

#include <cstring>
#include <type_traits>

#include "kernels/kernel.h"
#include "kernels/x86/gemv_prefetch.h"
#include "kernels/variants.h"

namespace fwa {
namespace {

// The helpers must inline into the kernels: out of line, GCC passes unpacked code registers
// through the stack (unpack<3> of the AVX-512 VNNI variant measured at 8 % of prefill).
#define FWA_AVX2_INLINE inline __attribute__((always_inline))

constexpr int kPrefetchAhead = 3072;  // bytes ahead in each tile stream, prefetched into L2

struct Ctx {
  const uint8_t* w;
  size_t tile_bytes, chunk_bytes, scales_off, zeros_off;
  int64_t N, k_chunks, cpb;
  bool f16;
  const float* x;
  int64_t x_stride;
  const int8_t* xq;
  const float* xd;
  const int32_t* xs;
  int64_t xq_stride, xd_stride;
  float* y;
  int64_t y_stride;
};

Ctx make_ctx(const MatmulArgs& a) {
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
  c.x = a.x;
  c.x_stride = a.x_stride;
  c.xq = a.xq;
  c.xd = a.xd;
  c.xs = a.xsum;
  c.xq_stride = a.xq_stride;
  c.xd_stride = a.xd_stride;
  c.y = a.y;
  c.y_stride = a.y_stride;
  return c;
}

FWA_AVX2_INLINE __m256i ld(const uint8_t* p) {
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
}

FWA_AVX2_INLINE __m256i bcast4(const int8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return _mm256_set1_epi32(v);
}

FWA_AVX2_INLINE __m256i c8(int v) { return _mm256_set1_epi8(char(v)); }

// The 8 scales of half h of the current block (sp points at the block's 16 scales).
FWA_AVX2_INLINE __m256 load_scales(const uint8_t* sp, bool f16, int h) {
  if (f16) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(sp + 16 * h)));
  }
  return _mm256_loadu_ps(reinterpret_cast<const float*>(sp + 32 * h));
}

FWA_AVX2_INLINE __m256i load_zeros(const uint8_t* zp, int h) {
  return _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(zp + 8 * h)));
}

FWA_AVX2_INLINE void store_half(const Ctx& c, int64_t t, int h, float* yrow, __m256 v) {
  const int64_t n0 = t * kTileRows + 8 * h;
  const int64_t rows = c.N - n0;
  if (rows >= 8) {
    _mm256_storeu_ps(yrow + n0, v);
  } else if (rows > 0) {
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(int(rows)), lane);
    _mm256_maskstore_ps(yrow + n0, mask, v);
  }
}

FWA_AVX2_INLINE __m256i mub(__m256i w, const int8_t* x) { return _mm256_maddubs_epi16(w, bcast4(x)); }

FWA_AVX2_INLINE __m256i add16(__m256i a, __m256i b) { return _mm256_add_epi16(a, b); }

// ---------------------------------------------------------------- fast mode

// 3-bit group codes: low 2 bits from a, bit 2 from b (b = high plane with bit g moved to 2).
FWA_AVX2_INLINE __m256i merge3(__m256i a, __m256i b) {
  return _mm256_or_si256(_mm256_and_si256(a, c8(0x03)), _mm256_and_si256(b, c8(0x04)));
}

// 3-bit nibble merge of one half chunk (v0, v1: the low-bit planes, h: the high plane):
// C[q] = code of group q at bits 0-2 and code of group q+4 at bits 4-6 of every byte. Group g
// has its low bits at 2*(g/2) of plane g%2 and its high bit at bit g of h, so the pairs
// (q, q+4) line up after one shift of the plane (q = 2, 3) and one of h (q = 0, 1, 3):
// 5 shifts, 8 AND and 4 OR for all 8 groups (merged one by one: 12 shifts, 16 AND, 8 OR).
FWA_AVX2_INLINE void nibble_merge3(__m256i v0, __m256i v1, __m256i h, __m256i* C) {
  const __m256i lo = c8(0x33), hb = c8(0x44);
  auto merge = [&](__m256i v, __m256i hs) {
    return _mm256_or_si256(_mm256_and_si256(v, lo), _mm256_and_si256(hs, hb));
  };
  C[0] = merge(v0, _mm256_slli_epi16(h, 2));
  C[1] = merge(v1, _mm256_slli_epi16(h, 1));
  C[2] = merge(_mm256_srli_epi16(v0, 2), h);
  C[3] = merge(_mm256_srli_epi16(v1, 2), _mm256_srli_epi16(h, 1));
}

// int32 dot of one half chunk (p = its first plane half, planes 64 bytes apart) with one
// activation row, plus init. GEMV form: 2/3-bit groups 2,3,6,7 stay at bit 2.
template <int BITS>
FWA_AVX2_INLINE __m256i dot_gemv(const uint8_t* p, const int8_t* x, __m256i init) {
  const __m256i ones = _mm256_set1_epi16(1);
  if constexpr (BITS == 8) {
    const __m256i m = c8(0x0F);
    __m256i lo = _mm256_setzero_si256(), hi = _mm256_setzero_si256();
    for (int g = 0; g < 8; ++g) {
      const __m256i v = ld(p + 64 * g);
      lo = add16(lo, mub(_mm256_and_si256(v, m), x + 4 * g));
      hi = add16(hi, mub(_mm256_and_si256(_mm256_srli_epi16(v, 4), m), x + 4 * g));
    }
    const __m256i r = _mm256_add_epi32(init, _mm256_madd_epi16(lo, ones));
    return _mm256_add_epi32(r, _mm256_madd_epi16(hi, _mm256_set1_epi16(16)));
  } else if constexpr (BITS == 4) {
    const __m256i m = c8(0x0F);
    __m256i s0 = _mm256_setzero_si256(), s1 = _mm256_setzero_si256();
    for (int q = 0; q < 4; ++q) {
      const __m256i v = ld(p + 64 * q);
      s0 = add16(s0, mub(_mm256_and_si256(v, m), x + 4 * q));
      s1 = add16(s1, mub(_mm256_and_si256(_mm256_srli_epi16(v, 4), m), x + 16 + 4 * q));
    }
    return _mm256_add_epi32(init, _mm256_madd_epi16(add16(s0, s1), ones));
  } else {
    const __m256i v0 = ld(p), v1 = ld(p + 64);
    __m256i w[8];
    if constexpr (BITS == 2) {
      // classes: groups 0,1,4,5 at bit 0 (planes shifted down by 4 for 4,5), 2,3,6,7 at bit 2.
      const __m256i u0 = _mm256_srli_epi16(v0, 4), u1 = _mm256_srli_epi16(v1, 4);
      const __m256i c0 = c8(0x03), c1 = c8(0x0C);
      w[0] = _mm256_and_si256(v0, c0);
      w[1] = _mm256_and_si256(v1, c0);
      w[2] = _mm256_and_si256(v0, c1);
      w[3] = _mm256_and_si256(v1, c1);
      w[4] = _mm256_and_si256(u0, c0);
      w[5] = _mm256_and_si256(u1, c0);
      w[6] = _mm256_and_si256(u0, c1);
      w[7] = _mm256_and_si256(u1, c1);
    } else {
      // Nibble merge: C[q] holds the code of group q at bits 0-2 and of group q+4 at bits
      // 4-6 of every byte (low bits from the planes, bit 2 from the high plane).
      __m256i C[4];
      nibble_merge3(v0, v1, ld(p + 128), C);
      const __m256i m07 = c8(0x07), m70 = c8(0x70);
      // Groups 0-3 at bit 0; groups 4-7 in place (u << 4): each VPMADDUBSW pair sum is at most
      // 2*112*127 = 28448, so it is shifted down by 4 (exact) before any addition.
      const __m256i s0 = add16(add16(mub(_mm256_and_si256(C[0], m07), x),
                                     mub(_mm256_and_si256(C[1], m07), x + 4)),
                               add16(mub(_mm256_and_si256(C[2], m07), x + 8),
                                     mub(_mm256_and_si256(C[3], m07), x + 12)));
      auto hi = [&](__m256i c, const int8_t* xg) {
        return _mm256_srai_epi16(mub(_mm256_and_si256(c, m70), xg), 4);
      };
      const __m256i s1 = add16(add16(hi(C[0], x + 16), hi(C[1], x + 20)),
                               add16(hi(C[2], x + 24), hi(C[3], x + 28)));
      return _mm256_add_epi32(init, _mm256_madd_epi16(add16(s0, s1), ones));
    }
    const __m256i s0 = add16(add16(mub(w[0], x), mub(w[1], x + 4)),
                             add16(mub(w[4], x + 16), mub(w[5], x + 20)));
    const __m256i s1 = add16(add16(mub(w[2], x + 8), mub(w[3], x + 12)),
                             add16(mub(w[6], x + 24), mub(w[7], x + 28)));
    const __m256i s = add16(s0, _mm256_srai_epi16(s1, 2));
    return _mm256_add_epi32(init, _mm256_madd_epi16(s, ones));
  }
}

// GEMM form: w[g] = codes of group g as bytes (8-bit: the raw plane halves).
template <int BITS>
FWA_AVX2_INLINE void unpack(const uint8_t* p, __m256i* w) {
  if constexpr (BITS == 8) {
    for (int g = 0; g < 8; ++g) w[g] = ld(p + 64 * g);
  } else if constexpr (BITS == 4) {
    const __m256i m = c8(0x0F);
    for (int q = 0; q < 4; ++q) {
      const __m256i v = ld(p + 64 * q);
      w[q] = _mm256_and_si256(v, m);
      w[q + 4] = _mm256_and_si256(_mm256_srli_epi16(v, 4), m);
    }
  } else if constexpr (BITS == 2) {
    const __m256i m = c8(0x03);
    const __m256i v0 = ld(p), v1 = ld(p + 64);
    w[0] = _mm256_and_si256(v0, m);
    w[1] = _mm256_and_si256(v1, m);
    w[2] = _mm256_and_si256(_mm256_srli_epi16(v0, 2), m);
    w[3] = _mm256_and_si256(_mm256_srli_epi16(v1, 2), m);
    w[4] = _mm256_and_si256(_mm256_srli_epi16(v0, 4), m);
    w[5] = _mm256_and_si256(_mm256_srli_epi16(v1, 4), m);
    w[6] = _mm256_and_si256(_mm256_srli_epi16(v0, 6), m);
    w[7] = _mm256_and_si256(_mm256_srli_epi16(v1, 6), m);
  } else {
    __m256i C[4];
    nibble_merge3(ld(p), ld(p + 64), ld(p + 128), C);
    const __m256i m = c8(0x07);
    for (int q = 0; q < 4; ++q) {
      w[q] = _mm256_and_si256(C[q], m);
      w[q + 4] = _mm256_and_si256(_mm256_srli_epi16(C[q], 4), m);
    }
  }
}

template <int BITS>
FWA_AVX2_INLINE __m256i dot_unpacked(const __m256i* w, const int8_t* x, __m256i init) {
  const __m256i ones = _mm256_set1_epi16(1);
  if constexpr (BITS == 8) {
    const __m256i m = c8(0x0F);
    __m256i lo = _mm256_setzero_si256(), hi = _mm256_setzero_si256();
    for (int g = 0; g < 8; ++g) {
      lo = add16(lo, mub(_mm256_and_si256(w[g], m), x + 4 * g));
      hi = add16(hi, mub(_mm256_and_si256(_mm256_srli_epi16(w[g], 4), m), x + 4 * g));
    }
    const __m256i r = _mm256_add_epi32(init, _mm256_madd_epi16(lo, ones));
    return _mm256_add_epi32(r, _mm256_madd_epi16(hi, _mm256_set1_epi16(16)));
  } else {  // codes < 16: 8 * 2*15*127 < 2^15
    const __m256i s0 = add16(add16(mub(w[0], x), mub(w[1], x + 4)),
                             add16(mub(w[2], x + 8), mub(w[3], x + 12)));
    const __m256i s1 = add16(add16(mub(w[4], x + 16), mub(w[5], x + 20)),
                             add16(mub(w[6], x + 24), mub(w[7], x + 28)));
    return _mm256_add_epi32(init, _mm256_madd_epi16(add16(s0, s1), ones));
  }
}

// GEMV (M = 1): NT adjacent tiles side by side, both halves of each, with the scale type and
// the zero points fixed at compile time. The tile loop stays a loop (one base pointer plus
// t * tile_bytes): its body keeps the 8 activation broadcasts of the chunk, the masks and
// the constants in registers (the former fast_kernel reloaded tile pointers, 3 broadcasts and
// the constants from the stack and tested the scale type per half; hot 2-bit GEMV -15 %), and
// the accumulators live in memory (one FMA load and one store per half). Fully unrolled over
// the 4 tiles it ran 10 % faster in cache but up to 25 % slower cold at K = 768 (all 4
// streams' loads issued in one burst), see benchmarks/results/gemv-ratios-*.
template <int BITS, bool ZP, bool F16, int NT>
void gemv_kernel(const Ctx& c, int64_t t0, int64_t m) {
  constexpr int32_t Z = 1 << (BITS - 1);
  GemvPrefetch<NT> pf(c.w, c.tile_bytes, c.N, t0, kPrefetchAhead);
  const size_t tb = c.tile_bytes, cb = c.chunk_bytes;
  const uint8_t* p = c.w + size_t(t0) * tb;
  const uint8_t* sp = p + c.scales_off;
  const uint8_t* zp = p + c.zeros_off;
  const int8_t* xq = c.xq + m * c.xq_stride;
  const float* xd = c.xd + m * c.xd_stride;
  const int32_t* xs = c.xs + m * c.xd_stride;
  __m256 acc[NT][2];
  for (int t = 0; t < NT; ++t) acc[t][0] = acc[t][1] = _mm256_setzero_ps();
  int64_t left = c.cpb;  // chunks left in the current block (sp/zp point at it)
  for (int64_t ch = 0; ch < c.k_chunks; ++ch) {
    if (left == 0) {
      left = c.cpb;
      sp += F16 ? 32 : 64;
      if constexpr (ZP) zp += 16;
    }
    --left;
    pf.next_chunk(BITS, cb);
    const int8_t* x = xq + ch * kChunk;
    const __m256 d = _mm256_set1_ps(xd[ch]);
    // symmetric: -Z * xsum; zero points: VPMADDWD of z (low 16 bits of each lane) by -xsum.
    const __m256i init = _mm256_set1_epi32(ZP ? -xs[ch] : -Z * xs[ch]);
#pragma GCC unroll 1
    for (int t = 0; t < NT; ++t) {  // see above: not unrolled
#pragma GCC unroll 2
      for (int h = 0; h < 2; ++h) {
        const __m256 s = load_scales(sp + t * tb, F16, h);
        const __m256i in = ZP ? _mm256_madd_epi16(load_zeros(zp + t * tb, h), init) : init;
        const __m256i isum = dot_gemv<BITS>(p + t * tb + 32 * h, x, in);
        acc[t][h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_mul_ps(s, d), acc[t][h]);
      }
    }
    p += cb;
  }
  for (int t = 0; t < NT; ++t)
    for (int h = 0; h < 2; ++h) store_half(c, t0 + t, h, c.y + m * c.y_stride, acc[t][h]);
}

// GEMM: one half tile (so that the 8 unpacked code registers and the row accumulators fit
// in the 16 ymm), MB activation rows from m0, the whole K.
template <int BITS, bool ZP, int MB>
void gemm_kernel(const Ctx& c, int64_t t, int h, int64_t m0) {
  constexpr int32_t Z = 1 << (BITS - 1);
  const uint8_t* p = c.w + size_t(t) * c.tile_bytes;
  const uint8_t* sp = p + c.scales_off;
  const uint8_t* zp = p + c.zeros_off;
  const int8_t* xq = c.xq + m0 * c.xq_stride;
  const float* xd = c.xd + m0 * c.xd_stride;
  const int32_t* xs = c.xs + m0 * c.xd_stride;
  const int64_t xqs = c.xq_stride, xds = c.xd_stride;
  const size_t cb = c.chunk_bytes, sstep = c.f16 ? 32 : 64;
  __m256 facc[MB];
  for (int m = 0; m < MB; ++m) facc[m] = _mm256_setzero_ps();
  int64_t left = c.cpb;  // chunks left in the current block (sp/zp point at it)
  for (int64_t ch = 0; ch < c.k_chunks; ++ch) {
    if (left == 0) {
      left = c.cpb;
      sp += sstep;
      zp += 16;
    }
    --left;
    const int8_t* x = xq + ch * kChunk;
    // A tile is reused by every row block: prefetch ahead in memory.
    for (int l = 0; l < BITS; ++l)
      _mm_prefetch(reinterpret_cast<const char*>(p + kPrefetchAhead + 64 * l), _MM_HINT_T1);
    const __m256 s = load_scales(sp, c.f16, h);
    __m256i zv = _mm256_setzero_si256();
    if constexpr (ZP) zv = load_zeros(zp, h);
    __m256i w[8];
    unpack<BITS>(p + 32 * h, w);
    for (int m = 0; m < MB; ++m) {
      const int32_t xsum = xs[m * xds + ch];
      const __m256i init = ZP ? _mm256_madd_epi16(zv, _mm256_set1_epi32(-xsum))
                              : _mm256_set1_epi32(-Z * xsum);
      const __m256i isum = dot_unpacked<BITS>(w, x + m * xqs, init);
      facc[m] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum),
                                _mm256_mul_ps(s, _mm256_set1_ps(xd[m * xds + ch])), facc[m]);
    }
    p += cb;
  }
  for (int m = 0; m < MB; ++m) store_half(c, t, h, c.y + (m0 + m) * c.y_stride, facc[m]);
}

// GEMM: all M rows of tile t, one half at a time, MB rows per pass.
template <int BITS, bool ZP, int MB>
void fast_rows(const Ctx& c, int64_t t, int64_t M) {
  for (int h = 0; h < 2; ++h) {
    int64_t m = 0;
    for (; m + MB <= M; m += MB) gemm_kernel<BITS, ZP, MB>(c, t, h, m);
    switch (M - m) {
      case 3: gemm_kernel<BITS, ZP, 3>(c, t, h, m); break;
      case 2: gemm_kernel<BITS, ZP, 2>(c, t, h, m); break;
      case 1: gemm_kernel<BITS, ZP, 1>(c, t, h, m); break;
      default: break;
    }
  }
}

template <int BITS, bool ZP, bool F16>
void gemv_run(const Ctx& c, int64_t tb, int64_t te, int64_t M) {
  // GEMV per row over groups of 4 tiles (rows after the first read from L2)
  int64_t t = tb;
  for (; t + 4 <= te; t += 4)
    for (int64_t m = 0; m < M; ++m) gemv_kernel<BITS, ZP, F16, 4>(c, t, m);
  for (; t < te; ++t)
    for (int64_t m = 0; m < M; ++m) gemv_kernel<BITS, ZP, F16, 1>(c, t, m);
}

template <int BITS, bool ZP>
void fast_run(const Ctx& c, int64_t tb, int64_t te, int64_t M) {
  if (M <= 3) {
    c.f16 ? gemv_run<BITS, ZP, true>(c, tb, te, M) : gemv_run<BITS, ZP, false>(c, tb, te, M);
  } else {
    for (int64_t t = tb; t < te; ++t) fast_rows<BITS, ZP, 4>(c, t, M);
  }
}

// ---------------------------------------------------------------- exact mode

// float(u - z) for the 8 rows of a half, the code of this k being at bit SH of each lane of
// src (bits <= 3: low bits index an 8-entry VPERMPS table; 4 bits: shift, AND, VPSUBD,
// VCVTDQ2PS; 8 bits: byte SH/8 by VPSHUFB, VPSUBD, VCVTDQ2PS).
template <int BITS, bool ZP>
struct Deq {
  __m256 table;  // bits <= 3: float((i & mask) - z) (symmetric) or float(i & mask)
  __m256 zf;     // bits <= 3 with zero points: float(z) per row
  __m256i zi;    // 4 and 8 bits: z per row
  template <int SH>
  inline __m256 code(__m256i src) const {
    if constexpr (BITS == 8) {
      constexpr uint32_t j = SH / 8;  // dword d of a 128-bit lane takes byte 4d + j
      const __m256i sel = _mm256_setr_epi32(
          int(0x80808000u | j), int(0x80808004u | j), int(0x80808008u | j),
          int(0x8080800Cu | j), int(0x80808000u | j), int(0x80808004u | j),
          int(0x80808008u | j), int(0x8080800Cu | j));
      return _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_shuffle_epi8(src, sel), zi));
    } else if constexpr (BITS == 4) {
      const __m256i v = SH == 0 ? src : _mm256_srli_epi32(src, SH);
      const __m256i u = SH == 28 ? v : _mm256_and_si256(v, _mm256_set1_epi32(15));
      return _mm256_cvtepi32_ps(_mm256_sub_epi32(u, zi));
    } else {
      const __m256i idx = SH == 0 ? src : _mm256_srli_epi32(src, SH);
      const __m256 v = _mm256_permutevar8x32_ps(table, idx);
      // float(u) - float(z) is exact (integers below 2^8), so it equals float(u - z).
      if constexpr (ZP) return _mm256_sub_ps(v, zf);
      return v;
    }
  }
};

template <int BITS>
FWA_AVX2_INLINE __m256i group_src(const uint8_t* p, int g) {
  if constexpr (BITS == 8) {
    return ld(p + 64 * g);
  } else if constexpr (BITS == 4) {
    return ld(p + 64 * (g & 3));
  } else if constexpr (BITS == 2) {
    return ld(p + 64 * (g & 1));
  } else {  // 3 bits: low 2 bits at bit 0, bit 2 from the high plane
    const __m256i v = ld(p + 64 * (g & 1)), h = ld(p + 128);
    const __m256i a = g / 2 == 0 ? v : _mm256_srli_epi32(v, 2 * (g / 2));
    const __m256i b =
        g == 2 ? h : (g < 2 ? _mm256_slli_epi32(h, 2 - g) : _mm256_srli_epi32(h, g - 2));
    return merge3(a, b);
  }
}

template <int BITS>
constexpr int group_shift(int g) {
  return BITS == 4 ? 4 * (g / 4) : BITS == 2 ? 2 * (g / 2) : 0;
}

template <int BITS, bool ZP, int NT, int MB, int G>
FWA_AVX2_INLINE void exact_group(const uint8_t* const* p, const Deq<BITS, ZP> (*dq)[2],
                        const float* const* xr, __m256 (*bacc)[2][MB]) {
  constexpr int sh = group_shift<BITS>(G);
  __m256i src[NT][2];
  for (int t = 0; t < NT; ++t)
    for (int h = 0; h < 2; ++h) src[t][h] = group_src<BITS>(p[t] + 32 * h, G);
  auto step = [&](auto jc) {
    constexpr int J = decltype(jc)::value;
    for (int t = 0; t < NT; ++t) {
      for (int h = 0; h < 2; ++h) {
        const __m256 d = dq[t][h].template code<sh + 8 * J>(src[t][h]);
        for (int m = 0; m < MB; ++m) {
          bacc[t][h][m] = _mm256_fmadd_ps(d, _mm256_set1_ps(xr[m][4 * G + J]), bacc[t][h][m]);
        }
      }
    }
  };
  step(std::integral_constant<int, 0>());
  step(std::integral_constant<int, 1>());
  step(std::integral_constant<int, 2>());
  step(std::integral_constant<int, 3>());
}

template <int BITS, bool ZP, int NT, int MB>
void exact_kernel(const Ctx& c, int64_t t0, int64_t m0) {
  constexpr int Z = 1 << (BITS - 1);
  const uint8_t* p[NT];
  const uint8_t* sp[NT];
  const uint8_t* zp[NT];
  for (int t = 0; t < NT; ++t) {
    p[t] = c.w + size_t(t0 + t) * c.tile_bytes;
    sp[t] = p[t] + c.scales_off;
    zp[t] = p[t] + c.zeros_off;
  }
  const float* x = c.x + m0 * c.x_stride;
  const int64_t xs = c.x_stride;
  const size_t cb = c.chunk_bytes, sstep = c.f16 ? 32 : 64;
  Deq<BITS, ZP> dq[NT][2];
  if constexpr (BITS <= 3) {
    constexpr int mask = BITS == 3 ? 7 : 3;
    alignas(32) float tab[8];
    for (int i = 0; i < 8; ++i) tab[i] = float((i & mask) - (ZP ? 0 : Z));
    for (int t = 0; t < NT; ++t)
      for (int h = 0; h < 2; ++h) dq[t][h].table = _mm256_load_ps(tab);
  } else if constexpr (!ZP) {
    for (int t = 0; t < NT; ++t)
      for (int h = 0; h < 2; ++h) dq[t][h].zi = _mm256_set1_epi32(Z);
  }
  __m256 facc[NT][2][MB];
  for (int t = 0; t < NT; ++t)
    for (int h = 0; h < 2; ++h)
      for (int m = 0; m < MB; ++m) facc[t][h][m] = _mm256_setzero_ps();
  for (int64_t b0 = 0; b0 < c.k_chunks; b0 += c.cpb) {
    const int64_t b1 = b0 + c.cpb < c.k_chunks ? b0 + c.cpb : c.k_chunks;
    if constexpr (ZP) {
      for (int t = 0; t < NT; ++t) {
        for (int h = 0; h < 2; ++h) {
          const __m256i z = load_zeros(zp[t], h);
          if constexpr (BITS <= 3) {
            dq[t][h].zf = _mm256_cvtepi32_ps(z);
          } else {
            dq[t][h].zi = z;
          }
        }
        zp[t] += 16;
      }
    }
    __m256 bacc[NT][2][MB];
    for (int t = 0; t < NT; ++t)
      for (int h = 0; h < 2; ++h)
        for (int m = 0; m < MB; ++m) bacc[t][h][m] = _mm256_setzero_ps();
    for (int64_t ch = b0; ch < b1; ++ch) {
      for (int t = 0; t < NT; ++t) {
        for (int l = 0; l < BITS; ++l) {
          _mm_prefetch(reinterpret_cast<const char*>(p[t] + kPrefetchAhead + 64 * l),
                       _MM_HINT_T1);
        }
      }
      const float* xr[MB];
      for (int m = 0; m < MB; ++m) xr[m] = x + m * xs + ch * kChunk;
      exact_group<BITS, ZP, NT, MB, 0>(p, dq, xr, bacc);
      exact_group<BITS, ZP, NT, MB, 1>(p, dq, xr, bacc);
      exact_group<BITS, ZP, NT, MB, 2>(p, dq, xr, bacc);
      exact_group<BITS, ZP, NT, MB, 3>(p, dq, xr, bacc);
      exact_group<BITS, ZP, NT, MB, 4>(p, dq, xr, bacc);
      exact_group<BITS, ZP, NT, MB, 5>(p, dq, xr, bacc);
      exact_group<BITS, ZP, NT, MB, 6>(p, dq, xr, bacc);
      exact_group<BITS, ZP, NT, MB, 7>(p, dq, xr, bacc);
      for (int t = 0; t < NT; ++t) p[t] += cb;
    }
    for (int t = 0; t < NT; ++t) {
      for (int h = 0; h < 2; ++h) {
        const __m256 s = load_scales(sp[t], c.f16, h);
        for (int m = 0; m < MB; ++m)
          facc[t][h][m] = _mm256_fmadd_ps(s, bacc[t][h][m], facc[t][h][m]);
      }
      sp[t] += sstep;
    }
  }
  for (int t = 0; t < NT; ++t)
    for (int h = 0; h < 2; ++h)
      for (int m = 0; m < MB; ++m)
        store_half(c, t0 + t, h, c.y + (m0 + m) * c.y_stride, facc[t][h][m]);
}

template <int BITS, bool ZP, int NT, int MB>
void exact_rows(const Ctx& c, int64_t t, int64_t M) {
  int64_t m = 0;
  for (; m + MB <= M; m += MB) exact_kernel<BITS, ZP, NT, MB>(c, t, m);
  switch (M - m) {
    case 3: exact_kernel<BITS, ZP, NT, 3>(c, t, m); break;
    case 2: exact_kernel<BITS, ZP, NT, 2>(c, t, m); break;
    case 1: exact_kernel<BITS, ZP, NT, 1>(c, t, m); break;
    default: break;
  }
}

template <int BITS, bool ZP>
void exact_run(const Ctx& c, int64_t tb, int64_t te, int64_t M) {
  int64_t t = tb;
  if (M == 1) {
    for (; t + 2 <= te; t += 2) exact_kernel<BITS, ZP, 2, 1>(c, t, 0);
    for (; t < te; ++t) exact_kernel<BITS, ZP, 1, 1>(c, t, 0);
  } else {
    for (; t < te; ++t) exact_rows<BITS, ZP, 1, 4>(c, t, M);
  }
}

template <template <int, bool> class Run>
void dispatch(const MatmulArgs& a) {
  const Ctx c = make_ctx(a);
  const bool zp = a.layout->fmt.has_zero;
  const int64_t tb = a.tile_begin, te = a.tile_end, M = a.M;
  switch (a.layout->fmt.bits) {
    case 2: zp ? Run<2, true>::run(c, tb, te, M) : Run<2, false>::run(c, tb, te, M); break;
    case 3: zp ? Run<3, true>::run(c, tb, te, M) : Run<3, false>::run(c, tb, te, M); break;
    case 4: zp ? Run<4, true>::run(c, tb, te, M) : Run<4, false>::run(c, tb, te, M); break;
    default: zp ? Run<8, true>::run(c, tb, te, M) : Run<8, false>::run(c, tb, te, M); break;
  }
}

template <int BITS, bool ZP>
struct FastRun {
  static void run(const Ctx& c, int64_t tb, int64_t te, int64_t M) {
    fast_run<BITS, ZP>(c, tb, te, M);
  }
};

template <int BITS, bool ZP>
struct ExactRun {
  static void run(const Ctx& c, int64_t tb, int64_t te, int64_t M) {
    exact_run<BITS, ZP>(c, tb, te, M);
  }
};

}  // namespace

void matmul_fast_avx2(const MatmulArgs& a) { dispatch<FastRun>(a); }

void matmul_exact_avx2(const MatmulArgs& a) { dispatch<ExactRun>(a); }

}  // namespace fwa
