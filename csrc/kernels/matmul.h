/* SPDX-License-Identifier: Apache-2.0 */
// y = W x for a packed weight: chooses the kernel, prepares the activations in a caller-owned
// workspace, and splits the 16-row tiles over threads. No allocation happens here.
#pragma once
#include <cstddef>
#include <cstdint>

#include "core/status.h"
#include "core/thread_pool.h"
#include "kernels/registry.h"
#include "quant/format.h"

namespace fwa {

enum class ComputeMode : int { exact = 0, fast = 1 };

// Bytes of workspace matmul() needs for M activation rows (0 when none).
size_t matmul_workspace_bytes(const PackedLayout& layout, int64_t M, ComputeMode mode);

struct MatmulRequest {
  const PackedLayout* layout = nullptr;
  const uint8_t* w = nullptr;       // layout->total_bytes of packed weights
  const float* x = nullptr;         // M rows of K floats
  int64_t M = 1;
  int64_t x_stride = 0;             // floats between rows (>= K)
  float* y = nullptr;               // M rows of N floats
  int64_t y_stride = 0;             // floats between rows (>= N)
  ComputeMode mode = ComputeMode::fast;
  void* workspace = nullptr;        // matmul_workspace_bytes(), 64-byte aligned is best
  size_t workspace_bytes = 0;
  ThreadPool* pool = nullptr;       // nullptr: run on the calling thread
  int n_threads = 1;                // tasks to split the tiles into (<= pool->size())
  const KernelVariant* variant = nullptr;  // force a variant (with fall-through); nullptr: best
};

Status matmul(const MatmulRequest& req);

// Runs n independent requests in one parallel region: their tiles are cut into chunks claimed
// from one counter, so a layer's many small matrices (the experts a token routes to) cost one
// dispatch, not one each. Requests with the same input (x, x_stride, M, K, mode) share the
// first one's prepared activations; the others' workspace is then unused. Each request's
// results are exactly those matmul() gives it. pool / n_threads as in MatmulRequest (the
// requests' own are ignored). No allocation.
constexpr int kMatmulBatchMax = 256;
constexpr int kMatmulBatchChunks = 1024;
Status matmul_batch(const MatmulRequest* reqs, int n, ThreadPool* pool, int n_threads);

// The operation matmul() would run for this M and mode.
MatmulOp matmul_op_for(int64_t M, ComputeMode mode);

}  // namespace fwa
