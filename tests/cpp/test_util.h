/* SPDX-License-Identifier: Apache-2.0 */
// Random packed matrices and activations for the kernel tests.
#pragma once
#include <cstdint>
#include <random>
#include <vector>

#include "quant/format.h"

namespace fwa_test {

struct RandomMatrix {
  fwa::PackedLayout layout;
  std::vector<uint8_t> codes, zeros;
  std::vector<float> scales;
  std::vector<uint8_t> packed;
};

// Codes uniform over the full range, scales random sign and magnitude (fp16-exact when the
// format stores fp16), zero points uniform over [0, 2^bits).
inline RandomMatrix random_matrix(const fwa::QuantFormat& fmt, int64_t N, int64_t K,
                                  std::mt19937& rng) {
  RandomMatrix m;
  fwa::packed_layout(fmt, N, K, &m.layout);
  const int umax = (1 << fmt.bits) - 1;
  std::uniform_int_distribution<int> code(0, umax);
  std::uniform_real_distribution<float> mag(0.001f, 0.1f);
  m.codes.resize(size_t(N * K));
  for (auto& c : m.codes) c = uint8_t(code(rng));
  m.scales.resize(size_t(N * m.layout.n_blocks));
  m.zeros.resize(m.scales.size());
  for (size_t i = 0; i < m.scales.size(); ++i) {
    float s = mag(rng) * ((rng() & 1) ? 1.0f : -1.0f);
    if (fmt.scale == fwa::ScaleType::f16) s = fwa::fp16_to_fp32(fwa::fp32_to_fp16(s));
    m.scales[i] = s;
    m.zeros[i] = uint8_t(code(rng));
  }
  m.packed.resize(m.layout.total_bytes);
  fwa::pack_weights(m.layout, m.codes.data(), m.scales.data(), m.zeros.data(), m.packed.data());
  return m;
}

inline std::vector<float> random_acts(int64_t n, std::mt19937& rng) {
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(n));
  for (auto& v : x) v = d(rng);
  return x;
}

}  // namespace fwa_test
