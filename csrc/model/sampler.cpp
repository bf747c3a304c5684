// SPDX-License-Identifier: Apache-2.0
#include "model/sampler.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <new>

#include "model/math.h"

namespace fwa {

namespace {

constexpr uint64_t kPcgMultiplier = 6364136223846793005ULL;
constexpr uint64_t kPcgStream = 0xda3e39cb94b95bdbULL;

// Sets *message (if any) and returns st; a message that cannot be allocated is left empty.
Status fail(std::string* message, Status st, const char* text) {
  if (message) {
    try {
      *message = text;
    } catch (const std::bad_alloc&) {
      message->clear();
    }
  }
  return st;
}

Status bad_param(std::string* message, const char* rule, double value) {
  char buf[160];
  std::snprintf(buf, sizeof buf, "%s (got %.9g)", rule, value);
  return fail(message, Status::invalid_argument, buf);
}

}  // namespace

Rng::Rng(uint64_t seed) { this->seed(seed); }

// pcg32_srandom_r(seed, kPcgStream).
void Rng::seed(uint64_t seed) {
  state_ = 0;
  inc_ = (kPcgStream << 1) | 1;
  next_u32();
  state_ += seed;
  next_u32();
}

// pcg32_random_r: output from the old state, XSH-RR.
uint32_t Rng::next_u32() {
  const uint64_t old = state_;
  state_ = old * kPcgMultiplier + inc_;
  const uint32_t xorshifted = static_cast<uint32_t>(((old >> 18) ^ old) >> 27);
  const uint32_t rot = static_cast<uint32_t>(old >> 59);
  return (xorshifted >> rot) | (xorshifted << ((32 - rot) & 31));
}

double Rng::next_double() {
  const uint64_t hi = next_u32();
  const uint64_t lo = next_u32();
  return static_cast<double>(((hi << 32) | lo) >> 11) * 0x1.0p-53;
}

namespace {

// Bucket of a weight in [0, inf): the top 12 bits of its IEEE pattern, monotone in the value.
inline int32_t bucket_of(float w) {
  uint32_t b;
  std::memcpy(&b, &w, 4);
  return static_cast<int32_t>(b >> 19);
}

}  // namespace

Status check_sampling_params(const SamplingParams& p, std::string* message) {
  // NaN fails every comparison below, so each rule is written as "value in range".
  if (!(p.temperature == 0.0f ||
        (p.temperature >= kMinTemperature && p.temperature <= kMaxTemperature))) {
    return bad_param(message,
                     "temperature must be 0 (greedy) or in [0.001, 1000]: a smaller one "
                     "overflows logits / temperature (use 0 for greedy decoding)",
                     p.temperature);
  }
  if (p.top_k < 0) return bad_param(message, "top_k must be >= 0 (0: off)", p.top_k);
  if (!(p.top_p > 0.0f && p.top_p <= 1.0f)) {
    return bad_param(message, "top_p must be in (0, 1] (1: off)", p.top_p);
  }
  if (!(p.repetition_penalty >= kMinRepetitionPenalty &&
        p.repetition_penalty <= kMaxRepetitionPenalty)) {
    return bad_param(message,
                     "repetition_penalty must be in [0.001, 1000] (1: off): logits are divided "
                     "or multiplied by it",
                     p.repetition_penalty);
  }
  return Status::ok;
}

Status Sampler::init(int32_t vocab_size, std::string* message) {
  if (vocab_size <= 0) return fail(message, Status::invalid_argument, "vocab_size must be > 0");
  try {
    const size_t n = static_cast<size_t>(vocab_size);
    std::vector<float> values(n);
    std::vector<int32_t> order(n);
    std::vector<double> probs(n);
    std::vector<float> exps(n);
    std::vector<double> bucket_mass(kBuckets);
    std::vector<uint8_t> penalised(n, 0);
    values_.swap(values);
    order_.swap(order);
    probs_.swap(probs);
    exps_.swap(exps);
    bucket_mass_.swap(bucket_mass);
    penalised_.swap(penalised);
  } catch (const std::bad_alloc&) {
    return fail(message, Status::cap_exceeded, "out of memory for the sampler's scratch arrays");
  }
  vocab_size_ = vocab_size;
  return Status::ok;
}

void Sampler::reset(const SamplingParams& p) {
  params_ = p;
  rng_.seed(p.seed);
}

void Sampler::apply_repetition_penalty(const int32_t* history, size_t n_history) {
  const float penalty = params_.repetition_penalty;
  float* v = values_.data();
  uint8_t* done = penalised_.data();
  for (size_t k = 0; k < n_history; ++k) {
    const int32_t id = history[k];
    if (id < 0 || id >= vocab_size_ || done[id]) continue;
    done[id] = 1;
    v[id] = v[id] > 0.0f ? v[id] / penalty : v[id] * penalty;
  }
  for (size_t k = 0; k < n_history; ++k) {
    const int32_t id = history[k];
    if (id >= 0 && id < vocab_size_) done[id] = 0;
  }
}

int32_t Sampler::argmax() const {
  const float* v = values_.data();
  int32_t best = -1;
  float best_value = 0.0f;
  for (int32_t i = 0; i < vocab_size_; ++i) {
    const float x = v[i];
    if (x == x && (best < 0 || x > best_value)) {  // strict >: ties keep the lower id
      best = i;
      best_value = x;
    }
  }
  return best < 0 ? 0 : best;
}

int32_t Sampler::sample(const float* logits, const int32_t* history, size_t n_history,
                        const uint64_t* banned) {
  const int32_t n_vocab = vocab_size_;
  if (n_vocab <= 0) return -1;
  float* v = values_.data();
  std::copy(logits, logits + n_vocab, v);
  if (params_.repetition_penalty != 1.0f) apply_repetition_penalty(history, n_history);
  if (banned) {
    const int32_t words = (n_vocab + 63) / 64;
    for (int32_t w = 0; w < words; ++w)
      for (uint64_t bits = banned[w]; bits; bits &= bits - 1)
        v[w * 64 + __builtin_ctzll(bits)] = -std::numeric_limits<float>::infinity();
  }
  if (!(params_.temperature > 0.0f)) return argmax();

  const float temperature = params_.temperature;
  for (int32_t i = 0; i < n_vocab; ++i) {
    const float x = v[i] / temperature;
    v[i] = x == x ? x : -std::numeric_limits<float>::infinity();
  }

  // Candidate order: value descending, then id ascending. NaN is gone, so this is a strict
  // total order and every sort below has a unique result.
  int32_t* order = order_.data();
  for (int32_t i = 0; i < n_vocab; ++i) order[i] = i;
  const auto before = [v](int32_t a, int32_t b) {
    return v[a] > v[b] || (v[a] == v[b] && a < b);
  };
  if (params_.top_k > 0 && params_.top_k < n_vocab) return sample_top_k(before);

  // Every id is a candidate: weights e_i = exp(v_i - max) by id (float, vectorised), their
  // sum in id order.
  float m = v[0];
  for (int32_t i = 1; i < n_vocab; ++i) m = v[i] > m ? v[i] : m;
  float* e = exps_.data();
  exp_sub_max(v, n_vocab, m, e);
  double total = 0.0;
  for (int32_t i = 0; i < n_vocab; ++i) total += static_cast<double>(e[i]);
  if (!(total > 0.0)) {  // every weight 0 (all -inf, or an infinite max): the top candidate
    std::partial_sort(order, order + 1, order + n_vocab, before);
    return order[0];
  }
  int32_t n = n_vocab;
  double kept = total;
  if (params_.top_p < 1.0f) {
    // The nucleus is the top of the candidate order. Weights are positive floats, whose bit
    // patterns order like their values: bucket them by the top 12 bits (sign 0, exponent, 4
    // mantissa bits), find the bucket where the running mass (largest buckets first) reaches
    // top_p * total, and sort only the ids from that bucket up. The prefix found is the one a
    // full sort would give.
    const double target = static_cast<double>(params_.top_p) * total;
    double* mass = bucket_mass_.data();
    std::fill(mass, mass + kBuckets, 0.0);
    for (int32_t i = 0; i < n_vocab; ++i) mass[bucket_of(e[i])] += static_cast<double>(e[i]);
    int32_t cut_bucket = kBuckets - 1;
    double above = 0.0;
    for (; cut_bucket > 0; --cut_bucket) {
      if (above + mass[cut_bucket] >= target) break;
      above += mass[cut_bucket];
    }
    // One bucket of margin: the bucket sums and the sorted running sum round differently.
    cut_bucket = cut_bucket > 0 ? cut_bucket - 1 : 0;
    int32_t k = 0;
    for (int32_t i = 0; i < n_vocab; ++i)
      if (bucket_of(e[i]) >= cut_bucket) order[k++] = i;
    std::sort(order, order + k, before);
    double cumulative = 0.0;
    n = k;
    for (int32_t j = 0; j < k; ++j) {
      cumulative += static_cast<double>(e[order[j]]);
      if (cumulative >= target) {
        n = j + 1;
        break;
      }
    }
    kept = 0.0;
    for (int32_t j = 0; j < n; ++j) kept += static_cast<double>(e[order[j]]);
  }
  // Draw: walk the kept candidates (in candidate order under top_p, else by id).
  const double u = rng_.next_double() * kept;
  double cumulative = 0.0;
  for (int32_t j = 0; j < n; ++j) {
    cumulative += static_cast<double>(e[order[j]]);
    if (cumulative > u) return order[j];
  }
  return order[n - 1];
}

template <typename Before>
int32_t Sampler::sample_top_k(const Before& before) {
  const float* v = values_.data();
  int32_t* order = order_.data();
  int32_t n = params_.top_k;
  std::partial_sort(order, order + n, order + vocab_size_, before);
  const float max_value = v[order[0]];
  double* p = probs_.data();
  double sum = 0.0;
  for (int32_t j = 0; j < n; ++j) {
    const float x = v[order[j]];
    // x == max_value gives det_exp(0) == 1 for finite values and keeps an infinite max defined.
    p[j] = x == max_value ? 1.0
                          : det_exp(static_cast<double>(x) - static_cast<double>(max_value));
    sum += p[j];
  }
  for (int32_t j = 0; j < n; ++j) p[j] /= sum;
  if (params_.top_p < 1.0f) {
    const double top_p = params_.top_p;
    double cumulative = 0.0;
    for (int32_t j = 0; j < n; ++j) {
      cumulative += p[j];
      if (cumulative >= top_p) {
        n = j + 1;
        break;
      }
    }
  }
  double kept = 0.0;
  for (int32_t j = 0; j < n; ++j) kept += p[j];
  const double u = rng_.next_double() * kept;
  double cumulative = 0.0;
  for (int32_t j = 0; j < n; ++j) {
    cumulative += p[j];
    if (cumulative > u) return order[j];
  }
  return order[n - 1];
}

}  // namespace fwa
