/* SPDX-License-Identifier: Apache-2.0 */
// The steps of a forward pass that a session's chunk (Session::forward_chunk: positions of one
// sequence) and a batched decode step (DecodeBatch::forward: one position of each slot's
// sequence) share, so that both compute every row the same way. Activations are [rows, width]
// row-major; each function's per-row arithmetic does not depend on the number of rows.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "core/status.h"
#include "model/block_context.h"
#include "model/buffer_plan.h"
#include "model/model.h"
#include "model/moe.h"

namespace fwa {

// True when every x[0..n) is finite: a scan of the exponent bits (vectorisable, no branch per
// value).
bool all_finite(const float* x, int64_t n);

// The matmul workspace the largest of the model's linears needs at `rows` rows in `mode`.
size_t forward_workspace_bytes(const Model& model, int64_t rows, ComputeMode mode);

// The dense MLP's intermediate size, 0 when every layer is MoE.
int64_t dense_intermediate(const Model& model);

// The MLP block's scratch for `rows` rows: the larger of the MoE block's and the dense MLP's.
size_t mlp_scratch_bytes(MoeBlock& moe, int64_t rows, int64_t dense_I);

// x[r] = the embedding row of ids[r], counted in the context's weight bytes.
void embed_rows(const BlockContext& ctx, const Model& model, const int32_t* ids, int64_t rows,
                float* x);

// Per row: the residual add of the previous block's output tmp into x (add: not before the
// first block), then xn = rms_norm(x, norm).
void residual_norm(const BlockContext& ctx, const ModelConfig& c, const std::vector<float>& norm,
                   bool add, int64_t rows, float* x, const float* tmp, float* xn);

// Rows [first, rows): the last block's residual add, then the final norm.
void final_norm(const Model& model, int64_t first, int64_t rows, float* x, const float* tmp,
                float* xn);

// Layer l's attention projections of xn [rows, H]: q [rows, nh*hd], k and v [rows, nkv*hd], in
// one parallel region.
Status qkv_projections(const BlockContext& ctx, const Model& model, int64_t l, const float* xn,
                       int64_t rows, float* q, float* k, float* v, std::string* message);

// Layer l's MLP block over xn [rows, H] into tmp [rows, H]: the MoE block, or the dense
// SwiGLU MLP with its gate and up rows carved from the scratch (mlp_scratch_bytes).
Status mlp_block(const BlockContext& ctx, MoeBlock& moe, const Model& model, int64_t l,
                 const float* xn, int64_t rows, void* scratch, size_t scratch_bytes, float* tmp,
                 std::string* message);

// io_error when the model's artifact was truncated while mapped (SIGBUS, artifact/reader.h):
// whatever was computed since read zero pages.
Status check_weights_mapped(const Model& model, std::string* message);

}  // namespace fwa
