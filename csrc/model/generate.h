/* SPDX-License-Identifier: Apache-2.0 */
// Text generation over a Session, pull-style: start() prefills the prompt (reusing the longest
// common prefix already in the context), then each next() samples one token, evaluates it and
// returns its text piece. Both the streaming callbacks (C, Python generator) and the one-shot
// generate() are built on it.
//
// Each emitted token is evaluated, so the context always holds the prompt and every generated
// token. Stop conditions: a full context (checked before sampling); a stop id (the token is
// neither emitted nor kept); a stop string (the text up to it is emitted, the rest dropped);
// max_tokens. Text pieces are emitted only at UTF-8 character boundaries (a piece whose decoding
// ends in U+FFFD is held back until more tokens complete it, at most 4 tokens), so the pieces
// concatenate to the generation's text.
//
// With a code guard (GenerateParams::guard, model/guard.h), a sampled token whose bytes would
// complete a banned pattern of the context's text is replaced by a draw over the logits with
// every such token masked (an intervention, recorded in the stats); if that draw is banned too
// (every token the sampler can pick is banned), the generation stops (stop reason `policy`)
// without emitting or keeping it.
#pragma once
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/status.h"
#include "model/guard.h"
#include "model/sampler.h"
#include "model/session.h"

namespace fwa {

struct GenerateParams {
  SamplingParams sampling;
  int64_t max_tokens = 64;
  std::vector<std::string> stop_strings;
  std::vector<int32_t> stop_ids;
  // The code guard (null: none); its vocabulary must be the session's.
  std::shared_ptr<const CodeGuard> guard;
};

// non_finite: only a batched generation's slot ends so (model/batch.h); a Generation fails.
enum class StopReason { none, max_tokens, stop_string, stop_id, context_full, cancelled, policy,
                        non_finite };

// One guard intervention: the rule (index into the guard's rule names) the sampled token would
// have completed, the index of the generated token it replaced, and that token.
struct GuardIntervention {
  int32_t rule = -1;
  int32_t token = -1;
  int64_t position = 0;
};
const char* stop_reason_name(StopReason r);

// One decode step's draw, shared by Generation::next and BatchGenerator::step so both pick the
// same token: sample from `logits`; with a guard, when the token's bytes would complete a
// pattern from `state`, append the intervention (its `position`: the index of the generated
// token it replaces; within reserved capacity: nothing allocated) and draw again with the same
// random number over the logits with every banned token masked. *next_state is the guard's
// state after the returned token (`state` without a guard); *blocked is set when that token
// is banned too (stop reason `policy`: the token must be neither emitted nor kept).
int32_t guarded_sample(Sampler& sampler, const CodeGuard* guard, int32_t state,
                       const float* logits, const int32_t* history, size_t n_history,
                       int64_t position, std::vector<GuardIntervention>* interventions,
                       int32_t* next_state, bool* blocked);
// The guard's state after a context's n tokens (kStart without a guard): a pattern begun in
// the prompt is completed (and caught) in the output.
int32_t guard_state_after(const CodeGuard* guard, const int32_t* tokens, int64_t n);

struct GenerationStats {
  int64_t prompt_tokens = 0, cached_tokens = 0, generated_tokens = 0;
  double prefill_ms = 0, decode_ms = 0, ttft_ms = 0;
  std::vector<int64_t> experts_activated;  // per layer: distinct experts used in this call
  // Core-seconds of the call (the energy model's inputs, docs/energy.md): busy = the caller's
  // time inside the library (prefill_ms + decode_ms) less its waits in the pool, plus the
  // workers' time running chunks; spin = every thread's active waiting; parked = the workers'
  // (and the caller's) futex sleep over the call, which costs no core time.
  double busy_core_s = 0, spin_core_s = 0, parked_core_s = 0;
  uint64_t weight_bytes_read = 0;  // weights the forward passes read (Session::weight_bytes_read)
  std::vector<GuardIntervention> interventions;  // at most one per step (reserved at start)
  double prefill_tokens_per_s() const;
  double decode_tokens_per_s() const;
};

class Generation {
 public:
  // Prefills the prompt (at least one token; the context is first truncated to its longest
  // common prefix with the prompt, keeping at least the last prompt token to evaluate).
  Status start(Session* session, const int32_t* prompt, int64_t n, const GenerateParams& params,
               std::string* message);
  // Produces the next token. *done becomes true when generation ended (stop_reason() says
  // why); a final call may still return a last piece of text (token -1 when no token).
  Status next(int32_t* token, std::string* piece, bool* done, std::string* message);

  // Ends the generation now (stop reason `cancelled`); the context keeps what was evaluated.
  void cancel();

  // True when its session was used by another call (a generation, eval, truncate or reset)
  // since this generation's last step: its context is no longer the one this generation
  // left, so next() refuses to continue (invalid_argument) instead of mixing the two.
  bool superseded() const { return s_ && !done_ && s_->epoch() != epoch_; }

  StopReason stop_reason() const { return reason_; }
  const GenerationStats& stats() const { return stats_; }
  const std::vector<int32_t>& token_ids() const { return generated_; }
  const std::string& text() const { return text_; }

 private:
  Status flush_text(bool final, std::string* piece, std::string* message);
  void finish_stats();

  Session* s_ = nullptr;
  GenerateParams p_;
  Sampler sampler_;
  std::vector<int32_t> generated_;
  std::string text_;            // emitted so far
  std::string unreleased_;      // decoded, held back: it may begin a stop string
  size_t pending_from_ = 0;     // first generated token whose text is not emitted yet
  bool has_tokenizer_ = false;
  bool done_ = false;
  StopReason reason_ = StopReason::none;
  GenerationStats stats_;
  std::chrono::steady_clock::time_point t_start_;
  ThreadPoolStats pool_start_;   // the session pool's counters at start()
  uint64_t bytes_start_ = 0;
  std::string decoded_;         // scratch
  uint64_t epoch_ = 0;          // the session's epoch after this generation's last eval
  int32_t guard_state_ = CodeGuard::kStart;  // the guard's state after the context's bytes
};

// Streaming with a C callback: called once per generated token with its text piece (UTF-8,
// not NUL-terminated, may be empty) and once more with token -1 if text is left at the end.
// Returning false cancels the generation. The result and statistics are in *out.
using TokenCallback = bool (*)(void* user, int32_t token, const char* piece, size_t piece_len);
Status generate(Session* session, const int32_t* prompt, int64_t n, const GenerateParams& params,
                TokenCallback callback, void* user, Generation* out, std::string* message);

}  // namespace fwa
