/* SPDX-License-Identifier: Apache-2.0 */
// What a block of the forward pass (attention, MoE, dense MLP) uses of its session for one
// chunk: the pool and how many of its threads are active, the compute mode, the matmul
// workspace, and the count of weight bytes read.
#pragma once
#include <algorithm>
#include <cstdint>

#include "core/thread_pool.h"
#include "model/linear.h"

namespace fwa {

struct BlockContext {
  ThreadPool* pool = nullptr;
  int active_threads = 1;
  ComputeMode mode = ComputeMode::exact;
  void* workspace = nullptr;  // 64-aligned, for any linear of the model at the chunk's rows
  size_t workspace_bytes = 0;
  uint64_t* weight_bytes_read = nullptr;

  // A request on the context's pool, mode and workspace.
  LinearRequest request(const float* x, int64_t rows, int64_t x_stride, float* y,
                        int64_t y_stride) const {
    LinearRequest r;
    r.x = x;
    r.M = rows;
    r.x_stride = x_stride;
    r.y = y;
    r.y_stride = y_stride;
    r.mode = mode;
    r.workspace = workspace;
    r.workspace_bytes = workspace_bytes;
    r.pool = pool;
    r.n_threads = active_threads;
    return r;
  }

  Status run_linear(const Linear& w, const float* x, int64_t rows, int64_t x_stride, float* y,
                    int64_t y_stride) const {
    *weight_bytes_read += linear_bytes(w);
    return linear_forward(w, request(x, rows, x_stride, y, y_stride));
  }

  Status run_batch(const Linear* const* w, const LinearRequest* r, int n) const {
    for (int i = 0; i < n; ++i) *weight_bytes_read += linear_bytes(*w[i]);
    return linear_batch(w, r, n);
  }

  // Runs f(begin, end) over [0, n) in blocks of `per` on the active cores (one block: inline,
  // no region). For per-row work whose rows are independent: results never depend on it.
  template <typename F>
  void for_blocks(int64_t n, int64_t per, F&& f) const {
    struct Job {
      F* f;
      int64_t n, per;
    };
    Job job{&f, n, per};
    auto block = [](void* ctx, int c) {
      const Job& j = *static_cast<const Job*>(ctx);
      const int64_t b = int64_t(c) * j.per;
      (*j.f)(b, std::min(j.n, b + j.per));
    };
    const int64_t blocks = (n + per - 1) / per;
    if (active_threads > 1 && blocks > 1)
      pool->run(int(blocks), active_threads, block, &job);
    else
      for (int64_t c = 0; c < blocks; ++c) block(&job, int(c));
  }
};

// Rows per block of the per-row work spread over the cores (norms, RoPE, routing, sums).
constexpr int64_t kRowsPerBlock = 8;

}  // namespace fwa
