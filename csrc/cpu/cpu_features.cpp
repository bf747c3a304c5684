// SPDX-License-Identifier: Apache-2.0
#include "cpu/cpu_features.h"

#include <cstdlib>
#include <cstring>

#if defined(__x86_64__) || defined(_M_X64)
#include <cpuid.h>
#elif defined(__aarch64__) && defined(__linux__)
#include <sys/auxv.h>
#include <sys/prctl.h>
#endif

namespace fwa {
namespace {

struct FeatureName {
  CpuFeature bit;
  const char* name;
};

const FeatureName kFeatureNames[] = {
    {kAVX2, "avx2"},       {kAVX512F, "avx512f"}, {kAVX512BW, "avx512bw"},
    {kAVX512VL, "avx512vl"}, {kAVX512VNNI, "avx512vnni"}, {kNEON, "neon"},
    {kDOTPROD, "dotprod"}, {kI8MM, "i8mm"},       {kSVE, "sve"},
    {kSVE2, "sve2"},       {kSHA, "sha"},
};

#if defined(__x86_64__) || defined(_M_X64)
uint64_t xgetbv0() {
  uint32_t eax, edx;
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return (uint64_t(edx) << 32) | eax;
}

void detect(CpuInfo& info) {
  info.arch = "x86_64";
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return;
  const bool ssse3 = c & (1u << 9), sse41 = c & (1u << 19);
  if (ssse3 && sse41 && __get_cpuid_max(0, nullptr) >= 7) {
    unsigned a7, b7, c7, d7;
    __cpuid_count(7, 0, a7, b7, c7, d7);
    if (b7 & (1u << 29)) info.detected |= kSHA;  // SHA-NI; XMM state only, no XGETBV needed
  }
  const bool osxsave = c & (1u << 27), fma = c & (1u << 12), f16c = c & (1u << 29),
             avx = c & (1u << 28);
  if (!osxsave || !avx) return;
  const uint64_t xcr0 = xgetbv0();
  const bool ymm_ok = (xcr0 & 0x6) == 0x6;             // XMM + YMM state
  const bool zmm_ok = ymm_ok && (xcr0 & 0xe0) == 0xe0;  // opmask + ZMM_Hi256 + Hi16_ZMM
  if (__get_cpuid_max(0, nullptr) < 7) return;
  __cpuid_count(7, 0, a, b, c, d);
  if (ymm_ok && fma && f16c && (b & (1u << 5))) info.detected |= kAVX2;
  if (zmm_ok && (b & (1u << 16))) {
    info.detected |= kAVX512F;
    if (b & (1u << 30)) info.detected |= kAVX512BW;
    if (b & (1u << 31)) info.detected |= kAVX512VL;
    if (c & (1u << 11)) info.detected |= kAVX512VNNI;
  }
}
#elif defined(__aarch64__) && defined(__linux__)
void detect(CpuInfo& info) {
  info.arch = "aarch64";
  const unsigned long hw = getauxval(AT_HWCAP), hw2 = getauxval(AT_HWCAP2);
  // Bit positions from the kernel's arch/arm64/include/uapi/asm/hwcap.h.
  if (hw & (1ul << 1)) info.detected |= kNEON;        // HWCAP_ASIMD
  if (hw & (1ul << 6)) info.detected |= kSHA;         // HWCAP_SHA2
  if (hw & (1ul << 20)) info.detected |= kDOTPROD;    // HWCAP_ASIMDDP
  if (hw & (1ul << 22)) info.detected |= kSVE;        // HWCAP_SVE
  if (hw2 & (1ul << 1)) info.detected |= kSVE2;       // HWCAP2_SVE2
  if (hw2 & (1ul << 13)) info.detected |= kI8MM;      // HWCAP2_I8MM
  if (info.detected & kSVE) {
    // PR_SVE_GET_VL returns the vector length in bytes in the low 16 bits. Read it here rather
    // than with svcntb(), which needs SVE code in a baseline translation unit.
    const int vl = prctl(51 /* PR_SVE_GET_VL */);
    info.sve_vector_bits = vl > 0 ? (vl & 0xffff) * 8 : 0;
    if (info.sve_vector_bits == 0) info.detected &= ~(kSVE | kSVE2);
  }
}
#else
void detect(CpuInfo& info) { info.arch = "other"; }
#endif

CpuInfo make_cpu_info() {
  CpuInfo info;
  detect(info);
  info.features = info.detected;
  if (const char* env = std::getenv("FWA_CPU_FEATURES")) {
    info.features &= parse_cpu_feature_list(env);
  }
  // Keep the set consistent: a feature without what it builds on is dropped.
  if (!(info.features & kAVX2)) info.features &= ~(kAVX512F | kAVX512BW | kAVX512VL | kAVX512VNNI);
  if (!(info.features & kAVX512F)) info.features &= ~(kAVX512BW | kAVX512VL | kAVX512VNNI);
  if (!(info.features & kNEON)) info.features &= ~(kDOTPROD | kI8MM | kSVE | kSVE2);
#if defined(__aarch64__)
  if (!(info.features & kNEON)) info.features &= ~kSHA;  // the SHA2 instructions are ASIMD
#endif
  if (!(info.features & kSVE)) info.features &= ~kSVE2;
  if (!(info.features & kSVE)) info.sve_vector_bits = 0;
  return info;
}

}  // namespace

uint64_t parse_cpu_feature_list(const char* list) {
  uint64_t mask = 0;
  const char* p = list;
  while (*p) {
    while (*p == ',' || *p == ' ') ++p;
    const char* start = p;
    while (*p && *p != ',' && *p != ' ') ++p;
    const size_t len = size_t(p - start);
    for (const FeatureName& f : kFeatureNames) {
      if (std::strlen(f.name) == len && std::strncmp(f.name, start, len) == 0) mask |= f.bit;
    }
  }
  return mask;
}

std::string cpu_feature_names(uint64_t mask) {
  std::string out;
  for (const FeatureName& f : kFeatureNames) {
    if (mask & f.bit) {
      if (!out.empty()) out += ',';
      out += f.name;
    }
  }
  return out;
}

const CpuInfo& cpu_info() {
  static const CpuInfo info = make_cpu_info();
  return info;
}

}  // namespace fwa
