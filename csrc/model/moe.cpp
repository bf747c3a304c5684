// SPDX-License-Identifier: Apache-2.0
#include "model/moe.h"

#include <algorithm>
#include <cstring>
#include <limits>

#include "model/math.h"

namespace fwa {

namespace {

Status fail(std::string* message, Status st, const std::string& text) {
  if (message) *message = text;
  return st;
}

// Whole experts per core: bin b runs the experts bin_items[bin_start[b] .. bin_start[b + 1])
// one after the other, each gate|up (one quantization of its input), SwiGLU, down, on one
// thread. Every expert's values are those of the split path: no result depends on packing.
struct ExpertBinJob {
  const Linear* const* lin;
  const LinearRequest* req;  // single-threaded copies
  const int32_t* bin_items;
  const int32_t* bin_start;
  int n_req;
  int64_t I;
  Status* status;  // per bin
};

void run_expert_bin(void* ctx, int bin) {
  const ExpertBinJob& j = *static_cast<ExpertBinJob*>(ctx);
  Status st = Status::ok;
  for (int32_t k = j.bin_start[bin]; k < j.bin_start[bin + 1] && st == Status::ok; ++k) {
    const int32_t i = j.bin_items[k];
    linear_prefetch_head(*j.lin[2 * j.n_req + i]);
    if (k + 1 < j.bin_start[bin + 1]) {
      const int32_t next = j.bin_items[k + 1];
      linear_prefetch_head(*j.lin[2 * next]);
      linear_prefetch_head(*j.lin[2 * next + 1]);
    }
    st = linear_batch(j.lin + 2 * i, j.req + 2 * i, 2);
    if (st != Status::ok) break;
    const LinearRequest& gate = j.req[2 * i];
    swiglu_inplace(gate.y, j.req[2 * i + 1].y, gate.M * j.I);
    st = linear_forward(*j.lin[2 * j.n_req + i], j.req[2 * j.n_req + i]);
  }
  j.status[bin] = st;
}

}  // namespace

void MoeBlock::declare(const Model& model, int n_threads, int64_t chunk, ComputeMode mode,
                       BufferPlan* plan) {
  const ModelConfig& c = model.config();
  model_ = &model;
  H_ = c.hidden_size;
  I_ = c.moe_intermediate_size;
  E_ = c.num_experts;
  K_ = c.experts_per_tok;
  L_ = c.num_layers;
  n_threads_ = n_threads;
  // The experts' workspace: one region per expert request (gate, up, down), each 64-aligned,
  // all live at once (packed experts run concurrently); their rows add up to chunk * K per
  // kind (gate/up input is the hidden size, down's the intermediate size).
  expert_ws_bytes_ = 0;
  bool any = false;
  for (int64_t l = 0; l < L_; ++l) {
    any = any || model.layer(l).moe;
    for (const ExpertWeights& e : model.layer(l).experts)
      expert_ws_bytes_ =
          std::max(expert_ws_bytes_, 2 * linear_workspace_bytes(e.gate, chunk * K_, mode) +
                                         linear_workspace_bytes(e.down, chunk * K_, mode) +
                                         size_t(3 * E_) * 256);
  }
  // The routing statistics exist for every model (zero rows for dense layers, all zero
  // without MoE layers), so readers of [L, E] counts never meet a null array.
  plan->declare(&expert_tokens_, L_ * E_, "moe expert tokens");
  if (!any) {
    model_ = nullptr;
    return;
  }
  plan->declare(&expert_ids_, E_, "moe expert ids");
  plan->declare(&expert_lin_, 3 * E_, "moe expert layers");
  plan->declare(&expert_req_, 3 * E_, "moe expert requests");
  plan->declare(&bin_items_, E_, "moe bin items");
  plan->declare(&bin_of_, E_, "moe bin of");
  plan->declare(&bin_start_, n_threads + 1, "moe bin starts");
  plan->declare(&bin_load_, n_threads, "moe bin loads");
  plan->declare(&bin_status_, n_threads, "moe bin statuses");
  plan->declare(&pred_mask_, E_, "moe predicted experts");
}

void MoeBlock::declare_scratch(int64_t rows, BufferPlan* plan) {
  if (!model_) return;
  const int64_t R = rows, RK = rows * K_;
  plan->declare(&router_, R * E_, "moe router");
  plan->declare(&topk_w_, RK, "moe top-k weights");
  plan->declare(&topk_e_, RK, "moe top-k experts");
  plan->declare(&token_entries_, RK, "moe token entries");
  plan->declare(&group_w_, RK, "moe group weights");
  plan->declare(&group_row_, RK, "moe group rows");
  plan->declare(&group_start_, E_ + 1, "moe group starts");
  plan->declare(&xe_, RK * H_, "moe expert inputs");
  plan->declare(&gate_, RK * I_, "moe gate");
  plan->declare(&up_, RK * I_, "moe up");
  plan->declare(&down_, RK * H_, "moe down");
  plan->declare(&expert_ws_, int64_t(expert_ws_bytes_), "moe expert workspace");
  plan->declare(&pred_x_, R * H_, "moe predicted router input");
  plan->declare(&pred_r_, R * E_, "moe predicted router");
}

void MoeBlock::clear_expert_hits() {
  if (expert_tokens_) std::fill(expert_tokens_, expert_tokens_ + L_ * E_, 0);
}

int64_t MoeBlock::experts_activated(int64_t layer) const {
  if (!model_ || !model_->layer(layer).moe) return 0;
  int64_t n = 0;
  for (int64_t e = 0; e < E_; ++e) n += expert_tokens_[size_t(layer * E_ + e)] != 0;
  return n;
}

Status MoeBlock::predict_next(const BlockContext& ctx, int64_t l, const float* xn,
                              int64_t rows) {
  int64_t next = l + 1;
  while (next < L_ && !model_->layer(next).moe) ++next;
  if (next >= L_) return Status::ok;
  // The residual stream changes little from one layer to the next: the next layer's input is
  // predicted as this one's, normalised with the next layer's weights instead of this one's.
  const std::vector<float>& w0 = model_->layer(l).post_attention_norm;
  const std::vector<float>& w1 = model_->layer(next).post_attention_norm;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t d = 0; d < H_; ++d) {
      const float a = w0[size_t(d)];
      pred_x_[r * H_ + d] = a != 0.0f ? xn[r * H_ + d] / a * w1[size_t(d)] : 0.0f;
    }
  const Status st = ctx.run_linear(model_->layer(next).router, pred_x_, rows, H_, pred_r_, E_);
  if (st != Status::ok) return st;
  // Top-k by logit (the softmax keeps the order), most likely first.
  std::fill(pred_mask_, pred_mask_ + E_, uint8_t(0));
  pred_layer_ = next;
  for (int64_t r = 0; r < rows; ++r) {
    float* p = pred_r_ + r * E_;
    for (int64_t j = 0; j < K_; ++j) {
      int64_t best = 0;
      for (int64_t e = 1; e < E_; ++e)
        if (p[e] > p[best]) best = e;
      p[best] = -std::numeric_limits<float>::infinity();
      pred_mask_[best] = 1;
      model_->prefetch_expert(next, best);
    }
  }
  return Status::ok;
}

void MoeBlock::release_experts(int64_t layer, int n) const {
  for (int i = 0; i < n; ++i) model_->release_expert(layer, expert_ids_[i]);
}

Status MoeBlock::run_experts_packed(const BlockContext& ctx, int n_req, int cores) {
  // Longest processing time first: experts by rows, descending (ties: lower index first),
  // each to the least loaded core. A core's experts run in ascending index order.
  for (int i = 0; i < n_req; ++i) bin_items_[i] = i;
  auto rows_of = [&](int32_t i) { return expert_req_[2 * i].M; };
  std::sort(bin_items_, bin_items_ + n_req, [&](int32_t a, int32_t b) {
    return rows_of(a) != rows_of(b) ? rows_of(a) > rows_of(b) : a < b;
  });
  for (int b = 0; b < cores; ++b) bin_load_[b] = 0;
  for (int k = 0; k < n_req; ++k) {
    const int32_t i = bin_items_[k];
    int best = 0;
    for (int b = 1; b < cores; ++b)
      if (bin_load_[b] < bin_load_[best]) best = b;
    bin_load_[best] += rows_of(i);
    bin_of_[i] = best;
  }
  // Counting sort by bin, ascending expert index inside a bin.
  for (int b = 0; b <= cores; ++b) bin_start_[b] = 0;
  for (int i = 0; i < n_req; ++i) ++bin_start_[bin_of_[i] + 1];
  for (int b = 0; b < cores; ++b) bin_start_[b + 1] += bin_start_[b];
  for (int b = 0; b < cores; ++b) bin_load_[b] = bin_start_[b];
  for (int i = 0; i < n_req; ++i) bin_items_[bin_load_[bin_of_[i]]++] = i;
  for (int i = 0; i < 3 * n_req; ++i) {
    expert_req_[i].pool = nullptr;
    expert_req_[i].n_threads = 1;
  }
  ExpertBinJob job{expert_lin_, expert_req_, bin_items_, bin_start_, n_req, I_, bin_status_};
  ctx.pool->run(cores, cores, run_expert_bin, &job);
  for (int b = 0; b < cores; ++b)
    if (bin_status_[b] != Status::ok) return bin_status_[b];
  return Status::ok;
}

// Router: float32 softmax over all experts, top-k by (probability desc, expert index asc),
// renormalised when norm_topk_prob. Then each routed expert runs once over its tokens
// (gate/up GEMM, SwiGLU, down GEMM) and its weighted output is added to each token's sum in
// ascending expert order: a token's result depends only on its own routing.
Status MoeBlock::run(const BlockContext& ctx, int64_t l, const float* xn, int64_t rows,
                     float* out, void* scratch, size_t scratch_bytes, std::string* message) {
  const LayerWeights& w = model_->layer(l);
  const int64_t H = H_, I = I_, E = E_, K = K_;
  const bool norm_topk = model_->config().norm_topk_prob;
  BufferPlan plan;
  declare_scratch(rows, &plan);
  Status st = plan.carve(scratch, scratch_bytes, false, message);
  if (st != Status::ok) return st;
  if ((st = ctx.run_linear(w.router, xn, rows, H, router_, E)) != Status::ok)
    return fail(message, st, "layer " + std::to_string(l) + " router: " + status_string(st));
  ctx.for_blocks(rows, kRowsPerBlock, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      float* p = router_ + r * E;
      softmax_inplace(p, E);
      int32_t* te = topk_e_ + r * K;
      float* tw = topk_w_ + r * K;
      float sum = 0.0f;
      for (int64_t j = 0; j < K; ++j) {
        int64_t best = -1;
        for (int64_t e = 0; e < E; ++e) {
          bool taken = false;
          for (int64_t i = 0; i < j; ++i) taken = taken || te[i] == e;
          if (!taken && (best < 0 || p[e] > p[best])) best = e;
        }
        te[j] = int32_t(best);
        tw[j] = p[best];
        sum = sum + p[best];
      }
      if (norm_topk)
        for (int64_t j = 0; j < K; ++j) tw[j] = tw[j] / sum;
    }
  });
  for (int64_t e = 0; e <= E; ++e) group_start_[e] = 0;
  for (int64_t i = 0; i < rows * K; ++i) group_start_[topk_e_[i] + 1] += 1;
  for (int64_t e = 0; e < E; ++e) group_start_[e + 1] += group_start_[e];
  // Scatter (row, weight) pairs per expert, rows ascending; group_row_ reuses group_start_ as
  // a cursor, restored below. token_entries_ keeps each row's slots.
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < K; ++j) {
      const int32_t e = topk_e_[r * K + j];
      const int32_t at = group_start_[e]++;
      group_row_[at] = int32_t(r);
      group_w_[at] = topk_w_[r * K + j];
      token_entries_[r * K + j] = at;
    }
  for (int64_t e = E; e > 0; --e) group_start_[e] = group_start_[e - 1];
  group_start_[0] = 0;

  // Every routed expert's input rows: the chunk's own rows when the expert takes them all (a
  // decode step), else gathered. Slot i of an expert's group is row g0 + i of xe_ / gate_ /
  // up_ / down_.
  // This layer has routed: predictions for it not fetched yet are fetched on demand below.
  const bool prefetch = rows == 1 && model_->expert_prefetching();
  if (prefetch) {
    model_->cancel_expert_prefetch();
    if (pred_layer_ == l) {
      uint64_t routed = 0;
      for (int64_t j = 0; j < K; ++j) routed += pred_mask_[topk_e_[j]];
      model_->count_prediction(uint64_t(K), routed);
    }
  }
  pred_layer_ = -1;
  int n_req = 0;
  for (int64_t e = 0; e < E; ++e) {
    const int32_t g0 = group_start_[e], g1 = group_start_[e + 1];
    if (g1 == g0) continue;
    if ((st = model_->use_expert(l, e, message)) != Status::ok) {
      release_experts(l, n_req);
      return st;
    }
    expert_tokens_[l * E + e] += uint64_t(g1 - g0);
    expert_ids_[n_req++] = int32_t(e);
  }
  // Warm the next layer's experts while this one's run (prefetch only reads ahead: the
  // experts are acquired, and verified, as always when that layer routes).
  if (prefetch && (st = predict_next(ctx, l, xn, rows)) != Status::ok) {
    release_experts(l, n_req);
    return fail(message, st, "layer " + std::to_string(l) + " prefetch router: " +
                                 status_string(st));
  }
  if (rows > 1) {  // gather the rows of the experts that do not take them all
    ctx.for_blocks(E, 1, [&](int64_t e, int64_t) {
      const int32_t g0 = group_start_[e], g1 = group_start_[e + 1];
      if (g1 == g0 || g1 - g0 == rows) return;  // not routed / takes xn as is
      for (int32_t i = g0; i < g1; ++i)
        std::memcpy(xe_ + i * H, xn + group_row_[i] * H, size_t(H) * sizeof(float));
    });
  }
  auto input_of = [&](int64_t e) -> const float* {
    const int32_t g0 = group_start_[e];
    return group_start_[e + 1] - g0 == rows ? xn : xe_ + g0 * H;
  };
  // Every routed expert's three requests, each with its own 64-aligned part of the experts'
  // workspace: gate and up at 2i, 2i+1 (same input: one activation quantization), down at
  // 2n + i, reading the SwiGLU of gate in place.
  Arena ws(expert_ws_, expert_ws_bytes_);
  bool fits = true;
  auto expert_request = [&](const Linear& lin, const float* in, int64_t m, int64_t in_stride,
                            float* y, int64_t y_stride) {
    LinearRequest r = ctx.request(in, m, in_stride, y, y_stride);
    r.workspace_bytes = linear_workspace_bytes(lin, m, ctx.mode);
    r.workspace = ws.take_bytes(r.workspace_bytes);
    fits = fits && r.workspace != nullptr;
    return r;
  };
  int64_t largest = 0;
  for (int i = 0; i < n_req; ++i) {
    const int64_t e = expert_ids_[i], g0 = group_start_[e];
    const int64_t m = group_start_[e + 1] - g0;
    const ExpertWeights& x = w.experts[size_t(e)];
    expert_lin_[2 * i] = &x.gate;
    expert_lin_[2 * i + 1] = &x.up;
    expert_lin_[2 * n_req + i] = &x.down;
    expert_req_[2 * i] = expert_request(x.gate, input_of(e), m, H, gate_ + g0 * I, I);
    expert_req_[2 * i + 1] = expert_request(x.up, input_of(e), m, H, up_ + g0 * I, I);
    expert_req_[2 * n_req + i] = expert_request(x.down, gate_ + g0 * I, m, I, down_ + g0 * H, H);
    largest = std::max(largest, m);
  }
  if (!fits) {
    release_experts(l, n_req);
    return fail(message, Status::buffer_too_small,
                "layer " + std::to_string(l) +
                    " experts: the requests need more than the planned expert workspace of " +
                    std::to_string(expert_ws_bytes_) + " bytes");
  }
  const int64_t routed = rows * K;
  const int cores = std::min(ctx.active_threads, n_req);
  if (cores > 1 && largest * cores * 4 <= routed * 5) {
    st = run_experts_packed(ctx, n_req, cores);
  } else {
    // One expert holds much more than a core's share of the chunk (or one core): split every
    // expert's tiles over the cores, one region for the gate/up projections, one for downs.
    if ((st = ctx.run_batch(expert_lin_, expert_req_, 2 * n_req)) == Status::ok) {
      swiglu_inplace(gate_, up_, routed * I);
      st = ctx.run_batch(expert_lin_ + 2 * n_req, expert_req_ + 2 * n_req, n_req);
    }
  }
  release_experts(l, n_req);  // their weights are read: the residency may drop them now
  if (st != Status::ok)
    return fail(message, st, "layer " + std::to_string(l) + " experts: " + status_string(st));
  // Weighted sum per token in ascending expert order: a row's slots sorted ascending (groups
  // are in expert order).
  ctx.for_blocks(rows, kRowsPerBlock, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      int32_t* slots = token_entries_ + r * K;
      std::sort(slots, slots + K);
      float* dst = out + r * H;
      for (int64_t d = 0; d < H; ++d) dst[d] = 0.0f;
      for (int64_t j = 0; j < K; ++j) {
        const float wt = group_w_[slots[j]];
        const float* src = down_ + size_t(slots[j]) * size_t(H);
        for (int64_t d = 0; d < H; ++d) dst[d] = dst[d] + wt * src[d];
      }
    }
  });
  return Status::ok;
}

}  // namespace fwa
