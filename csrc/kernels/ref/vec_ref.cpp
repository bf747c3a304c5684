// SPDX-License-Identifier: Apache-2.0
// VecOps for the baseline ISA (SSE2 on x86-64, NEON on aarch64): the reference variant.
#define FWA_VEC_TABLE kVecOpsRef
#define FWA_VEC_NAME "ref"
#include "kernels/vec_body.inc"
