// SPDX-License-Identifier: Apache-2.0
#include "model/generate.h"

#include <algorithm>
#include <new>

namespace fwa {

namespace {

Status fail(std::string* message, Status st, const std::string& text) {
  if (message) *message = text;
  return st;
}

double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

bool ends_with_replacement(const std::string& s) {
  return s.size() >= 3 && s.compare(s.size() - 3, 3, "\xEF\xBF\xBD") == 0;
}

}  // namespace

const char* stop_reason_name(StopReason r) {
  switch (r) {
    case StopReason::none: return "none";
    case StopReason::max_tokens: return "max_tokens";
    case StopReason::stop_string: return "stop_string";
    case StopReason::stop_id: return "stop_id";
    case StopReason::context_full: return "context_full";
    case StopReason::cancelled: return "cancelled";
    case StopReason::policy: return "policy";
    case StopReason::non_finite: return "non_finite";
  }
  return "none";
}

int32_t guarded_sample(Sampler& sampler, const CodeGuard* guard, int32_t state,
                       const float* logits, const int32_t* history, size_t n_history,
                       int64_t position, std::vector<GuardIntervention>* interventions,
                       int32_t* next_state, bool* blocked) {
  *blocked = false;
  *next_state = state;
  const Rng before = sampler.rng();
  int32_t tok = sampler.sample(logits, history, n_history);
  if (!guard) return tok;
  int32_t rule;
  *next_state = guard->feed_token(state, tok, &rule);
  if (rule < 0) return tok;
  interventions->push_back({rule, tok, position});
  sampler.restore_rng(before);
  tok = sampler.sample(logits, history, n_history, guard->banned(state));
  *next_state = guard->feed_token(state, tok, &rule);
  *blocked = rule >= 0;
  return tok;
}

int32_t guard_state_after(const CodeGuard* guard, const int32_t* tokens, int64_t n) {
  int32_t state = CodeGuard::kStart, rule;
  if (guard)
    for (int64_t i = 0; i < n; ++i) state = guard->feed_token(state, tokens[i], &rule);
  return state;
}

double GenerationStats::prefill_tokens_per_s() const {
  const int64_t n = prompt_tokens - cached_tokens;
  return prefill_ms > 0 ? double(n) * 1000.0 / prefill_ms : 0.0;
}

double GenerationStats::decode_tokens_per_s() const {
  // Every generated token costs one sampling and one decode step.
  return decode_ms > 0 ? double(generated_tokens) * 1000.0 / decode_ms : 0.0;
}

Status Generation::start(Session* session, const int32_t* prompt, int64_t n,
                         const GenerateParams& params, std::string* message) {
  if (!session) return fail(message, Status::invalid_argument, "generate: no session");
  if (n < 1) return fail(message, Status::invalid_argument, "generate: the prompt is empty");
  if (params.max_tokens < 1)
    return fail(message, Status::invalid_argument, "generate: max_tokens must be >= 1");
  Status st = check_sampling_params(params.sampling, message);
  if (st != Status::ok) return st;
  const Model& model = session->model();
  if (!params.stop_strings.empty() && !model.has_tokenizer())
    return fail(message, Status::invalid_argument,
                "generate: stop strings need a tokenizer; the model has none (use stop ids)");
  for (const std::string& s : params.stop_strings)
    if (s.empty()) return fail(message, Status::invalid_argument, "generate: empty stop string");
  if (params.guard && params.guard->vocab_size() != session->vocab_size())
    return fail(message, Status::invalid_argument,
                "generate: the code policy was compiled for a vocabulary of " +
                    std::to_string(params.guard->vocab_size()) + " tokens, the model has " +
                    std::to_string(session->vocab_size()));
  try {
    s_ = session;
    p_ = params;
    generated_.clear();
    generated_.reserve(size_t(std::min<int64_t>(params.max_tokens, 1 << 20)));
    text_.clear();
    unreleased_.clear();
    pending_from_ = 0;
    done_ = false;
    reason_ = StopReason::none;
    has_tokenizer_ = model.has_tokenizer();
    stats_ = GenerationStats();
    if (params.guard)
      stats_.interventions.reserve(size_t(std::min<int64_t>(params.max_tokens, 1 << 20)));
    st = sampler_.init(int32_t(session->vocab_size()), message);
    if (st != Status::ok) return st;
    sampler_.reset(params.sampling);

    t_start_ = std::chrono::steady_clock::now();
    session->pool_stats(&pool_start_);
    bytes_start_ = session->weight_bytes_read();
    const std::vector<int32_t>& ctx = session->tokens();
    int64_t common = 0;
    const int64_t lim = std::min<int64_t>(int64_t(ctx.size()), n);
    while (common < lim && ctx[size_t(common)] == prompt[common]) ++common;
    const int64_t keep = std::min(common, n - 1);  // the last prompt token gives the logits
    session->truncate(keep, nullptr);
    session->clear_expert_hits();
    stats_.prompt_tokens = n;
    stats_.cached_tokens = keep;
    st = session->eval(prompt + keep, n - keep, LogitsOut::last, nullptr, message);
    epoch_ = session->epoch();
    stats_.prefill_ms = ms_since(t_start_);
    if (st != Status::ok) {
      done_ = true;
      return st;
    }
    stats_.experts_activated.assign(size_t(model.config().num_layers), 0);
    // The guard's state follows the whole context, which is now exactly the prompt: a pattern
    // begun in the prompt is completed (and caught) in the output.
    guard_state_ = guard_state_after(params.guard.get(), prompt, n);
    return Status::ok;
  } catch (const std::bad_alloc&) {
    done_ = true;
    return fail(message, Status::io_error, "generate: out of memory");
  }
}

Status Generation::flush_text(bool final, std::string* piece, std::string* message) {
  if (!has_tokenizer_) return Status::ok;
  const size_t end = generated_.size();
  if (pending_from_ < end) {
    Status st = s_->model().decode(generated_.data() + pending_from_, end - pending_from_,
                                   true, &decoded_, message);
    if (st != Status::ok) return st;
    // A character split across tokens decodes to U+FFFD until its last byte arrives.
    if (!final && ends_with_replacement(decoded_) && end - pending_from_ < 4) return Status::ok;
    pending_from_ = end;
    unreleased_ += decoded_;
  }
  // Released text never ends with the beginning of a stop string (it is held back below), so
  // a stop string can only begin in unreleased_: only that is searched.
  size_t stop_at = std::string::npos;
  for (const std::string& s : p_.stop_strings) stop_at = std::min(stop_at, unreleased_.find(s));
  if (stop_at != std::string::npos) {
    piece->append(unreleased_, 0, stop_at);
    text_.append(unreleased_, 0, stop_at);
    unreleased_.clear();
    done_ = true;
    reason_ = StopReason::stop_string;
    return Status::ok;
  }
  // Hold back the longest suffix that is a proper prefix of a stop string.
  size_t hold = 0;
  if (!final)
    for (const std::string& s : p_.stop_strings)
      for (size_t len = std::min(s.size() - 1, unreleased_.size()); len > hold; --len)
        if (unreleased_.compare(unreleased_.size() - len, len, s, 0, len) == 0) {
          hold = len;
          break;
        }
  const size_t release = unreleased_.size() - hold;
  piece->append(unreleased_, 0, release);
  text_.append(unreleased_, 0, release);
  unreleased_.erase(0, release);
  return Status::ok;
}

void Generation::cancel() {
  if (done_ || !s_) return;
  done_ = true;
  reason_ = StopReason::cancelled;
  finish_stats();
}

void Generation::finish_stats() {
  stats_.generated_tokens = int64_t(generated_.size());
  const ModelConfig& c = s_->model().config();
  for (int64_t l = 0; l < c.num_layers; ++l)
    stats_.experts_activated[size_t(l)] = s_->experts_activated(l);
  ThreadPoolStats now;
  s_->pool_stats(&now);
  const ThreadPoolThreadStats& c0 = now.thread[0];
  const ThreadPoolThreadStats& b0 = pool_start_.thread[0];
  const double caller_waits_s = 1e-9 * double(c0.spin_ns - b0.spin_ns + c0.parked_ns - b0.parked_ns);
  const double workers_busy_s = 1e-9 * double(now.busy_ns - pool_start_.busy_ns -
                                               (c0.busy_ns - b0.busy_ns));
  stats_.busy_core_s = std::max(0.0, 1e-3 * (stats_.prefill_ms + stats_.decode_ms) -
                                         caller_waits_s) + workers_busy_s;
  stats_.spin_core_s = 1e-9 * double(now.spin_ns - pool_start_.spin_ns);
  stats_.parked_core_s = 1e-9 * double(now.parked_ns - pool_start_.parked_ns);
  stats_.weight_bytes_read = s_->weight_bytes_read() - bytes_start_;
}

Status Generation::next(int32_t* token, std::string* piece, bool* done, std::string* message) {
  *token = -1;
  piece->clear();
  *done = done_;
  if (done_ || !s_) return Status::ok;
  try {
    if (superseded())  // stays refused: the context it continued is gone
      return fail(message, Status::invalid_argument,
                  "generate: this generation was superseded: its session was used by a later "
                  "generation or call (eval, truncate, reset) since its last token");
    Status st;
    const auto t0 = std::chrono::steady_clock::now();
    if (s_->n_past() >= s_->options().max_context) {
      // No room to keep another token in the context: every emitted token is in it.
      reason_ = StopReason::context_full;
      done_ = true;
    } else {
      bool blocked = false;
      int32_t guard_next = guard_state_;
      const int32_t tok = guarded_sample(sampler_, p_.guard.get(), guard_state_,
                                         s_->last_logits(), s_->tokens().data(),
                                         size_t(s_->n_past()), int64_t(generated_.size()),
                                         &stats_.interventions, &guard_next, &blocked);
      if (blocked) {  // nothing the sampler can pick is allowed
        reason_ = StopReason::policy;
        done_ = true;
      }
      // Time to first token: the prefill plus the first sampling (not the caller's time).
      if (generated_.empty()) stats_.ttft_ms = stats_.prefill_ms + ms_since(t0);
      if (done_) {
        // Stopped by the guard: the banned token is neither emitted nor kept.
      } else if (std::find(p_.stop_ids.begin(), p_.stop_ids.end(), tok) != p_.stop_ids.end()) {
        reason_ = StopReason::stop_id;  // the stop token is neither emitted nor kept
        done_ = true;
      } else {
        // The token joins the context, so the session continues exactly after the text.
        st = s_->eval(&tok, 1, LogitsOut::last, nullptr, message);
        epoch_ = s_->epoch();
        if (st != Status::ok) {
          done_ = *done = true;
          finish_stats();
          return st;
        }
        generated_.push_back(tok);
        guard_state_ = guard_next;
        *token = tok;
        stats_.decode_ms += ms_since(t0);
        if ((st = flush_text(false, piece, message)) != Status::ok) {
          done_ = *done = true;
          return st;
        }
        if (!done_ && int64_t(generated_.size()) >= p_.max_tokens) {
          reason_ = StopReason::max_tokens;
          done_ = true;
        }
      }
    }
    if (done_) {
      if (reason_ != StopReason::stop_string &&
          (st = flush_text(true, piece, message)) != Status::ok)
        return st;
      finish_stats();
      *done = true;
    }
    return Status::ok;
  } catch (const std::bad_alloc&) {
    done_ = *done = true;
    return fail(message, Status::io_error, "generate: out of memory");
  }
}

Status generate(Session* session, const int32_t* prompt, int64_t n, const GenerateParams& params,
                TokenCallback callback, void* user, Generation* out, std::string* message) {
  Status st = out->start(session, prompt, n, params, message);
  if (st != Status::ok) return st;
  std::string piece;
  bool done = false;
  while (!done) {
    int32_t tok = -1;
    if ((st = out->next(&tok, &piece, &done, message)) != Status::ok) return st;
    if (callback && (tok >= 0 || !piece.empty()) &&
        !callback(user, tok, piece.data(), piece.size()))
      out->cancel();
    done = done || out->stop_reason() == StopReason::cancelled;
  }
  return Status::ok;
}

}  // namespace fwa
