// SPDX-License-Identifier: Apache-2.0
// ARMv8.2 dotprod kernel: matmul_fast_dotprod (GEMV and, without i8mm, GEMM). Exact mode falls
// through to the NEON variant in the registry.
//
// Data flow. A 16-byte load of a bit plane at offset 16q holds rows 4q..4q+3 (one 32-bit lane
// per row) x the 4 k of one group, which is exactly an SDOT operand: vdotq_laneq_s32(isum,
// codes_g, xq, g % 4) adds sum_j u[row][4g+j] * xq[4g+j] to each row lane. Per tile quad and
// chunk the planes are unpacked with one or two AND/USHR/BSL per group register:
//   4-bit : P & 0x0F, P >> 4;    8-bit : P ^ 0x80 (u - 128 as s8, corrected with z - 128)
//   2-bit : GEMV: groups 0,1: P & 3, groups 6,7: P >> 6 (class 0); groups 2,3: P & 0x0C = 4u
//           (class 1); groups 4,5: P & 0x30 = 16u (class 2). GEMM: groups 2..5 as 4u in class
//           1, groups 4,5 as (P >> 2) & 0x0C (fewer accumulators for its 4 activation rows)
//   3-bit : R = BSL(0x33, low plane (>> 2), high plane shifted) holds two whole codes, group a
//           in bits 0..2 and group a+4 in bits 4..6: R & 0x07 (class 0), R & 0x70 = 16u
//           (class 1)
// Each class accumulates in its own int32 register; isum = class0 + (class1 >> 2 or 4), or for
// the 2-bit GEMV class0 + ((class1 + (class2 >> 2)) >> 2) (exact: class k holds a multiple of
// 4^k, or of 16 for 3-bit class 1). Then once per chunk and 4 rows:
//   isum -= z * xsum;  acc = fma(float(isum), s * xd, acc)        (the canonical fast mode)
// Blocking: GEMV (M == 1) runs a whole tile per chunk with the chunk's 32 activation bytes in
// two registers, its quads interleaved group by group in passes of QG quads (4-bit, 8-bit: all
// 4; 2-bit: 2, 3 classes each; 3-bit: 1, its two classes alternating, its unpack needs the
// registers), so that the in-order Cortex-A55 alternates independent SDOT chains (4, 6, 2);
// GEMM runs 4 activation rows x 1 quad per pass so each unpacked chunk serves 4 rows, with
// 3/2/1-row remainders. Tiles outermost, so a tile's codes stay in cache across the activation
// blocks.
#if !defined(__aarch64__) || !defined(__ARM_FEATURE_DOTPROD)
#error "matmul_dotprod.cpp needs the dotprod extension (-march=armv8.2-a+dotprod)"
#endif

#include <arm_neon.h>

#include <cstdint>
#include <cstring>
#include <utility>

#include "kernels/kernel.h"
#include "kernels/variants.h"

namespace fwa {
namespace {

#define FWA_DP_INLINE inline __attribute__((always_inline))

template <typename F, int... I>
FWA_DP_INLINE void unroll_seq(F& f, std::integer_sequence<int, I...>) {
  (f(std::integral_constant<int, I>()), ...);
}
template <int N, typename F>
FWA_DP_INLINE void unroll(F&& f) {
  unroll_seq(f, std::make_integer_sequence<int, N>());
}

FWA_DP_INLINE int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

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
FWA_DP_INLINE float32x4_t load_scales(const Geom& G, const uint8_t* tile, int64_t b, int q) {
  const size_t idx = size_t(b) * kTileRows + size_t(4 * q);
  if (G.f16) return vcvt_f32_f16(vreinterpret_f16_u8(vld1_u8(tile + G.scales_off + 2 * idx)));
  return vreinterpretq_f32_u8(vld1q_u8(tile + G.scales_off + 4 * idx));
}

// The zero points of rows 4q..4q+3 of block b as the isum correction factor: z, or z - 128 for
// 8-bit codes (read as u - 128). Symmetric formats: z = 2^(bits-1).
template <int BITS>
FWA_DP_INLINE int32x4_t load_zero_factor(const Geom& G, const uint8_t* tile, int64_t b, int q) {
  constexpr int bias = BITS == 8 ? 128 : 0;
  if (!G.has_zero) return vdupq_n_s32((1 << (BITS - 1)) - bias);
  uint32_t v;
  std::memcpy(&v, tile + G.zeros_off + size_t(b) * kTileRows + size_t(4 * q), 4);
  const int32x4_t z = vreinterpretq_s32_u32(vmovl_u16(vget_low_u16(vmovl_u8(vcreate_u8(v)))));
  return bias ? vsubq_s32(z, vdupq_n_s32(bias)) : z;
}

// Writes rows n0..n0+3 of one output row, only those below N.
FWA_DP_INLINE void store_rows(float* y, int64_t n0, int64_t N, float32x4_t v) {
  if (n0 + 4 <= N) {
    vst1q_f32(y + n0, v);
    return;
  }
  if (n0 < N) y[n0] = vgetq_lane_f32(v, 0);
  if (n0 + 1 < N) y[n0 + 1] = vgetq_lane_f32(v, 1);
  if (n0 + 2 < N) y[n0 + 2] = vgetq_lane_f32(v, 2);
}

// Accumulator class of group g: its SDOT operand holds u << (class shift). 2-bit has two
// schemes: AND3 (the GEMV's) puts groups 2,3 at 4u and 4,5 at 16u in classes 1 and 2 so that
// only groups 6,7 need a USHR; the GEMM's keeps two classes (groups 2..5 at 4u, one more
// USHR+AND per plane) because its 4 activation rows multiply the accumulator count.
// 3-bit: groups 4..7 at 16u (class 1).
constexpr int group_class(int bits, bool and3, int g) {
  return bits == 2 ? (and3 ? (g == 2 || g == 3 ? 1 : g == 4 || g == 5 ? 2 : 0)
                           : (g >= 2 && g <= 5 ? 1 : 0))
                   : bits == 3 ? (g >= 4 ? 1 : 0) : 0;
}
constexpr int n_classes(int bits, bool and3) {
  return bits == 2 ? (and3 ? 3 : 2) : bits == 3 ? 2 : 1;
}

// isum (plus whatever class 0 started from) from the class accumulators, exactly: a class
// holding u << s sums to a multiple of 2^s, so the arithmetic shifts drop only zero bits
// (AND3: c1 + (c2 >> 2) is a multiple of 4, then >> 2 into c0).
template <int BITS, bool AND3>
FWA_DP_INLINE int32x4_t fold_classes(const int32x4_t* is) {
  if constexpr (BITS == 2 && AND3) return vsraq_n_s32(is[0], vsraq_n_s32(is[1], is[2], 2), 2);
  else if constexpr (BITS == 2) return vsraq_n_s32(is[0], is[1], 2);
  else if constexpr (BITS == 3) return vsraq_n_s32(is[0], is[1], 4);
  else return is[0];
}

// 3-bit: low 2 bits as 2-bit (planes P0, P1), bit 2 of group g at bit g of plane H.
FWA_DP_INLINE void unpack3(uint8x16_t P0, uint8x16_t P1, uint8x16_t H, int8x16_t u[8]) {
  const uint8x16_t m33 = vdupq_n_u8(0x33), m7 = vdupq_n_u8(0x07), m70 = vdupq_n_u8(0x70);
  // Bits 0,1 / 4,5 from the low plane (groups a / a+4), bits 2 / 6 from H (bits 3, 7: junk).
  // H << 1 and H << 2 as additions: the A76/N1 issue vector shifts on one pipe, adds on two.
  const uint8x16_t H1 = vaddq_u8(H, H), H2 = vaddq_u8(H1, H1);
  const uint8x16_t R04 = vbslq_u8(m33, P0, H2);
  const uint8x16_t R15 = vbslq_u8(m33, P1, H1);
  const uint8x16_t R26 = vbslq_u8(m33, vshrq_n_u8(P0, 2), H);
  const uint8x16_t R37 = vbslq_u8(m33, vshrq_n_u8(P1, 2), vshrq_n_u8(H, 1));
  u[0] = vreinterpretq_s8_u8(vandq_u8(R04, m7));
  u[4] = vreinterpretq_s8_u8(vandq_u8(R04, m70));  // 16u
  u[1] = vreinterpretq_s8_u8(vandq_u8(R15, m7));
  u[5] = vreinterpretq_s8_u8(vandq_u8(R15, m70));
  u[2] = vreinterpretq_s8_u8(vandq_u8(R26, m7));
  u[6] = vreinterpretq_s8_u8(vandq_u8(R26, m70));
  u[3] = vreinterpretq_s8_u8(vandq_u8(R37, m7));
  u[7] = vreinterpretq_s8_u8(vandq_u8(R37, m70));
}

// The 8 SDOT operands of quad q of a chunk for the GEMM (two 2-bit classes): group g holds
// u << (class shift of g), as s8. The GEMV unpacks per part (split_part below).
template <int BITS>
FWA_DP_INLINE void unpack(const uint8_t* ch, int q, int8x16_t u[8]) {
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
    // P & 0x0C = 4u is a valid s8 (< 128); P & 0xC0 is not, so groups 6,7 take a USHR.
    const uint8x16_t m3 = vdupq_n_u8(0x03), mc = vdupq_n_u8(0x0C);
    for (int pl = 0; pl < 2; ++pl) {  // plane pl: groups pl, pl+2, pl+4, pl+6 at shifts 0,2,4,6
      const uint8x16_t P = vld1q_u8(p + 64 * pl);
      u[pl] = vreinterpretq_s8_u8(vandq_u8(P, m3));
      u[pl + 2] = vreinterpretq_s8_u8(vandq_u8(P, mc));  // 4u
      u[pl + 4] = vreinterpretq_s8_u8(vandq_u8(vshrq_n_u8(P, 2), mc));  // 4u
      u[pl + 6] = vreinterpretq_s8_u8(vshrq_n_u8(P, 6));
    }
  } else {  // 3-bit
    unpack3(vld1q_u8(p), vld1q_u8(p + 64), vld1q_u8(p + 128), u);
  }
}

// GEMV unpack in parts: a part is the planes of a quad read together and the groups they
// yield, so that the next part's loads can issue while this part's SDOTs run.
constexpr int n_parts(int bits) { return bits == 8 ? 8 : bits == 4 ? 4 : bits == 2 ? 2 : 1; }
constexpr int part_of(int bits, int g) {
  return bits == 8 ? g : bits == 4 ? g % 4 : bits == 2 ? g % 2 : 0;
}
// The order of a quad's groups in the GEMV: 3-bit alternates its two classes (SDOT chains).
constexpr int sdot_order(int bits, int i) { return bits == 3 ? (i >> 1) + 4 * (i & 1) : i; }
template <int BITS>
struct Planes {
  uint8x16_t v[BITS == 3 ? 3 : 1];
};

template <int BITS, int PART>
FWA_DP_INLINE Planes<BITS> load_part(const uint8_t* ch, int q) {
  const uint8_t* p = ch + 16 * q;
  Planes<BITS> P;
  if constexpr (BITS == 3) {
    P.v[0] = vld1q_u8(p);
    P.v[1] = vld1q_u8(p + 64);
    P.v[2] = vld1q_u8(p + 128);
  } else {
    P.v[0] = vld1q_u8(p + 64 * PART);
  }
  return P;
}

// The SDOT operands part PART of a quad yields in the GEMV: group g holds u << (class shift of g,
// AND3 scheme), as s8. 2-bit: P & 0x0C = 4u and P & 0x30 = 16u are valid s8 (< 128); P & 0xC0
// is not, so groups 6,7 take a USHR.
template <int BITS, int PART>
FWA_DP_INLINE void split_part(const Planes<BITS>& P, int8x16_t u[8]) {
  const uint8x16_t v = P.v[0];
  if constexpr (BITS == 8) {
    u[PART] = vreinterpretq_s8_u8(veorq_u8(v, vdupq_n_u8(0x80)));
  } else if constexpr (BITS == 4) {
    u[PART] = vreinterpretq_s8_u8(vandq_u8(v, vdupq_n_u8(0x0F)));
    u[PART + 4] = vreinterpretq_s8_u8(vshrq_n_u8(v, 4));
  } else if constexpr (BITS == 2) {
    u[PART] = vreinterpretq_s8_u8(vandq_u8(v, vdupq_n_u8(0x03)));
    u[PART + 2] = vreinterpretq_s8_u8(vandq_u8(v, vdupq_n_u8(0x0C)));  // 4u
    u[PART + 4] = vreinterpretq_s8_u8(vandq_u8(v, vdupq_n_u8(0x30)));  // 16u
    u[PART + 6] = vreinterpretq_s8_u8(vshrq_n_u8(v, 6));
  } else {
    unpack3(P.v[0], P.v[1], P.v[2], u);
  }
}

// MB activation rows starting at m0 x QB quads starting at q0 of tile t, all chunks.
template <int BITS, int MB, int QB>
__attribute__((noinline)) void fast_pass(const MatmulArgs& a, const Geom& G, int64_t t,
                                         int64_t m0, int q0) {
  constexpr int NC = n_classes(BITS, false);
  const uint8_t* tile = G.w + size_t(t) * G.tile_bytes;
  float32x4_t acc[MB][QB];
  for (int m = 0; m < MB; ++m)
    for (int i = 0; i < QB; ++i) acc[m][i] = vdupq_n_f32(0.0f);
  for (int64_t b = 0; b < G.n_blocks; ++b) {
    float32x4_t s[QB];
    int32x4_t zf[QB];
#pragma GCC unroll 4
    for (int i = 0; i < QB; ++i) {
      s[i] = load_scales(G, tile, b, q0 + i);
      zf[i] = load_zero_factor<BITS>(G, tile, b, q0 + i);
    }
    const int64_t c_end = min64((b + 1) * G.cpb, G.k_chunks);
    for (int64_t c = b * G.cpb; c < c_end; ++c) {
      const uint8_t* ch = tile + size_t(c) * G.chunk_bytes;
      int8x16_t xlo[MB], xhi[MB];  // activation bytes k 0..15 and 16..31 of the chunk
      float xd[MB];
      int32_t xs[MB];
#pragma GCC unroll 4
      for (int m = 0; m < MB; ++m) {
        const int8_t* xr = a.xq + (m0 + m) * a.xq_stride + c * kChunk;
        xlo[m] = vld1q_s8(xr);
        xhi[m] = vld1q_s8(xr + 16);
        xd[m] = a.xd[(m0 + m) * a.xd_stride + c];
        xs[m] = a.xsum[(m0 + m) * a.xd_stride + c];
      }
#pragma GCC unroll 4
      for (int i = 0; i < QB; ++i) {
        int8x16_t u[8];
        unpack<BITS>(ch, q0 + i, u);
        int32x4_t is[MB][NC];
        for (int m = 0; m < MB; ++m)
          for (int k = 0; k < NC; ++k) is[m][k] = vdupq_n_s32(0);
        unroll<8>([&](auto gi) __attribute__((always_inline)) {
          constexpr int g = decltype(gi)::value;
          constexpr int k = group_class(BITS, false, g);
#pragma GCC unroll 4
          for (int m = 0; m < MB; ++m)
            is[m][k] = vdotq_laneq_s32(is[m][k], u[g], g < 4 ? xlo[m] : xhi[m], g & 3);
        });
#pragma GCC unroll 4
        for (int m = 0; m < MB; ++m) {
          int32x4_t isum = fold_classes<BITS, false>(is[m]);
          isum = vmlsq_n_s32(isum, zf[i], xs[m]);
          acc[m][i] = vfmaq_f32(acc[m][i], vcvtq_f32_s32(isum), vmulq_n_f32(s[i], xd[m]));
        }
      }
    }
  }
  for (int m = 0; m < MB; ++m)
    for (int i = 0; i < QB; ++i)
      store_rows(a.y + (m0 + m) * a.y_stride, t * kTileRows + 4 * (q0 + i), G.N, acc[m][i]);
}

// GEMV (M == 1): one tile per pass, the 4 quads side by side, specialised on the scale type and
// the zero points so the block loop has no branch. Two exact shortcuts of the canonical fast
// mode (the same bits as SCVTF, MLS and a zero start):
//  - float(isum) without SCVTF (2 uops on the A76/N1): kMagicBits is the float M = 1.5 * 2^23,
//    whose bit pattern plus an integer i with |i| < 2^22 is the float M + i. The class-0
//    accumulator starts at kMagicBits (with zero points: kMagicBits - z * xsum), so after the
//    SDOTs it holds the float M + sum(u * q); one FSUB of M + zsym * xsum (with zero points: of
//    M) gives float(isum) exactly: both operands are integers in [2^23, 2^24), so the difference
//    is exact (|isum|, |sum(u * q)|, |z * xsum| < 2^21 for every format).
//  - software prefetch of the weight stream kPrefetchAhead bytes ahead (one tile is read from
//    start to end, codes then scales, and the next tile follows it), never past the last line
//    of the matrix; the scale lines one prefetch distance ahead once per block.
constexpr int32_t kMagicBits = 0x4B400000;
constexpr float kMagic = 12582912.0f;  // 1.5 * 2^23
constexpr size_t kPrefetchAhead = 2048;

// Fetches the LINES lines kPrefetchAhead bytes after p unless they run past `last` (the
// matrix's last line): one compare per chunk; the reads of the matrix's last 2 KiB issue none
// (nothing follows them). Integer addresses: the target may lie outside the matrix.
template <int LINES>
FWA_DP_INLINE void prefetch_lines(const uint8_t* p, const uint8_t* last) {
  const uintptr_t q = reinterpret_cast<uintptr_t>(p) + kPrefetchAhead;
  if (q + 64 * (LINES - 1) > reinterpret_cast<uintptr_t>(last)) return;
  for (int l = 0; l < LINES; ++l)
    __builtin_prefetch(reinterpret_cast<const void*>(q + 64 * l), 0, 3);
}

// Accumulator starts: loaded per quad, through an opaque pointer so that every quad gets its
// own load. A load gives a fresh register on a load pipe; the compiler's alternative, one vector
// copied with MOV, costs a vector-pipe uop per quad on the A76/N1, and DUP from a GPR stalls
// the in-order A55.
alignas(16) constexpr int32_t kStarts[8] = {kMagicBits, kMagicBits, kMagicBits, kMagicBits,
                                            0, 0, 0, 0};
FWA_DP_INLINE int32x4_t load_start(const int32_t* p) {
  asm volatile("" : "+r"(p));
  return vld1q_s32(p);
}

// Clang interleaves the passes of a chunk and, with their planes live, spills the accumulators:
// this fence keeps the 2-bit pairs and the 3-bit quads two at a time in program order. GCC keeps
// them apart by itself, and the fence's register constraints cost it vector copies.
#if defined(__clang__)
#define FWA_DP_QUAD_PAIR_FENCE(a0, a1) asm volatile("" : "+w"(a0), "+w"(a1)::"memory")
#else
#define FWA_DP_QUAD_PAIR_FENCE(a0, a1) ((void)0)
#endif

// Makes v ready before this point (GCC moves nothing across a volatile asm, clang no load).
template <typename T>
FWA_DP_INLINE void pin(const T& v) {
  asm volatile("" ::"w"(v));
}

// Keeps the SDOTs of one group of the QG quads of a pass between the previous group's and the
// next one's (GCC schedules nothing across a volatile asm, clang nothing that feeds it): GCC's
// scheduler otherwise put each quad's 8 SDOTs back to back again, one dependent chain, which
// the in-order A55 runs at one SDOT per 4 cycles.
#define FWA_DP_ORDER_FENCE(QG, is, k)                                                    \
  do {                                                                                  \
    if constexpr (QG == 4)                                                              \
      asm volatile("" : "+w"(is[0][k]), "+w"(is[1][k]), "+w"(is[2][k]), "+w"(is[3][k])); \
    else if constexpr (QG == 2)                                                         \
      asm volatile("" : "+w"(is[0][k]), "+w"(is[1][k]));                                \
  } while (0)

// 3-bit, one quad per pass: its two classes' SDOTs pairwise in program order, for GCC (which
// otherwise ran each class's 4 SDOTs back to back); clang alternates them by itself, and the
// fence cost it 1 % on the N1 and V1.
#if defined(__clang__)
#define FWA_DP_CLASS_FENCE(is) ((void)0)
#else
#define FWA_DP_CLASS_FENCE(is) asm volatile("" : "+w"(is[0]), "+w"(is[1]))
#endif

// One tile, all chunks. CPB1 (block 32): the block loop is the chunk loop, so a block's scales
// are converted and used in the same iteration (a loop-carried scale vector was spilled to the
// stack per block).
template <int BITS, bool F16, bool HAS_ZERO, bool CPB1>
__attribute__((noinline)) void gemv_tile(const MatmulArgs& a, const Geom& G, int64_t t,
                                         const uint8_t* last_line) {
  constexpr int NC = n_classes(BITS, true);
  constexpr int QG = BITS == 2 ? 2 : BITS == 3 ? 1 : 4;
  const uint8_t* tile = G.w + size_t(t) * G.tile_bytes;
  const uint8_t* scales = tile + G.scales_off;
  const size_t sbytes = F16 ? 2 * kTileRows : 4 * kTileRows;  // per block
  const int64_t cpb = CPB1 ? 1 : G.cpb, k_chunks = G.k_chunks;
  const size_t chunk_bytes = G.chunk_bytes;
  const int8_t* const xq = a.xq;
  const float* const xdp = a.xd;
  const int32_t* const xsp = a.xsum;
  float32x4_t acc[4];
  for (int i = 0; i < 4; ++i) acc[i] = vdupq_n_f32(0.0f);
  const float32x4_t magic = vdupq_n_f32(kMagic);  // used with zero points
  constexpr int bias = BITS == 8 ? 128 : 0;
  constexpr int32_t zsym = (1 << (BITS - 1)) - bias;
  for (int64_t b = 0; b < G.n_blocks; ++b) {
    const uint8_t* sb = scales + size_t(b) * sbytes;
    prefetch_lines<1>(sb, last_line);
    float32x4_t s[4];
    if constexpr (F16) {
      const float16x8_t h0 = vreinterpretq_f16_u8(vld1q_u8(sb));
      const float16x8_t h1 = vreinterpretq_f16_u8(vld1q_u8(sb + 16));
      s[0] = vcvt_f32_f16(vget_low_f16(h0));
      s[1] = vcvt_high_f32_f16(h0);
      s[2] = vcvt_f32_f16(vget_low_f16(h1));
      s[3] = vcvt_high_f32_f16(h1);
    } else {
      for (int i = 0; i < 4; ++i) s[i] = vreinterpretq_f32_u8(vld1q_u8(sb + 16 * i));
    }
    int32x4_t zf[4];
    if constexpr (HAS_ZERO) {
      const uint8x16_t z8 = vld1q_u8(tile + G.zeros_off + size_t(b) * kTileRows);
      const uint16x8_t lo = vmovl_u8(vget_low_u8(z8)), hi = vmovl_high_u8(z8);
      zf[0] = vreinterpretq_s32_u32(vmovl_u16(vget_low_u16(lo)));
      zf[1] = vreinterpretq_s32_u32(vmovl_high_u16(lo));
      zf[2] = vreinterpretq_s32_u32(vmovl_u16(vget_low_u16(hi)));
      zf[3] = vreinterpretq_s32_u32(vmovl_high_u16(hi));
      if constexpr (bias != 0)
        for (int i = 0; i < 4; ++i) zf[i] = vsubq_s32(zf[i], vdupq_n_s32(bias));
    }
    const int64_t c_end = CPB1 ? b + 1 : min64(b * cpb + cpb, k_chunks);
    for (int64_t c = b * cpb; c < c_end; ++c) {
      const uint8_t* ch = tile + size_t(c) * chunk_bytes;
      prefetch_lines<BITS>(ch, last_line);  // a chunk is BITS lines
      const int8_t* xr = xq + c * kChunk;
      const int8x16_t xlo = vld1q_s8(xr), xhi = vld1q_s8(xr + 16);
      const float xd = xdp[c];
      const int32_t xs = xsp[c];
      // The float M + zsym * xsum, or M with zero points (subtracted inside the start). The
      // empty asm keeps the sum in a general register for one DUP: GCC otherwise formed it
      // with vector FMOV, SHL and DUP.
      int32_t sub_bits = kMagicBits + zsym * xs;
      asm("" : "+r"(sub_bits));
      const float32x4_t sub = HAS_ZERO ? magic : vreinterpretq_f32_s32(vdupq_n_s32(sub_bits));
      int32x4_t st[4];
      for (int i = 0; i < 4; ++i) st[i] = load_start(kStarts);
      // Software-pipelined by one part: the planes of the next part (or of the next quad
      // group's first part) load while this part's SDOTs run.
      Planes<BITS> P[QG];
      for (int q = 0; q < QG; ++q) P[q] = load_part<BITS, 0>(ch, q);
      // Loads ahead of the first SDOTs (the A55 waited on each start in turn): for 4 quads the
      // starts (GCC put each right before its SDOT); for 3-bit also the first planes and the
      // activations (clang sank them to their first use: N1 4.24 vs 4.21 cycles / 32 weights).
      if constexpr (QG == 4)
        for (int i = 0; i < 4; ++i) pin(st[i]);
      if constexpr (BITS == 3) {
        for (int i = 0; i < 4; ++i) pin(st[i]);
        for (const uint8x16_t& v : P[0].v) pin(v);
        pin(xlo);
        pin(xhi);
      }
      unroll<4 / QG>([&](auto ii) __attribute__((always_inline)) {
        constexpr int i0 = decltype(ii)::value * QG;
        int32x4_t is[QG][NC];
        for (int q = 0; q < QG; ++q) {
          is[q][0] = st[i0 + q];
          if constexpr (HAS_ZERO) is[q][0] = vmlsq_n_s32(is[q][0], zf[i0 + q], xs);
          for (int k = 1; k < NC; ++k) is[q][k] = load_start(kStarts + 4);
        }
        unroll<n_parts(BITS)>([&](auto pi) __attribute__((always_inline)) {
          constexpr int part = decltype(pi)::value;
          int8x16_t u[QG][8];
          for (int q = 0; q < QG; ++q) split_part<BITS, part>(P[q], u[q]);
          if constexpr (part + 1 < n_parts(BITS)) {
            for (int q = 0; q < QG; ++q) P[q] = load_part<BITS, part + 1>(ch, i0 + q);
          } else if constexpr (i0 + QG < 4) {
            for (int q = 0; q < QG; ++q) P[q] = load_part<BITS, 0>(ch, i0 + QG + q);
          }
          unroll<8>([&](auto gi) __attribute__((always_inline)) {
            constexpr int g = sdot_order(BITS, decltype(gi)::value);
            if constexpr (part_of(BITS, g) == part) {
              constexpr int k = group_class(BITS, true, g);
              for (int q = 0; q < QG; ++q)
                is[q][k] = vdotq_laneq_s32(is[q][k], u[q][g], g < 4 ? xlo : xhi, g & 3);
              if constexpr (QG > 1) FWA_DP_ORDER_FENCE(QG, is, k);
              else if constexpr (decltype(gi)::value & 1) FWA_DP_CLASS_FENCE(is[0]);
            }
          });
        });
        for (int q = 0; q < QG; ++q) {
          const int i = i0 + q;
          const int32x4_t bits = fold_classes<BITS, true>(is[q]);
          const float32x4_t f = vsubq_f32(vreinterpretq_f32_s32(bits), sub);  // float(isum)
          acc[i] = vfmaq_f32(acc[i], f, vmulq_n_f32(s[i], xd));
        }
        if constexpr (QG == 2) FWA_DP_QUAD_PAIR_FENCE(acc[i0], acc[i0 + 1]);
        if constexpr (QG == 1 && (i0 & 1)) FWA_DP_QUAD_PAIR_FENCE(acc[i0 - 1], acc[i0]);
      });
    }
  }
  for (int i = 0; i < 4; ++i) store_rows(a.y, t * kTileRows + 4 * i, G.N, acc[i]);
}

template <int BITS, bool F16, bool HAS_ZERO>
void gemv_tiles(const MatmulArgs& a, const Geom& G, const uint8_t* last_line) {
  if (G.cpb == 1) {
    for (int64_t t = a.tile_begin; t < a.tile_end; ++t)
      gemv_tile<BITS, F16, HAS_ZERO, true>(a, G, t, last_line);
  } else {
    for (int64_t t = a.tile_begin; t < a.tile_end; ++t)
      gemv_tile<BITS, F16, HAS_ZERO, false>(a, G, t, last_line);
  }
}

template <int BITS>
void gemv(const MatmulArgs& a, const Geom& G) {
  const PackedLayout& L = *a.layout;
  const uint8_t* last_line = a.w + (L.total_bytes - 64);
  if (G.f16) {
    if (G.has_zero) gemv_tiles<BITS, true, true>(a, G, last_line);
    else gemv_tiles<BITS, true, false>(a, G, last_line);
  } else {
    if (G.has_zero) gemv_tiles<BITS, false, true>(a, G, last_line);
    else gemv_tiles<BITS, false, false>(a, G, last_line);
  }
}

template <int BITS>
void run(const MatmulArgs& a) {
  const Geom G = make_geom(a);
  if (a.M == 1) {
    gemv<BITS>(a, G);
    return;
  }
  for (int64_t t = a.tile_begin; t < a.tile_end; ++t) {
    const int64_t rows = min64(kTileRows, G.N - t * kTileRows);
    const int quads = int((rows + 3) / 4);  // quads holding rows < N
    int64_t m = 0;
    for (; m + 4 <= a.M; m += 4)
      for (int q = 0; q < quads; ++q) fast_pass<BITS, 4, 1>(a, G, t, m, q);
    switch (a.M - m) {
      case 3:
        for (int q = 0; q < quads; ++q) fast_pass<BITS, 3, 1>(a, G, t, m, q);
        break;
      case 2:
        for (int q = 0; q < quads; q += 2) fast_pass<BITS, 2, 2>(a, G, t, m, q);
        break;
      case 1:
        fast_pass<BITS, 1, 4>(a, G, t, m, 0);
        break;
      default:
        break;
    }
  }
}

}  // namespace

void matmul_fast_dotprod(const MatmulArgs& args) {
  switch (args.layout->fmt.bits) {
    case 2: run<2>(args); break;
    case 3: run<3>(args); break;
    case 4: run<4>(args); break;
    case 8: run<8>(args); break;
    default: break;
  }
}

}  // namespace fwa
