/* SPDX-License-Identifier: Apache-2.0 */
// Decoding several sessions in one forward pass (docs/runtime.md, "Batched decoding").
//
// DecodeBatch owns `slots` sessions (each its own context and KV cache, all on the batch's
// thread pool) and runs a decode step for any subset of them at once: one new token per
// session, as rows of one forward pass. The layers whose weights are shared run once over all
// the rows (q/k/v/o, router, dense MLP, lm_head: one GEMM each instead of one GEMV per
// session); attention runs per row against its own session's cache; in each MoE layer the
// rows are grouped per routed expert, so an expert's weights are read once for every row that
// routed to it (model/moe.h, the grouping prefill uses for the tokens of one prompt).
//
// Every row's values are those of its session decoding alone (Session::eval of one token), bit
// for bit, in both compute modes: each kernel computes a row from that row's inputs only, by
// a fixed sequence of operations that does not depend on the other rows, their number or the
// thread count (the property that already makes prefill chunking invisible in the logits).
//
// BatchGenerator puts sampling on top: add() takes a free slot for a prompt (the one whose
// previous context shares the longest prefix with it: only the rest is prefilled), step()
// samples the next token of every active slot with its own seeded Sampler and evaluates them
// all in one DecodeBatch step. A slot's tokens are those Generation (model/generate.h) gives
// for the same prompt, parameters and seed: the same checks in the same order (context full,
// stop id, max_tokens) and the same sampler over bit-identical logits.
//
// Both allocate everything at create(): a step allocates nothing.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/status.h"
#include "core/thread_pool.h"
#include "model/generate.h"
#include "model/moe.h"
#include "model/sampler.h"
#include "model/session.h"

namespace fwa {

struct BatchOptions {
  int slots = 1;           // sessions, and the most rows of a step: [1, 256]
  SessionOptions session;  // of every slot (its pool field is ignored: the batch's is used)
};

class DecodeBatch {
 public:
  static constexpr int kMaxSlots = 256;

  static Status create(std::shared_ptr<const Model> model, const BatchOptions& options,
                       std::unique_ptr<DecodeBatch>* out, std::string* message);
  DecodeBatch(const DecodeBatch&) = delete;
  DecodeBatch& operator=(const DecodeBatch&) = delete;

  int slots() const { return slots_; }
  Session& session(int slot) { return *sessions_[size_t(slot)]; }
  const Session& session(int slot) const { return *sessions_[size_t(slot)]; }

  // One decode step of n rows: row i appends ids[i] to the session of slot slot_of[i] (distinct
  // slots) and writes its logits to logits(i). invalid_argument (nothing run) for n outside
  // [1, slots], a slot out of range or repeated, an id outside the vocabulary or a full
  // context. A failed step (a kernel's status, non_finite when a row's hidden state or
  // logits are NaN or Inf, io_error for an artifact truncated while mapped) appends nothing.
  Status step(const int* slot_of, const int32_t* ids, int n, std::string* message);
  // Row `row`'s logits (vocab floats), valid until the next step.
  const float* logits(int row) const { return logits_ + int64_t(row) * vocab_; }
  // Copies them into the row's session (Session::last_logits, valid until it evaluates
  // again) and returns that copy.
  const float* keep_logits(int row);

  ThreadPool* pool() { return pool_.get(); }
  void pool_stats(ThreadPoolStats* out) const { pool_->stats(out); }
  // Weight bytes the batched steps read (Session::weight_bytes_read for the slots' prefills).
  uint64_t weight_bytes_read() const { return weight_bytes_read_; }
  // Routing statistics of the batched steps (Session::expert_tokens).
  const uint64_t* expert_tokens() const { return moe_.expert_tokens(); }

 private:
  DecodeBatch() = default;
  Status allocate(std::string* message);
  Status forward(int n, std::string* message);

  std::shared_ptr<const Model> model_;
  std::unique_ptr<ThreadPool> pool_;
  std::vector<std::unique_ptr<Session>> sessions_;
  int slots_ = 0;
  int n_threads_ = 1;
  ComputeMode mode_ = ComputeMode::exact;
  int64_t vocab_ = 0;
  MoeBlock moe_;

  // S = slots rows, carved from storage_.
  std::unique_ptr<uint8_t[]> storage_;
  float *x_ = nullptr, *xn_ = nullptr, *tmp_ = nullptr;  // [S, H]
  float *q_ = nullptr, *attn_ = nullptr;                 // [S, nh*hd]
  float *k_ = nullptr, *v_ = nullptr;                    // [S, nkv*hd]
  float* logits_ = nullptr;                              // [S, V]
  int32_t* ids_ = nullptr;                               // [S] the step's tokens
  int32_t* slot_of_ = nullptr;                           // [S] the step's slots
  uint8_t* used_ = nullptr;                              // [S] slot taken by a row (checks)
  uint8_t* ws_ = nullptr;                                // matmul workspace for S rows
  size_t ws_bytes_ = 0;
  uint8_t* ffn_scratch_ = nullptr;                       // MoE or dense MLP scratch, S rows
  size_t ffn_bytes_ = 0;
  uint64_t weight_bytes_read_ = 0;
};

// What a slot's generation asks for (GenerateParams without stop strings: the batch works in
// token ids; a caller that decodes text applies its own).
struct SlotParams {
  SamplingParams sampling;
  int64_t max_tokens = 64;
  std::vector<int32_t> stop_ids;
  // The code guard (null: none; model/guard.h), applied as Generation applies it: its state
  // is seeded from the slot's whole prompt, a step's draw is generate.h's guarded_sample, its
  // interventions go to the slot's stats and a slot whose every candidate is banned ends
  // with reason `policy` (no token).
  std::shared_ptr<const CodeGuard> guard;
};

struct SlotResult {
  int slot = -1;
  int32_t token = -1;  // the emitted token, -1 when the slot ended without one
  StopReason reason = StopReason::none;  // none: the slot continues
};

class BatchGenerator {
 public:
  static Status create(std::shared_ptr<const Model> model, const BatchOptions& options,
                       std::unique_ptr<BatchGenerator>* out, std::string* message);

  int slots() const { return batch_->slots(); }
  int active_count() const;
  bool active(int slot) const { return state_[size_t(slot)].active; }

  // Starts a generation in a free slot (*slot): the free slot whose context shares the
  // longest prefix with the prompt (ties: the one freed first), truncated to that prefix
  // (keeping at least the last prompt token to evaluate), then the rest of the prompt is
  // prefilled. invalid_argument (no slot changed) for an empty prompt, an id outside the
  // vocabulary, a prompt longer than the context, max_tokens < 1, sampling parameters out
  // of range or a guard compiled for another vocabulary; cap_exceeded when no slot is free.
  Status add(const int32_t* prompt, int64_t n, const SlotParams& params, int* slot,
             std::string* message);
  // One token for every active slot, in slot order, in results()[0..*n): sampled, then all
  // the emitted ones evaluated in one DecodeBatch step. A slot whose result has a reason is
  // free again (its context stays for prefix reuse). `non_finite` ends a slot whose values
  // overflowed float32 (its token is not kept; Session::eval's non_finite error). A failed
  // kernel or a truncated artifact fails the step (the slots' contexts unchanged).
  Status step(int* n, std::string* message);
  const SlotResult* results() const { return results_.data(); }
  // Ends a slot's generation now (reason cancelled): false if it was not active.
  bool cancel(int slot);

  // The statistics of the slot's current or last generation. Work shared by a batched step
  // (its core-seconds and weight bytes) is split evenly over the slots it served, so the
  // slots' figures add up to the batch's; decode_ms is the wall time of the slot's steps.
  const GenerationStats& stats(int slot) const { return state_[size_t(slot)].stats; }
  StopReason stop_reason(int slot) const { return state_[size_t(slot)].reason; }
  // The guard of the slot's current or last generation (null: none).
  const CodeGuard* guard(int slot) const { return state_[size_t(slot)].params.guard.get(); }
  const std::vector<int32_t>& tokens(int slot) const { return batch_->session(slot).tokens(); }
  // The logits an active slot's next token is sampled from (null for a free slot); valid
  // until the next add() or step().
  const float* logits(int slot) const {
    return state_[size_t(slot)].active ? state_[size_t(slot)].logits : nullptr;
  }
  const DecodeBatch& batch() const { return *batch_; }
  // Tokens routed to each (layer, expert) since creation, prefills and steps of every slot:
  // out[layers * experts], row-major (zero rows for dense layers).
  void expert_tokens(uint64_t* out) const;

 private:
  struct Slot {
    bool active = false;
    Sampler sampler;
    SlotParams params;
    const float* logits = nullptr;  // of the context's last token
    int64_t generated = 0;
    int32_t guard_state = CodeGuard::kStart;  // after the context's bytes
    uint64_t freed_at = 0;  // order of the slot's last release (LRU among free slots)
    StopReason reason = StopReason::none;
    GenerationStats stats;
  };
  void finish(int slot, StopReason reason);

  std::unique_ptr<DecodeBatch> batch_;
  std::vector<Slot> state_;
  std::vector<SlotResult> results_;
  std::vector<int> rows_slot_;   // [slots] the step's rows
  std::vector<int32_t> rows_id_;
  uint64_t releases_ = 0;
};

}  // namespace fwa
