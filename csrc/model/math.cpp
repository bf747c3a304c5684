// SPDX-License-Identifier: Apache-2.0
#include "model/math.h"

#include "kernels/vec.h"

#include <cfloat>
#include <cmath>
#include <cstring>
#include <limits>

namespace fwa {

static_assert(std::numeric_limits<double>::is_iec559 && std::numeric_limits<float>::is_iec559,
              "IEEE-754 binary32 and binary64 are required");
// x87-style excess precision would round intermediates differently from SSE2/NEON.
#if !defined(FLT_EVAL_METHOD) || FLT_EVAL_METHOD != 0
#error "float and double expressions must be evaluated in their own type (FLT_EVAL_METHOD 0)"
#endif

namespace {

// ln 2 = kLn2Hi + kLn2Lo. kLn2Hi has 32 significant bits, so n * kLn2Hi is exact for
// |n| < 2^21 (fdlibm's split).
constexpr double kLn2Hi = 0x1.62e42fee00000p-1;
constexpr double kLn2Lo = 0x1.a39ef35793c76p-33;
constexpr double kLog2e = 0x1.71547652b82fep+0;
constexpr double kExpMaxArg = 0x1.62e42fefa39efp+9;  // ln(DBL_MAX), rounded down
constexpr double kSqrtHalf = 0x1.6a09e667f3bcdp-1;

// pi/2 = kPio2_1 + kPio2_2 + kPio2_3 + O(2^-103), each part with 33 significant bits, so
// n * part is exact for |n| < 2^20 (fdlibm's split; |x| <= 1e6 gives |n| < 636621).
constexpr double kPio2_1 = 0x1.921fb54400000p+0;
constexpr double kPio2_2 = 0x1.0b4611a600000p-34;
constexpr double kPio2_3 = 0x1.3198a2e000000p-69;
constexpr double kTwoOverPi = 0x1.45f306dc9c883p-1;
constexpr double kSinCosMaxArg = 1e6;

// floor(t) for |t| < 2^31, whatever the rounding mode: the conversion truncates toward zero.
inline int floor_to_int(double t) {
  int n = static_cast<int>(t);
  if (static_cast<double>(n) > t) --n;
  return n;
}

// y * 2^n with a single rounding, i.e. std::ldexp(y, n); the multiplication by an exact
// power of two covers every n whose power is a normal double without a libm call.
inline double scale_pow2(double y, int n) {
  if (n < -1022 || n > 1023) return std::ldexp(y, n);
  const uint64_t bits = static_cast<uint64_t>(1023 + n) << 52;
  double p;
  std::memcpy(&p, &bits, sizeof p);
  return y * p;
}

}  // namespace

double det_exp(double x) {
  if (x != x) return x;
  if (x > kExpMaxArg) return std::numeric_limits<double>::infinity();
  if (x < -745.0) return 0.0;
  // x = n*ln2 + r with |r| <= ln2/2 (a hair more when the product rounds up); r = hi - lo,
  // hi exact because x is within a factor 2 of n * kLn2Hi.
  const int n = floor_to_int(x * kLog2e + 0.5);
  const double hi = x - static_cast<double>(n) * kLn2Hi;
  const double lo = static_cast<double>(n) * kLn2Lo;
  const double r = hi - lo;
  // fdlibm's rational form: exp(r) = 1 + r + r*c / (2 - c), with
  // c = r - r^2 * (P1 + P2 r^2 + ... + P5 r^8) (minimax, error below 2^-58 on |r| <= ln2/2).
  const double z = r * r;
  const double c =
      r - z * (0x1.555555555553ep-3 +
               z * (-0x1.6c16c16bebd93p-9 +
                    z * (0x1.1566aaf25de2cp-14 +
                         z * (-0x1.bbd41c5d26bf1p-20 + z * 0x1.6376972bea4d0p-25))));
  const double y = 1.0 - ((lo - (r * c) / (2.0 - c)) - hi);
  return scale_pow2(y, n);
}

double det_log(double x) {
  if (!(x > 0.0) || x > std::numeric_limits<double>::max()) {
    return std::numeric_limits<double>::quiet_NaN();
  }
  // x = 2^e * m, m in [sqrt(1/2), sqrt(2)); f = m - 1 is exact.
  int e;
  double m = std::frexp(x, &e);
  if (m < kSqrtHalf) {
    m *= 2.0;
    --e;
  }
  const double f = m - 1.0;
  // log(1 + f) = 2 atanh(s), s = f / (2 + f), |s| <= 0.1716:
  // = f - f^2/2 + s * (f^2/2 + R), R = sum_{k>=1} 2 s^(2k) / (2k + 1) (fdlibm's arrangement;
  // the series stops at k = 10, truncation below 1e-18 relative).
  const double s = f / (2.0 + f);
  const double z = s * s;
  const double R =
      z * (0x1.5555555555555p-1 +
           z * (0x1.999999999999ap-2 +
                z * (0x1.2492492492492p-2 +
                     z * (0x1.c71c71c71c71cp-3 +
                          z * (0x1.745d1745d1746p-3 +
                               z * (0x1.3b13b13b13b14p-3 +
                                    z * (0x1.1111111111111p-3 +
                                         z * (0x1.e1e1e1e1e1e1ep-4 +
                                              z * (0x1.af286bca1af28p-4 +
                                                   z * 0x1.8618618618618p-4)))))))));
  const double hfsq = 0.5 * f * f;
  const double k = static_cast<double>(e);
  return k * kLn2Hi - ((hfsq - (s * (hfsq + R) + k * kLn2Lo)) - f);
}

void det_sincos(double x, double* s, double* c) {
  if (!(std::fabs(x) <= kSinCosMaxArg)) {
    *s = *c = std::numeric_limits<double>::quiet_NaN();
    return;
  }
  // x = n*(pi/2) + r, |r| <= pi/4 (a hair more when the product rounds up). x - n*kPio2_1 is
  // exact (x is within a factor 2 of it), so r carries an absolute error near 1e-16.
  const int n = floor_to_int(x * kTwoOverPi + 0.5);
  const double fn = static_cast<double>(n);
  const double r = ((x - fn * kPio2_1) - fn * kPio2_2) - fn * kPio2_3;
  const double z = r * r;
  // Taylor series (coefficients +-1/k! rounded to nearest); on |r| <= pi/4 the first
  // omitted terms, r^19/19! and r^20/20!, are below 1e-19.
  const double sin_r =
      r + r * z *
              (-0x1.5555555555555p-3 +
               z * (0x1.1111111111111p-7 +
                    z * (-0x1.a01a01a01a01ap-13 +
                         z * (0x1.71de3a556c734p-19 +
                              z * (-0x1.ae64567f544e4p-26 +
                                   z * (0x1.6124613a86d09p-33 +
                                        z * (-0x1.ae7f3e733b81fp-41 +
                                             z * 0x1.952c77030ad4ap-49)))))));
  const double cos_tail =
      z * z *
      (0x1.5555555555555p-5 +
       z * (-0x1.6c16c16c16c17p-10 +
            z * (0x1.a01a01a01a01ap-16 +
                 z * (-0x1.27e4fb7789f5cp-22 +
                      z * (0x1.1eed8eff8d898p-29 +
                           z * (-0x1.93974a8c07c9dp-37 +
                                z * (0x1.ae7f3e733b81fp-45 + z * -0x1.6827863b97d97p-53)))))));
  // cos r = 1 - z/2 + tail; ((1 - w) - hz) is the exact rounding error of w = 1 - z/2.
  const double hz = 0.5 * z;
  const double w = 1.0 - hz;
  const double cos_r = w + (((1.0 - w) - hz) + cos_tail);
  switch (n & 3) {  // two's complement: n & 3 is n mod 4 for negative n too
    case 0: *s = sin_r; *c = cos_r; break;
    case 1: *s = cos_r; *c = -sin_r; break;
    case 2: *s = -sin_r; *c = -cos_r; break;
    default: *s = -cos_r; *c = sin_r; break;
  }
}

float det_expf(float x) { return static_cast<float>(det_exp(static_cast<double>(x))); }

// The elementwise loops run on kernels/vec.h (one variant per ISA, identical bits).
float silu(float x) {
  float g = x;
  const float one = 1.0f;
  vec_ops().swiglu(&g, &one, 1);  // silu(x) * 1, exact
  return g;
}

void exp_sub_max(const float* x, int64_t n, float m, float* out) {
  vec_ops().exp_sub_max(x, n, m, out);
}

void swiglu_inplace(float* gate, const float* up, int64_t n) { vec_ops().swiglu(gate, up, n); }

void rms_norm(const float* x, const float* w, int64_t n, float eps, float* y) {
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    const double v = x[i];
    sum += v * v;  // exact product: two 24-bit significands fit in 53 bits
  }
  const float ms = static_cast<float>(sum / static_cast<double>(n));
  const float inv = 1.0f / std::sqrt(ms + eps);
  for (int64_t i = 0; i < n; ++i) y[i] = (x[i] * inv) * w[i];
}

void softmax_inplace(float* x, int64_t n) {
  float m = x[0];
  int nan = 0;
  for (int64_t i = 0; i < n; ++i) {
    nan |= x[i] != x[i];
    m = x[i] > m ? x[i] : m;
  }
  if (nan || !(m > -std::numeric_limits<float>::infinity()) ||
      m == std::numeric_limits<float>::infinity()) {
    for (int64_t i = 0; i < n; ++i) x[i] = std::numeric_limits<float>::quiet_NaN();
    return;
  }
  const VecOps& ops = vec_ops();
  ops.exp_sub_max_inplace(x, n, m);
  ops.divide(x, ops.sum8(x, n), n);
}

void rope_tables(double theta, int64_t head_dim, int64_t n_pos, float* cos_tab, float* sin_tab) {
  const int64_t half = head_dim / 2;
  const double log_theta = det_log(theta);
  // Column by column, so each inverse frequency is computed once without scratch memory.
  for (int64_t i = 0; i < half; ++i) {
    const double exponent = static_cast<double>(2 * i) / static_cast<double>(head_dim);
    const double inv_freq = det_exp(-exponent * log_theta);
    for (int64_t p = 0; p < n_pos; ++p) {
      double s, c;
      det_sincos(static_cast<double>(p) * inv_freq, &s, &c);
      cos_tab[p * half + i] = static_cast<float>(c);
      sin_tab[p * half + i] = static_cast<float>(s);
    }
  }
}

void rope_apply(float* x, int64_t head_dim, const float* cos_row, const float* sin_row) {
  const int64_t half = head_dim / 2;
  for (int64_t i = 0; i < half; ++i) {
    const float a = x[i];
    const float b = x[i + half];
    x[i] = a * cos_row[i] - b * sin_row[i];
    x[i + half] = b * cos_row[i] + a * sin_row[i];
  }
}

}  // namespace fwa
