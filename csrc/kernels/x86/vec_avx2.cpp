// SPDX-License-Identifier: Apache-2.0
// VecOps compiled for AVX2 (8 lanes); the same bits as kernels/ref/vec_ref.cpp.
#define FWA_VEC_TABLE kVecOpsAvx2
#define FWA_VEC_NAME "avx2"
#include "kernels/vec_body.inc"
