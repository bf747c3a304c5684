// SPDX-License-Identifier: Apache-2.0
// ARMv8.0 NEON kernels (no dotprod): matmul_exact_neon and matmul_fast_neon.
//
// Data flow. A 16-byte load of a bit plane at offset 16q holds rows 4q..4q+3 (one 32-bit lane
// per row) x 4 consecutive k of one group. Lanes = rows everywhere: every output row runs its
// own sequential chain, exactly the canonical arithmetic of kernels/kernel.h.
//   fast : per tile quad (4 rows) and chunk, the planes are unpacked to the 8 group registers of
//          plain codes (3-bit: BSL of low and high planes into two whole codes per byte; 8-bit:
//          u ^ 0x80 = u - 128 as s8, corrected with z - 128). Each group is multiplied
//          with the 4 activation bytes of that group replicated to the 4 row lanes (LDR+DUP) by
//          SMULL/SMLAL(2) into int16 (bits <= 4: all 8 groups, |sum| <= 8*15*127; 8-bit: pairs,
//          |sum| <= 2*128*127, as quantize_activations keeps |xq| <= 127), folded to int32 with
//          SADDLP/SADALP and ADDP to one int32 per row: isum. Then per chunk and 4 rows:
//          isum -= z*xsum; acc = fma(float(isum), s*xd, acc).
//   exact: per group register of codes, TBX into 0x4B000000 lanes widens byte j of every row
//          lane to the float 2^23 + u; subtracting 2^23 + z gives float(u - z) exactly; then
//          bacc = fma(w, x[k], bacc) by element (FMLA v.s[j]), k ascending; per block
//          acc = fma(s, bacc, acc).
// Blocking: GEMV (M == 1) runs a whole tile (4 quads = 4 independent chains; 8-bit fast: half a
// tile, for registers) per pass, so the activation loads serve 4 quads; GEMM
// runs 4 activation rows x 1 quad per pass so each unpacked chunk serves 4 rows, with 3/2/1-row
// remainders. Tiles outermost, so a tile's codes stay in cache across the activation blocks.
#if !defined(__aarch64__) || !defined(__ARM_NEON)
#error "matmul_neon.cpp is the AArch64 NEON kernel: build it for aarch64 (-march=armv8-a)"
#endif

#include <arm_neon.h>

#include <cstdint>
#include <cstring>
#include <utility>

#include "kernels/kernel.h"
#include "kernels/variants.h"

namespace fwa {
namespace {

#define FWA_NEON_INLINE inline __attribute__((always_inline))

typedef uint32_t u32_unaligned __attribute__((may_alias, aligned(1)));

template <typename F, int... I>
FWA_NEON_INLINE void unroll_seq(F& f, std::integer_sequence<int, I...>) {
  (f(std::integral_constant<int, I>()), ...);
}
template <int N, typename F>
FWA_NEON_INLINE void unroll(F&& f) {
  unroll_seq(f, std::make_integer_sequence<int, N>());
}

FWA_NEON_INLINE int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

// Per-call view of the packed layout.
struct Geom {
  const uint8_t* w;
  const uint8_t* last_line;  // the matrix's last cache line: the prefetch limit
  size_t tile_bytes, chunk_bytes, scales_off, zeros_off;
  int64_t N, k_chunks, n_blocks, cpb;
  bool f16, has_zero;
};

Geom make_geom(const MatmulArgs& a) {
  const PackedLayout& L = *a.layout;
  Geom G;
  G.w = a.w;
  G.last_line = a.w + (L.total_bytes - 64);
  G.tile_bytes = L.tile_bytes;
  G.chunk_bytes = L.chunk_bytes;
  G.scales_off = L.scales_offset;
  G.zeros_off = L.zeros_offset;
  G.N = L.N;
  G.k_chunks = L.k_chunks;
  G.n_blocks = L.n_blocks;
  G.cpb = L.chunks_per_block;
  G.f16 = L.fmt.scale == ScaleType::f16;
  G.has_zero = L.fmt.has_zero;
  return G;
}

// GEMV software prefetch: a pass over a whole tile's rows (M == 1, first quad) fetches each
// chunk's BITS lines kPrefetchAhead bytes ahead and each block's scale line as far ahead. A tile
// is read front to back (codes, then scales) and the next tile follows it, so ahead in memory
// is ahead in time; nothing is prefetched past the matrix's last line.
constexpr size_t kPrefetchAhead = 2048;

template <int LINES>
FWA_NEON_INLINE void prefetch_ahead(const Geom& G, const uint8_t* p) {
  // Integer addresses: the target may lie outside the matrix. One compare per chunk.
  const uintptr_t q = reinterpret_cast<uintptr_t>(p) + kPrefetchAhead;
  if (q + 64 * (LINES - 1) > reinterpret_cast<uintptr_t>(G.last_line)) return;
  for (int l = 0; l < LINES; ++l)
    __builtin_prefetch(reinterpret_cast<const void*>(q + 64 * l), 0, 3);
}

// Scales of rows 4q..4q+3 of block b (fp16 widening is exact).
FWA_NEON_INLINE float32x4_t load_scales(const Geom& G, const uint8_t* tile, int64_t b, int q) {
  const size_t idx = size_t(b) * kTileRows + size_t(4 * q);
  if (G.f16) return vcvt_f32_f16(vreinterpret_f16_u8(vld1_u8(tile + G.scales_off + 2 * idx)));
  return vreinterpretq_f32_u8(vld1q_u8(tile + G.scales_off + 4 * idx));
}

// Zero points of rows 4q..4q+3 of block b as uint32 (symmetric formats: 2^(bits-1)).
template <int BITS>
FWA_NEON_INLINE uint32x4_t load_zeros(const Geom& G, const uint8_t* tile, int64_t b, int q) {
  if (!G.has_zero) return vdupq_n_u32(1u << (BITS - 1));
  uint32_t v;
  std::memcpy(&v, tile + G.zeros_off + size_t(b) * kTileRows + size_t(4 * q), 4);
  return vmovl_u16(vget_low_u16(vmovl_u8(vcreate_u8(v))));
}

// Writes rows n0..n0+3 of one output row, only those below N.
FWA_NEON_INLINE void store_rows(float* y, int64_t n0, int64_t N, float32x4_t v) {
  if (n0 + 4 <= N) {
    vst1q_f32(y + n0, v);
    return;
  }
  if (n0 < N) y[n0] = vgetq_lane_f32(v, 0);
  if (n0 + 1 < N) y[n0 + 1] = vgetq_lane_f32(v, 1);
  if (n0 + 2 < N) y[n0 + 2] = vgetq_lane_f32(v, 2);
}

// ---------------------------------------------------------------------------------------------
// Fast mode.

// The 8 group registers of quad q of a chunk, as plain codes (8-bit: u - 128).
template <int BITS>
FWA_NEON_INLINE void unpack_codes(const uint8_t* ch, int q, int8x16_t u[8]) {
  const uint8_t* p = ch + 16 * q;
  if constexpr (BITS == 8) {
    const uint8x16_t flip = vdupq_n_u8(0x80);
    for (int g = 0; g < 8; ++g) u[g] = vreinterpretq_s8_u8(veorq_u8(vld1q_u8(p + 64 * g), flip));
  } else if constexpr (BITS == 4) {
    const uint8x16_t m4 = vdupq_n_u8(0x0F);
    for (int pl = 0; pl < 4; ++pl) {
      const uint8x16_t P = vld1q_u8(p + 64 * pl);
      u[pl] = vreinterpretq_s8_u8(vandq_u8(P, m4));
      u[pl + 4] = vreinterpretq_s8_u8(vshrq_n_u8(P, 4));
    }
  } else if constexpr (BITS == 2) {
    const uint8x16_t m2 = vdupq_n_u8(3);
    for (int pl = 0; pl < 2; ++pl) {  // plane pl holds groups pl, pl+2, pl+4, pl+6
      const uint8x16_t P = vld1q_u8(p + 64 * pl);
      u[pl] = vreinterpretq_s8_u8(vandq_u8(P, m2));
      u[pl + 2] = vreinterpretq_s8_u8(vandq_u8(vshrq_n_u8(P, 2), m2));
      u[pl + 4] = vreinterpretq_s8_u8(vandq_u8(vshrq_n_u8(P, 4), m2));
      u[pl + 6] = vreinterpretq_s8_u8(vshrq_n_u8(P, 6));
    }
  } else {  // 3-bit: low 2 bits as 2-bit (planes 0, 1), bit 2 of group g at bit g of plane H
    const uint8x16_t P0 = vld1q_u8(p), P1 = vld1q_u8(p + 64), H = vld1q_u8(p + 128);
    const uint8x16_t m33 = vdupq_n_u8(0x33), m44 = vdupq_n_u8(0x44), m7 = vdupq_n_u8(7);
    // R holds two whole codes: group a in bits 0..2, group a+4 in bits 4..6 (bits 3, 7 zero).
    const uint8x16_t R04 = vbslq_u8(m33, P0, vandq_u8(vshlq_n_u8(H, 2), m44));
    const uint8x16_t R15 = vbslq_u8(m33, P1, vandq_u8(vshlq_n_u8(H, 1), m44));
    const uint8x16_t R26 = vbslq_u8(m33, vshrq_n_u8(P0, 2), vandq_u8(H, m44));
    const uint8x16_t R37 = vbslq_u8(m33, vshrq_n_u8(P1, 2), vandq_u8(vshrq_n_u8(H, 1), m44));
    u[0] = vreinterpretq_s8_u8(vandq_u8(R04, m7));
    u[4] = vreinterpretq_s8_u8(vshrq_n_u8(R04, 4));
    u[1] = vreinterpretq_s8_u8(vandq_u8(R15, m7));
    u[5] = vreinterpretq_s8_u8(vshrq_n_u8(R15, 4));
    u[2] = vreinterpretq_s8_u8(vandq_u8(R26, m7));
    u[6] = vreinterpretq_s8_u8(vshrq_n_u8(R26, 4));
    u[3] = vreinterpretq_s8_u8(vandq_u8(R37, m7));
    u[7] = vreinterpretq_s8_u8(vshrq_n_u8(R37, 4));
  }
}

// The 4 activation bytes of group g replicated into the 4 row lanes.
FWA_NEON_INLINE int8x16_t load_group(const int8_t* xg) {
  return vreinterpretq_s8_u32(vdupq_n_u32(*reinterpret_cast<const u32_unaligned*>(xg)));
}

// int32 sums over one chunk for 4 rows x MB activation rows: isum[m] = [row0 .. row3].
template <int BITS, int MB>
FWA_NEON_INLINE void chunk_isum(const int8x16_t u[8], const int8_t* const xr[MB],
                                int32x4_t isum[MB]) {
  // lo32 / hi32 lanes: (row 0, j 0-1), (row 0, j 2-3), (row 1, ...) / the same for rows 2, 3.
  int32x4_t lo32[MB], hi32[MB];
  if constexpr (BITS == 8) {  // products up to 128*127: two per int16 lane, then widen
#pragma GCC unroll 4
    for (int m = 0; m < MB; ++m) lo32[m] = hi32[m] = vdupq_n_s32(0);
#pragma GCC unroll 4
    for (int g = 0; g < 8; g += 2) {
#pragma GCC unroll 4
      for (int m = 0; m < MB; ++m) {
        const int8x16_t xa = load_group(xr[m] + 4 * g), xb = load_group(xr[m] + 4 * g + 4);
        int16x8_t lo = vmull_s8(vget_low_s8(u[g]), vget_low_s8(xa));
        int16x8_t hi = vmull_high_s8(u[g], xa);
        lo = vmlal_s8(lo, vget_low_s8(u[g + 1]), vget_low_s8(xb));
        hi = vmlal_high_s8(hi, u[g + 1], xb);
        lo32[m] = vpadalq_s16(lo32[m], lo);
        hi32[m] = vpadalq_s16(hi32[m], hi);
      }
    }
  } else {  // codes <= 15: all 8 groups fit an int16 lane (8 * 15 * 127)
#pragma GCC unroll 4
    for (int m = 0; m < MB; ++m) {
      const int8x16_t x0 = load_group(xr[m]);
      int16x8_t lo = vmull_s8(vget_low_s8(u[0]), vget_low_s8(x0));
      int16x8_t hi = vmull_high_s8(u[0], x0);
#pragma GCC unroll 8
      for (int g = 1; g < 8; ++g) {
        const int8x16_t xg = load_group(xr[m] + 4 * g);
        lo = vmlal_s8(lo, vget_low_s8(u[g]), vget_low_s8(xg));
        hi = vmlal_high_s8(hi, u[g], xg);
      }
      lo32[m] = vpaddlq_s16(lo);
      hi32[m] = vpaddlq_s16(hi);
    }
  }
#pragma GCC unroll 4
  for (int m = 0; m < MB; ++m) isum[m] = vpaddq_s32(lo32[m], hi32[m]);
}

// MB activation rows starting at m0 x QB quads starting at q0 of tile t, all chunks.
template <int BITS, int MB, int QB>
__attribute__((noinline)) void fast_pass(const MatmulArgs& a, const Geom& G, int64_t t, int64_t m0, int q0) {
  const uint8_t* tile = G.w + size_t(t) * G.tile_bytes;
  float32x4_t acc[MB][QB];
  for (int m = 0; m < MB; ++m)
    for (int i = 0; i < QB; ++i) acc[m][i] = vdupq_n_f32(0.0f);
  for (int64_t b = 0; b < G.n_blocks; ++b) {
    float32x4_t s[QB];
    int32x4_t zc[QB];  // z, or z - 128 for 8-bit codes read as u - 128
#pragma GCC unroll 4
    for (int i = 0; i < QB; ++i) {
      s[i] = load_scales(G, tile, b, q0 + i);
      zc[i] = vreinterpretq_s32_u32(load_zeros<BITS>(G, tile, b, q0 + i));
      if constexpr (BITS == 8) zc[i] = vsubq_s32(zc[i], vdupq_n_s32(128));
    }
    if constexpr (MB == 1) {
      const size_t sbytes = kTileRows * (G.f16 ? 2 : 4);  // scales per block
      if (q0 == 0) prefetch_ahead<1>(G, tile + G.scales_off + size_t(b) * sbytes);
    }
    const int64_t c_end = min64((b + 1) * G.cpb, G.k_chunks);
    for (int64_t c = b * G.cpb; c < c_end; ++c) {
      const uint8_t* ch = tile + size_t(c) * G.chunk_bytes;
      if constexpr (MB == 1) {
        if (q0 == 0) prefetch_ahead<BITS>(G, ch);
      }
      const int8_t* xr[MB];
      float xd[MB];
      int32_t xs[MB];
#pragma GCC unroll 4
      for (int m = 0; m < MB; ++m) {
        xr[m] = a.xq + (m0 + m) * a.xq_stride + c * kChunk;
        xd[m] = a.xd[(m0 + m) * a.xd_stride + c];
        xs[m] = a.xsum[(m0 + m) * a.xd_stride + c];
      }
#pragma GCC unroll 4
      for (int i = 0; i < QB; ++i) {
        int8x16_t u[8];
        unpack_codes<BITS>(ch, q0 + i, u);
        int32x4_t isum[MB];
        chunk_isum<BITS, MB>(u, xr, isum);
#pragma GCC unroll 4
        for (int m = 0; m < MB; ++m) {
          const int32x4_t is = vmlsq_n_s32(isum[m], zc[i], xs[m]);
          acc[m][i] = vfmaq_f32(acc[m][i], vcvtq_f32_s32(is), vmulq_n_f32(s[i], xd[m]));
        }
      }
    }
  }
  for (int m = 0; m < MB; ++m)
    for (int i = 0; i < QB; ++i)
      store_rows(a.y + (m0 + m) * a.y_stride, t * kTileRows + 4 * (q0 + i), G.N, acc[m][i]);
}

// ---------------------------------------------------------------------------------------------
// Exact mode.

// Group g of quad q of a chunk as plain codes u (one byte per (row, j)).
template <int BITS, int g>
FWA_NEON_INLINE uint8x16_t unpack_group(const uint8_t* ch, int q) {
  const uint8_t* p = ch + 16 * q;
  if constexpr (BITS == 8) {
    return vld1q_u8(p + 64 * g);
  } else if constexpr (BITS == 4) {
    const uint8x16_t P = vld1q_u8(p + 64 * (g % 4));
    if constexpr (g < 4) return vandq_u8(P, vdupq_n_u8(0x0F));
    else return vshrq_n_u8(P, 4);
  } else if constexpr (BITS == 2) {
    const uint8x16_t P = vld1q_u8(p + 64 * (g % 2));
    constexpr int sh = 2 * (g / 2);
    if constexpr (sh == 0) return vandq_u8(P, vdupq_n_u8(3));
    else if constexpr (sh == 6) return vshrq_n_u8(P, 6);
    else return vandq_u8(vshrq_n_u8(P, sh), vdupq_n_u8(3));
  } else {
    const uint8x16_t P = vld1q_u8(p + 64 * (g % 2)), H = vld1q_u8(p + 128);
    constexpr int sh = 2 * (g / 2);
    uint8x16_t low, hb;  // low: code bits 0..1 in bits 0..1 (higher bits ignored by SLI)
    if constexpr (sh == 0) low = P;
    else low = vshrq_n_u8(P, sh);
    if constexpr (g == 0) hb = vandq_u8(H, vdupq_n_u8(1));
    else if constexpr (g == 7) hb = vshrq_n_u8(H, 7);
    else hb = vandq_u8(vshrq_n_u8(H, g), vdupq_n_u8(1));
    return vsliq_n_u8(low, hb, 2);  // (hb << 2) | (low & 3)
  }
}

// Byte j of every row lane as the float 2^23 + u: TBX writes byte 4r+j of the codes into the
// low byte of lane r and keeps the other bytes of `magic` (0x4B000000 per lane, indices 0xFF
// are out of range).
template <int j>
FWA_NEON_INLINE float32x4_t widen(uint8x16_t codes, uint8x16_t magic) {
  constexpr uint64_t lo = (uint64_t(0xFFFFFF00u | (4 + j)) << 32) | (0xFFFFFF00u | j);
  constexpr uint64_t hi = (uint64_t(0xFFFFFF00u | (12 + j)) << 32) | (0xFFFFFF00u | (8 + j));
  const uint8x16_t idx = vcombine_u8(vcreate_u8(lo), vcreate_u8(hi));
  return vreinterpretq_f32_u8(vqtbx1q_u8(magic, codes, idx));
}

template <int BITS, int MB, int QB>
__attribute__((noinline)) void exact_pass(const MatmulArgs& a, const Geom& G, int64_t t, int64_t m0, int q0) {
  const uint8_t* tile = G.w + size_t(t) * G.tile_bytes;
  const uint32x4_t magic32 = vdupq_n_u32(0x4B000000u);  // float 2^23
  const uint8x16_t magic = vreinterpretq_u8_u32(magic32);
  float32x4_t acc[MB][QB];
  for (int m = 0; m < MB; ++m)
    for (int i = 0; i < QB; ++i) acc[m][i] = vdupq_n_f32(0.0f);
  for (int64_t b = 0; b < G.n_blocks; ++b) {
    float32x4_t s[QB], zf[QB];  // zf = 2^23 + z
#pragma GCC unroll 4
    for (int i = 0; i < QB; ++i) {
      s[i] = load_scales(G, tile, b, q0 + i);
      zf[i] = vreinterpretq_f32_u32(vorrq_u32(load_zeros<BITS>(G, tile, b, q0 + i), magic32));
    }
    float32x4_t bacc[MB][QB];
    for (int m = 0; m < MB; ++m)
      for (int i = 0; i < QB; ++i) bacc[m][i] = vdupq_n_f32(0.0f);
    if constexpr (MB == 1) {
      const size_t sbytes = kTileRows * (G.f16 ? 2 : 4);  // scales per block
      if (q0 == 0) prefetch_ahead<1>(G, tile + G.scales_off + size_t(b) * sbytes);
    }
    const int64_t c_end = min64((b + 1) * G.cpb, G.k_chunks);
    for (int64_t c = b * G.cpb; c < c_end; ++c) {
      const uint8_t* ch = tile + size_t(c) * G.chunk_bytes;
      if constexpr (MB == 1) {
        if (q0 == 0) prefetch_ahead<BITS>(G, ch);
      }
      const float* xr[MB];
#pragma GCC unroll 4
      for (int m = 0; m < MB; ++m) xr[m] = a.x + (m0 + m) * a.x_stride + c * kChunk;
      unroll<8>([&](auto gi) __attribute__((always_inline)) {
        constexpr int g = decltype(gi)::value;
        float32x4_t xv[MB];
#pragma GCC unroll 4
        for (int m = 0; m < MB; ++m) xv[m] = vld1q_f32(xr[m] + 4 * g);
#pragma GCC unroll 4
        for (int i = 0; i < QB; ++i) {
          const uint8x16_t codes = unpack_group<BITS, g>(ch, q0 + i);
          unroll<4>([&](auto ji) __attribute__((always_inline)) {
            constexpr int j = decltype(ji)::value;
            const float32x4_t w = vsubq_f32(widen<j>(codes, magic), zf[i]);  // u - z, exact
#pragma GCC unroll 4
            for (int m = 0; m < MB; ++m) bacc[m][i] = vfmaq_laneq_f32(bacc[m][i], w, xv[m], j);
          });
        }
      });
    }
    for (int m = 0; m < MB; ++m)
      for (int i = 0; i < QB; ++i) acc[m][i] = vfmaq_f32(acc[m][i], s[i], bacc[m][i]);
  }
  for (int m = 0; m < MB; ++m)
    for (int i = 0; i < QB; ++i)
      store_rows(a.y + (m0 + m) * a.y_stride, t * kTileRows + 4 * (q0 + i), G.N, acc[m][i]);
}

// ---------------------------------------------------------------------------------------------
// Blocking over tiles and activation rows.

template <int BITS, bool FAST>
void run(const MatmulArgs& a) {
  const Geom G = make_geom(a);
  for (int64_t t = a.tile_begin; t < a.tile_end; ++t) {
    const int64_t rows = min64(kTileRows, G.N - t * kTileRows);
    const int quads = int((rows + 3) / 4);  // quads holding rows < N
    int64_t m = 0;
    for (; m + 4 <= a.M; m += 4)
      for (int q = 0; q < quads; ++q) {
        if constexpr (FAST) fast_pass<BITS, 4, 1>(a, G, t, m, q);
        else exact_pass<BITS, 4, 1>(a, G, t, m, q);
      }
    switch (a.M - m) {
      case 3:
        for (int q = 0; q < quads; ++q) {
          if constexpr (FAST) fast_pass<BITS, 3, 1>(a, G, t, m, q);
          else exact_pass<BITS, 3, 1>(a, G, t, m, q);
        }
        break;
      case 2:
        for (int q = 0; q < quads; q += 2) {
          if constexpr (FAST) fast_pass<BITS, 2, 2>(a, G, t, m, q);
          else exact_pass<BITS, 2, 2>(a, G, t, m, q);
        }
        break;
      case 1:
        if constexpr (FAST && BITS == 8) {  // 8 planes per quad: half a tile per pass
          for (int q = 0; q < quads; q += 2) fast_pass<BITS, 1, 2>(a, G, t, m, q);
        } else if constexpr (FAST) {
          fast_pass<BITS, 1, 4>(a, G, t, m, 0);
        } else {
          exact_pass<BITS, 1, 4>(a, G, t, m, 0);
        }
        break;
      default:
        break;
    }
  }
}

template <bool FAST>
void dispatch(const MatmulArgs& a) {
  switch (a.layout->fmt.bits) {
    case 2: run<2, FAST>(a); break;
    case 3: run<3, FAST>(a); break;
    case 4: run<4, FAST>(a); break;
    case 8: run<8, FAST>(a); break;
    default: break;
  }
}

}  // namespace

void matmul_exact_neon(const MatmulArgs& args) { dispatch<false>(args); }
void matmul_fast_neon(const MatmulArgs& args) { dispatch<true>(args); }

}  // namespace fwa
