// SPDX-License-Identifier: Apache-2.0
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>

#include "test_util.h"

using namespace fwa;

TEST_CASE("fp16 conversion round-trips every half value") {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const float f = fp16_to_fp32(uint16_t(h));
    if (std::isnan(f)) continue;
    CHECK(fp32_to_fp16(f) == h);
  }
  CHECK(fp32_to_fp16(65520.0f) == 0x7c00);          // rounds to infinity
  CHECK(fp32_to_fp16(65519.0f) == 0x7bff);          // largest finite
  CHECK(fp32_to_fp16(std::ldexp(1.0f, -25)) == 0);  // tie to even: zero
  CHECK(fp32_to_fp16(std::ldexp(1.5f, -25)) == 1);  // above the tie: smallest subnormal
}

TEST_CASE("layout sizes follow docs/kernels.md") {
  PackedLayout L;
  REQUIRE(packed_layout({4, 32, false, ScaleType::f16}, 16, 64, &L) == Status::ok);
  CHECK(L.n_tiles == 1);
  CHECK(L.chunk_bytes == 256);
  CHECK(L.codes_bytes == 512);
  CHECK(L.scales_offset == 512);
  CHECK(L.tile_bytes == 576);  // 512 + 2 blocks * 16 * 2 = 576
  REQUIRE(packed_layout({3, 128, true, ScaleType::f32}, 17, 100, &L) == Status::ok);
  CHECK(L.n_tiles == 2);
  CHECK(L.k_chunks == 4);
  CHECK(L.n_blocks == 1);
  CHECK(L.chunk_bytes == 192);
  CHECK(L.zeros_offset == 768 + 64);
  CHECK(L.tile_bytes == 896);  // 768 + 64 + 16 = 848, rounded up to 64
  CHECK(packed_layout({5, 32, false, ScaleType::f16}, 16, 64, &L) == Status::unsupported_format);
  CHECK(packed_layout({4, 48, false, ScaleType::f16}, 16, 64, &L) == Status::unsupported_format);
  CHECK(packed_layout({4, 32, false, ScaleType::f16}, 0, 64, &L) == Status::invalid_argument);
}

TEST_CASE("pack then unpack is the identity for every format") {
  std::mt19937 rng(1);
  for (int bits : {2, 3, 4, 8})
    for (int block : {32, 64, 128})
      for (bool zp : {false, true})
        for (ScaleType st : {ScaleType::f16, ScaleType::f32}) {
          const QuantFormat fmt{bits, block, zp, st};
          const int64_t N = 1 + int64_t(rng() % 40), K = 1 + int64_t(rng() % 300);
          auto m = fwa_test::random_matrix(fmt, N, K, rng);
          std::vector<uint8_t> codes(size_t(N * K)), zeros(size_t(N * m.layout.n_blocks));
          std::vector<float> scales(zeros.size());
          unpack_weights(m.layout, m.packed.data(), codes.data(), scales.data(), zeros.data());
          CHECK(codes == m.codes);
          CHECK(scales == m.scales);
          if (zp) CHECK(zeros == m.zeros);
          std::vector<float> w(size_t(N * K));
          dequantize_weights(m.layout, m.packed.data(), w.data());
          bool same = true;
          for (int64_t n = 0; n < N; ++n)
            for (int64_t k = 0; k < K; ++k) {
              const int64_t b = k / block;
              const int z = zp ? m.zeros[size_t(n * m.layout.n_blocks + b)] : (1 << (bits - 1));
              const float ref = float(int(m.codes[size_t(n * K + k)]) - z) *
                                m.scales[size_t(n * m.layout.n_blocks + b)];
              same &= std::memcmp(&ref, &w[size_t(n * K + k)], 4) == 0;
            }
          CHECK(same);
        }
}

TEST_CASE("packer rejects codes out of range and non-finite or non-fp16 scales") {
  PackedLayout L;
  REQUIRE(packed_layout({2, 32, false, ScaleType::f16}, 1, 32, &L) == Status::ok);
  std::vector<uint8_t> codes(32, 1), out(L.total_bytes);
  float scale = 0.5f;
  CHECK(pack_weights(L, codes.data(), &scale, nullptr, out.data()) == Status::ok);
  codes[3] = 4;
  CHECK(pack_weights(L, codes.data(), &scale, nullptr, out.data()) == Status::invalid_argument);
  codes[3] = 0;
  scale = NAN;
  CHECK(pack_weights(L, codes.data(), &scale, nullptr, out.data()) == Status::non_finite);
  scale = 0.1f;  // not representable in fp16
  CHECK(pack_weights(L, codes.data(), &scale, nullptr, out.data()) == Status::invalid_argument);
}
