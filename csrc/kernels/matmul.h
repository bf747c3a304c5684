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

// The operation matmul() would run for this M and mode.
MatmulOp matmul_op_for(int64_t M, ComputeMode mode);

}  // namespace fwa
