// SPDX-License-Identifier: Apache-2.0
// Scalar reference: the canonical arithmetic of kernels/kernel.h written out literally.
// Slow on purpose (reads every code through the packed accessor); it defines the bits.
#include <algorithm>
#include <cmath>

#include "kernels/kernel.h"

namespace fwa {

void matmul_exact_ref(const MatmulArgs& a) {
  const PackedLayout& L = *a.layout;
  const int64_t k_pad = L.k_chunks * kChunk;
  for (int64_t t = a.tile_begin; t < a.tile_end; ++t) {
    for (int64_t r = 0; r < kTileRows; ++r) {
      const int64_t n = t * kTileRows + r;
      if (n >= L.N) break;
      for (int64_t m = 0; m < a.M; ++m) {
        const float* x = a.x + m * a.x_stride;
        float acc = 0.0f;
        for (int64_t b = 0; b < L.n_blocks; ++b) {
          const int z = packed_zero(L, a.w, n, b);
          const int64_t k_end = std::min<int64_t>((b + 1) * L.fmt.block, k_pad);
          float bacc = 0.0f;
          for (int64_t k = b * L.fmt.block; k < k_end; ++k) {
            // Codes beyond K read as 0 from the zeroed padding, rows beyond N never run.
            const int u = k < L.K ? packed_code(L, a.w, n, k) : 0;
            bacc = std::fma(float(u - z), x[k], bacc);
          }
          acc = std::fma(packed_scale(L, a.w, n, b), bacc, acc);
        }
        a.y[m * a.y_stride + n] = acc;
      }
    }
  }
}

void matmul_fast_ref(const MatmulArgs& a) {
  const PackedLayout& L = *a.layout;
  for (int64_t t = a.tile_begin; t < a.tile_end; ++t) {
    for (int64_t r = 0; r < kTileRows; ++r) {
      const int64_t n = t * kTileRows + r;
      if (n >= L.N) break;
      for (int64_t m = 0; m < a.M; ++m) {
        const int8_t* xq = a.xq + m * a.xq_stride;
        const float* xd = a.xd + m * a.xd_stride;
        const int32_t* xs = a.xsum + m * a.xd_stride;
        float acc = 0.0f;
        for (int64_t c = 0; c < L.k_chunks; ++c) {
          const int64_t b = c / L.chunks_per_block;
          int32_t isum = 0;
          for (int64_t kk = 0; kk < kChunk; ++kk) {
            const int64_t k = c * kChunk + kk;
            const int u = k < L.K ? packed_code(L, a.w, n, k) : 0;
            isum += u * xq[k];
          }
          isum -= packed_zero(L, a.w, n, b) * xs[c];
          const float t_scale = packed_scale(L, a.w, n, b) * xd[c];
          acc = std::fma(float(isum), t_scale, acc);
        }
        a.y[m * a.y_stride + n] = acc;
      }
    }
  }
}

}  // namespace fwa
