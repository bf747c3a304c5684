// SPDX-License-Identifier: Apache-2.0
// ARMv8.6 i8mm kernel: matmul_fast_i8mm, the GEMM (M >= 2) path with SMMLA. Dispatch sends GEMV
// to the dotprod variant, but every M >= 1 is handled (an odd last activation row is paired
// with a zero row).
//
// Data flow. A 16-byte load of a bit plane at offset 16q holds rows 4q..4q+3 (one 32-bit lane
// per row) x the 4 k of one group. Per tile quad and chunk the planes are unpacked to the 8
// group registers of plain codes (4-bit: AND/USHR; 2-bit: USHR+AND; 3-bit: BSL of the low and
// high planes into two whole codes per byte, then AND/USHR; 8-bit: u ^ 0x80 = u - 128 as s8,
// corrected with z - 128). ZIP1/ZIP2.4S of groups g, g+1 give rows (0,1) / (2,3) x 8
// consecutive k; ZIP1/ZIP2.2D of two activation rows give 2 rows x the same 8 k. SMMLA then
// accumulates the 2x2 int32 tile [r0m0 r0m1 r1m0 r1m1]; UZP1/UZP2 of the rows (0,1) and (2,3)
// tiles give, per activation row, isum for the 4 weight rows in row lanes. Once per chunk:
//   isum -= z * xsum;  acc = fma(float(isum), s * xd, acc)        (the canonical fast mode)
// Blocking: 4 activation rows (2 SMMLA pairs) x 1 quad per pass, so each unpacked and zipped
// chunk serves 4 rows; 3/2/1-row remainders. Tiles outermost, so a tile's codes stay in cache
// across the activation blocks.
#if !defined(__aarch64__) || !defined(__ARM_FEATURE_MATMUL_INT8)
#error "matmul_i8mm.cpp needs the i8mm extension (-march=armv8.2-a+dotprod+i8mm)"
#endif

#include <arm_neon.h>

#include <cstdint>
#include <cstring>

#include "kernels/kernel.h"
#include "kernels/variants.h"

namespace fwa {
namespace {

#define FWA_MM_INLINE inline __attribute__((always_inline))

FWA_MM_INLINE int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

// Per-call view of the packed layout.
struct Geom {
  const uint8_t* w;
  size_t tile_bytes, chunk_bytes, scales_off, zeros_off;
  int64_t N, k_chunks, n_blocks, cpb;
  bool f16, has_zero;
};

Geom make_geom(const MatmulArgs& a) {
  const PackedLayout& L = *a.layout;
  Geom G;
  G.w = a.w;
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

// Scales of rows 4q..4q+3 of block b (fp16 widening is exact).
FWA_MM_INLINE float32x4_t load_scales(const Geom& G, const uint8_t* tile, int64_t b, int q) {
  const size_t idx = size_t(b) * kTileRows + size_t(4 * q);
  if (G.f16) return vcvt_f32_f16(vreinterpret_f16_u8(vld1_u8(tile + G.scales_off + 2 * idx)));
  return vreinterpretq_f32_u8(vld1q_u8(tile + G.scales_off + 4 * idx));
}

// The zero points of rows 4q..4q+3 of block b as the isum correction factor: z, or z - 128 for
// 8-bit codes (read as u - 128). Symmetric formats: z = 2^(bits-1).
template <int BITS>
FWA_MM_INLINE int32x4_t load_zero_factor(const Geom& G, const uint8_t* tile, int64_t b, int q) {
  constexpr int bias = BITS == 8 ? 128 : 0;
  if (!G.has_zero) return vdupq_n_s32((1 << (BITS - 1)) - bias);
  uint32_t v;
  std::memcpy(&v, tile + G.zeros_off + size_t(b) * kTileRows + size_t(4 * q), 4);
  const int32x4_t z = vreinterpretq_s32_u32(vmovl_u16(vget_low_u16(vmovl_u8(vcreate_u8(v)))));
  return bias ? vsubq_s32(z, vdupq_n_s32(bias)) : z;
}

// Writes rows n0..n0+3 of one output row, only those below N.
FWA_MM_INLINE void store_rows(float* y, int64_t n0, int64_t N, float32x4_t v) {
  if (n0 + 4 <= N) {
    vst1q_f32(y + n0, v);
    return;
  }
  if (n0 < N) y[n0] = vgetq_lane_f32(v, 0);
  if (n0 + 1 < N) y[n0 + 1] = vgetq_lane_f32(v, 1);
  if (n0 + 2 < N) y[n0 + 2] = vgetq_lane_f32(v, 2);
}

// The 8 group registers of quad q of a chunk as plain codes (8-bit: u - 128), as s8.
template <int BITS>
FWA_MM_INLINE void unpack(const uint8_t* ch, int q, int8x16_t u[8]) {
  const uint8_t* p = ch + 16 * q;
  if constexpr (BITS == 8) {
    const uint8x16_t flip = vdupq_n_u8(0x80);
    for (int g = 0; g < 8; ++g) u[g] = vreinterpretq_s8_u8(veorq_u8(vld1q_u8(p + 64 * g), flip));
  } else if constexpr (BITS == 4) {
    const uint8x16_t m4 = vdupq_n_u8(0x0F);
    for (int pl = 0; pl < 4; ++pl) {  // plane pl: group pl (low nibble), pl + 4 (high nibble)
      const uint8x16_t P = vld1q_u8(p + 64 * pl);
      u[pl] = vreinterpretq_s8_u8(vandq_u8(P, m4));
      u[pl + 4] = vreinterpretq_s8_u8(vshrq_n_u8(P, 4));
    }
  } else if constexpr (BITS == 2) {
    const uint8x16_t m3 = vdupq_n_u8(3);
    for (int pl = 0; pl < 2; ++pl) {  // plane pl: groups pl, pl+2, pl+4, pl+6 at shifts 0,2,4,6
      const uint8x16_t P = vld1q_u8(p + 64 * pl);
      u[pl] = vreinterpretq_s8_u8(vandq_u8(P, m3));
      u[pl + 2] = vreinterpretq_s8_u8(vandq_u8(vshrq_n_u8(P, 2), m3));
      u[pl + 4] = vreinterpretq_s8_u8(vandq_u8(vshrq_n_u8(P, 4), m3));
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

// MB activation rows starting at m0 x quad q of tile t, all chunks.
template <int BITS, int MB>
__attribute__((noinline)) void gemm_pass(const MatmulArgs& a, const Geom& G, int64_t t,
                                         int64_t m0, int q) {
  constexpr int NP = (MB + 1) / 2;  // SMMLA activation row pairs
  const uint8_t* tile = G.w + size_t(t) * G.tile_bytes;
  float32x4_t acc[MB];
  for (int m = 0; m < MB; ++m) acc[m] = vdupq_n_f32(0.0f);
  for (int64_t b = 0; b < G.n_blocks; ++b) {
    const float32x4_t s = load_scales(G, tile, b, q);
    const int32x4_t zf = load_zero_factor<BITS>(G, tile, b, q);
    const int64_t c_end = min64((b + 1) * G.cpb, G.k_chunks);
    for (int64_t c = b * G.cpb; c < c_end; ++c) {
      const uint8_t* ch = tile + size_t(c) * G.chunk_bytes;
      // A[p][h]: activation rows 2p, 2p+1 x k 8h..8h+7 of the chunk.
      int8x16_t A[NP][4];
      float xd[MB];
      int32_t xs[MB];
#pragma GCC unroll 2
      for (int p = 0; p < NP; ++p) {
        const int64_t r0 = m0 + 2 * p, r1 = r0 + 1;
        const int8_t* x0 = a.xq + r0 * a.xq_stride + c * kChunk;
        const int64x2_t a0 = vreinterpretq_s64_s8(vld1q_s8(x0));
        const int64x2_t a1 = vreinterpretq_s64_s8(vld1q_s8(x0 + 16));
        int64x2_t b0 = vdupq_n_s64(0), b1 = vdupq_n_s64(0);
        if (2 * p + 1 < MB) {
          const int8_t* x1 = a.xq + r1 * a.xq_stride + c * kChunk;
          b0 = vreinterpretq_s64_s8(vld1q_s8(x1));
          b1 = vreinterpretq_s64_s8(vld1q_s8(x1 + 16));
        }
        A[p][0] = vreinterpretq_s8_s64(vzip1q_s64(a0, b0));
        A[p][1] = vreinterpretq_s8_s64(vzip2q_s64(a0, b0));
        A[p][2] = vreinterpretq_s8_s64(vzip1q_s64(a1, b1));
        A[p][3] = vreinterpretq_s8_s64(vzip2q_s64(a1, b1));
      }
#pragma GCC unroll 4
      for (int m = 0; m < MB; ++m) {
        xd[m] = a.xd[(m0 + m) * a.xd_stride + c];
        xs[m] = a.xsum[(m0 + m) * a.xd_stride + c];
      }
      int8x16_t u[8];
      unpack<BITS>(ch, q, u);
      int32x4_t i01[NP], i23[NP];  // [r0m0 r0m1 r1m0 r1m1], [r2m0 r2m1 r3m0 r3m1]
      for (int p = 0; p < NP; ++p) i01[p] = i23[p] = vdupq_n_s32(0);
#pragma GCC unroll 4
      for (int h = 0; h < 4; ++h) {  // groups 2h, 2h+1 = k 8h..8h+7
        const int32x4_t g0 = vreinterpretq_s32_s8(u[2 * h]), g1 = vreinterpretq_s32_s8(u[2 * h + 1]);
        const int8x16_t w01 = vreinterpretq_s8_s32(vzip1q_s32(g0, g1));  // rows 0, 1
        const int8x16_t w23 = vreinterpretq_s8_s32(vzip2q_s32(g0, g1));  // rows 2, 3
#pragma GCC unroll 2
        for (int p = 0; p < NP; ++p) {
          i01[p] = vmmlaq_s32(i01[p], w01, A[p][h]);
          i23[p] = vmmlaq_s32(i23[p], w23, A[p][h]);
        }
      }
#pragma GCC unroll 2
      for (int p = 0; p < NP; ++p) {
        int32x4_t is[2] = {vuzp1q_s32(i01[p], i23[p]), vuzp2q_s32(i01[p], i23[p])};
#pragma GCC unroll 2
        for (int h = 0; h < 2; ++h) {
          const int m = 2 * p + h;
          if (m >= MB) break;
          const int32x4_t isum = vmlsq_n_s32(is[h], zf, xs[m]);
          acc[m] = vfmaq_f32(acc[m], vcvtq_f32_s32(isum), vmulq_n_f32(s, xd[m]));
        }
      }
    }
  }
  for (int m = 0; m < MB; ++m)
    store_rows(a.y + (m0 + m) * a.y_stride, t * kTileRows + 4 * q, G.N, acc[m]);
}

template <int BITS>
void run(const MatmulArgs& a) {
  const Geom G = make_geom(a);
  for (int64_t t = a.tile_begin; t < a.tile_end; ++t) {
    const int64_t rows = min64(kTileRows, G.N - t * kTileRows);
    const int quads = int((rows + 3) / 4);  // quads holding rows < N
    int64_t m = 0;
    for (; m + 4 <= a.M; m += 4)
      for (int q = 0; q < quads; ++q) gemm_pass<BITS, 4>(a, G, t, m, q);
    for (int q = 0; q < quads; ++q) {
      switch (a.M - m) {
        case 3: gemm_pass<BITS, 3>(a, G, t, m, q); break;
        case 2: gemm_pass<BITS, 2>(a, G, t, m, q); break;
        case 1: gemm_pass<BITS, 1>(a, G, t, m, q); break;
        default: break;
      }
    }
  }
}

}  // namespace

void matmul_fast_i8mm(const MatmulArgs& args) {
  switch (args.layout->fmt.bits) {
    case 2: run<2>(args); break;
    case 3: run<3>(args); break;
    case 4: run<4>(args); break;
    case 8: run<8>(args); break;
    default: break;
  }
}

}  // namespace fwa
