/* SPDX-License-Identifier: Apache-2.0 */
// Dispatch over the kernel variants of the one list, kernels/variants.def. A variant names the
// CPU features it needs and the operations it implements; an operation left null falls
// through to the next variant in priority order (for example the i8mm variant brings a GEMM
// and reuses the dotprod GEMV).
#pragma once
#include <cstdint>

#include "kernels/kernel.h"

namespace fwa {

enum class MatmulOp : int { gemv_exact = 0, gemv_fast = 1, gemm_exact = 2, gemm_fast = 3 };
constexpr int kNumMatmulOps = 4;
const char* matmul_op_name(MatmulOp op);

struct KernelVariant {
  const char* name;    // a row of kernels/variants.def: "avx512vnni", ..., "ref"
  uint64_t required;   // CpuFeature mask
  MatmulFn ops[kNumMatmulOps];
};

// All variants compiled into this binary, best first; "ref" is last and always present.
const KernelVariant* kernel_variants(int* count);

// The variant with this name if it is compiled in and the CPU (after FWA_CPU_FEATURES) has its
// features; nullptr otherwise.
const KernelVariant* find_variant(const char* name);

// What dispatch picks for an operation: the first usable variant that implements it. When
// `only` is non-null the search starts at that variant (forcing it, with its fall-through).
struct KernelChoice {
  MatmulFn fn;
  const char* variant;
};
KernelChoice select_kernel(MatmulOp op, const KernelVariant* only = nullptr);

}  // namespace fwa
