// SPDX-License-Identifier: Apache-2.0
#include "kernels/registry.h"

#include <cstring>

#include "cpu/cpu_features.h"
#include "kernels/variants.h"

namespace fwa {
namespace {

// The rows of variants.def for this architecture, best first. ops order: gemv_exact,
// gemv_fast, gemm_exact, gemm_fast (MatmulOp); none: the next usable variant's.
#define FWA_OP_exact(name) matmul_exact_##name
#define FWA_OP_fast(name) matmul_fast_##name
#define FWA_OP_none(name) nullptr
const KernelVariant kVariants[] = {
#define FWA_KERNEL_VARIANT(name, arch, required, gemv_exact, gemv_fast, gemm_exact, gemm_fast, \
                           flags)                                                              \
  FWA_VARIANT_ON_##arch({#name, uint64_t(required),                                            \
                         {FWA_OP_##gemv_exact(name), FWA_OP_##gemv_fast(name),                 \
                          FWA_OP_##gemm_exact(name), FWA_OP_##gemm_fast(name)}}, )
#include "kernels/variants.def"
#undef FWA_KERNEL_VARIANT
};
#undef FWA_OP_exact
#undef FWA_OP_fast
#undef FWA_OP_none
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
