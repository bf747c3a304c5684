// Entry points of the per-ISA kernel files. Each is defined in exactly one file under
// kernels/x86/ or kernels/arm/, compiled with that ISA's flags only; registry.cpp (baseline
// flags) refers to them by address and calls them only when the CPU has the features.
#pragma once
#include "kernels/kernel.h"

namespace fwa {

#if defined(FWA_HAVE_AVX2)
void matmul_exact_avx2(const MatmulArgs& args);
void matmul_fast_avx2(const MatmulArgs& args);
#endif
#if defined(FWA_HAVE_AVX512)
void matmul_exact_avx512(const MatmulArgs& args);
void matmul_fast_avx512(const MatmulArgs& args);
#endif
#if defined(FWA_HAVE_AVX512VNNI)
void matmul_fast_avx512vnni(const MatmulArgs& args);
#endif
#if defined(FWA_HAVE_NEON)
void matmul_exact_neon(const MatmulArgs& args);
void matmul_fast_neon(const MatmulArgs& args);
#endif
#if defined(FWA_HAVE_DOTPROD)
void matmul_fast_dotprod(const MatmulArgs& args);
#endif
#if defined(FWA_HAVE_I8MM)
void matmul_fast_i8mm(const MatmulArgs& args);
#endif
#if defined(FWA_HAVE_SVE)
void matmul_exact_sve(const MatmulArgs& args);
void matmul_fast_sve(const MatmulArgs& args);
#endif

}  // namespace fwa
