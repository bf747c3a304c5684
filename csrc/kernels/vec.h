/* SPDX-License-Identifier: Apache-2.0 */
// Float kernels of the model's non-matmul work (attention sums, softmax, SwiGLU) and the fast
// mode's activation quantization, one variant per ISA, all computing exactly the same bits: every output is its own sequence
// of IEEE operations (multiply then add, never fused; lanes are independent outputs), so the
// vector width changes only how many outputs run at once. The body is one source
// (kernels/vec_body.inc) compiled per ISA; kernels/ref/vec_ref.cpp is the baseline build
// (SSE2 on x86-64, NEON on aarch64) and the reference the variants are tested against.
#pragma once
#include <cstdint>

namespace fwa {

struct VecOps {
  const char* name;
  // For k in [0, g): y[k][j] = sum over i in [0, rows) ascending of a[k][i] * x[i * ld + j],
  // j in [0, n), each sum started from 0.0f, x read once for all g outputs (the y[k] must
  // not overlap x or each other): attention's scores (a[k] = the q of heads sharing a KV
  // head, of one or more query rows; x = K^T) and outputs (a[k] = their probabilities,
  // x = V).
  void (*weighted_row_sums)(int g, const float* const* a, const float* x, int64_t ld,
                            int64_t rows, int64_t n, float* const* y);
  // x[i] = x[i] / d
  void (*divide)(float* x, float d, int64_t n);
  // x[i] = exp(x[i] - m), the float exp of vec_body.inc (0 for -inf or NaN differences)
  void (*exp_sub_max_inplace)(float* x, int64_t n, float m);
  // out[i] = exp(x[i] - m); x and out must not overlap
  void (*exp_sub_max)(const float* x, int64_t n, float m, float* out);
  // gate[i] = silu(gate[i]) * up[i]
  void (*swiglu)(float* gate, const float* up, int64_t n);
  // Eight strided partial sums (lane j takes i = j mod 8, ascending), combined as
  // ((a0+a1)+(a2+a3))+((a4+a5)+(a6+a7)).
  float (*sum8)(const float* x, int64_t n);
  // quantize_activations (kernels/kernel.h); false when a value is NaN or infinite.
  bool (*quantize_chunks)(const float* x, int64_t M, int64_t K, int64_t x_stride,
                          int64_t k_chunks, int8_t* xq, float* xd, int32_t* xsum);
  // y[r] = sum over i in [0, n) of x[i] * w[r * ld + i], r in [0, rows), in sum8's order
  // (eight strided partial sums): float layers.
  void (*dot8_rows)(const float* x, const float* w, int64_t ld, int64_t rows, int64_t n,
                    float* y);
  // weighted_row_sums over a 16-bit KV cache (kernels/half.h): each x value widened exactly to
  // float32, then the same operations, so the result is weighted_row_sums on the widened x.
  void (*weighted_row_sums_f16)(int g, const float* const* a, const uint16_t* x, int64_t ld,
                                int64_t rows, int64_t n, float* const* y);
  void (*weighted_row_sums_bf16)(int g, const float* const* a, const uint16_t* x, int64_t ld,
                                 int64_t rows, int64_t n, float* const* y);
};

// The variant for this CPU (after FWA_CPU_FEATURES), chosen once.
const VecOps& vec_ops();
// A variant by name ("ref", "avx2", "avx512"), or null if not built or not usable here.
const VecOps* vec_ops_variant(const char* name);

}  // namespace fwa
