// SPDX-License-Identifier: Apache-2.0
// SVE matmul kernels (vector-length agnostic): fwa::matmul_exact_sve and fwa::matmul_fast_sve.
//
// Every 32-bit lane is one weight row running its own canonical chain (kernels/kernel.h), so the
// float arithmetic is vectorised across rows only, never across k. A 64-byte bit plane is
// 16 rows x 4 bytes. A "row group" is the set of rows one vector holds, lane l = output row
// n0 + l, for any VL (no VL is assumed anywhere; svcntw() decides at run time):
//   * VL < 1024 bits (cntw < 32): part of one tile, rows [row0, row0 + cntw) clipped to the
//     tile, in ceil(16 / cntw) groups per tile; a group loads 4*cntw bytes at byte 4*row0 of
//     every plane (2*row0 of fp16 scales, row0 of zero points). At 512..1023 bits the first 16
//     lanes hold the whole tile.
//   * VL >= 1024 bits: floor(cntw / 16) consecutive tiles side by side, 16 lanes each; tile i
//     is loaded under the predicate of lanes [16i, 16i + 16) from a base shifted down by 16
//     elements, so every load stays inside the packed buffer.
// A pass computes R row groups x MB activation rows = 4 independent accumulator "slots" (R, MB
// in {4,1}, {2,2}, {1,3}, {1,4}): the decoded weights are shared by the MB activation rows, and
// the 4 independent chains hide the FMLA latency even for M = 1. Per group of four k
// (g = 0..7 in a chunk) the codes are decoded into bytes u (byte 4r+j = row r, k = 4g+j); 8-bit
// codes enter the fast dot product as u ^ 0x80 = u - 128 (signed) with z - 128 as zero point.
//   exact: byte j of each lane -> float(u - z) -> bacc = FMLA(bacc, float(u - z), x[k]) (x from
//          a replicated quadword, indexed FMLA), k ascending; block end: acc = FMLA(acc, s, bacc).
//   fast:  isum = SDOT (indexed, xq replicated per quadword) over the 8 groups of a chunk,
//          isum -= z * xsum; acc = FMLA(acc, float(isum), s * xd) with the FMUL rounded first.
// The group index is a run-time value in the exact loop so that the compiler schedules one
// group at a time (unrolling the chunk lets it hoist all 32 decoded vectors and spill).
// Outputs are stored contiguously under a predicate that drops rows n >= N.
#if !defined(__ARM_FEATURE_SVE)
#error "matmul_sve.cpp must be compiled with SVE enabled (-march=armv8.2-a+sve)"
#endif

#include <arm_sve.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "kernels/kernel.h"
#include "kernels/variants.h"

#define FWA_SVE_INLINE inline __attribute__((always_inline))

namespace fwa {
namespace {

constexpr int kSlots = 4;  // independent accumulators per pass: R row groups x MB act. rows

// The weight rows held by one vector of 32-bit lanes (see the header comment).
struct RowGroup {
  const uint8_t* tile;  // first tile of the group
  int64_t row0;         // tile row in lane 0 (0 when several tiles share the vector)
  int64_t n_tiles;      // tiles side by side, 16 lanes each (1 below 1024-bit vectors)
  int64_t n0;           // output row of lane 0
  bool store;           // false for a slot that only repeats another group (never stored)
};

// Lanes holding rows of the group: row0 + l < 16 (one tile) or l < 16 * n_tiles.
FWA_SVE_INLINE svbool_t group_lanes(const RowGroup& g) {
  return svwhilelt_b32_s64(g.row0, kTileRows * g.n_tiles);
}

// Lanes [16i, 16i + 16) of pg: the lanes of the group's i-th tile.
FWA_SVE_INLINE svbool_t tile_lanes(svbool_t pg, int64_t i) {
  return svbic_b_z(pg, svwhilelt_b32_s64(0, kTileRows * (i + 1)),
                   svwhilelt_b32_s64(0, kTileRows * i));
}

// Base for a contiguous load of the per-row elements (type T) at byte `off` of tile i that puts
// tile row r in lane 16i + r - row0. For i > 0 it points into tile i - 1 (tile_bytes >= 64).
template <typename T>
FWA_SVE_INLINE const T* tile_base(const PackedLayout& L, const RowGroup& g, size_t off,
                                  int64_t i) {
  return reinterpret_cast<const T*>(g.tile + size_t(i) * L.tile_bytes + off) +
         (g.row0 - kTileRows * i);
}

// Loads the per-row elements at byte `off` of every tile of the group into its 32-bit lanes.
template <bool kMulti, typename T, typename Load>
FWA_SVE_INLINE svuint32_t load_rows(const PackedLayout& L, const RowGroup& g, svbool_t pg,
                                    size_t off, Load load) {
  if constexpr (!kMulti) {
    return load(pg, tile_base<T>(L, g, off, 0));
  } else {
    svuint32_t v = load(tile_lanes(pg, 0), tile_base<T>(L, g, off, 0));
    for (int64_t i = 1; i < g.n_tiles; ++i) {
      v = svorr_u32_x(pg, v, load(tile_lanes(pg, i), tile_base<T>(L, g, off, i)));
    }
    return v;
  }
}

template <bool kMulti>
FWA_SVE_INLINE svuint8_t load_plane(const PackedLayout& L, const RowGroup& g, svbool_t pg,
                                    size_t off) {
  return svreinterpret_u8_u32(load_rows<kMulti, uint32_t>(
      L, g, pg, off, [](svbool_t p, const uint32_t* q) { return svld1_u32(p, q); }));
}

// Scale of block b for every lane (the fp16 widening is exact).
template <bool kMulti>
FWA_SVE_INLINE svfloat32_t load_scale(const PackedLayout& L, const RowGroup& g, svbool_t pg,
                                      int64_t b) {
  if (L.fmt.scale == ScaleType::f16) {
    const svuint32_t h = load_rows<kMulti, uint16_t>(
        L, g, pg, L.scales_offset + size_t(b) * kTileRows * 2,
        [](svbool_t p, const uint16_t* q) { return svld1uh_u32(p, q); });
    return svcvt_f32_f16_x(pg, svreinterpret_f16_u32(h));
  }
  return svreinterpret_f32_u32(load_rows<kMulti, uint32_t>(
      L, g, pg, L.scales_offset + size_t(b) * kTileRows * 4,
      [](svbool_t p, const uint32_t* q) { return svld1_u32(p, q); }));
}

// Zero point of block b for every lane (the implied one for symmetric formats).
template <bool kMulti>
FWA_SVE_INLINE svint32_t load_zero(const PackedLayout& L, const RowGroup& g, svbool_t pg,
                                   int64_t b) {
  if (!L.fmt.has_zero) return svdup_n_s32(symmetric_zero(L.fmt.bits));
  return svreinterpret_s32_u32(load_rows<kMulti, uint8_t>(
      L, g, pg, L.zeros_offset + size_t(b) * kTileRows,
      [](svbool_t p, const uint8_t* q) { return svld1ub_u32(p, q); }));
}

// Unsigned codes u of group G (k = 4G..4G+3) of the chunk at byte `off`: byte 4r+j of the
// result is the code of (row r, k = 4G+j). Bits 2/4/8: plane G % bits at shift bits * (G / bits);
// 3-bit: the low two bits as 2-bit, bit 2 from bit G of the high plane (bytes 128..191).
template <int kBits, bool kMulti>
FWA_SVE_INLINE svuint8_t group_codes(const PackedLayout& L, const RowGroup& g, svbool_t pg,
                                     size_t off, int G) {
  if constexpr (kBits == 8) {
    return load_plane<kMulti>(L, g, pg, off + 64 * size_t(G));
  } else {
    constexpr int low = kBits == 4 ? 4 : 2;  // bits held in the low planes
    const svbool_t all = svptrue_b8();
    const svuint8_t p = load_plane<kMulti>(L, g, pg, off + 64 * size_t(G % low));
    svuint8_t u = svlsr_u8_x(all, p, svdup_n_u8(uint8_t(low * (G / low))));
    u = svand_n_u8_x(all, u, (1 << low) - 1);
    if constexpr (kBits == 3) {
      const svuint8_t h = load_plane<kMulti>(L, g, pg, off + 128);
      const svuint8_t bit = svand_n_u8_x(all, svlsr_u8_x(all, h, svdup_n_u8(uint8_t(G))), 1);
      u = svorr_u8_x(all, u, svlsl_n_u8_x(all, bit, 2));
    }
    return u;
  }
}

// One of four variables by compile-time index (SVE values cannot live in arrays).
template <int I, typename V>
FWA_SVE_INLINE V& pick(V& v0, V& v1, V& v2, V& v3) {
  static_assert(I >= 0 && I < kSlots, "slot");
  if constexpr (I == 0) {
    return v0;
  } else if constexpr (I == 1) {
    return v1;
  } else if constexpr (I == 2) {
    return v2;
  } else {
    return v3;
  }
}

// ---------------------------------------------------------------------------------------------
// exact mode

// float(u - z) of byte J of every lane.
template <int J>
FWA_SVE_INLINE svfloat32_t code_minus_zero(svuint32_t w, svint32_t z) {
  const svbool_t all = svptrue_b32();
  svuint32_t u = w;
  if constexpr (J > 0) u = svlsr_n_u32_x(all, u, 8 * J);
  if constexpr (J < 3) u = svand_n_u32_x(all, u, 0xff);
  return svcvt_f32_s32_x(all, svsub_s32_x(all, svreinterpret_s32_u32(u), z));
}

// bacc = fma(d_j, x[j], bacc) for j = 0..3 in order.
FWA_SVE_INLINE void fma4(svfloat32_t& bacc, svfloat32_t d0, svfloat32_t d1, svfloat32_t d2,
                         svfloat32_t d3, const float* x) {
  const svfloat32_t xr = svld1rq_f32(svptrue_b32(), x);
  bacc = svmla_lane_f32(bacc, d0, xr, 0);
  bacc = svmla_lane_f32(bacc, d1, xr, 1);
  bacc = svmla_lane_f32(bacc, d2, xr, 2);
  bacc = svmla_lane_f32(bacc, d3, xr, 3);
}

// Group G of one chunk for row group r of the pass: decode once, then the MB activation rows
// (x points at k = 4G of activation row m0, rows x_stride apart).
template <int kBits, bool kMulti, int R, int MB, int r>
FWA_SVE_INLINE void exact_group(const PackedLayout& L, const RowGroup* gs, size_t off, int G,
                                svint32_t z, const float* x, int64_t x_stride, svfloat32_t& b0,
                                svfloat32_t& b1, svfloat32_t& b2, svfloat32_t& b3) {
  if constexpr (r < R) {
    const svuint32_t w = svreinterpret_u32_u8(
        group_codes<kBits, kMulti>(L, gs[r], group_lanes(gs[r]), off, G));
    const svfloat32_t d0 = code_minus_zero<0>(w, z), d1 = code_minus_zero<1>(w, z);
    const svfloat32_t d2 = code_minus_zero<2>(w, z), d3 = code_minus_zero<3>(w, z);
    fma4(pick<r * MB>(b0, b1, b2, b3), d0, d1, d2, d3, x);
    if constexpr (MB > 1) fma4(pick<r * MB + 1>(b0, b1, b2, b3), d0, d1, d2, d3, x + x_stride);
    if constexpr (MB > 2) {
      fma4(pick<r * MB + 2>(b0, b1, b2, b3), d0, d1, d2, d3, x + 2 * x_stride);
    }
    if constexpr (MB > 3) {
      fma4(pick<r * MB + 3>(b0, b1, b2, b3), d0, d1, d2, d3, x + 3 * x_stride);
    }
  }
}

// acc = fma(s, bacc, acc) for slot S.
template <int S>
FWA_SVE_INLINE void scale_slot(svfloat32_t s, svfloat32_t& a0, svfloat32_t& a1, svfloat32_t& a2,
                               svfloat32_t& a3, svfloat32_t b0, svfloat32_t b1, svfloat32_t b2,
                               svfloat32_t b3) {
  svfloat32_t& acc = pick<S>(a0, a1, a2, a3);
  acc = svmla_f32_x(svptrue_b32(), acc, s, pick<S>(b0, b1, b2, b3));
}

// End of block b for the MB slots of row group r (lanes outside the group are never stored).
template <bool kMulti, int R, int MB, int r>
FWA_SVE_INLINE void exact_block_end(const PackedLayout& L, const RowGroup* gs, int64_t b,
                                    svfloat32_t& a0, svfloat32_t& a1, svfloat32_t& a2,
                                    svfloat32_t& a3, svfloat32_t b0, svfloat32_t b1,
                                    svfloat32_t b2, svfloat32_t b3) {
  if constexpr (r < R) {
    const svfloat32_t s = load_scale<kMulti>(L, gs[r], group_lanes(gs[r]), b);
    scale_slot<r * MB>(s, a0, a1, a2, a3, b0, b1, b2, b3);
    if constexpr (MB > 1) scale_slot<r * MB + 1>(s, a0, a1, a2, a3, b0, b1, b2, b3);
    if constexpr (MB > 2) scale_slot<r * MB + 2>(s, a0, a1, a2, a3, b0, b1, b2, b3);
    if constexpr (MB > 3) scale_slot<r * MB + 3>(s, a0, a1, a2, a3, b0, b1, b2, b3);
  }
}

// Stores slot S (row group S / MB, activation row m0 + S % MB).
template <int MB, int S>
FWA_SVE_INLINE void store_slot(const MatmulArgs& a, const RowGroup* gs, int64_t m0,
                               svfloat32_t v) {
  const RowGroup& g = gs[S / MB];
  if (!g.store) return;
  const svbool_t pg = group_lanes(g);
  const svbool_t keep = svand_b_z(pg, pg, svwhilelt_b32_s64(g.n0, a.layout->N));
  svst1_f32(keep, a.y + (m0 + S % MB) * a.y_stride + g.n0, v);
}

template <int R, int MB>
FWA_SVE_INLINE void store_slots(const MatmulArgs& a, const RowGroup* gs, int64_t m0,
                                svfloat32_t a0, svfloat32_t a1, svfloat32_t a2, svfloat32_t a3) {
  static_assert(R * MB <= kSlots, "slots");
  store_slot<MB, 0>(a, gs, m0, a0);
  if constexpr (R * MB > 1) store_slot<MB, 1>(a, gs, m0, a1);
  if constexpr (R * MB > 2) store_slot<MB, 2>(a, gs, m0, a2);
  if constexpr (R * MB > 3) store_slot<MB, 3>(a, gs, m0, a3);
}

// GEMV software prefetch (M == 1): the lines of chunk byte `off` of every tile the R row groups
// cover, kPrefetchAhead bytes ahead, never past the matrix's last line. A tile is read front to
// back and the next tile follows it, so ahead in memory is ahead in time. Groups of one tile
// share its lines: only a group that starts a new tile issues them.
constexpr size_t kPrefetchAhead = 2048;

template <int kBits, int R>
FWA_SVE_INLINE void prefetch_chunk(const MatmulArgs& a, const RowGroup* gs, size_t off) {
  const PackedLayout& L = *a.layout;
  const uint8_t* last = a.w + (L.total_bytes - 64);
  for (int r = 0; r < R; ++r) {
    if (r > 0 && gs[r].tile == gs[r - 1].tile) continue;
    for (int64_t i = 0; i < gs[r].n_tiles; ++i) {
      // Integer addresses: the target may lie outside the matrix.
      const uintptr_t p = reinterpret_cast<uintptr_t>(gs[r].tile) + size_t(i) * L.tile_bytes +
                          off + kPrefetchAhead;
      if (p + 64 * (kBits - 1) > reinterpret_cast<uintptr_t>(last)) break;
      for (int l = 0; l < kBits; ++l)  // a chunk is kBits lines
        __builtin_prefetch(reinterpret_cast<const void*>(p + 64 * l), 0, 3);
    }
  }
}

// Row groups gs[0..R) x activation rows m0 .. m0 + MB - 1, exact mode.
template <int kBits, bool kMulti, int R, int MB>
void exact_pass(const MatmulArgs& a, const RowGroup* gs, int64_t m0) {
  const PackedLayout& L = *a.layout;
  const float* x = a.x + m0 * a.x_stride;
  svfloat32_t a0 = svdup_n_f32(0.0f), a1 = a0, a2 = a0, a3 = a0;
  for (int64_t b = 0; b < L.n_blocks; ++b) {
    const svint32_t zero = svdup_n_s32(0);
    svint32_t z0 = zero, z1 = zero, z2 = zero, z3 = zero;
    z0 = load_zero<kMulti>(L, gs[0], group_lanes(gs[0]), b);
    if constexpr (R > 1) z1 = load_zero<kMulti>(L, gs[1], group_lanes(gs[1]), b);
    if constexpr (R > 2) z2 = load_zero<kMulti>(L, gs[2], group_lanes(gs[2]), b);
    if constexpr (R > 3) z3 = load_zero<kMulti>(L, gs[3], group_lanes(gs[3]), b);
    svfloat32_t b0 = svdup_n_f32(0.0f), b1 = b0, b2 = b0, b3 = b0;
    const int64_t c_end = std::min((b + 1) * L.chunks_per_block, L.k_chunks);
    for (int64_t c = b * L.chunks_per_block; c < c_end; ++c) {
      const size_t off = size_t(c) * L.chunk_bytes;
      if constexpr (MB == 1) prefetch_chunk<kBits, R>(a, gs, off);
      for (int G = 0; G < kChunk / 4; ++G) {  // k ascending: group G holds k = 4G..4G+3
        const float* xg = x + c * kChunk + 4 * G;
        exact_group<kBits, kMulti, R, MB, 0>(L, gs, off, G, z0, xg, a.x_stride, b0, b1, b2, b3);
        exact_group<kBits, kMulti, R, MB, 1>(L, gs, off, G, z1, xg, a.x_stride, b0, b1, b2, b3);
        exact_group<kBits, kMulti, R, MB, 2>(L, gs, off, G, z2, xg, a.x_stride, b0, b1, b2, b3);
        exact_group<kBits, kMulti, R, MB, 3>(L, gs, off, G, z3, xg, a.x_stride, b0, b1, b2, b3);
      }
    }
    exact_block_end<kMulti, R, MB, 0>(L, gs, b, a0, a1, a2, a3, b0, b1, b2, b3);
    exact_block_end<kMulti, R, MB, 1>(L, gs, b, a0, a1, a2, a3, b0, b1, b2, b3);
    exact_block_end<kMulti, R, MB, 2>(L, gs, b, a0, a1, a2, a3, b0, b1, b2, b3);
    exact_block_end<kMulti, R, MB, 3>(L, gs, b, a0, a1, a2, a3, b0, b1, b2, b3);
  }
  store_slots<R, MB>(a, gs, m0, a0, a1, a2, a3);
}

// ---------------------------------------------------------------------------------------------
// fast mode

// Group G = 4H + I for row group r: isum += dot(u, xq) per activation row (q_m = the chunk's
// bytes 16H .. 16H + 15 of activation row m, replicated per quadword; lane I picks k = 4G..).
template <int kBits, bool kMulti, int R, int MB, int r, int I>
FWA_SVE_INLINE void fast_group(const PackedLayout& L, const RowGroup* gs, size_t off, int H,
                               svint8_t q0, svint8_t q1, svint8_t q2, svint8_t q3,
                               svint32_t& i0, svint32_t& i1, svint32_t& i2, svint32_t& i3) {
  if constexpr (r < R) {
    svuint8_t u = group_codes<kBits, kMulti>(L, gs[r], group_lanes(gs[r]), off, 4 * H + I);
    if constexpr (kBits == 8) u = sveor_n_u8_x(svptrue_b8(), u, 0x80);  // u - 128 as int8
    const svint8_t c = svreinterpret_s8_u8(u);
    svint32_t& s0 = pick<r * MB>(i0, i1, i2, i3);
    s0 = svdot_lane_s32(s0, c, q0, I);
    if constexpr (MB > 1) {
      svint32_t& s1 = pick<r * MB + 1>(i0, i1, i2, i3);
      s1 = svdot_lane_s32(s1, c, q1, I);
    }
    if constexpr (MB > 2) {
      svint32_t& s2 = pick<r * MB + 2>(i0, i1, i2, i3);
      s2 = svdot_lane_s32(s2, c, q2, I);
    }
    if constexpr (MB > 3) {
      svint32_t& s3 = pick<r * MB + 3>(i0, i1, i2, i3);
      s3 = svdot_lane_s32(s3, c, q3, I);
    }
  }
}

template <int kBits, bool kMulti, int R, int MB, int I>
FWA_SVE_INLINE void fast_group_all(const PackedLayout& L, const RowGroup* gs, size_t off, int H,
                                   svint8_t q0, svint8_t q1, svint8_t q2, svint8_t q3,
                                   svint32_t& i0, svint32_t& i1, svint32_t& i2, svint32_t& i3) {
  fast_group<kBits, kMulti, R, MB, 0, I>(L, gs, off, H, q0, q1, q2, q3, i0, i1, i2, i3);
  fast_group<kBits, kMulti, R, MB, 1, I>(L, gs, off, H, q0, q1, q2, q3, i0, i1, i2, i3);
  fast_group<kBits, kMulti, R, MB, 2, I>(L, gs, off, H, q0, q1, q2, q3, i0, i1, i2, i3);
  fast_group<kBits, kMulti, R, MB, 3, I>(L, gs, off, H, q0, q1, q2, q3, i0, i1, i2, i3);
}

// Slot S (row group S / MB, activation row m0 + S % MB) at the end of chunk c:
// acc = fma(float(isum - z * xsum), s * xd, acc).
template <int R, int MB, int S>
FWA_SVE_INLINE void fast_finish(const MatmulArgs& a, int64_t m0, int64_t c, svint32_t isum,
                                svint32_t z0, svint32_t z1, svint32_t z2, svint32_t z3,
                                svfloat32_t s0, svfloat32_t s1, svfloat32_t s2, svfloat32_t s3,
                                svfloat32_t& acc) {
  if constexpr (S < R * MB) {
    const svbool_t all = svptrue_b32();
    const int64_t m = m0 + S % MB;
    isum = svmls_n_s32_x(all, isum, pick<S / MB>(z0, z1, z2, z3), a.xsum[m * a.xd_stride + c]);
    const float xd = a.xd[m * a.xd_stride + c];
    const svfloat32_t t = svmul_n_f32_x(all, pick<S / MB>(s0, s1, s2, s3), xd);  // rounded
    acc = svmla_f32_x(all, acc, svcvt_f32_s32_x(all, isum), t);
  }
}

// Zero point and scale of block b for row group r; 8-bit codes entered the dot product as
// u - 128, so their zero point becomes z - 128.
template <int kBits, bool kMulti, int R, int r>
FWA_SVE_INLINE void fast_block_start(const PackedLayout& L, const RowGroup* gs, int64_t b,
                                     svint32_t& z, svfloat32_t& s) {
  if constexpr (r < R) {
    const svbool_t pg = group_lanes(gs[r]);
    z = load_zero<kMulti>(L, gs[r], pg, b);
    if constexpr (kBits == 8) z = svsub_n_s32_x(pg, z, 128);
    s = load_scale<kMulti>(L, gs[r], pg, b);
  }
}

// Row groups gs[0..R) x activation rows m0 .. m0 + MB - 1, fast mode.
template <int kBits, bool kMulti, int R, int MB>
void fast_pass(const MatmulArgs& a, const RowGroup* gs, int64_t m0) {
  const PackedLayout& L = *a.layout;
  const svbool_t all8 = svptrue_b8();
  const int8_t* xq = a.xq + m0 * a.xq_stride;
  svfloat32_t a0 = svdup_n_f32(0.0f), a1 = a0, a2 = a0, a3 = a0;
  for (int64_t b = 0; b < L.n_blocks; ++b) {
    const svint32_t zi = svdup_n_s32(0);
    const svfloat32_t zf = svdup_n_f32(0.0f);
    svint32_t z0 = zi, z1 = zi, z2 = zi, z3 = zi;
    svfloat32_t s0 = zf, s1 = zf, s2 = zf, s3 = zf;
    fast_block_start<kBits, kMulti, R, 0>(L, gs, b, z0, s0);
    fast_block_start<kBits, kMulti, R, 1>(L, gs, b, z1, s1);
    fast_block_start<kBits, kMulti, R, 2>(L, gs, b, z2, s2);
    fast_block_start<kBits, kMulti, R, 3>(L, gs, b, z3, s3);
    const int64_t c_end = std::min((b + 1) * L.chunks_per_block, L.k_chunks);
    for (int64_t c = b * L.chunks_per_block; c < c_end; ++c) {
      const size_t off = size_t(c) * L.chunk_bytes;
      if constexpr (MB == 1) prefetch_chunk<kBits, R>(a, gs, off);
      svint32_t i0 = svdup_n_s32(0), i1 = i0, i2 = i0, i3 = i0;
      for (int H = 0; H < 2; ++H) {  // groups 4H .. 4H + 3 use bytes 16H .. 16H + 15
        const int8_t* xh = xq + c * kChunk + 16 * H;
        const svint8_t q0 = svld1rq_s8(all8, xh);
        const svint8_t q1 = MB > 1 ? svld1rq_s8(all8, xh + a.xq_stride) : q0;
        const svint8_t q2 = MB > 2 ? svld1rq_s8(all8, xh + 2 * a.xq_stride) : q0;
        const svint8_t q3 = MB > 3 ? svld1rq_s8(all8, xh + 3 * a.xq_stride) : q0;
        fast_group_all<kBits, kMulti, R, MB, 0>(L, gs, off, H, q0, q1, q2, q3, i0, i1, i2, i3);
        fast_group_all<kBits, kMulti, R, MB, 1>(L, gs, off, H, q0, q1, q2, q3, i0, i1, i2, i3);
        fast_group_all<kBits, kMulti, R, MB, 2>(L, gs, off, H, q0, q1, q2, q3, i0, i1, i2, i3);
        fast_group_all<kBits, kMulti, R, MB, 3>(L, gs, off, H, q0, q1, q2, q3, i0, i1, i2, i3);
      }
      fast_finish<R, MB, 0>(a, m0, c, i0, z0, z1, z2, z3, s0, s1, s2, s3, a0);
      fast_finish<R, MB, 1>(a, m0, c, i1, z0, z1, z2, z3, s0, s1, s2, s3, a1);
      fast_finish<R, MB, 2>(a, m0, c, i2, z0, z1, z2, z3, s0, s1, s2, s3, a2);
      fast_finish<R, MB, 3>(a, m0, c, i3, z0, z1, z2, z3, s0, s1, s2, s3, a3);
    }
  }
  store_slots<R, MB>(a, gs, m0, a0, a1, a2, a3);
}

// ---------------------------------------------------------------------------------------------
// drivers

template <bool kFast, int kBits, bool kMulti, int R, int MB>
void pass(const MatmulArgs& a, const RowGroup* gs, int64_t m0) {
  if constexpr (kFast) {
    fast_pass<kBits, kMulti, R, MB>(a, gs, m0);
  } else {
    exact_pass<kBits, kMulti, R, MB>(a, gs, m0);
  }
}

// The row groups of [tile_begin, tile_end) in output-row order (see the header comment).
struct RowGroups {
  const MatmulArgs* a;
  int64_t lanes;            // svcntw()
  int64_t tiles_per_group;  // >= 2: several tiles per vector; else 1
  int64_t per_tile;         // groups per tile (1 when tiles_per_group >= 2)
  int64_t count;

  RowGroup at(int64_t i) const {
    const PackedLayout& L = *a->layout;
    RowGroup g{};
    if (tiles_per_group >= 2) {
      const int64_t t = a->tile_begin + i * tiles_per_group;
      g.tile = a->w + size_t(t) * L.tile_bytes;
      g.row0 = 0;
      g.n_tiles = std::min(tiles_per_group, a->tile_end - t);
      g.n0 = t * kTileRows;
    } else {
      const int64_t t = a->tile_begin + i / per_tile;
      g.tile = a->w + size_t(t) * L.tile_bytes;
      g.row0 = (i % per_tile) * lanes;
      g.n_tiles = 1;
      g.n0 = t * kTileRows + g.row0;
    }
    g.store = true;
    return g;
  }
};

RowGroups row_groups(const MatmulArgs& a) {
  const PackedLayout& L = *a.layout;
  RowGroups rg{&a, int64_t(svcntw()), 1, 1, 0};
  const int64_t tiles = a.tile_end - a.tile_begin;
  if (rg.lanes >= 2 * kTileRows) {
    rg.tiles_per_group = rg.lanes / kTileRows;
    rg.count = (tiles + rg.tiles_per_group - 1) / rg.tiles_per_group;
  } else {
    rg.per_tile = (kTileRows + rg.lanes - 1) / rg.lanes;
    rg.count = tiles * rg.per_tile;
    // Groups of the last tile that lie entirely at rows >= N have nothing to compute.
    const int64_t rows_last = std::min<int64_t>(kTileRows, L.N - (a.tile_end - 1) * kTileRows);
    rg.count -= rg.per_tile - (rows_last + rg.lanes - 1) / rg.lanes;
  }
  return rg;
}

template <bool kFast, int kBits, bool kMulti>
void run(const MatmulArgs& a, const RowGroups& rg) {
  // Four row groups at a time (their weights stay in cache across the activation rows); a
  // missing group repeats the last one and is not stored.
  for (int64_t i0 = 0; i0 < rg.count; i0 += kSlots) {
    RowGroup gs[kSlots];
    for (int r = 0; r < kSlots; ++r) {
      gs[r] = rg.at(std::min(i0 + r, rg.count - 1));
      gs[r].store = i0 + r < rg.count;
    }
    const int n_real = int(std::min<int64_t>(kSlots, rg.count - i0));
    for (int64_t m0 = 0; m0 < a.M;) {
      const int64_t mb = std::min<int64_t>(kSlots, a.M - m0);
      if (mb == 4) {
        for (int r = 0; r < n_real; ++r) pass<kFast, kBits, kMulti, 1, 4>(a, gs + r, m0);
      } else if (mb == 3) {
        for (int r = 0; r < n_real; ++r) pass<kFast, kBits, kMulti, 1, 3>(a, gs + r, m0);
      } else if (mb == 2) {
        for (int r = 0; r < n_real; r += 2) pass<kFast, kBits, kMulti, 2, 2>(a, gs + r, m0);
      } else {
        pass<kFast, kBits, kMulti, 4, 1>(a, gs, m0);
      }
      m0 += mb;
    }
  }
}

template <bool kFast>
void dispatch(const MatmulArgs& a) {
  if (a.tile_end <= a.tile_begin) return;
  const RowGroups rg = row_groups(a);
  const bool multi = rg.tiles_per_group >= 2;
  switch (a.layout->fmt.bits) {
    case 2: multi ? run<kFast, 2, true>(a, rg) : run<kFast, 2, false>(a, rg); break;
    case 3: multi ? run<kFast, 3, true>(a, rg) : run<kFast, 3, false>(a, rg); break;
    case 4: multi ? run<kFast, 4, true>(a, rg) : run<kFast, 4, false>(a, rg); break;
    case 8: multi ? run<kFast, 8, true>(a, rg) : run<kFast, 8, false>(a, rg); break;
    default: break;  // unsupported formats never reach a kernel
  }
}

}  // namespace

void matmul_exact_sve(const MatmulArgs& args) { dispatch<false>(args); }
void matmul_fast_sve(const MatmulArgs& args) { dispatch<true>(args); }

}  // namespace fwa
