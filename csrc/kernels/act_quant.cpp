// Activation quantization for the fast mode. Plain C++ compiled for the baseline ISA: every
// operation is exact or correctly rounded (max, one IEEE division, one multiply, rounding by the
// 1.5*2^23 trick which is round-half-to-even for |v| < 2^22), so whatever vectorisation the
// compiler applies gives the same bits on every target. -ffp-contract=off keeps the multiply
// and the add separate.
#include <cfloat>
#include <cmath>

#include "kernels/kernel.h"

namespace fwa {

Status quantize_activations(const float* x, int64_t M, int64_t K, int64_t x_stride,
                            int64_t k_chunks, int8_t* xq, float* xd, int32_t* xsum) {
  constexpr float kRound = 12582912.0f;  // 1.5 * 2^23
  for (int64_t m = 0; m < M; ++m) {
    const float* xr = x + m * x_stride;
    int8_t* qr = xq + m * k_chunks * kChunk;
    for (int64_t c = 0; c < k_chunks; ++c) {
      const int64_t k0 = c * kChunk;
      const int n = int(std::min<int64_t>(kChunk, K - k0));
      float v[kChunk];
      for (int i = 0; i < kChunk; ++i) v[i] = i < n ? xr[k0 + i] : 0.0f;
      float amax = 0.0f;
      int bad = 0;
      for (int i = 0; i < kChunk; ++i) {
        const float a = std::fabs(v[i]);
        amax = a > amax ? a : amax;
        bad |= !(a <= FLT_MAX);
      }
      if (bad) return Status::non_finite;
      const float inv = amax > 0.0f ? 127.0f / amax : 0.0f;
      int32_t sum = 0;
      for (int i = 0; i < kChunk; ++i) {
        const float r = (v[i] * inv + kRound) - kRound;
        const int q = int(r);
        qr[k0 + i] = int8_t(q);
        sum += q;
      }
      xd[m * k_chunks + c] = amax / 127.0f;
      xsum[m * k_chunks + c] = sum;
    }
  }
  return Status::ok;
}

}  // namespace fwa
