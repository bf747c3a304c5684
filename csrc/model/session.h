/* SPDX-License-Identifier: Apache-2.0 */
// A session: one context (token history + KV cache) over a shared Model, with every buffer it
// will ever need allocated by create() for its max context and prefill chunk. eval() runs the
// forward pass; once created, a session allocates nothing (the decode loop is allocation-free).
//
// Forward (Qwen3-MoE, docs/runtime.md): embed → per layer [RMSNorm → q/k/v → per-head q/k
// RMSNorm → RoPE → causal GQA attention → o → residual → RMSNorm → MoE or dense SwiGLU MLP →
// residual] → final RMSNorm → lm_head. Prompts are processed in chunks of prefill_chunk tokens;
// in a chunk the tokens are grouped per routed expert and each expert runs one GEMM over its
// tokens. Every value is computed by a fixed sequence of float operations that depends only on
// the token's own inputs, never on the chunking, the thread count or the ISA, so logits are
// bit-identical whichever way a prompt is fed.
//
// Parts: the MoE block (router, top-k, grouping, expert execution) is model/moe.h, the
// core-count policy sched/core_policy.h; every buffer but the KV cache is declared once in a
// buffer plan (model/buffer_plan.h) and carved from one allocation with bounds-checked takes.
//
// KV cache layout, per layer and kv head: K transposed [head_dim][max_context] (the scores of
// one query are then a vector loop over positions) and V [max_context][head_dim], in float32
// or a 16-bit format (SessionOptions::kv_cache).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/status.h"
#include "core/thread_pool.h"
#include "kernels/half.h"
#include "kernels/matmul.h"
#include "model/block_context.h"
#include "model/buffer_plan.h"
#include "model/model.h"
#include "model/moe.h"
#include "sched/core_policy.h"

namespace fwa {

struct SessionOptions {
  int64_t max_context = 0;     // tokens; 0: min(max_position_embeddings, 4096)
  ComputeMode mode = ComputeMode::exact;
  int n_threads = 1;           // threads that run the matmuls and attention (caller included)
  int64_t prefill_chunk = 128; // tokens per forward step of a prompt (more rows per expert GEMM)
  // The KV cache's storage type: float32, or 16-bit (kernels/half.h: stored rounded to
  // nearest even, read back widened exactly; attention computes in float32 either way).
  KvType kv_cache = KvType::f32;
  // A pool to run on instead of a pool of its own (a DecodeBatch's slots share the batch's):
  // it must have n_threads threads, outlive the session and never run two calls at once.
  ThreadPool* pool = nullptr;
};

// Bytes of KV cache one token of context takes: 2 (K and V) x layers x kv heads x head_dim x
// the element size of `type`.
int64_t kv_bytes_per_token(const ModelConfig& c, KvType type);

enum class LogitsOut { none, last, all };

class Session {
 public:
  static Status create(std::shared_ptr<const Model> model, const SessionOptions& options,
                       std::unique_ptr<Session>* out, std::string* message);
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  // Appends ids[0..n) to the context and runs them. LogitsOut::all writes n rows of vocab
  // floats to `logits`; ::last keeps the last token's row in last_logits(). Nothing changes on
  // failure: invalid_argument for an id outside the vocabulary or a context overflow (checked
  // before any work), non_finite when a hidden state or a logit is NaN or Inf (finite weights
  // that overflow float32: both modes report it instead of producing garbage), or the status
  // of a failed step (the context is rewound to where it was).
  Status eval(const int32_t* ids, int64_t n, LogitsOut out, float* logits,
              std::string* message);

  const float* last_logits() const { return last_logits_; }
  // Counts the calls that changed the context (eval past its argument checks, truncate,
  // reset): a generation compares it with its own last step to find out that another call
  // used the session since (Generation::superseded).
  uint64_t epoch() const { return epoch_; }
  bool has_last_logits() const { return has_last_logits_; }

  // Context management: truncate(n) keeps the first n tokens (their KV entries stay valid).
  int64_t n_past() const { return int64_t(tokens_.size()); }
  const std::vector<int32_t>& tokens() const { return tokens_; }
  Status truncate(int64_t n, std::string* message);
  void reset() { truncate(0, nullptr); }

  const Model& model() const { return *model_; }
  // Bytes the KV cache holds for max_context tokens (allocated at create, touched as used).
  size_t kv_cache_bytes() const { return kv_cache_bytes_; }
  const SessionOptions& options() const { return opt_; }
  int64_t vocab_size() const { return model_->config().vocab_size; }

  // The scheduler policy (sched/core_policy.h). max_cores: how many of the pool's threads
  // the matmuls, attention and packed experts may use (0: all; clamped to [1,
  // options().n_threads]); the others stay parked. target_ms > 0: a per-token latency budget
  // for decode steps, met on the fewest cores: at set_policy, a cost model picks the first
  // core count whose predicted step time (the weight bytes of one decode step / the read
  // bandwidth measured with that many threads, Model::read_bandwidth) is under 85 % of the
  // budget (all cores if none is); then the measured decode steps decide. target_ms == 0
  // ("fastest"): all max_cores, unless a core turns out to be taken by another process.
  // Results never depend on it.
  void set_policy(int max_cores, double target_ms);
  int max_active_threads() const { return policy_.max_active(); }
  // Weight bytes one decode step reads (dense layers, top-k experts of average size, lm_head,
  // one embedding row): the cost model's numerator.
  double decode_bytes_per_token() const { return decode_bytes_; }
  // Feeds the policy one decode step's wall time and the part of it the calling thread was
  // off its core (eval does it for each 1-token step).
  void account_decode_step(double ms, double off_cpu_ms) { policy_.account(ms, off_cpu_ms); }
  double target_ms_per_token() const { return policy_.target_ms(); }
  int active_threads() const { return policy_.active(); }

  // Bytes of weights the forward passes read since creation: every linear layer run counts
  // its whole tensor once per chunk (a layer's routed experts once each, however many tokens
  // they take), embedding rows one row each. The figure the energy model charges to memory.
  uint64_t weight_bytes_read() const { return weight_bytes_read_; }
  // The session thread pool's time accounting (busy, spinning, parked per thread).
  void pool_stats(ThreadPoolStats* out) const { pool_->stats(out); }

  // Routing statistics since the last clear (a generation clears them at its start): the
  // tokens routed to each (layer, expert), row-major [layers][experts] (zero rows for dense
  // layers), and the number of distinct experts a layer ran.
  void clear_expert_hits() { moe_.clear_expert_hits(); }
  const uint64_t* expert_tokens() const { return moe_.expert_tokens(); }
  int64_t experts_activated(int64_t layer) const { return moe_.experts_activated(layer); }

 private:
  Session() = default;
  Status allocate(std::string* message);
  // The session's pool, active cores, mode and matmul workspace, for one chunk's blocks.
  BlockContext context();
  Status forward_chunk(const int32_t* ids, int64_t rows, int64_t pos0, LogitsOut out,
                       float* logits, std::string* message);
  Status attention_block(const BlockContext& ctx, int64_t l, int64_t rows, int64_t pos0,
                         std::string* message);
  // The per-session part of attention for `rows` rows at positions pos0..: store_kv() does
  // the q/k norms and RoPE (in place in q [rows, nh*hd] and k [rows, nkv*hd]) and stores K
  // and V in the cache; then the attention of each row over positions 0..its own into out
  // [rows, nh*hd] runs as num_kv_heads x splits independent tasks (attend_task), splits from
  // attention_splits(units, threads) for `units` sessions attending in one parallel region.
  // attend() is the three for one session.
  void attend(const BlockContext& ctx, int64_t l, float* q, float* k, const float* v,
              float* out, int64_t rows, int64_t pos0);
  void store_kv(const BlockContext& ctx, int64_t l, float* q, float* k, const float* v,
                int64_t rows, int64_t pos0);
  int64_t attention_splits(int64_t units, int threads) const;
  // invalid_argument when n more tokens do not fit the context after n_past().
  Status check_room(int64_t n, std::string* message) const;
  void attend_task(int64_t l, const float* q, float* out, int64_t rows, int64_t pos0,
                   int64_t splits, int64_t task);
  friend class DecodeBatch;  // attends for each slot's session, then appends its token

  std::shared_ptr<const Model> model_;
  SessionOptions opt_;
  std::unique_ptr<ThreadPool> own_pool_;  // null with SessionOptions::pool
  ThreadPool* pool_ = nullptr;
  std::vector<int32_t> tokens_;
  CorePolicy policy_;
  MoeBlock moe_;

  // The buffer plan's buffers (floats unless stated), C = prefill_chunk rows, all carved
  // from storage_ (allocate()).
  std::unique_ptr<uint8_t[]> storage_;
  float *x_ = nullptr, *xn_ = nullptr, *tmp_ = nullptr;  // [C, H]
  float *q_ = nullptr, *attn_ = nullptr;                 // [C, nh*hd]
  float *k_ = nullptr, *v_ = nullptr;                    // [C, nkv*hd]
  float* scores_ = nullptr;                              // [4, nh, max_context + 16]
  float *rope_cos_ = nullptr, *rope_sin_ = nullptr;      // [ctx, hd/2]
  float* last_logits_ = nullptr;                         // [V]
  uint8_t* ws_ = nullptr;                                // matmul workspace, any linear at C rows
  size_t ws_bytes_ = 0;
  uint8_t* ffn_scratch_ = nullptr;  // the MLP block's per-chunk plan: MoE or dense, C rows
  size_t ffn_bytes_ = 0;
  // The KV cache, left uninitialised: only positions < n_past are ever read, so its pages are
  // touched (and count in RSS) as the context grows, not at creation.
  std::unique_ptr<uint8_t[]> k_cache_, v_cache_;  // [L, nkv, hd, ctx] / [L, nkv, ctx, hd]
  size_t kv_elem_ = 4;                             // bytes per cached value
  size_t kv_cache_bytes_ = 0;                      // K and V together
  bool has_last_logits_ = false;
  uint64_t epoch_ = 0;
  int64_t ctx_ = 0, chunk_ = 0;
  double decode_bytes_ = 0;
  uint64_t weight_bytes_read_ = 0;
};

}  // namespace fwa
