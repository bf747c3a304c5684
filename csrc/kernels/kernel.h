/* SPDX-License-Identifier: Apache-2.0 */
// The interface every matmul kernel variant implements, and the numerics they all reproduce
// bit for bit (docs/kernels.md, "Canonical arithmetic"). Y[m][n] = sum_k W[n][k] * X[m][k].
//
// A kernel computes whole 16-row tiles [tile_begin, tile_end) for all M activation rows and
// writes only the rows n < N. Every output is produced by the same sequence of fp32 operations
// whatever the variant, the tile range, the thread or the M-blocking, so results never depend
// on them.
//
// exact mode, for each (m, n):
//   acc = 0
//   for each block b:  bacc = 0
//                      for k in block b, ascending (padding to the chunk end included):
//                          bacc = fma(float(u[n][k] - z[n][b]), x[m][k], bacc)
//                      acc = fma(s[n][b], bacc, acc)
//   y = acc
// fast mode, for each (m, n), with the activations quantized per chunk c (xq, xd, xsum):
//   acc = 0
//   for each chunk c (block b = c / chunks_per_block):
//       isum = sum_k u[n][k] * xq[m][k] - z[n][b] * xsum[m][c]        (int32, exact)
//       acc  = fma(float(isum), s[n][b] * xd[m][c], acc)              (the product rounded first)
//   y = acc
// fma is the fused multiply-add (one rounding). No other fp32 arithmetic is allowed.
#pragma once
#include <cstdint>

#include "quant/format.h"

namespace fwa {

struct MatmulArgs {
  const PackedLayout* layout;
  const uint8_t* w;          // packed weights, tile 0
  int64_t M;                 // activation rows, >= 1
  // exact mode: fp32 activations, rows of layout->k_chunks * 32 values (zero beyond K).
  const float* x;
  int64_t x_stride;          // in floats
  // fast mode: quantized activations (see QuantizedActs).
  const int8_t* xq;          // M rows of k_chunks * 32 int8
  const float* xd;           // M rows of k_chunks scales
  const int32_t* xsum;       // M rows of k_chunks sums of xq
  int64_t xq_stride;         // in elements, for xq (k_chunks * 32)
  int64_t xd_stride;         // in elements, for xd and xsum (k_chunks)
  float* y;
  int64_t y_stride;          // in floats
  int64_t tile_begin, tile_end;
};

using MatmulFn = void (*)(const MatmulArgs& args);

// Quantizes M rows of K floats (row stride x_stride) per chunk of 32 with round-half-to-even:
// amax = max |x| over the chunk (padding counts as 0); d = amax / 127;
// q = rne(x * (127 / amax)) (0 when amax == 0). Returns Status::non_finite on NaN/Inf.
Status quantize_activations(const float* x, int64_t M, int64_t K, int64_t x_stride,
                            int64_t k_chunks, int8_t* xq, float* xd, int32_t* xsum);

// The scalar reference kernels (kernels/ref/matmul_ref.cpp): the ground truth every variant
// is tested against, and the fallback on CPUs without a faster variant.
void matmul_exact_ref(const MatmulArgs& args);
void matmul_fast_ref(const MatmulArgs& args);

}  // namespace fwa
