/* SPDX-License-Identifier: Apache-2.0 */
// Next-token sampling, deterministic on every platform: the random stream is PCG32 (integer
// arithmetic only), probabilities use det_exp (model/math.h), and every sort uses a strict
// total order, so a seed and a row of logits pick the same token everywhere.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "core/status.h"

namespace fwa {

// PCG32 (O'Neill, XSH-RR, 64-bit LCG state): platform-independent integer arithmetic.
class Rng {
 public:
  // state/inc from seed as pcg32_srandom_r(seed, 0xda3e39cb94b95bdbULL).
  explicit Rng(uint64_t seed = 0);
  void seed(uint64_t seed);
  uint32_t next_u32();
  // In [0, 1): the first draw gives the high 32 bits, the second the low ones; the top 53
  // of those 64 bits times 2^-53.
  double next_double();

 private:
  uint64_t state_ = 0;
  uint64_t inc_ = 0;
};

struct SamplingParams {
  float temperature = 0.0f;         // 0: greedy (argmax, ties to the lower id)
  int32_t top_k = 0;                // 0: off
  float top_p = 1.0f;               // 1: off; (0, 1]
  float repetition_penalty = 1.0f;  // 1: off; [1e-3, 1e3]
  uint64_t seed = 0;
};

// The ranges check_sampling_params enforces. A temperature in (0, kMinTemperature) (down to
// 1e-38 and the subnormals) or a penalty far from 1 only overflows logits / temperature or
// logits * penalty (a distribution of Infs and NaNs); 0 is the way to ask for greedy decoding.
constexpr float kMinTemperature = 1e-3f, kMaxTemperature = 1e3f;
constexpr float kMinRepetitionPenalty = 1e-3f, kMaxRepetitionPenalty = 1e3f;

// Checks ranges (temperature 0 or in [kMinTemperature, kMaxTemperature], top_k >= 0,
// 0 < top_p <= 1, penalty in [kMinRepetitionPenalty, kMaxRepetitionPenalty]; NaN is never in
// range); invalid_argument with a message naming the parameter otherwise. message may be null.
// The C ABI and Python share it.
Status check_sampling_params(const SamplingParams& p, std::string* message);

// Picks the next token from a row of logits. All scratch memory (vocab-sized arrays) is
// allocated by init(); sample() allocates nothing (it runs inside the zero-allocation decode
// loop). One call at a time per Sampler. No exceptions escape.
//
// sample(), in this order:
//   1. copy the logits; apply the repetition penalty to each distinct id of the history
//      (Hugging Face: l > 0 ? l / penalty : l * penalty, in float);
//   2. temperature <= 0: return the argmax (ties to the lower id; NaN never wins; 0 if every
//      logit is NaN);
//   3. divide by the temperature (float); NaN becomes -inf (never drawn unless all are);
//   4. candidate order: value descending, then id ascending (a total order: unique results);
//   top_k > 0 (and < vocab):
//   5. keep the top_k first candidates; softmax over them in that order:
//      e_j = det_exp(double(v_j) - double(max)) (1 where v_j == max, so an infinite max is well
//      defined), sum in double in order, p_j = e_j / sum;
//   6. top_p < 1: keep the shortest prefix whose cumulative probability >= top_p (at least
//      one candidate; all of them if rounding never reaches top_p);
//   7. u = rng.next_double() * (sum of the kept p_j, in order); return the first kept
//      candidate whose running sum exceeds u, or the last kept one if rounding leaves none;
//   otherwise (every id a candidate):
//   5'. weights e_i = exp(v_i - max) by id (float, math.h exp_sub_max), total = their sum in
//      double in id order; if total is 0 (all -inf, or an infinite max) return the first
//      candidate;
//   6'. top_p < 1: the shortest prefix in candidate order whose running sum (double) reaches
//      top_p * total; only the ids of the weight buckets that can hold it are sorted (a
//      histogram over the weights' top 12 bits); else all ids in id order;
//   7'. u = rng.next_double() * (the kept weights' sum); the first kept candidate whose
//      running sum exceeds u, or the last kept one.
class Sampler {
 public:
  // Allocates the scratch arrays. invalid_argument if vocab_size <= 0; cap_exceeded if the
  // allocation fails (the tokenizer's convention for out of memory). On failure the sampler
  // keeps its previous state.
  Status init(int32_t vocab_size, std::string* message);
  // Stores the parameters and reseeds the Rng with p.seed. p should pass
  // check_sampling_params (out-of-range values give unspecified tokens, never UB).
  void reset(const SamplingParams& p);
  // logits: vocab_size floats (not modified). history: the ids the repetition penalty applies
  // to (prompt + generated so far; each distinct id penalised once; ids outside
  // [0, vocab_size) are ignored). Returns the chosen id, or -1 before a successful init().
  // banned: null, or a bitmap of vocab_size bits (bit i of word i / 64) whose ids are set to
  // -inf right after step 1 (the code guard, model/guard.h).
  int32_t sample(const float* logits, const int32_t* history, size_t n_history,
                 const uint64_t* banned = nullptr);
  // The random stream's state: the guard saves it before a draw and restores it to draw again
  // over masked logits with the same random number.
  const Rng& rng() const { return rng_; }
  void restore_rng(const Rng& r) { rng_ = r; }

 private:
  void apply_repetition_penalty(const int32_t* history, size_t n_history);
  int32_t argmax() const;
  template <typename Before>
  int32_t sample_top_k(const Before& before);

  int32_t vocab_size_ = 0;
  SamplingParams params_;
  Rng rng_;
  std::vector<float> values_;       // the working copy of the logits, by id
  std::vector<int32_t> order_;      // candidate ids, in candidate order
  std::vector<double> probs_;       // candidate probabilities, by position in order_ (top-k)
  std::vector<float> exps_;         // exp(v - max), by id (no top-k)
  static constexpr int32_t kBuckets = 4096;  // weights by their top 12 bits (top-p)
  std::vector<double> bucket_mass_;
  std::vector<uint8_t> penalised_;  // by id: already penalised in this call (cleared after)
};

}  // namespace fwa
