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
// KV cache layout, per layer and kv head: K transposed [head_dim][max_context] (the scores of
// one query are then a vector loop over positions) and V [max_context][head_dim].
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/status.h"
#include "core/thread_pool.h"
#include "kernels/matmul.h"
#include "model/model.h"

namespace fwa {

struct SessionOptions {
  int64_t max_context = 0;     // tokens; 0: min(max_position_embeddings, 4096)
  ComputeMode mode = ComputeMode::exact;
  int n_threads = 1;           // threads that run the matmuls and attention (caller included)
  int64_t prefill_chunk = 128; // tokens per forward step of a prompt (more rows per expert GEMM)
};

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
  // before any work), or the status of a failed step (the context is rewound to where it was).
  Status eval(const int32_t* ids, int64_t n, LogitsOut out, float* logits,
              std::string* message);

  const float* last_logits() const { return last_logits_.data(); }
  bool has_last_logits() const { return has_last_logits_; }

  // Context management: truncate(n) keeps the first n tokens (their KV entries stay valid).
  int64_t n_past() const { return int64_t(tokens_.size()); }
  const std::vector<int32_t>& tokens() const { return tokens_; }
  Status truncate(int64_t n, std::string* message);
  void reset() { truncate(0, nullptr); }

  const Model& model() const { return *model_; }
  const SessionOptions& options() const { return opt_; }
  int64_t vocab_size() const { return model_->config().vocab_size; }

  // The scheduler policy. max_cores: how many of the pool's threads the matmuls, attention
  // and packed experts may use (0: all; clamped to [1, options().n_threads]); the others
  // stay parked. target_ms > 0: a per-token latency budget for decode steps, met on the
  // fewest cores:
  //   - at set_policy, a cost model picks the first core count whose predicted step time
  //     (the weight bytes of one decode step / the read bandwidth measured with that many
  //     threads, Model::read_bandwidth) is under 85 % of the budget (all cores if none is);
  //   - then every kPolicyWindow decode steps the measured mean decides, with hysteresis:
  //     one core more as soon as the mean misses the budget, one fewer at once when the mean
  //     scaled to one fewer core (linear scaling, the pessimistic case) stays under 85 %;
  //     otherwise, while the mean stays under 85 %, a trial window on one core fewer after a
  //     hold (kHoldMin windows after a core was added): kept if it meets the budget, undone
  //     otherwise with the hold doubled (up to kHoldMax). A miss caused by a passing load
  //     therefore does not keep the extra core for good.
  // target_ms == 0 ("fastest"): all max_cores, unless a core turns out to be taken by
  // another process. A window whose calling thread was off its core for more than
  // kContendedWait of the time (wall minus thread CPU time: parked at a run's end waiting for
  // a descheduled worker's chunk, or descheduled itself; a few % otherwise) triggers a trial
  // on one core fewer; the trial window's mean decides, against the window
  // before it, whether to keep the change (more than kTrialGain faster) or undo it. The shed
  // core is tried again after a hold of windows; a failed trial holds all trials off and
  // doubles the hold (kHoldMin..kHoldMax windows); regaining the core resets it. At most one
  // core is shed.
  // Results never depend on it.
  static constexpr int kPolicyWindow = 16;
  static constexpr double kContendedWait = 0.2, kTrialGain = 0.03;
  static constexpr int kHoldMin = 4, kHoldMax = 64;
  void set_policy(int max_cores, double target_ms);
  int max_active_threads() const { return max_active_; }
  // Weight bytes one decode step reads (dense layers, top-k experts of average size, lm_head,
  // one embedding row): the cost model's numerator.
  double decode_bytes_per_token() const { return decode_bytes_; }
  // Feeds the policy one decode step's wall time and the part of it the calling thread was
  // off its core (eval does it for each 1-token step).
  void account_decode_step(double ms, double off_cpu_ms);
  double target_ms_per_token() const { return target_ms_; }
  int active_threads() const { return active_threads_; }

  // Bytes of weights the forward passes read since creation: every linear layer run counts
  // its whole tensor once per chunk (a layer's routed experts once each, however many tokens
  // they take), embedding rows one row each. The figure the energy model charges to memory.
  uint64_t weight_bytes_read() const { return weight_bytes_read_; }
  // The session thread pool's time accounting (busy, spinning, parked per thread).
  void pool_stats(ThreadPoolStats* out) const { pool_->stats(out); }

  // Routing statistics since the last clear (a generation clears them at its start): the
  // tokens routed to each (layer, expert), row-major [layers][experts] (zero rows for dense
  // layers), and the number of distinct experts a layer ran.
  void clear_expert_hits();
  const uint64_t* expert_tokens() const { return expert_tokens_.data(); }
  int64_t experts_activated(int64_t layer) const;

 private:
  Session() = default;
  Status allocate(std::string* message);
  Status forward_chunk(const int32_t* ids, int64_t rows, int64_t pos0, LogitsOut out,
                       float* logits, std::string* message);
  Status attention_block(int64_t l, int64_t rows, int64_t pos0, std::string* message);
  Status moe_block(int64_t l, int64_t rows, std::string* message);
  Status dense_block(int64_t l, int64_t rows, std::string* message);
  // Runs f(begin, end) over [0, n) in blocks of `per` on the active cores (one block: inline,
  // no region). For per-row work whose rows are independent: results never depend on it.
  template <typename F>
  void for_blocks(int64_t n, int64_t per, F&& f);
  // A request on the session's pool, mode and workspace.
  LinearRequest request(const float* x, int64_t rows, int64_t x_stride, float* y,
                        int64_t y_stride) const;
  Status run_linear(const Linear& w, const float* x, int64_t rows, int64_t x_stride, float* y,
                    int64_t y_stride);
  Status run_batch(const Linear* const* w, const LinearRequest* r, int n);  // linear_batch
  void release_experts(int64_t layer, int n);  // unpins expert_ids_[0..n) of a layer
  // Runs the n routed experts of expert_lin_/expert_req_ packed whole onto `cores` threads.
  Status run_experts_packed(int n_req, int cores, int64_t I);

  std::shared_ptr<const Model> model_;
  SessionOptions opt_;
  std::unique_ptr<ThreadPool> pool_;
  std::vector<int32_t> tokens_;

  // Buffers (floats unless stated), C = prefill_chunk rows.
  std::vector<float> x_, xn_, q_, k_, v_, attn_, tmp_;  // [C, H] / [C, nh*hd] / [C, nkv*hd]
  std::vector<float> scores_;                             // [4, nh, max_context + 16]
  std::unique_ptr<float[]> k_cache_, v_cache_;            // [L, nkv, hd, ctx] / [L, nkv, ctx, hd]
  std::vector<float> rope_cos_, rope_sin_;                // [ctx, hd/2]
  std::vector<float> router_, topk_w_, group_w_;          // [C, E], [C, K], [C*K]
  std::vector<int32_t> topk_e_, group_row_, group_start_; // [C, K], [C*K], [E+1]
  std::vector<int32_t> token_entries_;                    // [C, K]: a row's group slots, sorted
  std::vector<float> xe_, gate_, up_, down_;              // [C*K, H], [C*K, I] x2, [C*K, H]
  std::vector<int32_t> expert_ids_;                       // routed experts of a chunk, ascending
  std::vector<const Linear*> expert_lin_;                 // [3E]: gate/up pairs, then downs
  std::vector<LinearRequest> expert_req_;                 // [3E]
  std::vector<int32_t> bin_items_, bin_of_;               // [E]: experts packed onto cores
  std::vector<int32_t> bin_start_;                        // [threads + 1]
  std::vector<int64_t> bin_load_;                         // [threads]
  std::vector<Status> bin_status_;                        // [threads]
  std::vector<float> last_logits_;                        // [V]
  std::vector<uint64_t> expert_tokens_;                   // [L, E]: tokens routed
  std::vector<uint8_t> workspace_;                        // matmul activations (64-aligned)
  void* ws_ = nullptr;
  size_t ws_bytes_ = 0;
  uint8_t* moe_ws_ = nullptr;                             // after ws_: the batched experts' part
  bool has_last_logits_ = false;
  int64_t ctx_ = 0, chunk_ = 0;
  int active_threads_ = 1, max_active_ = 1;
  double target_ms_ = 0, window_ms_ = 0;  // policy; decode time summed over the window
  double window_off_ms_ = 0;              // caller's off-core time summed over the window
  int window_steps_ = 0;
  // Trials of both policies: the trial under way (0 none, -1 one core fewer, +1 the shed core
  // back), the mean of the window before it, windows before the next trial, next hold.
  int trial_ = 0, hold_ = 0, hold_next_ = kHoldMin;
  double before_trial_ms_ = 0;
  void fastest_policy_window(double avg_ms, double off_fraction);
  void latency_policy_window(double avg_ms);
  double decode_bytes_ = 0;
  uint64_t weight_bytes_read_ = 0;
};

}  // namespace fwa
