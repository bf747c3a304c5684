// SPDX-License-Identifier: Apache-2.0
#include "model/linear.h"

#include <algorithm>
#include <cstring>

#include "kernels/vec.h"

namespace fwa {

namespace {

inline float bf16_to_fp32(uint16_t h) {
  const uint32_t bits = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

inline float load_float(DType t, const uint8_t* p, int64_t i) {
  if (t == DType::f32) {
    float f;
    std::memcpy(&f, p + 4 * i, 4);
    return f;
  }
  uint16_t h;
  std::memcpy(&h, p + 2 * i, 2);
  return t == DType::f16 ? fp16_to_fp32(h) : bf16_to_fp32(h);
}

// The canonical float dot product (see linear.h). T converts one stored element.
template <typename Load>
float dot8(const float* x, int64_t K, Load load) {
  float a[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t k = 0;
  for (; k + 8 <= K; k += 8)
    for (int j = 0; j < 8; ++j) a[j] = a[j] + x[k + j] * load(k + j);
  for (int j = 0; k + j < K; ++j) a[j] = a[j] + x[k + j] * load(k + j);
  return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
}

// A 16-bit float row (f32 rows go through VecOps::dot8_rows, vectorised per ISA).
float half_row_dot(const Linear& w, int64_t n, const float* x) {
  const int64_t K = w.K;
  const uint16_t* row = reinterpret_cast<const uint16_t*>(w.data) + n * K;
  if (w.dtype == DType::bf16) return dot8(x, K, [row](int64_t i) { return bf16_to_fp32(row[i]); });
  return dot8(x, K, [row](int64_t i) { return fp16_to_fp32(row[i]); });
}

// A float layer's work is split into (weight rows x activation rows) chunks: weight rows in
// blocks of up to 64, fewer when that leaves cores without a chunk (a router has 64 rows),
// activation rows in blocks of 16 (a prefill chunk's rows). Every output is one dot product,
// so the split never changes a value.
constexpr int64_t kFloatRowsPerChunk = 64, kFloatActRowsPerChunk = 16;

struct FloatJob {
  const Linear* w;
  const LinearRequest* r;
  int64_t rows_per_chunk, n_blocks;
};

void float_rows(void* ctx, int chunk) {
  const FloatJob& j = *static_cast<FloatJob*>(ctx);
  const int64_t n0 = int64_t(chunk) % j.n_blocks * j.rows_per_chunk;
  const int64_t n1 = std::min(j.w->N, n0 + j.rows_per_chunk);
  const int64_t m0 = int64_t(chunk) / j.n_blocks * kFloatActRowsPerChunk;
  const int64_t m1 = std::min(j.r->M, m0 + kFloatActRowsPerChunk);
  const Linear& w = *j.w;
  const VecOps& ops = vec_ops();
  for (int64_t m = m0; m < m1; ++m) {
    const float* x = j.r->x + m * j.r->x_stride;
    float* y = j.r->y + m * j.r->y_stride;
    if (w.dtype == DType::f32) {  // vectorised per ISA, several rows at once
      ops.dot8_rows(x, reinterpret_cast<const float*>(w.data) + n0 * w.K, w.K, n1 - n0, w.K,
                    y + n0);
    } else {
      for (int64_t n = n0; n < n1; ++n) y[n] = half_row_dot(w, n, x);
    }
  }
}

}  // namespace

Status bind_linear(const TensorInfo& info, const uint8_t* data, Linear* out,
                   std::string* message) {
  if (info.rank != 2) {
    if (message) *message = "tensor " + info.name + ": a linear weight must be 2-D";
    return Status::malformed;
  }
  Linear l;
  l.dtype = info.dtype;
  l.N = info.shape[0];
  l.K = info.shape[1];
  l.data = data;
  if (l.dtype == DType::packed) {
    const Status st = packed_layout(info.quant, l.N, l.K, &l.layout);
    if (st != Status::ok) {
      if (message) *message = "tensor " + info.name + ": unsupported packed format";
      return st;
    }
  }
  *out = l;
  return Status::ok;
}

void linear_prefetch_head(const Linear& w) {
  if (w.dtype != DType::packed || !w.data) return;
  constexpr int64_t kStreams = 4, kHeadBytes = 3072;  // the x86 GEMV's streams and lead
  const int64_t tb = int64_t(w.layout.tile_bytes);
  const int64_t tiles = std::min<int64_t>(kStreams, int64_t(w.layout.n_tiles));
  const int64_t head = std::min<int64_t>(kHeadBytes, tb);
  for (int64_t t = 0; t < tiles; ++t)
    for (int64_t b = 0; b < head; b += 64) __builtin_prefetch(w.data + t * tb + b, 0, 2);
}

size_t linear_bytes(const Linear& w) {
  if (w.dtype == DType::packed) return w.layout.total_bytes;
  return size_t(w.N * w.K) * (w.dtype == DType::f32 ? 4 : 2);
}

size_t linear_workspace_bytes(const Linear& w, int64_t M, ComputeMode mode) {
  return w.dtype == DType::packed ? matmul_workspace_bytes(w.layout, M, mode) : 0;
}

// The kernel request of a packed layer.
static MatmulRequest matmul_request(const Linear& w, const LinearRequest& r) {
  MatmulRequest q;
  q.layout = &w.layout;
  q.w = w.data;
  q.x = r.x;
  q.M = r.M;
  q.x_stride = r.x_stride;
  q.y = r.y;
  q.y_stride = r.y_stride;
  q.mode = r.mode;
  q.workspace = r.workspace;
  q.workspace_bytes = r.workspace_bytes;
  q.pool = r.pool;
  q.n_threads = r.n_threads;
  return q;
}

Status linear_forward(const Linear& w, const LinearRequest& r) {
  if (w.dtype == DType::packed) return matmul(matmul_request(w, r));
  const int threads = r.pool ? std::max(1, r.n_threads) : 1;
  const int64_t m_blocks = (r.M + kFloatActRowsPerChunk - 1) / kFloatActRowsPerChunk;
  int64_t rows_per_chunk = kFloatRowsPerChunk;
  while (rows_per_chunk > 8 && m_blocks * ((w.N + rows_per_chunk - 1) / rows_per_chunk) < threads)
    rows_per_chunk /= 2;
  const int64_t n_blocks = (w.N + rows_per_chunk - 1) / rows_per_chunk;
  FloatJob job{&w, &r, rows_per_chunk, n_blocks};
  const int64_t n_chunks = n_blocks * m_blocks;
  if (threads > 1 && n_chunks > 1)
    r.pool->run(int(n_chunks), threads, float_rows, &job);
  else
    for (int64_t c = 0; c < n_chunks; ++c) float_rows(&job, int(c));
  return Status::ok;
}

Status linear_batch(const Linear* const* w, const LinearRequest* r, int n) {
  bool packed = true;
  for (int i = 0; i < n; ++i) packed = packed && w[i]->dtype == DType::packed;
  if (!packed) {
    for (int i = 0; i < n; ++i) {
      const Status st = linear_forward(*w[i], r[i]);
      if (st != Status::ok) return st;
    }
    return Status::ok;
  }
  MatmulRequest q[kMatmulBatchMax];
  for (int i0 = 0; i0 < n; i0 += kMatmulBatchMax) {
    const int k = std::min(n - i0, kMatmulBatchMax);
    for (int j = 0; j < k; ++j) q[j] = matmul_request(*w[i0 + j], r[i0 + j]);
    const Status st = matmul_batch(q, k, r[0].pool, r[0].n_threads);
    if (st != Status::ok) return st;
  }
  return Status::ok;
}

void linear_row(const Linear& w, int64_t n, float* out) {
  if (w.dtype != DType::packed) {
    const uint8_t* row = w.data + size_t(n * w.K) * (w.dtype == DType::f32 ? 4 : 2);
    for (int64_t k = 0; k < w.K; ++k) out[k] = load_float(w.dtype, row, k);
    return;
  }
  const PackedLayout& L = w.layout;
  for (int64_t b = 0; b < L.n_blocks; ++b) {
    const float s = packed_scale(L, w.data, n, b);
    const int z = packed_zero(L, w.data, n, b);
    const int64_t k1 = std::min(L.K, (b + 1) * int64_t(L.fmt.block));
    for (int64_t k = b * L.fmt.block; k < k1; ++k)
      out[k] = float(packed_code(L, w.data, n, k) - z) * s;
  }
}

namespace {

// Index of the first stored value whose exponent bits are all ones (NaN or Inf), or n. The
// check is over bits, not values, so it vectorises and needs no conversion.
template <typename U>
int64_t first_all_ones(const uint8_t* p, int64_t n, U mask) {
  constexpr int64_t kBlock = 256;
  for (int64_t b = 0; b < n; b += kBlock) {
    const int64_t e = std::min(n, b + kBlock);
    U hit = 0;
    for (int64_t i = b; i < e; ++i) {
      U v;
      std::memcpy(&v, p + i * int64_t(sizeof(U)), sizeof(U));
      hit |= U((v & mask) == mask);
    }
    if (hit)
      for (int64_t i = b; i < e; ++i) {
        U v;
        std::memcpy(&v, p + i * int64_t(sizeof(U)), sizeof(U));
        if ((v & mask) == mask) return i;
      }
  }
  return n;
}

}  // namespace

bool linear_find_non_finite(const Linear& w, int64_t* row, int64_t* col, bool* is_scale) {
  if (w.dtype != DType::packed) {
    const int64_t n = w.N * w.K;
    const int64_t i = w.dtype == DType::f32 ? first_all_ones<uint32_t>(w.data, n, 0x7f800000u)
                      : w.dtype == DType::f16 ? first_all_ones<uint16_t>(w.data, n, 0x7c00)
                                              : first_all_ones<uint16_t>(w.data, n, 0x7f80);
    if (i == n) return false;
    *row = i / w.K;
    *col = i % w.K;
    *is_scale = false;
    return true;
  }
  // Each tile's scales are one run of [n_blocks][16 rows]; rows past N (the last tile's
  // padding) are never used.
  const PackedLayout& L = w.layout;
  const bool f16 = L.fmt.scale == ScaleType::f16;
  const int64_t per_tile = L.n_blocks * kTileRows;
  for (int64_t t = 0; t < L.n_tiles; ++t) {
    const uint8_t* scales = w.data + size_t(t) * L.tile_bytes + L.scales_offset;
    for (int64_t from = 0; from < per_tile;) {
      const uint8_t* p = scales + from * (f16 ? 2 : 4);
      const int64_t i = from + (f16 ? first_all_ones<uint16_t>(p, per_tile - from, 0x7c00)
                                     : first_all_ones<uint32_t>(p, per_tile - from, 0x7f800000u));
      if (i == per_tile) break;
      const int64_t n = t * kTileRows + i % kTileRows;
      if (n < L.N) {
        *row = n;
        *col = i / kTileRows;
        *is_scale = true;
        return true;
      }
      from = i + 1;
    }
  }
  return false;
}

}  // namespace fwa
