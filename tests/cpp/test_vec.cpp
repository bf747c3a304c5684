// SPDX-License-Identifier: Apache-2.0
// Every VecOps variant this CPU runs (kernels/vec.h) against the reference build, bit for bit,
// over lengths that exercise every vector tail and inputs that reach the exp's clamps.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "kernels/kernel.h"
#include "kernels/vec.h"

using namespace fwa;

namespace {

bool same(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * 4) == 0;
}

std::vector<float> random_vector(std::mt19937& rng, int64_t n, float scale) {
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = d(rng);
  return v;
}

}  // namespace

TEST_CASE("vec: every variant equals the reference bit for bit") {
  const VecOps* ref = vec_ops_variant("ref");
  REQUIRE(ref != nullptr);
  int checked = 0;
  for (const char* name : {"avx2", "avx512", "ref"}) {
    const VecOps* ops = vec_ops_variant(name);
    if (!ops) continue;
    ++checked;
    CAPTURE(name);
    std::mt19937 rng(11);
    for (int64_t n : {1, 3, 7, 8, 15, 16, 17, 31, 33, 64, 100, 257, 1000}) {
      CAPTURE(n);
      const auto x = random_vector(rng, n, 30.0f);  // reaches both exp clamps
      const auto w = random_vector(rng, n, 1.0f);
      for (int64_t rows : {int64_t(1), int64_t(5), int64_t(64)}) {
        for (int g : {1, 3, 4, 6}) {  // 4: one block of four outputs; 6: four, then singles
          CAPTURE(rows);
          CAPTURE(g);
          const int64_t ld = n + 3;        // rows padded, as the K cache's context stride
          const int64_t a_stride = rows + 2, y_stride = n + 5;
          const auto coef = random_vector(rng, g * a_stride, 1.0f);
          const auto mat = random_vector(rng, rows * ld, 1.0f);
          const size_t ny = static_cast<size_t>(g * y_stride);
          std::vector<float> want(ny, -1.0f), got(ny, -1.0f), ref_out(ny, -1.0f);
          for (int k = 0; k < g; ++k)  // the definition: rows ascending, from 0.0f
            for (int64_t j = 0; j < n; ++j) {
              float acc = 0.0f;
              for (int64_t i = 0; i < rows; ++i)
                acc = acc + coef[size_t(k * a_stride + i)] * mat[size_t(i * ld + j)];
              want[size_t(k * y_stride + j)] = acc;
            }
          const size_t ng = static_cast<size_t>(g);
          std::vector<const float*> in(ng);
          std::vector<float*> y_ref(ng), y_got(ng);
          for (int k = 0; k < g; ++k) {
            in[size_t(k)] = &coef[size_t(k * a_stride)];
            y_ref[size_t(k)] = &ref_out[size_t(k * y_stride)];
            y_got[size_t(k)] = &got[size_t(k * y_stride)];
          }
          ref->weighted_row_sums(g, in.data(), mat.data(), ld, rows, n, y_ref.data());
          ops->weighted_row_sums(g, in.data(), mat.data(), ld, rows, n, y_got.data());
          CHECK(same(want, ref_out));  // also: nothing written between the outputs
          CHECK(same(want, got));
        }
      }
      std::vector<float> a = x, b = x;
      b = x;
      ref->divide(a.data(), 2.7f, n);
      ops->divide(b.data(), 2.7f, n);
      CHECK(same(a, b));
      a = x;
      b = x;
      ref->exp_sub_max_inplace(a.data(), n, 3.0f);
      ops->exp_sub_max_inplace(b.data(), n, 3.0f);
      CHECK(same(a, b));
      std::vector<float> c(x.size()), d(x.size());
      ref->exp_sub_max(x.data(), n, -1.0f, c.data());
      ops->exp_sub_max(x.data(), n, -1.0f, d.data());
      CHECK(same(c, d));
      a = x;
      b = x;
      ref->swiglu(a.data(), w.data(), n);
      ops->swiglu(b.data(), w.data(), n);
      CHECK(same(a, b));
      const float s1 = ref->sum8(x.data(), n), s2 = ops->sum8(x.data(), n);
      CHECK(std::memcmp(&s1, &s2, 4) == 0);
      float lanes[8] = {0, 0, 0, 0, 0, 0, 0, 0};  // dot8's definition
      for (int64_t i = 0; i < n; ++i) lanes[i % 8] = lanes[i % 8] + x[size_t(i)] * w[size_t(i)];
      const float want = ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) +
                         ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]));
      float d1[5], d2[5];  // the same row five times: four at once, then one alone
      for (int r = 0; r < 5; ++r) d1[r] = d2[r] = -1.0f;
      ref->dot8_rows(x.data(), w.data(), 0, 5, n, d1);
      ops->dot8_rows(x.data(), w.data(), 0, 5, n, d2);
      for (int r = 0; r < 5; ++r) {
        CHECK(std::memcmp(&want, &d1[r], 4) == 0);
        CHECK(std::memcmp(&d1[r], &d2[r], 4) == 0);
      }
    }
  }
  CHECK(checked >= 1);
  CHECK(&vec_ops() != nullptr);
}

TEST_CASE("vec: activation quantization of every variant equals the reference byte for byte") {
  const VecOps* ref = vec_ops_variant("ref");
  REQUIRE(ref != nullptr);
  std::mt19937 rng(5);
  for (const char* name : {"avx2", "avx512"}) {
    const VecOps* ops = vec_ops_variant(name);
    if (!ops) continue;
    CAPTURE(name);
    for (int64_t K : {1, 31, 32, 33, 100, 256, 1000}) {
      CAPTURE(K);
      const int64_t M = 3, chunks = (K + kChunk - 1) / kChunk, stride = K + 7;
      auto x = random_vector(rng, M * stride, 3.0f);
      for (int64_t k = 0; k < K && k < 40; ++k) x[size_t(stride + k)] = 0.0f;  // an all-zero chunk
      x[size_t(2 * stride)] = 1e30f;                                         // a huge value
      x[size_t(2 * stride + 1)] = 0.5f * 127.0f / 1e30f;                    // ties / tiny
      const size_t nq = size_t(M * chunks * kChunk), nd = size_t(M * chunks);
      std::vector<int8_t> q1(nq, 7), q2(nq, 7);
      std::vector<float> d1(nd), d2(nd);
      std::vector<int32_t> s1(nd), s2(nd);
      REQUIRE(ref->quantize_chunks(x.data(), M, K, stride, chunks, q1.data(), d1.data(),
                                   s1.data()));
      REQUIRE(ops->quantize_chunks(x.data(), M, K, stride, chunks, q2.data(), d2.data(),
                                   s2.data()));
      CHECK(q1 == q2);
      CHECK(std::memcmp(d1.data(), d2.data(), nd * 4) == 0);
      CHECK(s1 == s2);
      for (int64_t m = 0; m < M; ++m)  // |q| <= 127 and the sums are the codes' sums
        for (int64_t c = 0; c < chunks; ++c) {
          int32_t sum = 0;
          for (int i = 0; i < kChunk; ++i) {
            const int8_t v = q1[size_t((m * chunks + c) * kChunk + i)];
            CHECK(v >= -127);
            sum += v;
          }
          CHECK(sum == s1[size_t(m * chunks + c)]);
        }
      for (float bad : {std::numeric_limits<float>::infinity(),
                        std::numeric_limits<float>::quiet_NaN()}) {
        auto y = x;
        y[size_t(stride + K - 1)] = bad;
        CHECK_FALSE(ops->quantize_chunks(y.data(), M, K, stride, chunks, q2.data(), d2.data(),
                                         s2.data()));
      }
    }
  }
}

TEST_CASE("vec: exp and silu accuracy, edge values") {
  const VecOps& ops = vec_ops();
  std::vector<float> x, e;
  for (int i = -900; i <= 880; ++i) x.push_back(float(i) / 10.0f);
  e.resize(x.size());
  ops.exp_sub_max(x.data(), int64_t(x.size()), 0.0f, e.data());
  for (size_t i = 0; i < x.size(); ++i) {
    CAPTURE(x[i]);
    if (x[i] <= -87.0f) {
      CHECK(e[i] == 0.0f);
    } else {
      const double want = std::exp(double(x[i]));
      CHECK(std::fabs(e[i] - want) <= 3e-7 * want);
    }
  }
  const float inf = std::numeric_limits<float>::infinity();
  float special[3] = {-inf, std::numeric_limits<float>::quiet_NaN(), 0.0f};
  ops.exp_sub_max_inplace(special, 3, 0.0f);
  CHECK(special[0] == 0.0f);
  CHECK(special[1] == 0.0f);
  CHECK(special[2] == 1.0f);
  float g[4] = {-1000.0f, -3.5f, 0.0f, 50.0f};
  const float one[4] = {1, 1, 1, 1};
  ops.swiglu(g, one, 4);
  CHECK(g[0] == 0.0f);
  CHECK(std::fabs(g[1] - (-3.5 / (1 + std::exp(3.5)))) < 1e-7);
  CHECK(g[2] == 0.0f);
  CHECK(g[3] == 50.0f);
}
