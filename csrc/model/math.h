/* SPDX-License-Identifier: Apache-2.0 */
// The model's scalar math (elementary functions, RMSNorm, softmax, RoPE), bit-identical on
// every CPU and compiler: a certification lab must reproduce device logits on a PC.
//
// libm's exp/log/sin/cos differ between platforms (and glibc versions), so these functions
// use only IEEE-754 operations that are correctly rounded everywhere: + - * / sqrt,
// conversions, and exact operations (scaling by powers of two, frexp, floor). The library is
// compiled with -ffp-contract=off, so no FMA is formed behind our back. Every loop runs in
// index order; reductions are never reassociated.
#pragma once
#include <cstdint>

namespace fwa {

// Deterministic elementary functions in double (relative error below ~1e-15 on the stated
// ranges). NaN in gives NaN out.
double det_exp(double x);  // exp(x); 0 for x < -745, +inf above ln(DBL_MAX) ~ 709.78
double det_log(double x);  // natural log, x > 0 finite (NaN otherwise)
// sin and cos of |x| <= 1e6 (NaN for both outside): Cody-Waite reduction by pi/2 with a
// 3-part constant, then polynomials on [-pi/4, pi/4] and quadrant selection.
void det_sincos(double x, double* s, double* c);
float det_expf(float x);  // float(det_exp(double(x)))
float silu(float x);      // x / (1 + exp(-x)) with the float exp below (math.cpp: exp_f32)
// gate[i] = silu(gate[i]) * up[i]: the SwiGLU of an MLP, vectorised.
void swiglu_inplace(float* gate, const float* up, int64_t n);
// out[i] = exp(x[i] - m) with the float exp of math.cpp (0 for -inf or NaN differences).
void exp_sub_max(const float* x, int64_t n, float m, float* out);

// RMSNorm over n values: sum of squares accumulated in double in index order,
// ms = float(sum / n), inv = 1.0f / std::sqrt(ms + eps) (float), y[i] = (x[i] * inv) * w[i]
// (float). y may alias x.
void rms_norm(const float* x, const float* w, int64_t n, float eps, float* y);

// In-place softmax over n >= 1 floats: m = max; e_i = exp_f32(x_i - m) (math.cpp); sum as
// eight strided float partial sums combined ((0+1)+(2+3))+((4+5)+(6+7)); x_i = e_i / sum.
// Vectorisable and the same bits on every ISA. -inf entries give 0. NaN anywhere, a +inf
// entry or all entries -inf give NaN everywhere (as PyTorch).
void softmax_inplace(float* x, int64_t n);

// RoPE tables for the rotate_half convention (Hugging Face Llama/Qwen), head_dim even,
// half = head_dim / 2, rows of half floats: for position p in [0, n_pos) and i in [0, half):
// inv_freq_i = det_exp(-(2i / head_dim) * det_log(theta)), angle = double(p) * inv_freq_i,
// cos_tab[p * half + i] = float(cos(angle)), sin_tab likewise (det_sincos, so angles must
// stay within 1e6: n_pos <= 1e6).
void rope_tables(double theta, int64_t head_dim, int64_t n_pos, float* cos_tab, float* sin_tab);

// Rotates one head vector x[head_dim] in place with the tables' row for its position:
// for i < half: a = x[i], b = x[i + half]; x[i] = a*c_i - b*s_i; x[i + half] = b*c_i + a*s_i
// (float operations, in this order).
void rope_apply(float* x, int64_t head_dim, const float* cos_row, const float* sin_row);

}  // namespace fwa
