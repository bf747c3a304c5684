/* SPDX-License-Identifier: Apache-2.0 */
// Entry points of the per-ISA kernel files, declared from the variant list (variants.def).
// Each is defined in exactly one file under kernels/x86/ or kernels/arm/, compiled with that
// ISA's flags only; registry.cpp (baseline flags) refers to them by address and calls them
// only when the CPU has the features. A row's functions exist only on its architecture.
#pragma once
#include "kernels/kernel.h"

// FWA_VARIANT_ON_<arch>(x): x when compiling for that architecture, nothing otherwise. CMake
// compiles the rows of CMAKE_SYSTEM_PROCESSOR's architecture; test_kernels.cpp checks that
// the registry holds exactly those.
#if defined(__x86_64__)
#define FWA_VARIANT_ON_x86_64(...) __VA_ARGS__
#else
#define FWA_VARIANT_ON_x86_64(...)
#endif
#if defined(__aarch64__)
#define FWA_VARIANT_ON_aarch64(...) __VA_ARGS__
#else
#define FWA_VARIANT_ON_aarch64(...)
#endif
#define FWA_VARIANT_ON_any(...) __VA_ARGS__

namespace fwa {

#define FWA_KERNEL_VARIANT(name, arch, required, gemv_exact, gemv_fast, gemm_exact, gemm_fast, \
                           flags)                                                              \
  FWA_VARIANT_ON_##arch(void matmul_exact_##name(const MatmulArgs& args);                      \
                        void matmul_fast_##name(const MatmulArgs& args);)
#include "kernels/variants.def"
#undef FWA_KERNEL_VARIANT

}  // namespace fwa
