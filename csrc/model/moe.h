/* SPDX-License-Identifier: Apache-2.0 */
// The mixture-of-experts block of a session: router, top-k, grouping the chunk's tokens per
// routed expert, and the experts' execution (one GEMM per expert over its tokens, split over
// the cores or whole experts packed onto cores), then each token's weighted sum.
//
// Its buffers are declared in buffer plans (model/buffer_plan.h): the persistent ones (expert
// tables, packing bins, routing statistics) in the session's plan, allocated at create; the
// scratch of a chunk (routing, groups, expert inputs/outputs and the experts' matmul
// workspace, all proportional to the chunk's rows) in a per-chunk plan carved on every run
// from a region the session sized for its largest chunk. The expert workspace is then handed
// out request by request with the bounds-checked Arena::take: a plan smaller than the requests
// is an error, never an overflow.
#pragma once
#include <cstdint>
#include <string>

#include "core/status.h"
#include "model/block_context.h"
#include "model/buffer_plan.h"
#include "model/model.h"

namespace fwa {

class MoeBlock {
 public:
  // Declares the persistent buffers for `model` (nothing without MoE layers) run on up to
  // `n_threads` cores, chunks of up to `chunk` rows, in `mode`.
  void declare(const Model& model, int n_threads, int64_t chunk, ComputeMode mode,
               BufferPlan* plan);
  // The scratch of one chunk of `rows` (<= chunk) rows. MoE layers must then be run with at
  // least its bytes() of scratch.
  void declare_scratch(int64_t rows, BufferPlan* plan);

  // Layer l over `rows` rows of normalised input xn [rows, H]: writes the weighted expert sum
  // of each row to out [rows, H]. The scratch is carved from [scratch, scratch + bytes).
  Status run(const BlockContext& ctx, int64_t l, const float* xn, int64_t rows, float* out,
             void* scratch, size_t scratch_bytes, std::string* message);

  // Routing statistics (Session::expert_tokens).
  void clear_expert_hits();
  const uint64_t* expert_tokens() const { return expert_tokens_; }
  int64_t experts_activated(int64_t layer) const;

 private:
  // Runs the n routed experts of expert_lin_/expert_req_ packed whole onto `cores` threads.
  Status run_experts_packed(const BlockContext& ctx, int n_req, int cores);
  void release_experts(int64_t layer, int n) const;  // unpins expert_ids_[0..n) of a layer
  // Decode steps with prefetching: runs the next MoE layer's router on this layer's input
  // (renormalised with the next layer's norm weights) and queues its top-k experts.
  Status predict_next(const BlockContext& ctx, int64_t l, const float* xn, int64_t rows);

  const Model* model_ = nullptr;
  int64_t H_ = 0, I_ = 0, E_ = 0, K_ = 0, L_ = 0;
  int n_threads_ = 1;

  // Persistent, E = experts, T = threads.
  int32_t* expert_ids_ = nullptr;          // [E] routed experts of a chunk, ascending
  const Linear** expert_lin_ = nullptr;    // [3E] gate/up pairs, then downs
  LinearRequest* expert_req_ = nullptr;    // [3E]
  int32_t* bin_items_ = nullptr;           // [E] experts packed onto cores
  int32_t* bin_of_ = nullptr;              // [E]
  int32_t* bin_start_ = nullptr;           // [T + 1]
  int64_t* bin_load_ = nullptr;            // [T]
  Status* bin_status_ = nullptr;           // [T]
  uint64_t* expert_tokens_ = nullptr;      // [L, E] tokens routed
  uint8_t* pred_mask_ = nullptr;           // [E] experts predicted for layer pred_layer_
  int64_t pred_layer_ = -1;

  // Scratch of the chunk under way, R = rows: carved by run().
  float* router_ = nullptr;         // [R, E]
  float* topk_w_ = nullptr;         // [R, K]
  int32_t* topk_e_ = nullptr;       // [R, K]
  int32_t* token_entries_ = nullptr;  // [R, K] a row's group slots, sorted
  float* group_w_ = nullptr;        // [R * K]
  int32_t* group_row_ = nullptr;    // [R * K]
  int32_t* group_start_ = nullptr;  // [E + 1]
  float* xe_ = nullptr;             // [R * K, H] gathered expert inputs
  float* gate_ = nullptr;           // [R * K, I]
  float* up_ = nullptr;             // [R * K, I]
  float* down_ = nullptr;           // [R * K, H]
  float* pred_x_ = nullptr;         // [R, H] the next MoE layer's router input, predicted
  float* pred_r_ = nullptr;         // [R, E] its router logits
  uint8_t* expert_ws_ = nullptr;    // the experts' matmul workspace
  size_t expert_ws_bytes_ = 0;
};

}  // namespace fwa
