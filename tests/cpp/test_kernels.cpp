// SPDX-License-Identifier: Apache-2.0
// Every kernel variant the CPU can run, for every operation, against the scalar reference:
// bit-identical outputs over randomized shapes (N, K not multiples of the tile, every format,
// M from 1 to 64), and through the threaded driver at several thread counts.
#include <doctest/doctest.h>

#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "cpu/cpu_features.h"
#include "kernels/matmul.h"
#include "kernels/registry.h"
#include "test_util.h"

using namespace fwa;

namespace {

std::vector<float> run(const fwa_test::RandomMatrix& m, const std::vector<float>& x, int64_t M,
                       ComputeMode mode, const KernelVariant* v, ThreadPool* pool, int threads) {
  const PackedLayout& L = m.layout;
  std::vector<float> y(size_t(M * L.N), -12345.0f);
  std::vector<uint8_t> ws(matmul_workspace_bytes(L, M, mode) + 1);
  MatmulRequest r;
  r.layout = &L;
  r.w = m.packed.data();
  r.x = x.data();
  r.M = M;
  r.x_stride = L.K;
  r.y = y.data();
  r.y_stride = L.N;
  r.mode = mode;
  r.workspace = ws.data();
  r.workspace_bytes = ws.size();
  r.pool = pool;
  r.n_threads = threads;
  r.variant = v;
  REQUIRE(matmul(r) == Status::ok);
  return y;
}

bool bit_equal(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * 4) == 0;
}

std::string describe(const QuantFormat& f, int64_t N, int64_t K, int64_t M, ComputeMode mode) {
  char buf[160];
  std::snprintf(buf, sizeof buf, "bits=%d block=%d zp=%d scale=%s N=%lld K=%lld M=%lld mode=%s",
                f.bits, f.block, int(f.has_zero), f.scale == ScaleType::f16 ? "f16" : "f32",
                (long long)N, (long long)K, (long long)M,
                mode == ComputeMode::exact ? "exact" : "fast");
  return buf;
}

// Iterations per variant; FWA_TEST_ITERS scales the run (qemu runs use fewer).
int iterations() {
  const char* s = std::getenv("FWA_TEST_ITERS");
  return s ? std::atoi(s) : 120;
}

}  // namespace

TEST_CASE("report and check the detected CPU features") {
  const CpuInfo& info = cpu_info();
  int n = 0;
  const KernelVariant* vs = kernel_variants(&n);
  std::string usable;
  for (int i = 0; i < n; ++i) {
    if (find_variant(vs[i].name)) usable += std::string(usable.empty() ? "" : ",") + vs[i].name;
  }
  std::printf("arch=%s features=%s sve_bits=%d usable variants=%s\n", info.arch,
              cpu_feature_names(info.features).c_str(), info.sve_vector_bits, usable.c_str());
  // The qemu matrix states what each emulated CPU must expose, so a silently wrong -cpu
  // setting cannot turn the run into a test of the reference only.
  if (const char* expect = std::getenv("FWA_EXPECT_VARIANTS")) CHECK(usable == std::string(expect));
  if (const char* bits = std::getenv("FWA_EXPECT_SVE_BITS")) {
    CHECK(info.sve_vector_bits == std::atoi(bits));
  }
}

// The compiled registry is kernels/variants.def, read here as the scripts read it (text): the
// rows of this architecture and "ref", in order, with their features and operations.
TEST_CASE("the registry holds exactly the rows of kernels/variants.def for this architecture") {
#if defined(__x86_64__)
  const std::string arch = "x86_64";
#elif defined(__aarch64__)
  const std::string arch = "aarch64";
#else
  const std::string arch = "other";
#endif
  std::ifstream in(FWA_VARIANTS_DEF);
  REQUIRE_MESSAGE(in.good(), "cannot read " FWA_VARIANTS_DEF);
  const std::string prefix = "FWA_KERNEL_VARIANT(";
  int n = 0;
  const KernelVariant* vs = kernel_variants(&n);
  int i = 0;
  std::string line;
  while (std::getline(in, line)) {
    if (line.compare(0, prefix.size(), prefix) != 0) continue;
    std::vector<std::string> cols;  // name, arch, required, 4 operations (flags left out)
    std::istringstream fields(line.substr(prefix.size()));
    for (std::string col; cols.size() < 7 && std::getline(fields, col, ',');)
      cols.push_back(col.substr(col.find_first_not_of(' ')));
    REQUIRE(cols.size() == 7);
    if (cols[1] != arch && cols[1] != "any") continue;
    INFO("variants.def row " << cols[0]);
    REQUIRE(i < n);
    const KernelVariant& v = vs[i++];
    CHECK(std::string(v.name) == cols[0]);
    uint64_t required = 0;  // "kAVX2 | kAVX512F": each name known to FWA_CPU_FEATURES
    for (size_t k = cols[2].find('k'); k != std::string::npos; k = cols[2].find('k', k + 1)) {
      std::string name;
      for (size_t j = k + 1; j < cols[2].size() && std::isalnum(uint8_t(cols[2][j])); ++j)
        name += char(std::tolower(uint8_t(cols[2][j])));
      const uint64_t bit = parse_cpu_feature_list(name.c_str());
      CHECK_MESSAGE(bit != 0, "unknown feature " << name);
      required |= bit;
    }
    CHECK(v.required == required);
    for (int op = 0; op < kNumMatmulOps; ++op) {
      INFO(matmul_op_name(MatmulOp(op)) << " = " << cols[3 + op]);
      CHECK((v.ops[op] != nullptr) == (cols[3 + op] != "none"));
    }
  }
  CHECK(i == n);
  CHECK(std::string(vs[n - 1].name) == "ref");
}

TEST_CASE("the reference agrees with a float64 matmul of the dequantized weights") {
  std::mt19937 rng(7);
  for (int bits : {2, 3, 4, 8}) {
    const QuantFormat fmt{bits, 64, bits == 3, ScaleType::f16};
    const int64_t N = 37, K = 200, M = 3;
    auto m = fwa_test::random_matrix(fmt, N, K, rng);
    auto x = fwa_test::random_acts(M * K, rng);
    std::vector<float> w(size_t(N * K));
    dequantize_weights(m.layout, m.packed.data(), w.data());
    for (ComputeMode mode : {ComputeMode::exact, ComputeMode::fast}) {
      auto y = run(m, x, M, mode, find_variant("ref"), nullptr, 1);
      double worst = 0;
      for (int64_t i = 0; i < M; ++i)
        for (int64_t n = 0; n < N; ++n) {
          double ref = 0, mag = 0;
          for (int64_t k = 0; k < K; ++k) {
            ref += double(w[size_t(n * K + k)]) * x[size_t(i * K + k)];
            mag += std::fabs(double(w[size_t(n * K + k)]) * x[size_t(i * K + k)]);
          }
          worst = std::max(worst, std::fabs(y[size_t(i * N + n)] - ref) / mag);
        }
      INFO("bits=" << bits << " mode=" << int(mode));
      // exact: fp32 rounding only; fast: int8 activations (relative error ~ 1/254 per term).
      CHECK(worst < (mode == ComputeMode::exact ? 1e-5 : 2e-2));
    }
  }
}

TEST_CASE("every variant is bit-identical to the reference") {
  std::mt19937 rng(12345);
  int n_variants = 0;
  const KernelVariant* vs = kernel_variants(&n_variants);
  const int iters = iterations();
  for (int vi = 0; vi < n_variants; ++vi) {
    const KernelVariant* v = find_variant(vs[vi].name);
    if (!v || std::strcmp(v->name, "ref") == 0) continue;
    int checked = 0;
    for (int it = 0; it < iters; ++it) {
      const int bits_list[] = {2, 3, 4, 8};
      const int blocks[] = {32, 64, 128};
      const QuantFormat fmt{bits_list[rng() % 4], blocks[rng() % 3], bool(rng() & 1),
                            (rng() & 1) ? ScaleType::f16 : ScaleType::f32};
      const int64_t N = 1 + int64_t(rng() % 70);
      const int64_t K = (rng() % 3 == 0) ? 32 * (1 + int64_t(rng() % 12)) : 1 + int64_t(rng() % 400);
      const int64_t m_choices[] = {1, 1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 33, 64};
      const int64_t M = m_choices[rng() % 13];
      auto m = fwa_test::random_matrix(fmt, N, K, rng);
      auto x = fwa_test::random_acts(M * K, rng);
      for (ComputeMode mode : {ComputeMode::exact, ComputeMode::fast}) {
        const auto ref = run(m, x, M, mode, find_variant("ref"), nullptr, 1);
        const auto got = run(m, x, M, mode, v, nullptr, 1);
        INFO("variant=" << v->name << " " << describe(fmt, N, K, M, mode));
        CHECK(bit_equal(ref, got));
        ++checked;
      }
    }
    std::printf("variant %s: %d cases bit-identical to ref\n", v->name, checked);
  }
}

// The largest integer sums the formats allow: every code at 0 or at its maximum, zero points
// 0 or 255, activations all +3 or all -3 (q = +-127), so |isum| reaches ~2^20 both ways. Kernels
// that recover float(isum) without SCVTF (the ARM dotprod GEMV's 1.5 * 2^23 bias) rely on
// |isum| < 2^22; this pins that bound for every variant and every tile path (M = 1, 2, 5).
TEST_CASE("extreme codes, zero points and activations stay bit-identical") {
  int n_variants = 0;
  const KernelVariant* vs = kernel_variants(&n_variants);
  for (int vi = 0; vi < n_variants; ++vi) {
    const KernelVariant* v = find_variant(vs[vi].name);
    if (!v || std::strcmp(v->name, "ref") == 0) continue;
    for (int bits : {2, 3, 4, 8})
      for (int block : {32, 64})  // 32: the ARM dotprod GEMV's one-chunk-per-block path
        for (bool zp : {false, true})
          for (int pattern = 0; pattern < 4; ++pattern) {
            const QuantFormat fmt{bits, block, zp, ScaleType::f16};
            const int64_t N = 21, K = 160;
            std::mt19937 rng(7);
            auto m = fwa_test::random_matrix(fmt, N, K, rng);
            const uint8_t umax = uint8_t((1 << bits) - 1);
            for (size_t i = 0; i < m.codes.size(); ++i)
              m.codes[i] = (pattern & 1) ? umax : ((i / size_t(K)) % 2 ? umax : 0);
            for (auto& z : m.zeros) z = (pattern & 2) ? 255 : 0;
            fwa::pack_weights(m.layout, m.codes.data(), m.scales.data(), m.zeros.data(),
                              m.packed.data());
            for (int64_t M : {1, 2, 5}) {
              std::vector<float> x(size_t(M * K));
              for (size_t i = 0; i < x.size(); ++i)
                x[i] = (pattern == 1 || pattern == 2) ? -3.0f : 3.0f;
              const auto ref = run(m, x, M, ComputeMode::fast, find_variant("ref"), nullptr, 1);
              const auto got = run(m, x, M, ComputeMode::fast, v, nullptr, 1);
              INFO("variant=" << v->name << " pattern=" << pattern << " "
                              << describe(fmt, N, K, M, ComputeMode::fast));
              CHECK(bit_equal(ref, got));
            }
          }
  }
}

TEST_CASE("results do not depend on the thread count or the tile split") {
  std::mt19937 rng(99);
  ThreadPool pool(4);
  for (int bits : {2, 3, 4}) {
    const QuantFormat fmt{bits, 32, false, ScaleType::f16};
    const int64_t N = 16 * 9 + 5, K = 256 + 17;
    auto m = fwa_test::random_matrix(fmt, N, K, rng);
    for (int64_t M : {1, 8}) {
      auto x = fwa_test::random_acts(M * K, rng);
      for (ComputeMode mode : {ComputeMode::exact, ComputeMode::fast}) {
        const auto one = run(m, x, M, mode, nullptr, nullptr, 1);
        for (int threads : {2, 3, 4}) {
          INFO("bits=" << bits << " M=" << M << " threads=" << threads);
          CHECK(bit_equal(one, run(m, x, M, mode, nullptr, &pool, threads)));
        }
        // Row m of a batch equals the same row computed alone (GEMM vs GEMV).
        if (M > 1) {
          std::vector<float> row(x.begin() + K, x.begin() + 2 * K);
          const auto alone = run(m, row, 1, mode, nullptr, nullptr, 1);
          CHECK(std::memcmp(alone.data(), one.data() + N, size_t(N) * 4) == 0);
        }
      }
    }
  }
}

TEST_CASE("the driver refuses bad requests") {
  std::mt19937 rng(3);
  auto m = fwa_test::random_matrix({4, 32, false, ScaleType::f16}, 16, 64, rng);
  std::vector<float> x(64, 1.0f), y(16);
  std::vector<uint8_t> ws(matmul_workspace_bytes(m.layout, 1, ComputeMode::fast));
  MatmulRequest r;
  r.layout = &m.layout;
  r.w = m.packed.data();
  r.x = x.data();
  r.x_stride = 64;
  r.y = y.data();
  r.y_stride = 16;
  r.workspace = ws.data();
  r.workspace_bytes = ws.size();
  CHECK(matmul(r) == Status::ok);
  r.workspace_bytes = ws.size() - 1;
  CHECK(matmul(r) == Status::buffer_too_small);
  r.workspace_bytes = ws.size();
  r.x_stride = 63;
  CHECK(matmul(r) == Status::shape_mismatch);
  r.x_stride = 64;
  x[5] = NAN;
  CHECK(matmul(r) == Status::non_finite);
  x[5] = INFINITY;
  CHECK(matmul(r) == Status::non_finite);
}
