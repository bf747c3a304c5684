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
#if defined(__x86_64__)
#include <xmmintrin.h>
#endif

#include "kernels/half.h"
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

// The 16-bit KV cache formats (kernels/half.h): the scalar conversions at hand-written edge
// values, then exhaustively against references computed in double, then the vector widening
// of every variant against the scalar one.
namespace {

uint32_t bits_of(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  return u;
}

float float_of(uint32_t u) {
  float x;
  std::memcpy(&x, &u, 4);
  return x;
}

// The value of an f16 or bf16 pattern from its fields, in double (NaN for NaN patterns).
double f16_value(uint16_t h) {
  const int e = (h >> 10) & 31, m = h & 1023;
  const double s = (h & 0x8000) ? -1.0 : 1.0;
  if (e == 31) return m ? std::nan("") : s * std::numeric_limits<double>::infinity();
  return e == 0 ? s * std::ldexp(double(m), -24) : s * std::ldexp(1024.0 + m, e - 25);
}

double bf16_value(uint16_t b) {
  const int e = (b >> 7) & 255, m = b & 127;
  const double s = (b & 0x8000) ? -1.0 : 1.0;
  if (e == 255) return m ? std::nan("") : s * std::numeric_limits<double>::infinity();
  return e == 0 ? s * std::ldexp(double(m), -133) : s * std::ldexp(128.0 + m, e - 134);
}

}  // namespace

TEST_CASE("kv16: f16 and bf16 conversions at the edge values") {
  struct Case {
    uint32_t in;
    uint16_t out;
  };
  const Case f16[] = {
      {0x00000000u, 0x0000}, {0x80000000u, 0x8000},  // +-0
      {0x3f800000u, 0x3c00},                         // 1
      {0x477fe000u, 0x7bff},                         // 65504, the largest finite
      {0x477fefffu, 0x7bff},                         // just below the halfway point to 65536
      {0x477ff000u, 0x7c00},                         // 65520: the tie rounds to even, inf
      {0x49742400u, 0x7c00}, {0xc9742400u, 0xfc00},  // +-1e6: overflow to inf
      {0x7f800000u, 0x7c00}, {0xff800000u, 0xfc00},  // +-inf
      {0x33800000u, 0x0001}, {0xb3800000u, 0x8001},  // +-2^-24, the smallest subnormal
      {0x33000000u, 0x0000},                         // 2^-25: tie, to even zero
      {0x33000001u, 0x0001},                         // just above it
      {0x33c00000u, 0x0002},                         // 1.5 * 2^-24: tie, to even 2
      {0x34200000u, 0x0002},                         // 2.5 * 2^-24: tie, to even 2
      {0x387fc000u, 0x03ff},                         // the largest subnormal
      {0x387fe000u, 0x0400},                         // its tie with 2^-14: up to even
      {0x38800000u, 0x0400},                         // 2^-14, the smallest normal
      {0x3f801000u, 0x3c00},                         // 1 + 2^-11: tie, stays even
      {0x3f803000u, 0x3c02},                         // 1 + 3 * 2^-11: tie, up to even
      {0x3f801001u, 0x3c01},                         // just above a tie
      {0x000116c2u, 0x0000}, {0x800116c2u, 0x8000},  // float32 subnormals: +-0
      {0x7fc00000u, 0x7e00}, {0xffc00001u, 0xfe00},  // NaN: the quiet NaN, sign kept
      {0x7f800001u, 0x7e00},                         // a signalling NaN too
  };
  for (const Case& c : f16) {
    CAPTURE(c.in);
    CHECK(f32_to_f16(float_of(c.in)) == c.out);
  }
  const Case bf16[] = {
      {0x3f800000u, 0x3f80}, {0x3f808000u, 0x3f80},  // 1; a tie stays even
      {0x3f818000u, 0x3f82}, {0x3f808001u, 0x3f81},  // a tie up to even; above a tie
      {0x7f7f0000u, 0x7f7f}, {0x7f7f7fffu, 0x7f7f},  // the largest finite; just below its tie
      {0x7f7f8000u, 0x7f80}, {0xff7f8000u, 0xff80},  // its tie: to even, +-inf
      {0x7f800000u, 0x7f80}, {0x80000000u, 0x8000},  // inf, -0
      {0x00010000u, 0x0001}, {0x80010000u, 0x8001},  // the smallest subnormal, kept
      {0x00008000u, 0x0000}, {0x00018000u, 0x0002},  // subnormal ties, to even
      {0x00000001u, 0x0000},                         // below half the smallest: 0
      {0x7f800001u, 0x7fc0}, {0xffffffffu, 0xffc0},  // NaN: the quiet NaN, sign kept
  };
  for (const Case& c : bf16) {
    CAPTURE(c.in);
    CHECK(f32_to_bf16(float_of(c.in)) == c.out);
  }
  // Widening: exact, NaN stays NaN with its sign.
  CHECK(bits_of(f16_to_f32(0x0001)) == 0x33800000u);
  CHECK(bits_of(f16_to_f32(0x8001)) == 0xb3800000u);
  CHECK(bits_of(f16_to_f32(0x03ff)) == 0x387fc000u);
  CHECK(bits_of(f16_to_f32(0x7bff)) == 0x477fe000u);
  CHECK(bits_of(f16_to_f32(0x7c00)) == 0x7f800000u);
  CHECK(bits_of(f16_to_f32(0xfc00)) == 0xff800000u);
  CHECK(bits_of(f16_to_f32(0x7e00)) == 0x7fc00000u);
  CHECK(bits_of(f16_to_f32(0x8000)) == 0x80000000u);
  CHECK(bits_of(bf16_to_f32(0x0001)) == 0x00010000u);
  CHECK(bits_of(bf16_to_f32(0xffc0)) == 0xffc00000u);
}

TEST_CASE("kv16: every f16 and bf16 value widens exactly and every rounding boundary is RNE") {
  for (int fmt = 0; fmt < 2; ++fmt) {
    CAPTURE(fmt);
    auto narrow = [&](float x) { return fmt == 0 ? f32_to_f16(x) : f32_to_bf16(x); };
    auto widen = [&](uint16_t h) { return fmt == 0 ? f16_to_f32(h) : bf16_to_f32(h); };
    auto value = [&](uint16_t h) { return fmt == 0 ? f16_value(h) : bf16_value(h); };
    const uint32_t inf = fmt == 0 ? 0x7c00u : 0x7f80u;
    int bad = 0;
    for (uint32_t h = 0; h < 0x10000u; ++h) {
      const double v = value(uint16_t(h));
      const float w = widen(uint16_t(h));
      if (std::isnan(v)) {
        bad += !std::isnan(w) || (bits_of(w) >> 31) != (h >> 15);
        continue;
      }
      bad += double(w) != v || std::signbit(w) != bool(h & 0x8000u);
      bad += narrow(w) != h;  // a representable value is stored as itself
      if ((h & 0x7fffu) >= inf) continue;
      // Between h and the next magnitude h + 1: the midpoint (exact in float32) goes to the
      // even one of the two, its neighbours to the nearer; inf counts as the next after max.
      const uint16_t up = uint16_t(h + 1);
      const double top = fmt == 0 ? 65536.0 : std::ldexp(1.0, 128);
      const double next = (up & 0x7fffu) == inf ? (h & 0x8000u ? -top : top) : value(up);
      const double mid_d = (v + next) / 2;
      const float mid = float(mid_d);
      REQUIRE(double(mid) == mid_d);
      const uint16_t even = (h & 1u) ? up : uint16_t(h);
      bad += narrow(mid) != even;
      bad += narrow(std::nextafter(mid, float(v))) != h;
      bad += narrow(std::nextafter(mid, mid > 0 ? INFINITY : -INFINITY)) != up;
    }
    CHECK(bad == 0);
  }
}

TEST_CASE("kv16: every variant's weighted_row_sums widens f16 and bf16 as the scalar code") {
  std::vector<uint16_t> all(0x10000);
  for (size_t i = 0; i < all.size(); ++i) all[i] = uint16_t(i);
  for (const char* name : {"avx2", "avx512", "ref"}) {
    const VecOps* ops = vec_ops_variant(name);
    if (!ops) continue;
    CAPTURE(name);
    for (int fmt = 0; fmt < 2; ++fmt) {
      CAPTURE(fmt);
      auto sums = fmt == 0 ? ops->weighted_row_sums_f16 : ops->weighted_row_sums_bf16;
      auto widen = [&](uint16_t h) { return fmt == 0 ? f16_to_f32(h) : bf16_to_f32(h); };
      // One row, coefficient 1: y = 0 + 1 * x, every pattern (wide path and tails).
      const float one = 1.0f;
      const float* a[1] = {&one};
      for (int64_t n : {int64_t(0x10000), int64_t(37)}) {
        std::vector<float> y(static_cast<size_t>(n));
        float* yp[1] = {y.data()};
        sums(1, a, all.data() + (0x10000 - n), n, 1, n, yp);
        int bad = 0;
        for (int64_t j = 0; j < n; ++j) {
          const float want = widen(all[size_t(0x10000 - n + j)]);
          bad += std::isnan(want) ? !std::isnan(y[size_t(j)])
                                  : bits_of(y[size_t(j)]) != bits_of(0.0f + 1.0f * want);
        }
        CHECK(bad == 0);
      }
      // Random shapes: bit-equal to the float kernel on the widened values.
      std::mt19937 rng(7);
      std::normal_distribution<float> d(0.0f, 3.0f);
      for (int64_t n : {1, 7, 16, 33, 64, 100, 257}) {
        for (int64_t rows : {int64_t(1), int64_t(5), int64_t(64)}) {
          for (int g : {1, 4, 6}) {
            CAPTURE(n);
            CAPTURE(rows);
            CAPTURE(g);
            const int64_t ld = n + 3;
            std::vector<uint16_t> x(size_t(rows * ld));
            std::vector<float> xf(x.size()), coef(size_t(g * rows));
            for (size_t i = 0; i < x.size(); ++i) {
              const float v = d(rng);
              x[i] = fmt == 0 ? f32_to_f16(v) : f32_to_bf16(v);
              xf[i] = widen(x[i]);
            }
            for (float& c : coef) c = d(rng);
            std::vector<float> want(size_t(g * n)), got(size_t(g * n));
            std::vector<const float*> ap(static_cast<size_t>(g));
            std::vector<float*> wp(static_cast<size_t>(g)), gp(static_cast<size_t>(g));
            for (int k = 0; k < g; ++k) {
              ap[size_t(k)] = coef.data() + k * rows;
              wp[size_t(k)] = want.data() + k * n;
              gp[size_t(k)] = got.data() + k * n;
            }
            vec_ops_variant("ref")->weighted_row_sums(g, ap.data(), xf.data(), ld, rows, n,
                                                      wp.data());
            sums(g, ap.data(), x.data(), ld, rows, n, gp.data());
            CHECK(same(got, want));
          }
        }
      }
    }
  }
}

// A host that sets flush-to-zero modes (x86 MXCSR FTZ and DAZ, e.g. code built with
// -ffast-math; ARM FPCR.FZ) does not change the f16 widening: F16C's vcvtph2ps and the integer
// form never produce or consume a float32 subnormal (bf16 subnormals do widen to float32
// subnormals: the arithmetic after them depends on those modes as the float32 cache's does).
TEST_CASE("kv16: the f16 widening is the same with the flush-to-zero modes set") {
  std::vector<uint16_t> all(0x10000);
  std::vector<float> want(all.size());
  for (size_t i = 0; i < all.size(); ++i) {
    all[i] = uint16_t(i);
    want[i] = 0.0f + 1.0f * f16_to_f32(uint16_t(i));
  }
#if defined(__x86_64__)
  const unsigned saved = _mm_getcsr();
  _mm_setcsr(saved | 0x8040u);  // FTZ | DAZ
#elif defined(__aarch64__)
  uint64_t saved;
  asm volatile("mrs %0, fpcr" : "=r"(saved));
  asm volatile("msr fpcr, %0" : : "r"(saved | (uint64_t(1) << 24)));  // FZ
#endif
  int bad = 0, checked = 0;
  for (const char* name : {"avx2", "avx512", "ref"}) {
    const VecOps* ops = vec_ops_variant(name);
    if (!ops) continue;
    ++checked;
    const float one = 1.0f;
    const float* a[1] = {&one};
    std::vector<float> y(all.size());
    float* yp[1] = {y.data()};
    ops->weighted_row_sums_f16(1, a, all.data(), int64_t(all.size()), 1, int64_t(all.size()),
                               yp);
    for (size_t i = 0; i < all.size(); ++i)
      bad += std::isnan(want[i]) ? !std::isnan(y[i]) : bits_of(y[i]) != bits_of(want[i]);
  }
#if defined(__x86_64__)
  _mm_setcsr(saved);
#elif defined(__aarch64__)
  asm volatile("msr fpcr, %0" : : "r"(saved));
#endif
  CHECK(checked > 0);
  CHECK(bad == 0);
}
