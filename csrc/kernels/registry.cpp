#include "kernels/registry.h"

#include <cstring>

#include "cpu/cpu_features.h"
#include "kernels/variants.h"

namespace fwa {
namespace {

// Best first. ops order: gemv_exact, gemv_fast, gemm_exact, gemm_fast (MatmulOp).
const KernelVariant kVariants[] = {
#if defined(FWA_HAVE_AVX512VNNI)
    {"avx512vnni", kAVX2 | kAVX512F | kAVX512BW | kAVX512VL | kAVX512VNNI,
     {nullptr, matmul_fast_avx512vnni, nullptr, matmul_fast_avx512vnni}},
#endif
#if defined(FWA_HAVE_AVX512)
    {"avx512", kAVX2 | kAVX512F | kAVX512BW | kAVX512VL,
     {matmul_exact_avx512, matmul_fast_avx512, matmul_exact_avx512, matmul_fast_avx512}},
#endif
#if defined(FWA_HAVE_AVX2)
    {"avx2", kAVX2, {matmul_exact_avx2, matmul_fast_avx2, matmul_exact_avx2, matmul_fast_avx2}},
#endif
// SMMLA does twice the MACs of SDOT per instruction: it leads for GEMM even on SVE CPUs.
#if defined(FWA_HAVE_I8MM)
    {"i8mm", kNEON | kDOTPROD | kI8MM, {nullptr, nullptr, nullptr, matmul_fast_i8mm}},
#endif
#if defined(FWA_HAVE_SVE)
    {"sve", kNEON | kSVE, {matmul_exact_sve, matmul_fast_sve, matmul_exact_sve, matmul_fast_sve}},
#endif
#if defined(FWA_HAVE_DOTPROD)
    {"dotprod", kNEON | kDOTPROD, {nullptr, matmul_fast_dotprod, nullptr, matmul_fast_dotprod}},
#endif
#if defined(FWA_HAVE_NEON)
    {"neon", kNEON, {matmul_exact_neon, matmul_fast_neon, matmul_exact_neon, matmul_fast_neon}},
#endif
    {"ref", 0, {matmul_exact_ref, matmul_fast_ref, matmul_exact_ref, matmul_fast_ref}},
};
constexpr int kNumVariants = int(sizeof(kVariants) / sizeof(kVariants[0]));

bool usable(const KernelVariant& v) { return (cpu_info().features & v.required) == v.required; }

}  // namespace

const char* matmul_op_name(MatmulOp op) {
  switch (op) {
    case MatmulOp::gemv_exact: return "gemv_exact";
    case MatmulOp::gemv_fast: return "gemv_fast";
    case MatmulOp::gemm_exact: return "gemm_exact";
    case MatmulOp::gemm_fast: return "gemm_fast";
  }
  return "?";
}

const KernelVariant* kernel_variants(int* count) {
  *count = kNumVariants;
  return kVariants;
}

const KernelVariant* find_variant(const char* name) {
  for (const KernelVariant& v : kVariants) {
    if (std::strcmp(v.name, name) == 0) return usable(v) ? &v : nullptr;
  }
  return nullptr;
}

KernelChoice select_kernel(MatmulOp op, const KernelVariant* only) {
  int i = only ? int(only - kVariants) : 0;
  for (; i < kNumVariants; ++i) {
    const KernelVariant& v = kVariants[i];
    if (usable(v) && v.ops[int(op)]) return {v.ops[int(op)], v.name};
  }
  return {matmul_fast_ref, "ref"};  // unreachable: ref implements every op
}

}  // namespace fwa
