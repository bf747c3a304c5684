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

Status matmul(const MatmulRequest& r) {
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

}  // namespace fwa
