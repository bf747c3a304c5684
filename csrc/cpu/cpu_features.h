/* SPDX-License-Identifier: Apache-2.0 */
// CPU feature detection, done once per process. The set can only be lowered, never raised,
// by the environment variable FWA_CPU_FEATURES (a comma-separated list of feature names that
// are kept; unknown names are ignored, features the CPU lacks stay off). Tests and benchmarks
// use it to force each kernel path.
#pragma once
#include <cstdint>
#include <string>

namespace fwa {

enum CpuFeature : uint64_t {
  // x86
  kAVX2 = 1ull << 0,        // AVX2 + FMA + F16C, with OS support for YMM state (XGETBV)
  kAVX512F = 1ull << 1,     // with OS support for ZMM/opmask state
  kAVX512BW = 1ull << 2,
  kAVX512VL = 1ull << 3,
  kAVX512VNNI = 1ull << 4,
  // aarch64
  kNEON = 1ull << 16,       // ASIMD, always present on ARMv8-A Linux
  kDOTPROD = 1ull << 17,    // SDOT/UDOT (HWCAP_ASIMDDP)
  kI8MM = 1ull << 18,       // SMMLA (HWCAP2_I8MM)
  kSVE = 1ull << 19,        // HWCAP_SVE
  kSVE2 = 1ull << 20,       // HWCAP2_SVE2
  // both: SHA-256 instructions (x86 SHA-NI with SSSE3/SSE4.1; aarch64 HWCAP_SHA2 with ASIMD)
  kSHA = 1ull << 32,
};

struct CpuInfo {
  uint64_t features = 0;      // after the FWA_CPU_FEATURES mask
  uint64_t detected = 0;      // what the hardware and OS report
  int sve_vector_bits = 0;    // 0 when SVE is absent
  const char* arch = "";      // "x86_64", "aarch64" or "other"
};

// Detected on first call (thread-safe, function-local static), then constant.
const CpuInfo& cpu_info();

// "avx2,avx512f,..." for a feature mask, in the order of the enum.
std::string cpu_feature_names(uint64_t mask);

// Parses a FWA_CPU_FEATURES-style list into a mask ("none" or "" gives 0).
uint64_t parse_cpu_feature_list(const char* list);

}  // namespace fwa
