// SPDX-License-Identifier: Apache-2.0
#include "kernels/matmul.h"

#include <algorithm>
#include <cstring>

namespace fwa {
namespace {

size_t align64(size_t n) { return (n + 63) / 64 * 64; }

constexpr int64_t kChunksPerThread = 4;

struct Split {
  const MatmulArgs* args;
  MatmulFn fn;
  int n_chunks;
};

// Chunk i is a fixed, contiguous range of tiles; whichever thread claims it computes it.
void run_chunk(void* ctx, int chunk) {
  const Split& s = *static_cast<const Split*>(ctx);
  const int64_t tiles = s.args->tile_end - s.args->tile_begin;
  MatmulArgs a = *s.args;
  a.tile_begin = s.args->tile_begin + tiles * chunk / s.n_chunks;
  a.tile_end = s.args->tile_begin + tiles * (chunk + 1) / s.n_chunks;
  if (a.tile_end > a.tile_begin) s.fn(a);
}

}  // namespace

MatmulOp matmul_op_for(int64_t M, ComputeMode mode) {
  if (M == 1) return mode == ComputeMode::exact ? MatmulOp::gemv_exact : MatmulOp::gemv_fast;
  return mode == ComputeMode::exact ? MatmulOp::gemm_exact : MatmulOp::gemm_fast;
}

size_t matmul_workspace_bytes(const PackedLayout& L, int64_t M, ComputeMode mode) {
  const size_t k_pad = size_t(L.k_chunks) * kChunk;
  if (mode == ComputeMode::exact) {
    return L.K % kChunk == 0 ? 0 : align64(size_t(M) * k_pad * sizeof(float));
  }
  return align64(size_t(M) * k_pad) + 2 * align64(size_t(M) * size_t(L.k_chunks) * 4);
}

namespace {

// Checks a request and fills the kernel arguments, preparing its activations in its workspace
// (exact mode: rows padded to the chunk end when K is ragged; fast mode: quantized per chunk).
Status prepare(const MatmulRequest& r, MatmulArgs* out) {
  if (!r.layout || !r.w || !r.x || !r.y || r.M < 1) return Status::invalid_argument;
  const PackedLayout& L = *r.layout;
  if (r.x_stride < L.K || r.y_stride < L.N) return Status::shape_mismatch;
  if (r.workspace_bytes < matmul_workspace_bytes(L, r.M, r.mode)) return Status::buffer_too_small;
  const int64_t k_pad = L.k_chunks * kChunk;

  MatmulArgs a{};
  a.layout = &L;
  a.w = r.w;
  a.M = r.M;
  a.y = r.y;
  a.y_stride = r.y_stride;
  a.tile_begin = 0;
  a.tile_end = L.n_tiles;
  uint8_t* ws = static_cast<uint8_t*>(r.workspace);
  if (r.mode == ComputeMode::exact) {
    if (L.K % kChunk == 0) {
      a.x = r.x;
      a.x_stride = r.x_stride;
    } else {  // copy into rows padded with zeros to the chunk end
      float* xp = reinterpret_cast<float*>(ws);
      for (int64_t m = 0; m < r.M; ++m) {
        std::memcpy(xp + m * k_pad, r.x + m * r.x_stride, size_t(L.K) * sizeof(float));
        std::memset(xp + m * k_pad + L.K, 0, size_t(k_pad - L.K) * sizeof(float));
      }
      a.x = xp;
      a.x_stride = k_pad;
    }
  } else {
    int8_t* xq = reinterpret_cast<int8_t*>(ws);
    float* xd = reinterpret_cast<float*>(ws + align64(size_t(r.M) * size_t(k_pad)));
    int32_t* xs = reinterpret_cast<int32_t*>(reinterpret_cast<uint8_t*>(xd) +
                                             align64(size_t(r.M) * size_t(L.k_chunks) * 4));
    const Status st = quantize_activations(r.x, r.M, L.K, r.x_stride, L.k_chunks, xq, xd, xs);
    if (st != Status::ok) return st;
    a.xq = xq;
    a.xd = xd;
    a.xsum = xs;
    a.xq_stride = k_pad;
    a.xd_stride = L.k_chunks;
  }
  *out = a;
  return Status::ok;
}

// Requests sharing activations (same x, stride, M, K and mode) reuse the first one's prepared
// copy, so an MoE token's experts quantize their common input once.
bool same_input(const MatmulRequest& a, const MatmulRequest& b) {
  return a.x == b.x && a.x_stride == b.x_stride && a.M == b.M && a.mode == b.mode &&
         a.layout->K == b.layout->K;
}

struct BatchChunk {
  int16_t request;
  int64_t tile_begin, tile_end;
};

struct Batch {
  const MatmulArgs* args;
  const MatmulFn* fns;
  const BatchChunk* chunks;
};

void run_batch_chunk(void* ctx, int chunk) {
  const Batch& b = *static_cast<const Batch*>(ctx);
  const BatchChunk& c = b.chunks[chunk];
  MatmulArgs a = b.args[c.request];
  a.tile_begin = c.tile_begin;
  a.tile_end = c.tile_end;
  b.fns[c.request](a);
}

}  // namespace

Status matmul(const MatmulRequest& r) {
  MatmulArgs a;
  const Status st = prepare(r, &a);
  if (st != Status::ok) return st;
  const PackedLayout& L = *r.layout;
  const KernelChoice k = select_kernel(matmul_op_for(r.M, r.mode), r.variant);
  int n_threads = r.pool ? r.n_threads : 1;
  if (r.pool && n_threads > r.pool->size()) n_threads = r.pool->size();
  if (n_threads <= 1 || L.n_tiles < 2) {
    k.fn(a);
  } else {
    // A few chunks per thread, so a thread that is descheduled or slow costs little.
    const int64_t n_chunks = std::min<int64_t>(L.n_tiles, int64_t(n_threads) * kChunksPerThread);
    Split split{&a, k.fn, int(n_chunks)};
    r.pool->run(int(n_chunks), n_threads, run_chunk, &split);
  }
  return Status::ok;
}

Status matmul_batch(const MatmulRequest* reqs, int n, ThreadPool* pool, int n_threads) {
  if (n < 0 || n > kMatmulBatchMax || (n > 0 && !reqs)) return Status::invalid_argument;
  MatmulArgs args[kMatmulBatchMax];
  MatmulFn fns[kMatmulBatchMax];
  int64_t total_tiles = 0;
  for (int i = 0; i < n; ++i) {
    const MatmulRequest& r = reqs[i];
    int shared = -1;
    for (int j = 0; j < i && shared < 0; ++j)
      if (r.layout && reqs[j].layout && same_input(r, reqs[j])) shared = j;
    if (shared >= 0) {
      if (!r.w || !r.y || r.y_stride < r.layout->N) return Status::invalid_argument;
      args[i] = args[shared];
      args[i].layout = r.layout;
      args[i].w = r.w;
      args[i].y = r.y;
      args[i].y_stride = r.y_stride;
      args[i].tile_begin = 0;
      args[i].tile_end = r.layout->n_tiles;
    } else {
      const Status st = prepare(r, &args[i]);
      if (st != Status::ok) return st;
    }
    fns[i] = select_kernel(matmul_op_for(r.M, r.mode), r.variant).fn;
    total_tiles += r.layout->n_tiles;
  }
  if (!pool) n_threads = 1;
  if (pool && n_threads > pool->size()) n_threads = pool->size();
  if (n_threads <= 1) {
    for (int i = 0; i < n; ++i) fns[i](args[i]);
    return Status::ok;
  }
  // Cut every request into chunks of about total / (threads * 4) tiles, at most
  // kMatmulBatchChunks in all; chunks are claimed dynamically from one counter.
  BatchChunk chunks[kMatmulBatchChunks];
  const int64_t target = std::max<int64_t>(
      1, std::max(total_tiles / (int64_t(n_threads) * kChunksPerThread),
                  (total_tiles + kMatmulBatchChunks - n - 1) / (kMatmulBatchChunks - n)));
  int n_chunks = 0;
  for (int i = 0; i < n; ++i) {
    const int64_t tiles = args[i].layout->n_tiles;
    const int64_t pieces = std::max<int64_t>(1, tiles / target);
    for (int64_t p = 0; p < pieces; ++p)
      chunks[n_chunks++] = BatchChunk{int16_t(i), tiles * p / pieces, tiles * (p + 1) / pieces};
  }
  Batch b{args, fns, chunks};
  pool->run(n_chunks, n_threads, run_batch_chunk, &b);
  return Status::ok;
}

}  // namespace fwa
