/* SPDX-License-Identifier: Apache-2.0 */
// A linear layer y = W x over the artifact's bytes, with no copy: W[N, K] is either packed (the
// kernel layout, run by kernels/matmul) or a float matrix (f32/f16/bf16, row-major, as a
// checkpoint left it: routers, embeddings, lm_head).
//
// Float matrices use one canonical order, the same on every ISA: each output is 8 partial sums
// (lane j takes k = j mod 8, in ascending k, multiply then add), combined as
// ((a0+a1)+(a2+a3))+((a4+a5)+(a6+a7)). Independent lanes let the compiler vectorise the loop
// without reassociating anything.
#pragma once
#include <cstddef>
#include <cstdint>

#include "artifact/reader.h"
#include "core/status.h"
#include "core/thread_pool.h"
#include "kernels/matmul.h"
#include "quant/format.h"

namespace fwa {

struct Linear {
  DType dtype = DType::f32;
  int64_t N = 0, K = 0;
  PackedLayout layout;            // dtype == packed
  const uint8_t* data = nullptr;  // tensor bytes in the artifact
  bool present() const { return data != nullptr; }
};

// Binds a tensor of the artifact as a linear layer (shape [N, K]); malformed if it is not 2-D.
Status bind_linear(const TensorInfo& info, const uint8_t* data, Linear* out,
                   std::string* message);

// Bytes of the weights (what one forward pass over all rows reads from the artifact).
size_t linear_bytes(const Linear& w);

// Prefetches into L2 the head of the first tile streams of a packed layer (what its GEMV
// reads first, before the kernel's own prefetch is ahead of it), so that a layer run right
// after another does not start cold. No-op for float layers.
void linear_prefetch_head(const Linear& w);

// Workspace bytes linear_forward needs for up to M rows in `mode`.
size_t linear_workspace_bytes(const Linear& w, int64_t M, ComputeMode mode);

struct LinearRequest {
  const float* x = nullptr;
  int64_t M = 1, x_stride = 0;
  float* y = nullptr;
  int64_t y_stride = 0;
  ComputeMode mode = ComputeMode::exact;
  void* workspace = nullptr;
  size_t workspace_bytes = 0;
  ThreadPool* pool = nullptr;
  int n_threads = 1;
};

Status linear_forward(const Linear& w, const LinearRequest& r);

// n independent layers. When all are packed they run in parallel regions of up to
// kMatmulBatchMax (kernels/matmul.h matmul_batch: one dispatch, one activation quantization
// per distinct input); else one after the other. Uses r[0]'s pool and n_threads. Results are
// those of linear_forward, request by request.
Status linear_batch(const Linear* const* w, const LinearRequest* r, int n);

// The first non-finite (NaN or Inf) number w is made of: a float value (*row, *col), or a
// packed layer's block scale (*row, *col = its block). False when every one is finite. A scan
// of the stored bits, for the checks at open (Model::load) and on an expert's first use.
bool linear_find_non_finite(const Linear& w, int64_t* row, int64_t* col, bool* is_scale);

// Row n of W as float32 (a dequantized row for packed weights: float(u - z) * s), K values.
void linear_row(const Linear& w, int64_t n, float* out);

}  // namespace fwa
