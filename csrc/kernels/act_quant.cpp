// SPDX-License-Identifier: Apache-2.0
// Activation quantization for the fast mode: the body is VecOps::quantize_chunks
// (kernels/vec_body.inc), compiled per ISA and equal to the baseline build byte for byte.
#include "kernels/kernel.h"
#include "kernels/vec.h"

namespace fwa {

Status quantize_activations(const float* x, int64_t M, int64_t K, int64_t x_stride,
                            int64_t k_chunks, int8_t* xq, float* xd, int32_t* xsum) {
  return vec_ops().quantize_chunks(x, M, K, x_stride, k_chunks, xq, xd, xsum)
             ? Status::ok
             : Status::non_finite;
}

}  // namespace fwa
