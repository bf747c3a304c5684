// SPDX-License-Identifier: Apache-2.0
// AVX-512 (F/BW/VL, no VNNI) matmul, exact and fast modes (kernels/kernel.h).
//
// Lanes = rows: a 64-byte bit plane is one zmm whose 32-bit lane r is row r of the tile (byte j
// of the lane = k 4g+j), so every output row is one lane and its fp32 chain runs in order.
// Fast mode, per tile chunk: the codes of group g are isolated with AND (and shifts), VPMADDUBSW
// multiplies them (u8) by the broadcast activation group (s8) into int16 pair sums, the 8
// groups are added in int16 and VPMADDWD(ones) gives the int32 dot per row; the accumulator
// starts at -z*xsum. No saturation: every int16 partial sum stays below 2^15 (codes < 16:
// 8 * 2*15*127 = 30480; 2/3-bit codes are kept in place as u << 2 in a second class whose sum
// is folded with an exact arithmetic shift; 8-bit codes are split into nibbles, hi * 16 in the
// VPMADDWD). Then acc = fma(float(isum), s * xd, acc) per chunk.
// Exact mode, per tile and block: for each k in order, float(u - z) for the 16 rows is
// produced by VPERMPS from a 16-entry table (bits <= 4; the lane's code is the table index
// after a shift) or by VPSHUFB + VPSUBD + VCVTDQ2PS (8-bit), then bacc = fma(d, x[k], bacc);
// acc = fma(s, bacc, acc) at the block end.
// GEMV runs 4 tiles per pass with L2 prefetch ahead of each stream; GEMM unpacks a chunk once
// and reuses it across up to 8 activation rows.
#if !defined(__AVX512F__) || !defined(__AVX512BW__) || !defined(__AVX512VL__)
#error "matmul_avx512.cpp needs -mavx512f -mavx512bw -mavx512vl"
#endif

#include <immintrin.h>

#include <cstring>
#include <type_traits>

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

// The helpers must inline into the kernels: out of line, GCC passes unpacked code registers
// through the stack (unpack<3> of the AVX-512 VNNI variant measured at 8 % of prefill).
#define FWA_AVX512_INLINE inline __attribute__((always_inline))

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

FWA_AVX512_INLINE __m512i ld(const uint8_t* p) { return _mm512_loadu_si512(p); }

FWA_AVX512_INLINE __m512i bcast4(const int8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return _mm512_set1_epi32(v);
}

// Loads the 16 scales of the next block and advances the pointer.
FWA_AVX512_INLINE __m512 next_scales(const uint8_t*& sp, bool f16) {
  __m512 s;
  if (f16) {
    s = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(sp)));
    sp += 32;
  } else {
    s = _mm512_loadu_ps(reinterpret_cast<const float*>(sp));
    sp += 64;
  }
  return s;
}

FWA_AVX512_INLINE __m512i next_zeros(const uint8_t*& zp) {
  const __m512i z = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(zp)));
  zp += 16;
  return z;
}

FWA_AVX512_INLINE void store_tile(const Ctx& c, int64_t t, float* yrow, __m512 v) {
  const int64_t n0 = t * kTileRows;
  const int64_t rows = c.N - n0;
  const __mmask16 mask = rows >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << rows) - 1);
  _mm512_mask_storeu_ps(yrow + n0, mask, v);
}

FWA_AVX512_INLINE __m512i mub(__m512i w, const int8_t* x) { return _mm512_maddubs_epi16(w, bcast4(x)); }

FWA_AVX512_INLINE __m512i add16(__m512i a, __m512i b) { return _mm512_add_epi16(a, b); }

// ---------------------------------------------------------------- fast mode

// 3-bit group codes: (a & 3) | (b & ~3) then & 7 - low bits from a, bit 2 from b.
FWA_AVX512_INLINE __m512i merge3(__m512i a, __m512i b) {
  return _mm512_and_si512(_mm512_ternarylogic_epi32(a, b, _mm512_set1_epi8(0x03), 0xE4),
                          _mm512_set1_epi8(0x07));
}

// int16 pair sums of one tile chunk with one activation row, folded to int32 by VPMADDWD and
// added to `init` (GEMV form: for 2/3 bits the codes of groups 2,3,6,7 stay at bit 2).
template <int BITS>
FWA_AVX512_INLINE __m512i dot_gemv(const uint8_t* p, const int8_t* x, __m512i init) {
  const __m512i ones = _mm512_set1_epi16(1);
  if constexpr (BITS == 8) {  // u = 16 * hi + lo: two nibble dots, hi weighted 16 in VPMADDWD
    const __m512i m = _mm512_set1_epi8(0x0F);
    __m512i lo = _mm512_setzero_si512(), hi = _mm512_setzero_si512();
    for (int g = 0; g < 8; ++g) {
      const __m512i v = ld(p + 64 * g);
      lo = add16(lo, mub(_mm512_and_si512(v, m), x + 4 * g));
      hi = add16(hi, mub(_mm512_and_si512(_mm512_srli_epi16(v, 4), m), x + 4 * g));
    }
    const __m512i r = _mm512_add_epi32(init, _mm512_madd_epi16(lo, ones));
    return _mm512_add_epi32(r, _mm512_madd_epi16(hi, _mm512_set1_epi16(16)));
  } else if constexpr (BITS == 4) {
    const __m512i m = _mm512_set1_epi8(0x0F);
    __m512i s0 = _mm512_setzero_si512(), s1 = _mm512_setzero_si512();
    for (int q = 0; q < 4; ++q) {
      const __m512i v = ld(p + 64 * q);
      s0 = add16(s0, mub(_mm512_and_si512(v, m), x + 4 * q));
      s1 = add16(s1, mub(_mm512_and_si512(_mm512_srli_epi16(v, 4), m), x + 16 + 4 * q));
    }
    return _mm512_add_epi32(init, _mm512_madd_epi16(add16(s0, s1), ones));
  } else {
    // classes: groups 0,1,4,5 at bit 0 (planes shifted down by 4 for 4,5), 2,3,6,7 at bit 2.
    const __m512i v0 = ld(p), v1 = ld(p + 64);
    const __m512i u0 = _mm512_srli_epi16(v0, 4), u1 = _mm512_srli_epi16(v1, 4);
    const __m512i c0 = _mm512_set1_epi8(0x03), c1 = _mm512_set1_epi8(0x0C);
    __m512i w[8];
    if constexpr (BITS == 2) {
      w[0] = _mm512_and_si512(v0, c0);
      w[1] = _mm512_and_si512(v1, c0);
      w[2] = _mm512_and_si512(v0, c1);
      w[3] = _mm512_and_si512(v1, c1);
      w[4] = _mm512_and_si512(u0, c0);
      w[5] = _mm512_and_si512(u1, c0);
      w[6] = _mm512_and_si512(u0, c1);
      w[7] = _mm512_and_si512(u1, c1);
    } else {  // high bit g of plane 2 moved to bit q + 2 and or-ed in
      const __m512i h = ld(p + 128);
      const __m512i hA = _mm512_slli_epi16(h, 2), hB = _mm512_slli_epi16(h, 1);
      const __m512i hC = _mm512_srli_epi16(h, 2), hD = _mm512_srli_epi16(h, 3);
      const __m512i b2 = _mm512_set1_epi8(0x04), b4 = _mm512_set1_epi8(0x10);
      auto ao = [](__m512i a, __m512i c, __m512i hb) {
        return _mm512_or_si512(_mm512_and_si512(a, c), hb);
      };
      w[0] = ao(v0, c0, _mm512_and_si512(hA, b2));
      w[1] = ao(v1, c0, _mm512_and_si512(hB, b2));
      w[2] = ao(v0, c1, _mm512_and_si512(hA, b4));
      w[3] = ao(v1, c1, _mm512_and_si512(hB, b4));
      w[4] = ao(u0, c0, _mm512_and_si512(hC, b2));
      w[5] = ao(u1, c0, _mm512_and_si512(hD, b2));
      w[6] = ao(u0, c1, _mm512_and_si512(hC, b4));
      w[7] = ao(u1, c1, _mm512_and_si512(hD, b4));
    }
    // class 0 (groups 0,1,4,5), class 1 (groups 2,3,6,7, four times too big), each < 2^15
    const __m512i s0 = add16(add16(mub(w[0], x), mub(w[1], x + 4)),
                             add16(mub(w[4], x + 16), mub(w[5], x + 20)));
    const __m512i s1 = add16(add16(mub(w[2], x + 8), mub(w[3], x + 12)),
                             add16(mub(w[6], x + 24), mub(w[7], x + 28)));
    const __m512i s = add16(s0, _mm512_srai_epi16(s1, 2));
    return _mm512_add_epi32(init, _mm512_madd_epi16(s, ones));
  }
}

// GEMM form: w[g] = codes of group g as bytes (8-bit: the raw planes, split per row later).
template <int BITS>
FWA_AVX512_INLINE void unpack(const uint8_t* p, __m512i* w) {
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
    const __m512i v0 = ld(p), v1 = ld(p + 64), h = ld(p + 128);
    w[0] = merge3(v0, _mm512_slli_epi16(h, 2));
    w[1] = merge3(v1, _mm512_slli_epi16(h, 1));
    w[2] = merge3(_mm512_srli_epi16(v0, 2), h);
    w[3] = merge3(_mm512_srli_epi16(v1, 2), _mm512_srli_epi16(h, 1));
    w[4] = merge3(_mm512_srli_epi16(v0, 4), _mm512_srli_epi16(h, 2));
    w[5] = merge3(_mm512_srli_epi16(v1, 4), _mm512_srli_epi16(h, 3));
    w[6] = merge3(_mm512_srli_epi16(v0, 6), _mm512_srli_epi16(h, 4));
    w[7] = merge3(_mm512_srli_epi16(v1, 6), _mm512_srli_epi16(h, 5));
  }
}

// int32 dot of unpacked codes with one activation row, plus init.
template <int BITS>
FWA_AVX512_INLINE __m512i dot_unpacked(const __m512i* w, const int8_t* x, __m512i init) {
  const __m512i ones = _mm512_set1_epi16(1);
  if constexpr (BITS == 8) {
    const __m512i m = _mm512_set1_epi8(0x0F);
    __m512i lo = _mm512_setzero_si512(), hi = _mm512_setzero_si512();
    for (int g = 0; g < 8; ++g) {
      lo = add16(lo, mub(_mm512_and_si512(w[g], m), x + 4 * g));
      hi = add16(hi, mub(_mm512_and_si512(_mm512_srli_epi16(w[g], 4), m), x + 4 * g));
    }
    const __m512i r = _mm512_add_epi32(init, _mm512_madd_epi16(lo, ones));
    return _mm512_add_epi32(r, _mm512_madd_epi16(hi, _mm512_set1_epi16(16)));
  } else {  // codes < 16: 8 * 2*15*127 < 2^15
    const __m512i s0 = add16(add16(mub(w[0], x), mub(w[1], x + 4)),
                             add16(mub(w[2], x + 8), mub(w[3], x + 12)));
    const __m512i s1 = add16(add16(mub(w[4], x + 16), mub(w[5], x + 20)),
                             add16(mub(w[6], x + 24), mub(w[7], x + 28)));
    return _mm512_add_epi32(init, _mm512_madd_epi16(add16(s0, s1), ones));
  }
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
    if (left == 0) {
      left = c.cpb;
      for (int t = 0; t < NT; ++t) {
        s[t] = next_scales(sp[t], c.f16);
        if constexpr (ZP) zv[t] = next_zeros(zp[t]);
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
        const __m512i isum = dot_gemv<BITS>(p[t], x, init);
        facc[t][0] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum),
                                     _mm512_mul_ps(s[t], _mm512_set1_ps(xd[ch])), facc[t][0]);
      } else {
        __m512i w[8];
        unpack<BITS>(p[t], w);
        for (int m = 0; m < MB; ++m) {
          const int32_t xsum = xs[m * xds + ch];
          const __m512i init = ZP ? _mm512_madd_epi16(zv[t], _mm512_set1_epi32(-xsum))
                                  : _mm512_set1_epi32(-Z * xsum);
          const __m512i isum = dot_unpacked<BITS>(w, x + m * xqs, init);
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

template <int BITS, bool ZP, int NT, int MB>
void fast_rows(const Ctx& c, int64_t t, int64_t M) {
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
  } else if (M <= 3) {
    for (; t + 4 <= te; t += 4) fast_rows<BITS, ZP, 4, 3>(c, t, M);
    for (; t < te; ++t) fast_rows<BITS, ZP, 1, 3>(c, t, M);
  } else if (M < 8) {
    for (; t + 2 <= te; t += 2) fast_rows<BITS, ZP, 2, 4>(c, t, M);
    for (; t < te; ++t) fast_rows<BITS, ZP, 1, 4>(c, t, M);
  } else {
    for (; t < te; ++t) fast_rows<BITS, ZP, 1, 8>(c, t, M);
  }
}

// ---------------------------------------------------------------- exact mode

// Per k: float(u - z) for the 16 rows. `src` is the register holding the code of this k in
// each lane at bit `sh` (bits <= 4, via a 16-entry VPERMPS table indexed by the low 4 bits) or
// byte j (8-bit, via VPSHUFB).
template <int BITS, bool ZP>
struct Deq {
  __m512 table;   // bits <= 4: float((i & mask) - z) (symmetric) or float(i & mask)
  __m512 zf;      // bits <= 4 with zero points: float(z) per row
  __m512i zi;     // 8-bit: z per row
  template <int SH>
  inline __m512 code(__m512i src) const {
    if constexpr (BITS == 8) {
      // VPSHUFB indexes within 128-bit lanes: dword d takes byte 4d + j, zeros above it.
      constexpr uint32_t j = SH / 8;
      const __m512i sel = _mm512_broadcast_i32x4(
          _mm_setr_epi32(int(0x80808000u | j), int(0x80808004u | j), int(0x80808008u | j),
                         int(0x8080800Cu | j)));
      const __m512i u = _mm512_shuffle_epi8(src, sel);
      return _mm512_cvtepi32_ps(_mm512_sub_epi32(u, zi));
    } else {
      const __m512i idx = SH == 0 ? src : _mm512_srli_epi32(src, SH);
      const __m512 v = _mm512_permutexvar_ps(idx, table);
      // float(u) - float(z) is exact (integers below 2^8), so it equals float(u - z).
      if constexpr (ZP) return _mm512_sub_ps(v, zf);
      return v;
    }
  }
};

// Source register for group g of one chunk and the bit offset of byte j = 0 in it.
template <int BITS>
FWA_AVX512_INLINE __m512i group_src(const uint8_t* p, int g) {
  if constexpr (BITS == 8) {
    return ld(p + 64 * g);
  } else if constexpr (BITS == 4) {
    return ld(p + 64 * (g & 3));
  } else if constexpr (BITS == 2) {
    return ld(p + 64 * (g & 1));
  } else {  // 3 bits: low 2 bits at bit 0 and bit 2 from the high plane; bit 3 is don't-care
    const __m512i v = ld(p + 64 * (g & 1)), h = ld(p + 128);
    const __m512i a = g / 2 == 0 ? v : _mm512_srli_epi32(v, 2 * (g / 2));
    const __m512i b =
        g == 2 ? h : (g < 2 ? _mm512_slli_epi32(h, 2 - g) : _mm512_srli_epi32(h, g - 2));
    return _mm512_ternarylogic_epi32(a, b, _mm512_set1_epi8(0x03), 0xE4);
  }
}

template <int BITS>
constexpr int group_shift(int g) {
  return BITS == 4 ? 4 * (g / 4) : BITS == 2 ? 2 * (g / 2) : 0;
}

// One chunk of NT tiles x MB rows: bacc[t][m] = fma(float(u - z), x[m][k], bacc[t][m]) in k
// order.
template <int BITS, bool ZP, int NT, int MB, int G>
FWA_AVX512_INLINE void exact_group(const uint8_t* const* p, const Deq<BITS, ZP>* dq,
                        const float* const* xr, __m512 (*bacc)[MB]) {
  constexpr int sh = group_shift<BITS>(G);
  __m512i src[NT];
  for (int t = 0; t < NT; ++t) src[t] = group_src<BITS>(p[t], G);
  auto step = [&](auto jc) {
    constexpr int J = decltype(jc)::value;
    for (int t = 0; t < NT; ++t) {
      const __m512 d = dq[t].template code<sh + 8 * J>(src[t]);
      for (int m = 0; m < MB; ++m) {
        bacc[t][m] = _mm512_fmadd_ps(d, _mm512_set1_ps(xr[m][4 * G + J]), bacc[t][m]);
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
  constexpr int kPfLines = BITS;
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
  const size_t cb = c.chunk_bytes;
  Deq<BITS, ZP> dq[NT];
  if constexpr (BITS <= 4) {
    constexpr int mask = BITS == 3 ? 7 : (1 << BITS) - 1;
    alignas(64) float tab[16];
    for (int i = 0; i < 16; ++i) tab[i] = float((i & mask) - (ZP ? 0 : Z));
    for (int t = 0; t < NT; ++t) dq[t].table = _mm512_load_ps(tab);
  } else if constexpr (!ZP) {
    for (int t = 0; t < NT; ++t) dq[t].zi = _mm512_set1_epi32(Z);
  }
  __m512 facc[NT][MB];
  for (int t = 0; t < NT; ++t)
    for (int m = 0; m < MB; ++m) facc[t][m] = _mm512_setzero_ps();
  for (int64_t b0 = 0; b0 < c.k_chunks; b0 += c.cpb) {
    const int64_t b1 = b0 + c.cpb < c.k_chunks ? b0 + c.cpb : c.k_chunks;
    if constexpr (ZP) {
      for (int t = 0; t < NT; ++t) {
        const __m512i z = next_zeros(zp[t]);
        if constexpr (BITS == 8) {
          dq[t].zi = z;
        } else {
          dq[t].zf = _mm512_cvtepi32_ps(z);
        }
      }
    }
    __m512 bacc[NT][MB];
    for (int t = 0; t < NT; ++t)
      for (int m = 0; m < MB; ++m) bacc[t][m] = _mm512_setzero_ps();
    for (int64_t ch = b0; ch < b1; ++ch) {
      for (int t = 0; t < NT; ++t) {
        for (int l = 0; l < kPfLines; ++l) {
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
      const __m512 s = next_scales(sp[t], c.f16);
      for (int m = 0; m < MB; ++m) facc[t][m] = _mm512_fmadd_ps(s, bacc[t][m], facc[t][m]);
    }
  }
  for (int t = 0; t < NT; ++t)
    for (int m = 0; m < MB; ++m) store_tile(c, t0 + t, c.y + (m0 + m) * c.y_stride, facc[t][m]);
}

template <int BITS, bool ZP, int NT, int MB>
void exact_rows(const Ctx& c, int64_t t, int64_t M) {
  int64_t m = 0;
  for (; m + MB <= M; m += MB) exact_kernel<BITS, ZP, NT, MB>(c, t, m);
  if constexpr (MB > 4) {
    if (m + 4 <= M) {
      exact_kernel<BITS, ZP, NT, 4>(c, t, m);
      m += 4;
    }
  }
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
    for (; t + 4 <= te; t += 4) exact_kernel<BITS, ZP, 4, 1>(c, t, 0);
    for (; t < te; ++t) exact_kernel<BITS, ZP, 1, 1>(c, t, 0);
  } else if (M <= 3) {
    for (; t + 2 <= te; t += 2) exact_rows<BITS, ZP, 2, 3>(c, t, M);
    for (; t < te; ++t) exact_rows<BITS, ZP, 1, 3>(c, t, M);
  } else {
    for (; t < te; ++t) exact_rows<BITS, ZP, 1, 8>(c, t, M);
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

void matmul_fast_avx512(const MatmulArgs& a) { dispatch<FastRun>(a); }

void matmul_exact_avx512(const MatmulArgs& a) { dispatch<ExactRun>(a); }

}  // namespace fwa
