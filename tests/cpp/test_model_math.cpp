// SPDX-License-Identifier: Apache-2.0
// The deterministic model math (model/math.h) and the sampler (model/sampler.h): accuracy
// against libm and double-precision references, semantics of every sampling step, and golden
// bit patterns computed once on x86-64. CI runs the same binary under qemu-aarch64, so the
// golden checks prove that results are identical across ISAs.
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <cfloat>
#include <cmath>
#include <cstdio>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <new>
#include <random>
#include <string>
#include <vector>

#include "model/math.h"
#include "model/sampler.h"

using namespace fwa;

// Heap allocations counted only while g_count_allocs is set (around the calls that must not
// allocate), so doctest's own allocations never count.
namespace {
std::atomic<bool> g_count_allocs{false};
std::atomic<long> g_allocs{0};
}  // namespace

void* operator new(std::size_t n) {
  if (g_count_allocs.load(std::memory_order_relaxed)) g_allocs.fetch_add(1);
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n) { return ::operator new(n); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr float kInfF = std::numeric_limits<float>::infinity();

uint64_t bits64(double x) {
  uint64_t b;
  std::memcpy(&b, &x, sizeof b);
  return b;
}

uint32_t bits32(float x) {
  uint32_t b;
  std::memcpy(&b, &x, sizeof b);
  return b;
}

std::string hex(uint64_t v) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "0x%016llx", (unsigned long long)v);
  return buf;
}

double rel_err(double got, double want) { return std::fabs(got - want) / std::fabs(want); }

// FNV-1a over the bit patterns of a run of results: one golden number for many outputs.
struct Fnv {
  uint64_t h = 0xcbf29ce484222325ULL;
  void add(uint64_t v) {
    for (int i = 0; i < 8; ++i) {
      h ^= (v >> (8 * i)) & 0xff;
      h *= 0x100000001b3ULL;
    }
  }
  void add(double x) { add(bits64(x)); }
  void add(float x) { add(uint64_t(bits32(x))); }
};

// The PCG32 reference (pcg-c-basic, pcg_basic.c), written out independently of Rng.
struct Pcg32Ref {
  uint64_t state, inc;
  uint32_t next() {
    uint64_t oldstate = state;
    state = oldstate * 6364136223846793005ULL + inc;
    uint32_t xorshifted = uint32_t(((oldstate >> 18u) ^ oldstate) >> 27u);
    uint32_t rot = uint32_t(oldstate >> 59u);
    return (xorshifted >> rot) | (xorshifted << ((-rot) & 31));
  }
  Pcg32Ref(uint64_t initstate, uint64_t initseq) {
    state = 0U;
    inc = (initseq << 1u) | 1u;
    next();
    state += initstate;
    next();
  }
};

// softmax(logits / T) in double, the reference for the sampler's frequencies.
std::vector<double> softmax_ref(const std::vector<float>& logits, double t) {
  double m = -kInf;
  for (float l : logits) m = std::max(m, double(l) / t);
  std::vector<double> p;
  double s = 0;
  for (float l : logits) {
    p.push_back(std::exp(double(l) / t - m));
    s += p.back();
  }
  for (double& x : p) x /= s;
  return p;
}

}  // namespace

TEST_CASE("det_exp against libm") {
  std::mt19937_64 rng(1);
  std::vector<double> xs = {0.0, -0.0, 1e-300, -1e-300, 5e-324, 1e-20, -1e-20, 1e-8, 0.5,
                            -0.5, 1.0, -1.0, 0.34657359027997264, -0.34657359027997264,
                            0.6931471805599453, 2.0, 10.0, -10.0, 100.0, -100.0, 700.0,
                            -700.0, 708.0, -708.0, 709.78, 709.782712893384};
  std::uniform_real_distribution<double> wide(-708.0, 709.78), narrow(-2.0, 2.0);
  for (int i = 0; i < 20000; ++i) xs.push_back(wide(rng));
  for (int i = 0; i < 20000; ++i) xs.push_back(narrow(rng));
  double worst = 0;
  for (double x : xs) {
    const double got = det_exp(x), want = std::exp(x);
    const double e = rel_err(got, want);
    worst = std::max(worst, e);
    if (e >= 1e-14) FAIL_CHECK("det_exp(" << x << ") = " << got << " want " << want);
  }
  MESSAGE("det_exp worst relative error " << worst);
  CHECK(worst < 4e-16);
  // Subnormal results: within one unit of the subnormal grid.
  for (double x = -745.0; x < -708.5; x += 0.37) {
    CHECK(std::fabs(det_exp(x) - std::exp(x)) <= std::numeric_limits<double>::denorm_min());
  }
  CHECK(det_exp(0.0) == 1.0);
  CHECK(det_exp(-745.0) > 0.0);
  CHECK(det_exp(-745.01) == 0.0);
  CHECK(det_exp(-1e300) == 0.0);
  CHECK(det_exp(-kInf) == 0.0);
  CHECK(det_exp(709.782712893384) < kInf);
  CHECK(det_exp(709.7827128933841) == kInf);
  CHECK(det_exp(kInf) == kInf);
  CHECK(std::isnan(det_exp(std::nan(""))));
}

TEST_CASE("det_log against libm") {
  std::mt19937_64 rng(2);
  std::vector<double> xs = {1.0, 2.0, 0.5, 10.0, 0.1, 1.0 + 1e-15, 1.0 - 1e-15, 1.0 + 1e-10,
                            0.999, 1.001, 0.7071067811865476, 1.414213562373095, 1e-300,
                            5e-324, 2.2250738585072014e-308, DBL_MAX, 1e6, 1e300, 3.0};
  std::uniform_real_distribution<double> expo(-744.0, 709.0), near_one(0.5, 2.0);
  for (int i = 0; i < 20000; ++i) xs.push_back(std::exp(expo(rng)));
  for (int i = 0; i < 20000; ++i) xs.push_back(near_one(rng));
  double worst = 0;
  for (double x : xs) {
    const double got = det_log(x), want = std::log(x);
    if (want == 0.0) {
      CHECK(got == 0.0);
      continue;
    }
    const double e = rel_err(got, want);
    worst = std::max(worst, e);
    if (e >= 1e-14) FAIL_CHECK("det_log(" << x << ") = " << got << " want " << want);
  }
  MESSAGE("det_log worst relative error " << worst);
  CHECK(worst < 4e-16);
  CHECK(std::isnan(det_log(0.0)));
  CHECK(std::isnan(det_log(-0.0)));
  CHECK(std::isnan(det_log(-1.0)));
  CHECK(std::isnan(det_log(kInf)));
  CHECK(std::isnan(det_log(std::nan(""))));
}

TEST_CASE("det_sincos against libm") {
  std::mt19937_64 rng(3);
  std::vector<double> xs = {0.0, -0.0, 1e-300, 1e-10, -1e-10, 0.5, 0.7853981633974483,
                            -0.7853981633974483, 1.5707963267948966, 3.141592653589793,
                            4.71238898038469, 6.283185307179586, 100.0, 1e4, 1e5, -1e5,
                            12345.678, 1e6, -1e6, 999999.5};
  for (int k = -1000; k <= 1000; ++k) xs.push_back(k * 1.5707963267948966);  // near zeros
  std::uniform_real_distribution<double> big(-1e5, 1e5), small(-10.0, 10.0), huge(-1e6, 1e6);
  for (int i = 0; i < 20000; ++i) xs.push_back(big(rng));
  for (int i = 0; i < 20000; ++i) xs.push_back(small(rng));
  for (int i = 0; i < 2000; ++i) xs.push_back(huge(rng));
  // Relative error, or absolute below 1e-15 where the value is near zero.
  auto close = [](double got, double want) {
    return std::fabs(got - want) <= std::max(1e-14 * std::fabs(want), 1e-15);
  };
  double worst = 0;
  for (double x : xs) {
    double s, c;
    det_sincos(x, &s, &c);
    const double ws = std::sin(x), wc = std::cos(x);
    if (!close(s, ws)) FAIL_CHECK("sin(" << x << ") = " << s << " want " << ws);
    if (!close(c, wc)) FAIL_CHECK("cos(" << x << ") = " << c << " want " << wc);
    if (std::fabs(ws) > 1e-3) worst = std::max(worst, rel_err(s, ws));
    if (std::fabs(wc) > 1e-3) worst = std::max(worst, rel_err(c, wc));
  }
  MESSAGE("det_sincos worst relative error (|value| > 1e-3) " << worst);
  double s, c;
  det_sincos(0.0, &s, &c);
  CHECK((s == 0.0 && c == 1.0));
  det_sincos(-0.0, &s, &c);
  CHECK((s == 0.0 && c == 1.0));
  for (double bad : {1e6 * (1 + 1e-15), -2e6, kInf, -kInf, std::nan("")}) {
    det_sincos(bad, &s, &c);
    CHECK((std::isnan(s) && std::isnan(c)));
  }
}

TEST_CASE("det_expf within one ulp of the rounded libm value, silu") {
  std::mt19937 rng(4);
  std::uniform_real_distribution<float> d(-103.0f, 88.7f);
  std::vector<float> xs = {0.0f, 1.0f, -1.0f, 1e-30f, 88.7f, -87.0f, -100.0f, -103.0f};
  for (int i = 0; i < 100000; ++i) xs.push_back(d(rng));
  for (float x : xs) {
    const float got = det_expf(x), want = float(std::exp(double(x)));
    const int64_t ulps = std::llabs(int64_t(bits32(got)) - int64_t(bits32(want)));
    if (ulps > 1) FAIL_CHECK("det_expf(" << x << ") = " << got << " want " << want);
  }
  CHECK(det_expf(89.0f) == kInfF);
  CHECK(det_expf(-110.0f) == 0.0f);

  for (float x : {-FLT_MAX, -1e30f, -100.0f, -88.8f, -3.5f, -1e-30f, 0.0f, 1e-30f, 2.0f, 100.0f,
                  FLT_MAX}) {
    const float y = silu(x);
    CHECK(std::isfinite(y));
    const double want = double(x) / (1.0 + std::exp(-double(x)));
    // Absolute slack for x < -88.7, where det_expf(-x) overflows and the quotient is -0.
    CHECK(std::fabs(y - want) <= 1e-6 * std::fabs(want) + 1e-35);
  }
  CHECK(silu(FLT_MAX) == FLT_MAX);
  CHECK(silu(0.0f) == 0.0f);
}

TEST_CASE("golden bit patterns (computed on x86-64; must hold on every ISA)") {
  double s, c;
  det_sincos(12345.678, &s, &c);
  INFO("exp(1) " << hex(bits64(det_exp(1.0))) << " log(10) " << hex(bits64(det_log(10.0)))
                  << " sin " << hex(bits64(s)) << " cos " << hex(bits64(c)) << " silu "
                  << hex(bits32(silu(-3.5f))));
  CHECK(bits64(det_exp(1.0)) == 0x4005bf0a8b14576aULL);
  CHECK(bits64(det_log(10.0)) == 0x40026bb1bbb55516ULL);
  CHECK(bits64(s) == 0xbfe687d5890974a5ULL);
  CHECK(bits64(c) == 0x3fe6b94c3bbe24b8ULL);
  CHECK(bits32(silu(-3.5f)) == 0xbdd21c2eU);

  // Many outputs at once, on inputs built with exact arithmetic.
  Fnv h;
  for (int i = 0; i <= 2000; ++i) h.add(det_exp(-745.0 + i * 0.7275));
  for (int i = 1; i <= 2000; ++i) h.add(det_log(i * 1.37e-3 * i * i));
  for (int i = 0; i <= 2000; ++i) {
    det_sincos(-1e6 + i * 999.987654321, &s, &c);
    h.add(s);
    h.add(c);
  }
  for (int i = 0; i <= 2000; ++i) h.add(silu(-100.0f + float(i) * 0.1f));
  INFO("elementary functions hash " << hex(h.h));
  CHECK(h.h == 0x293e205b5f8b2ed4ULL);

  Fnv t;
  const int64_t hd = 128, n_pos = 1024;
  std::vector<float> cs(size_t(n_pos * hd / 2)), sn(cs.size());
  rope_tables(1e6, hd, n_pos, cs.data(), sn.data());
  for (size_t i = 0; i < cs.size(); ++i) {
    t.add(cs[i]);
    t.add(sn[i]);
  }
  std::vector<float> x(4096), w(4096), y(4096);
  for (int i = 0; i < 4096; ++i) {
    x[size_t(i)] = float((i * 7919) % 2001 - 1000) / 64.0f;
    w[size_t(i)] = float((i * 104729) % 1001) / 512.0f;
  }
  rms_norm(x.data(), w.data(), 4096, 1e-6f, y.data());
  for (float v : y) t.add(v);
  softmax_inplace(x.data(), 4096);
  for (float v : x) t.add(v);
  INFO("rope/rms_norm/softmax hash " << hex(t.h));
  CHECK(t.h == 0x34bab0e4c8dd4a29ULL);
}

TEST_CASE("rms_norm against a double reference") {
  std::mt19937 rng(5);
  std::normal_distribution<float> d(0.0f, 3.0f);
  for (int64_t n : {1, 7, 128, 2048}) {
    const size_t un = static_cast<size_t>(n);
    std::vector<float> x(un), w(un), y(un);
    for (auto& v : x) v = d(rng);
    for (auto& v : w) v = 1.0f + 0.1f * d(rng);
    const float eps = 1e-6f;
    rms_norm(x.data(), w.data(), n, eps, y.data());
    double ss = 0;
    for (float v : x) ss += double(v) * v;
    const double inv = 1.0 / std::sqrt(ss / double(n) + eps);
    for (int64_t i = 0; i < n; ++i) {
      const double want = double(x[size_t(i)]) * inv * w[size_t(i)];
      CHECK(std::fabs(y[size_t(i)] - want) <= 1e-6 * std::fabs(want) + 1e-30);
    }
    // In place gives the same bits.
    std::vector<float> z = x;
    rms_norm(z.data(), w.data(), n, eps, z.data());
    CHECK(std::memcmp(z.data(), y.data(), size_t(n) * 4) == 0);
  }
  // eps keeps an all-zero row finite.
  std::vector<float> zero(16, 0.0f), ones(16, 1.0f), out(16, 1.0f);
  rms_norm(zero.data(), ones.data(), 16, 1e-6f, out.data());
  for (float v : out) CHECK(v == 0.0f);
}

TEST_CASE("softmax_inplace against a double reference") {
  std::mt19937 rng(6);
  std::uniform_real_distribution<float> d(-20.0f, 20.0f);
  for (int64_t n : {1, 2, 5, 128, 4096}) {
    std::vector<float> x(static_cast<size_t>(n));
    for (auto& v : x) v = d(rng);
    const std::vector<double> want = softmax_ref(x, 1.0);
    const float m = *std::max_element(x.begin(), x.end());
    // x_i - m is rounded to float first: a relative error up to |x_i - m| * 2^-24 in e_i.
    std::vector<double> tol(x.size());
    for (size_t i = 0; i < x.size(); ++i) tol[i] = 1e-6 + 6e-8 * std::fabs(x[i] - m);
    softmax_inplace(x.data(), n);
    double sum = 0;
    for (size_t i = 0; i < x.size(); ++i) {
      sum += x[i];
      CHECK(std::fabs(x[i] - want[i]) <= tol[i] * want[i]);
    }
    CHECK(std::fabs(sum - 1.0) < 1e-6);
  }
  // -inf entries (a causal mask) give exactly 0, the others the softmax of the finite ones.
  std::vector<float> x = {1.0f, -kInfF, 3.0f, -kInfF, -2.0f};
  const std::vector<double> finite = softmax_ref({1.0f, 3.0f, -2.0f}, 1.0);
  softmax_inplace(x.data(), 5);
  CHECK(x[1] == 0.0f);
  CHECK(x[3] == 0.0f);
  CHECK(std::fabs(x[0] - finite[0]) <= 1e-6 * finite[0]);
  CHECK(std::fabs(x[2] - finite[1]) <= 1e-6 * finite[1]);
  CHECK(std::fabs(x[4] - finite[2]) <= 1e-6 * finite[2]);
  float one = -123.0f;
  softmax_inplace(&one, 1);
  CHECK(one == 1.0f);
  std::vector<float> big = {1e30f, 1e30f, -1e30f};
  softmax_inplace(big.data(), 3);
  CHECK((big[0] == 0.5f && big[1] == 0.5f && big[2] == 0.0f));
  std::vector<float> masked = {-kInfF, -kInfF};
  softmax_inplace(masked.data(), 2);
  CHECK((std::isnan(masked[0]) && std::isnan(masked[1])));  // as PyTorch
}

TEST_CASE("rope tables and rotation") {
  const double theta = 1e6;
  const int64_t hd = 128, half = hd / 2, n_pos = 4096;
  std::vector<float> cs(size_t(n_pos * half)), sn(cs.size());
  rope_tables(theta, hd, n_pos, cs.data(), sn.data());
  for (int64_t i = 0; i < half; ++i) {
    CHECK(cs[size_t(i)] == 1.0f);
    CHECK(sn[size_t(i)] == 0.0f);
  }
  // Every entry against libm in double (independent formula: theta^(-2i/d) with std::pow).
  int bad = 0;
  for (int64_t p = 0; p < n_pos; ++p) {
    for (int64_t i = 0; i < half; ++i) {
      const double angle = double(p) * std::pow(theta, -double(2 * i) / double(hd));
      if (std::fabs(cs[size_t(p * half + i)] - std::cos(angle)) > 1e-6) ++bad;
      if (std::fabs(sn[size_t(p * half + i)] - std::sin(angle)) > 1e-6) ++bad;
    }
  }
  CHECK(bad == 0);

  // Rotating by row p is multiplying (x[i] + i x[i+half]) by e^{i angle}.
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> d(-1.0f, 1.0f);
  for (int64_t p : {0, 1, 17, 1000, 4095}) {
    std::vector<float> x(static_cast<size_t>(hd));
    for (auto& v : x) v = d(rng);
    std::vector<float> y = x;
    rope_apply(y.data(), hd, &cs[size_t(p * half)], &sn[size_t(p * half)]);
    for (int64_t i = 0; i < half; ++i) {
      const double angle = double(p) * std::pow(theta, -double(2 * i) / double(hd));
      const double re = x[size_t(i)], im = x[size_t(i + half)];
      const double want_re = re * std::cos(angle) - im * std::sin(angle);
      const double want_im = re * std::sin(angle) + im * std::cos(angle);
      CHECK(std::fabs(y[size_t(i)] - want_re) < 1e-6);
      CHECK(std::fabs(y[size_t(i + half)] - want_im) < 1e-6);
    }
  }
}

TEST_CASE("Rng is PCG32") {
  // pcg32-demo's published first outputs for pcg32_srandom_r(42, 54).
  Pcg32Ref demo(42u, 54u);
  const uint32_t published[6] = {0xa15c02b7, 0x7b47f409, 0xba1d3330,
                                 0x83d2f293, 0xbfa4784b, 0xcbed606e};
  for (uint32_t v : published) CHECK(demo.next() == v);

  for (uint64_t seed : {0ULL, 1ULL, 42ULL, 0xdeadbeefcafef00dULL}) {
    Rng rng(seed);
    Pcg32Ref ref(seed, 0xda3e39cb94b95bdbULL);
    bool same = true;
    for (int i = 0; i < 1000; ++i) same = same && rng.next_u32() == ref.next();
    CHECK(same);
    // next_double: first draw high, second low, top 53 bits.
    const uint64_t hi = ref.next(), lo = ref.next();
    CHECK(rng.next_double() == double(((hi << 32) | lo) >> 11) / 9007199254740992.0);
    rng.seed(seed);
    CHECK(rng.next_u32() == Pcg32Ref(seed, 0xda3e39cb94b95bdbULL).next());
  }

  Rng rng(123);
  double sum = 0, lo = 1, hi = 0;
  for (int i = 0; i < 100000; ++i) {
    const double u = rng.next_double();
    CHECK_UNARY(u >= 0.0);
    CHECK_UNARY(u < 1.0);
    sum += u;
    lo = std::min(lo, u);
    hi = std::max(hi, u);
  }
  CHECK(std::fabs(sum / 100000 - 0.5) < 0.005);
  CHECK(lo < 1e-3);
  CHECK(hi > 1 - 1e-3);
}

TEST_CASE("check_sampling_params") {
  std::string msg;
  SamplingParams ok;
  CHECK(check_sampling_params(ok, &msg) == Status::ok);
  ok.temperature = 0.7f;
  ok.top_k = 20;
  ok.top_p = 0.8f;
  ok.repetition_penalty = 1.1f;
  CHECK(check_sampling_params(ok, nullptr) == Status::ok);
  for (float t : {0.0f, -0.0f, kMinTemperature, kMaxTemperature}) {
    SamplingParams p;
    p.temperature = t;
    p.repetition_penalty = t == 0.0f ? kMaxRepetitionPenalty : kMinRepetitionPenalty;
    CHECK(check_sampling_params(p, nullptr) == Status::ok);
  }

  struct Bad {
    SamplingParams p;
    const char* name;
  };
  const float nan = std::nanf("");
  std::vector<Bad> bad;
  // Tiny temperatures (down to the subnormals) overflow logits / T; huge ones are refused too.
  for (float t : {-0.1f, nan, kInfF, -kInfF, 1e-38f, 1e-45f, 1e-30f, 9.99e-4f, 1000.5f, -0.0001f}) {
    SamplingParams p;
    p.temperature = t;
    bad.push_back({p, "temperature"});
  }
  {
    SamplingParams p;
    p.top_k = -1;
    bad.push_back({p, "top_k"});
  }
  for (float tp : {0.0f, -0.5f, 1.01f, nan}) {
    SamplingParams p;
    p.top_p = tp;
    bad.push_back({p, "top_p"});
  }
  for (float r : {0.0f, -1.0f, kInfF, nan, 1e-38f, 9.99e-4f, 1e38f, 1000.5f}) {
    SamplingParams p;
    p.repetition_penalty = r;
    bad.push_back({p, "repetition_penalty"});
  }
  for (const Bad& b : bad) {
    msg.clear();
    CHECK(check_sampling_params(b.p, &msg) == Status::invalid_argument);
    CHECK_MESSAGE(msg.find(b.name) != std::string::npos, msg);
    CHECK(check_sampling_params(b.p, nullptr) == Status::invalid_argument);
  }
}

TEST_CASE("sampler: init, greedy, repetition penalty") {
  Sampler s;
  std::string msg;
  const float l0[1] = {0.0f};
  CHECK(s.sample(l0, nullptr, 0) == -1);
  CHECK(s.init(0, &msg) == Status::invalid_argument);
  CHECK(s.init(-3, nullptr) == Status::invalid_argument);
  REQUIRE(s.init(4, &msg) == Status::ok);
  s.reset(SamplingParams{});

  const float ties[4] = {1.0f, 5.0f, 3.0f, 5.0f};
  CHECK(s.sample(ties, nullptr, 0) == 1);
  const float nan = std::nanf("");
  const float with_nan[4] = {nan, 2.0f, nan, 1.0f};
  CHECK(s.sample(with_nan, nullptr, 0) == 1);
  const float all_nan[4] = {nan, nan, nan, nan};
  CHECK(s.sample(all_nan, nullptr, 0) == 0);
  const float neg_inf[4] = {-kInfF, -kInfF, -kInfF, -kInfF};
  CHECK(s.sample(neg_inf, nullptr, 0) == 0);

  // Hugging Face: positive logits divided, negative ones multiplied, each distinct id once.
  SamplingParams p;
  p.repetition_penalty = 1.5f;
  s.reset(p);
  const float a[4] = {2.0f, 1.9f, -1.0f, 0.5f};
  const int32_t h1[3] = {0, 0, 2};
  CHECK(s.sample(a, h1, 3) == 1);          // 2 / 1.5 < 1.9
  CHECK(s.sample(a, nullptr, 0) == 0);     // nothing persists between calls
  CHECK(a[0] == 2.0f);                     // logits untouched
  p.repetition_penalty = 1.2f;
  s.reset(p);
  const float b[4] = {2.0f, 1.5f, 0.0f, 0.0f};
  const int32_t twice[2] = {0, 0};
  CHECK(s.sample(b, twice, 2) == 0);       // once: 1.667 > 1.5 (twice would be 1.389)
  const float c[4] = {-1.0f, -1.1f, -5.0f, -5.0f};
  const int32_t h0[1] = {0};
  CHECK(s.sample(c, h0, 1) == 1);          // -1 * 1.2 < -1.1
  const int32_t out_of_range[3] = {-5, 4, 1 << 30};
  CHECK(s.sample(b, out_of_range, 3) == 0);  // ignored
}

TEST_CASE("sampler: top_k, top_p, seeds, frequencies") {
  Sampler s;
  REQUIRE(s.init(1000, nullptr) == Status::ok);
  std::mt19937 gen(8);
  std::normal_distribution<float> d(0.0f, 2.0f);
  std::vector<float> logits(1000);
  for (auto& v : logits) v = d(gen);
  logits[617] = logits[123] = 12.0f;  // tied maximum: the lower id wins
  SamplingParams p;
  p.temperature = 1.3f;
  p.top_k = 1;
  s.reset(p);
  for (int i = 0; i < 200; ++i) CHECK(s.sample(logits.data(), nullptr, 0) == 123);
  p.top_k = 0;
  p.top_p = 1e-6f;
  s.reset(p);
  for (int i = 0; i < 200; ++i) CHECK(s.sample(logits.data(), nullptr, 0) == 123);

  // Same seed, same sequence; another seed, another sequence (flat logits so draws differ).
  for (auto& v : logits) v = d(gen) * 0.1f;
  auto draw = [&](uint64_t seed, int top_k, float top_p) {
    SamplingParams q;
    q.temperature = 1.0f;
    q.top_k = top_k;
    q.top_p = top_p;
    q.seed = seed;
    s.reset(q);
    std::vector<int32_t> ids;
    for (int i = 0; i < 64; ++i) ids.push_back(s.sample(logits.data(), nullptr, 0));
    return ids;
  };
  for (int top_k : {0, 50}) {
    for (float top_p : {1.0f, 0.9f}) {
      CHECK(draw(7, top_k, top_p) == draw(7, top_k, top_p));
      CHECK(draw(7, top_k, top_p) != draw(8, top_k, top_p));
    }
  }

  // Empirical frequencies over 200k draws match softmax(logits / T), then the top_k and top_p
  // renormalisations of it.
  Sampler s4;
  REQUIRE(s4.init(4, nullptr) == Status::ok);
  const std::vector<float> l4 = {1.0f, 2.0f, 0.5f, -1.0f};
  const double t = 0.7;
  const std::vector<double> full = softmax_ref(l4, t);  // sorted: ids 1, 0, 2, 3
  auto freqs = [&](int top_k, float top_p) {
    SamplingParams q;
    q.temperature = float(t);
    q.top_k = top_k;
    q.top_p = top_p;
    q.seed = 99;
    s4.reset(q);
    std::vector<double> f(4, 0.0);
    const int n = 200000;
    for (int i = 0; i < n; ++i) f[size_t(s4.sample(l4.data(), nullptr, 0))] += 1.0 / n;
    return f;
  };
  auto expect = [&](const std::vector<double>& got, std::vector<double> want) {
    double z = 0;
    for (double v : want) z += v;
    for (size_t i = 0; i < 4; ++i) CHECK(std::fabs(got[i] - want[i] / z) < 0.01);
  };
  expect(freqs(0, 1.0f), full);
  expect(freqs(2, 1.0f), {full[0], full[1], 0, 0});
  // top_p: the shortest prefix (ids 1, 0, ...) reaching top_p.
  CHECK(full[1] < 0.75);
  CHECK(full[1] + full[0] >= 0.75);
  expect(freqs(0, 0.75f), {full[0], full[1], 0, 0});
  expect(freqs(3, float(full[1] + full[0] + full[2] / 2)), {full[0], full[1], full[2], 0});
}

TEST_CASE("sampler: golden sequence and no heap allocation in sample()") {
  // A Qwen3-sized row of logits from exact integer arithmetic.
  const int32_t vocab = 151936;
  std::vector<float> logits(static_cast<size_t>(vocab));
  Pcg32Ref g(2024, 1);
  for (auto& v : logits) v = float(int32_t(g.next() % 4001) - 2000) / 256.0f;
  std::vector<int32_t> history;
  for (int i = 0; i < 300; ++i) history.push_back(int32_t(g.next() % uint32_t(vocab)));

  Sampler s;
  REQUIRE(s.init(vocab, nullptr) == Status::ok);
  SamplingParams p;
  p.temperature = 0.8f;
  p.top_k = 40;
  p.top_p = 0.95f;
  p.repetition_penalty = 1.1f;
  p.seed = 31337;
  s.reset(p);
  Fnv h;
  for (int i = 0; i < 32; ++i) h.add(uint64_t(s.sample(logits.data(), history.data(), 300)));
  p.top_k = 0;  // full sort for top_p
  p.temperature = 4.0f;
  s.reset(p);
  for (int i = 0; i < 4; ++i) h.add(uint64_t(s.sample(logits.data(), history.data(), 300)));
  p.top_p = 1.0f;  // plain softmax over the whole vocabulary
  s.reset(p);
  for (int i = 0; i < 4; ++i) h.add(uint64_t(s.sample(logits.data(), history.data(), 300)));
  INFO("sampler hash " << hex(h.h));
  CHECK(h.h == 0x07c643ad3ede419bULL);

  // Every path of sample() with the counter on.
  const SamplingParams configs[] = {
      {0.0f, 0, 1.0f, 1.0f, 1}, {0.0f, 0, 1.0f, 1.3f, 1}, {0.7f, 20, 0.8f, 1.1f, 2},
      {1.0f, 0, 0.9f, 1.0f, 3}, {1.0f, 0, 1.0f, 1.0f, 4}, {0.5f, vocab, 1.0f, 1.2f, 5}};
  long allocs = 0;
  for (const SamplingParams& q : configs) {
    s.reset(q);
    g_allocs = 0;
    g_count_allocs = true;
    const int32_t id = s.sample(logits.data(), history.data(), history.size());
    g_count_allocs = false;
    allocs += g_allocs;
    CHECK((id >= 0 && id < vocab));
  }
  CHECK(allocs == 0);
  // The counter works: a vector allocation is seen.
  g_allocs = 0;
  g_count_allocs = true;
  std::vector<int>* v = new std::vector<int>(10);
  g_count_allocs = false;
  delete v;
  CHECK(g_allocs == 2);
}
