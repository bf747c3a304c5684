// SPDX-License-Identifier: Apache-2.0
// VecOps compiled for AVX-512 (16 lanes); the same bits as kernels/ref/vec_ref.cpp.
#define FWA_VEC_TABLE kVecOpsAvx512
#define FWA_VEC_NAME "avx512"
#include "kernels/vec_body.inc"
