// SPDX-License-Identifier: Apache-2.0
// C ABI: sessions (eval, decode, logits, context), the scheduler policy, sampling and
// generation. The decode path (fwa_session_decode, fwa_session_logits, fwa_sampler_sample)
// allocates nothing: checks, a handle-table lookup and the core calls only.
#include <sys/resource.h>

#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstring>
#include <string>
#include <vector>

#include "capi/handles.h"
#include "sched/energy.h"

using fwa_capi::fail;
using fwa_capi::fail_core;
using fwa_capi::guarded;

namespace {

double process_cpu_seconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return double(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         1e-6 * double(u.ru_utime.tv_usec + u.ru_stime.tv_usec);
}

// The id and context checks of fwa_session_eval, with the C ABI's specific statuses (the core
// reports both as invalid_argument).
fwa_status check_tokens(const fwa::Session& s, const int32_t* ids, size_t n, int64_t n_past,
                        const char* fn) {
  const int64_t vocab = s.vocab_size();
  for (size_t i = 0; i < n; ++i)
    if (ids[i] < 0 || ids[i] >= vocab)
      return fail(FWA_ERR_BAD_TOKEN, "%s: token id %d at position %zu is outside [0, %lld)", fn,
                  int(ids[i]), i, static_cast<long long>(vocab));
  const int64_t ctx = s.options().max_context;
  if (int64_t(n) > ctx - n_past)
    return fail(FWA_ERR_CONTEXT_FULL,
                "%s: %zu tokens after %lld do not fit in the context of %lld tokens", fn, n,
                static_cast<long long>(n_past), static_cast<long long>(ctx));
  return FWA_OK;
}

fwa_status eval_tokens(fwa_session* session, const int32_t* ids, size_t n, const char* fn) {
  fwa::Session& s = *session->session;
  fwa_status c = check_tokens(s, ids, n, s.n_past(), fn);
  if (c != FWA_OK) return c;
  std::string message;  // only filled (allocated) on failure
  const fwa::Status st = s.eval(ids, int64_t(n), fwa::LogitsOut::last, nullptr, &message);
  if (st != fwa::Status::ok) return fail_core(st, message);
  return FWA_OK;
}

fwa_status read_sampling(const fwa_sampling_params* p, fwa::SamplingParams* out,
                         const char* fn) {
  const fwa_status s = fwa_capi::check_struct(p, sizeof *p, fn);
  if (s != FWA_OK) return s;
  out->temperature = p->temperature;
  out->top_k = p->top_k;
  out->top_p = p->top_p;
  out->repetition_penalty = p->repetition_penalty;
  out->seed = p->seed;
  std::string message;
  const fwa::Status st = fwa::check_sampling_params(*out, &message);
  if (st != fwa::Status::ok) return fail(FWA_ERR_INVALID_ARGUMENT, "%s: %s", fn, message.c_str());
  return FWA_OK;
}

// The sizes before the code guard's fields were appended: still accepted (no guard, and the
// interventions count is not written).
constexpr size_t kGenerateParamsV1 = offsetof(fwa_generate_params, policy);
constexpr size_t kGenerationStatsV1 = offsetof(fwa_generation_stats, interventions);

uint32_t struct_size_of(const void* s) {
  uint32_t size;
  std::memcpy(&size, s, sizeof size);
  return size;
}

// params is the caller's struct; `current` says whether it has the guard's fields.
fwa_status read_generate(const fwa_generate_params* p, fwa::GenerateParams* out,
                         bool* current, const char* fn) {
  *current = false;
  if (!p) return FWA_OK;  // defaults
  fwa_status s = FWA_OK;
  if (struct_size_of(p) != kGenerateParamsV1) {
    if ((s = fwa_capi::check_struct(p, sizeof *p, fn)) != FWA_OK) return s;
    *current = true;
  }
  if (p->reserved0 != 0) return fail(FWA_ERR_INVALID_ARGUMENT, "%s: reserved0 must be 0", fn);
  if ((s = read_sampling(&p->sampling, &out->sampling, fn)) != FWA_OK) return s;
  if (p->max_tokens < 0)
    return fail(FWA_ERR_INVALID_ARGUMENT, "%s: max_tokens must be >= 0, got %lld", fn,
                static_cast<long long>(p->max_tokens));
  out->max_tokens = p->max_tokens;
  if (p->n_stop_strings && !p->stop_strings)
    return fail(FWA_ERR_NULL_ARGUMENT, "%s: stop_strings is NULL", fn);
  for (size_t i = 0; i < p->n_stop_strings; ++i) {
    if (!p->stop_strings[i])
      return fail(FWA_ERR_NULL_ARGUMENT, "%s: stop_strings[%zu] is NULL", fn, i);
    if (!p->stop_strings[i][0])
      return fail(FWA_ERR_INVALID_ARGUMENT, "%s: stop_strings[%zu] is empty", fn, i);
    out->stop_strings.emplace_back(p->stop_strings[i]);
  }
  if (p->n_stop_ids && !p->stop_ids) return fail(FWA_ERR_NULL_ARGUMENT, "%s: stop_ids is NULL", fn);
  out->stop_ids.assign(p->stop_ids, p->stop_ids + p->n_stop_ids);
  if (!*current) return FWA_OK;
  if (p->policy) {
    const fwa_policy* policy = fwa_capi::lookup(p->policy);
    if (!policy) return fwa_capi::handle_error(p->policy, "params->policy", "policy", fn);
    out->guard = policy->guard;
  }
  if (p->interventions_capacity && !p->interventions)
    return fail(FWA_ERR_NULL_ARGUMENT, "%s: interventions is NULL", fn);
  return FWA_OK;
}

struct CallbackBridge {
  fwa_token_callback callback;
  void* user;
};

bool call_user(void* user, int32_t token, const char* piece, size_t piece_len) {
  const CallbackBridge* b = static_cast<const CallbackBridge*>(user);
  return b->callback(b->user, token, piece, piece_len) == 0;
}

fwa_status run_generate(fwa_session* session, const int32_t* prompt, size_t n,
                        const fwa_generate_params* params, fwa_token_callback callback,
                        void* user, fwa_generation_stats* stats, const char* fn) {
  fwa::Session& s = *session->session;
  fwa::GenerateParams gp;
  bool params_current = false;
  fwa_status c = read_generate(params, &gp, &params_current, fn);
  if (c != FWA_OK) return c;
  const size_t stats_size =
      stats && struct_size_of(stats) == kGenerationStatsV1 ? kGenerationStatsV1 : sizeof *stats;
  if (stats && stats_size == sizeof *stats &&
      (c = fwa_capi::check_struct(stats, sizeof *stats, fn)) != FWA_OK)
    return c;
  if (n == 0) return fail(FWA_ERR_INVALID_ARGUMENT, "%s: the prompt is empty", fn);
  // The prompt replaces the context (its common prefix with the context is reused).
  if ((c = check_tokens(s, prompt, n, 0, fn)) != FWA_OK) return c;
  for (int32_t id : gp.stop_ids)
    if (id < 0 || id >= s.vocab_size())
      return fail(FWA_ERR_BAD_TOKEN, "%s: stop id %d is outside [0, %lld)", fn, int(id),
                  static_cast<long long>(s.vocab_size()));
  CallbackBridge bridge{callback, user};
  const double cpu0 = process_cpu_seconds();
  const auto t0 = std::chrono::steady_clock::now();
  std::string message;
  const fwa::Status st = fwa::generate(&s, prompt, int64_t(n), gp, callback ? call_user : nullptr,
                                       &bridge, &session->generation, &message);
  if (st != fwa::Status::ok) return fail_core(st, message);
  if (stats) {
    const fwa::Generation& g = session->generation;
    const fwa::GenerationStats& gs = g.stats();
    fwa_generation_stats out;
    fwa_generation_stats_init(&out);
    out.stop_reason = int32_t(g.stop_reason());
    out.prompt_tokens = gs.prompt_tokens;
    out.cached_tokens = gs.cached_tokens;
    out.generated_tokens = gs.generated_tokens;
    out.prefill_ms = gs.prefill_ms;
    out.decode_ms = gs.decode_ms;
    out.ttft_ms = gs.ttft_ms;
    out.prefill_tokens_per_s = gs.prefill_tokens_per_s();
    out.decode_tokens_per_s = gs.decode_tokens_per_s();
    const fwa::ModelConfig& mc = s.model().config();
    int64_t moe_layers = 0, sum = 0;
    for (int64_t l = 0; l < mc.num_layers; ++l)
      if (mc.is_moe_layer(l) && size_t(l) < gs.experts_activated.size()) {
        ++moe_layers;
        sum += gs.experts_activated[size_t(l)];
      }
    out.experts_activated_per_layer = moe_layers ? double(sum) / double(moe_layers) : 0.0;
    out.process_cpu_s = process_cpu_seconds() - cpu0;
    out.busy_core_s = gs.busy_core_s;
    out.spin_core_s = gs.spin_core_s;
    out.parked_core_s = gs.parked_core_s;
    out.weight_bytes_read = int64_t(gs.weight_bytes_read);
    out.wall_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    out.active_cores = s.active_threads();
    out.interventions = int64_t(gs.interventions.size());
    out.struct_size = uint32_t(stats_size);
    std::memcpy(stats, &out, stats_size);  // an older caller's struct ends before interventions
  }
  if (params_current && params->interventions) {
    const std::vector<fwa::GuardIntervention>& iv = session->generation.stats().interventions;
    for (size_t i = 0; i < iv.size() && i < params->interventions_capacity; ++i)
      params->interventions[i] = fwa_intervention{iv[i].rule, iv[i].token, iv[i].position};
  }
  return FWA_OK;
}

}  // namespace

extern "C" {

void fwa_session_options_init(fwa_session_options* options) {
  if (!options) return;
  std::memset(options, 0, sizeof *options);
  options->struct_size = sizeof *options;
  options->mode = FWA_MODE_EXACT;
  options->n_threads = 1;
  options->prefill_chunk = 128;
}

fwa_status fwa_session_create(fwa_model* model, const fwa_session_options* options,
                              fwa_session** session) {
  const char* fn = "fwa_session_create";
  return guarded(fn, [&] {
    FWA_CHECK_HANDLE(model, model, fn);
    FWA_CHECK_NOT_NULL(session, fn);
    fwa_session_options o;
    fwa_session_options_init(&o);
    if (options) {
      const fwa_status s = fwa_capi::check_struct(options, sizeof *options, fn);
      if (s != FWA_OK) return s;
      o = *options;
    }
    if (o.mode != FWA_MODE_EXACT && o.mode != FWA_MODE_FAST)
      return fail(FWA_ERR_INVALID_ARGUMENT, "%s: mode must be FWA_MODE_EXACT or FWA_MODE_FAST, "
                  "got %d", fn, int(o.mode));
    if (o.kv_cache != FWA_KV_F32 && o.kv_cache != FWA_KV_F16 && o.kv_cache != FWA_KV_BF16)
      return fail(FWA_ERR_INVALID_ARGUMENT, "%s: kv_cache must be FWA_KV_F32, FWA_KV_F16 or "
                  "FWA_KV_BF16, got %d", fn, int(o.kv_cache));
    fwa::SessionOptions so;
    so.kv_cache = fwa::KvType(o.kv_cache);
    so.mode = o.mode == FWA_MODE_FAST ? fwa::ComputeMode::fast : fwa::ComputeMode::exact;
    so.max_context = o.max_context;
    so.n_threads = o.n_threads;
    so.prefill_chunk = o.prefill_chunk;
    std::unique_ptr<fwa_session> h(new fwa_session());
    std::string message;
    const fwa::Status st = fwa::Session::create(model->model, so, &h->session, &message);
    if (st != fwa::Status::ok) return fail_core(st, message);
    const fwa_status registered = fwa_capi::register_handle(h.get(), session, fn);
    if (registered == FWA_OK) h.release();  // the table owns it now
    return registered;
  });
}

void fwa_session_free(fwa_session* session) {
  delete fwa_capi::unregister_handle(session);  // nothing when not a live session handle
}

fwa_status fwa_session_eval(fwa_session* session, const int32_t* ids, size_t n) {
  const char* fn = "fwa_session_eval";
  return guarded(fn, [&] {
    FWA_CHECK_HANDLE(session, session, fn);
    FWA_CHECK_NOT_NULL(ids, fn);
    if (n == 0) return fail(FWA_ERR_INVALID_ARGUMENT, "%s: no tokens to evaluate", fn);
    return eval_tokens(session, ids, n, fn);
  });
}

fwa_status fwa_session_decode(fwa_session* session, int32_t token) {
  const char* fn = "fwa_session_decode";
  return guarded(fn, [&] {
    FWA_CHECK_HANDLE(session, session, fn);
    return eval_tokens(session, &token, 1, fn);
  });
}

fwa_status fwa_session_logits(const fwa_session* session, const float** logits,
                              size_t* n_vocab) {
  const char* fn = "fwa_session_logits";
  return guarded(fn, [&] {
    FWA_CHECK_HANDLE(session, session, fn);
    FWA_CHECK_NOT_NULL(logits, fn);
    FWA_CHECK_NOT_NULL(n_vocab, fn);
    const fwa::Session& s = *session->session;
    if (!s.has_last_logits())
      return fail(FWA_ERR_NO_LOGITS, "%s: no token was evaluated since the last reset, "
                  "truncate or generation", fn);
    *logits = s.last_logits();
    *n_vocab = size_t(s.vocab_size());
    return FWA_OK;
  });
}

fwa_status fwa_session_n_past(const fwa_session* session, int64_t* n_past) {
  const char* fn = "fwa_session_n_past";
  return guarded(fn, [&] {
    FWA_CHECK_HANDLE(session, session, fn);
    FWA_CHECK_NOT_NULL(n_past, fn);
    *n_past = session->session->n_past();
    return FWA_OK;
  });
}

fwa_status fwa_session_truncate(fwa_session* session, int64_t n) {
  const char* fn = "fwa_session_truncate";
  return guarded(fn, [&] {
    FWA_CHECK_HANDLE(session, session, fn);
    std::string message;
    const fwa::Status st = session->session->truncate(n, &message);
    if (st != fwa::Status::ok) return fail_core(st, message);
    return FWA_OK;
  });
}

fwa_status fwa_session_reset(fwa_session* session) {
  const char* fn = "fwa_session_reset";
  return guarded(fn, [&] {
    FWA_CHECK_HANDLE(session, session, fn);
    session->session->reset();
    return FWA_OK;
  });
}

void fwa_sched_policy_init(fwa_sched_policy* policy) {
  if (!policy) return;
  std::memset(policy, 0, sizeof *policy);
  policy->struct_size = sizeof *policy;
}

fwa_status fwa_session_set_policy(fwa_session* session, const fwa_sched_policy* policy) {
  const char* fn = "fwa_session_set_policy";
  return guarded(fn, [&] {
    FWA_CHECK_HANDLE(session, session, fn);
    FWA_CHECK_NOT_NULL(policy, fn);
    const fwa_status s = fwa_capi::check_struct(policy, sizeof *policy, fn);
    if (s != FWA_OK) return s;
    fwa::Session& ss = *session->session;
    const int n_threads = ss.options().n_threads;
    if (policy->max_active_cores < 0 || policy->max_active_cores > n_threads)
      return fail(FWA_ERR_INVALID_ARGUMENT, "%s: max_active_cores must be in [0, %d] (0: all "
                  "the session's threads), got %d", fn, n_threads, int(policy->max_active_cores));
    if (!std::isfinite(policy->target_ms_per_token) || policy->target_ms_per_token < 0)
      return fail(FWA_ERR_INVALID_ARGUMENT, "%s: target_ms_per_token must be finite and >= 0, "
                  "got %g", fn, policy->target_ms_per_token);
    if (policy->memory_budget_bytes < 0)
      return fail(FWA_ERR_INVALID_ARGUMENT, "%s: memory_budget_bytes must be >= 0, got %lld",
                  fn, static_cast<long long>(policy->memory_budget_bytes));
    if (policy->reserved0 != 0)
      return fail(FWA_ERR_INVALID_ARGUMENT, "%s: reserved0 must be 0", fn);
    ss.set_policy(policy->max_active_cores, policy->target_ms_per_token);
    ss.model().set_expert_budget(uint64_t(policy->memory_budget_bytes),
                                 policy->lock_experts != 0);
    return FWA_OK;
  });
}

fwa_status fwa_session_get_policy(const fwa_session* session, fwa_sched_policy* policy) {
  const char* fn = "fwa_session_get_policy";
  return guarded(fn, [&] {
    FWA_CHECK_HANDLE(session, session, fn);
    FWA_CHECK_NOT_NULL(policy, fn);
    const fwa_status s = fwa_capi::check_struct(policy, sizeof *policy, fn);
    if (s != FWA_OK) return s;
    fwa_sched_policy out;
    fwa_sched_policy_init(&out);
    out.max_active_cores = session->session->max_active_threads();
    out.target_ms_per_token = session->session->target_ms_per_token();
    const fwa::ResidencyStats r = session->session->model().residency_stats();
    out.memory_budget_bytes = int64_t(r.budget_bytes);
    out.lock_experts = r.locked ? 1 : 0;
    *policy = out;
    return FWA_OK;
  });
}

fwa_status fwa_session_experts_activated(const fwa_session* session, int64_t* per_layer,
                                         size_t cap, size_t* needed) {
  const char* fn = "fwa_session_experts_activated";
  return guarded(fn, [&] {
    FWA_CHECK_HANDLE(session, session, fn);
    FWA_CHECK_NOT_NULL(needed, fn);
    const fwa::Session& s = *session->session;
    const size_t layers = size_t(s.model().config().num_layers);
    *needed = layers;
    if (!per_layer || cap < layers)
      return fail(FWA_ERR_BUFFER_TOO_SMALL, "%s: %zu layers do not fit in a buffer of %zu", fn,
                  layers, per_layer ? cap : size_t(0));
    for (size_t l = 0; l < layers; ++l) per_layer[l] = s.experts_activated(int64_t(l));
    return FWA_OK;
  });
}

fwa_status fwa_session_expert_tokens(const fwa_session* session, uint64_t* counts, size_t cap,
                                     size_t* needed) {
  const char* fn = "fwa_session_expert_tokens";
  return guarded(fn, [&] {
    FWA_CHECK_HANDLE(session, session, fn);
    FWA_CHECK_NOT_NULL(needed, fn);
    const fwa::Session& s = *session->session;
    const fwa::ModelConfig& c = s.model().config();
    const size_t n = size_t(c.num_layers * c.num_experts);
    *needed = n;
    if (!counts || cap < n)
      return fail(FWA_ERR_BUFFER_TOO_SMALL, "%s: %zu counts do not fit in a buffer of %zu", fn,
                  n, counts ? cap : size_t(0));
    std::memcpy(counts, s.expert_tokens(), n * sizeof(uint64_t));
    return FWA_OK;
  });
}

void fwa_residency_stats_init(fwa_residency_stats* stats) {
  if (!stats) return;
  std::memset(stats, 0, sizeof *stats);
  stats->struct_size = sizeof *stats;
}

fwa_status fwa_model_residency(const fwa_model* model, fwa_residency_stats* stats) {
  const char* fn = "fwa_model_residency";
  return guarded(fn, [&] {
    FWA_CHECK_HANDLE(model, model, fn);
    FWA_CHECK_NOT_NULL(stats, fn);
    // The struct before the prefetch fields were appended is filled that far.
    constexpr size_t kV1 = offsetof(fwa_residency_stats, prefetch);
    uint32_t size;
    std::memcpy(&size, stats, sizeof size);
    if (size != kV1) {
      const fwa_status s = fwa_capi::check_struct(stats, sizeof *stats, fn);
      if (s != FWA_OK) return s;
    }
    const fwa::ResidencyStats r = model->model->residency_stats();
    fwa_residency_stats out;
    fwa_residency_stats_init(&out);
    out.locked = r.locked ? 1 : 0;
    out.budget_bytes = r.budget_bytes;
    out.resident_bytes = r.resident_bytes;
    out.hits = r.hits;
    out.misses = r.misses;
    out.releases = r.releases;
    out.lock_failures = r.lock_failures;
    out.prefetch = r.prefetch ? 1 : 0;
    out.expert_bytes = r.expert_bytes;
    out.private_dense_bytes = model->model->private_dense_bytes();
    out.prefetch_issued = r.prefetch_issued;
    out.prefetch_fetched = r.prefetch_fetched;
    out.prefetch_useful = r.prefetch_useful;
    out.prefetch_wasted = r.prefetch_wasted;
    out.bytes_verified = r.bytes_verified;
    out.stall_ns = r.stall_ns;
    out.predicted = r.predicted;
    out.predicted_routed = r.predicted_routed;
    out.prefetch_skipped = r.prefetch_skipped;
    out.struct_size = size;
    std::memcpy(stats, &out, size);
    return FWA_OK;
  });
}

fwa_status fwa_model_set_expert_prefetch(fwa_model* model, int on) {
  const char* fn = "fwa_model_set_expert_prefetch";
  return guarded(fn, [&] {
    FWA_CHECK_HANDLE(model, model, fn);
    model->model->set_expert_prefetch(on != 0);
    return FWA_OK;
  });
}

fwa_status fwa_session_clear_expert_stats(fwa_session* session) {
  const char* fn = "fwa_session_clear_expert_stats";
  return guarded(fn, [&] {
    FWA_CHECK_HANDLE(session, session, fn);
    session->session->clear_expert_hits();
    return FWA_OK;
  });
}

void fwa_sampling_params_init(fwa_sampling_params* params) {
  if (!params) return;
  std::memset(params, 0, sizeof *params);
  params->struct_size = sizeof *params;
  params->top_p = 1.0f;
  params->repetition_penalty = 1.0f;
}

fwa_status fwa_sampler_create(const fwa_model* model, const fwa_sampling_params* params,
                              fwa_sampler** sampler) {
  const char* fn = "fwa_sampler_create";
  return guarded(fn, [&] {
    FWA_CHECK_HANDLE(model, model, fn);
    FWA_CHECK_NOT_NULL(params, fn);
    FWA_CHECK_NOT_NULL(sampler, fn);
    fwa::SamplingParams sp;
    const fwa_status s = read_sampling(params, &sp, fn);
    if (s != FWA_OK) return s;
    std::unique_ptr<fwa_sampler> h(new fwa_sampler());
    h->vocab_size = int32_t(model->model->config().vocab_size);
    std::string message;
    const fwa::Status st = h->sampler.init(h->vocab_size, &message);
    if (st != fwa::Status::ok) return fail_core(st, message);
    h->sampler.reset(sp);
    const fwa_status registered = fwa_capi::register_handle(h.get(), sampler, fn);
    if (registered == FWA_OK) h.release();  // the table owns it now
    return registered;
  });
}

void fwa_sampler_free(fwa_sampler* sampler) {
  delete fwa_capi::unregister_handle(sampler);  // nothing when not a live sampler handle
}

fwa_status fwa_sampler_reset(fwa_sampler* sampler, const fwa_sampling_params* params) {
  const char* fn = "fwa_sampler_reset";
  return guarded(fn, [&] {
    FWA_CHECK_HANDLE(sampler, sampler, fn);
    FWA_CHECK_NOT_NULL(params, fn);
    fwa::SamplingParams sp;
    const fwa_status s = read_sampling(params, &sp, fn);
    if (s != FWA_OK) return s;
    sampler->sampler.reset(sp);
    return FWA_OK;
  });
}

fwa_status fwa_sampler_sample(fwa_sampler* sampler, const fwa_session* session, int32_t* token) {
  const char* fn = "fwa_sampler_sample";
  return guarded(fn, [&] {
    FWA_CHECK_HANDLE(sampler, sampler, fn);
    FWA_CHECK_HANDLE(session, session, fn);
    FWA_CHECK_NOT_NULL(token, fn);
    const fwa::Session& s = *session->session;
    if (s.vocab_size() != sampler->vocab_size)
      return fail(FWA_ERR_INVALID_ARGUMENT, "%s: the sampler was made for a vocabulary of %d, "
                  "the session's model has %lld", fn, int(sampler->vocab_size),
                  static_cast<long long>(s.vocab_size()));
    if (!s.has_last_logits())
      return fail(FWA_ERR_NO_LOGITS, "%s: no token was evaluated since the last reset, "
                  "truncate or generation", fn);
    const std::vector<int32_t>& history = s.tokens();
    *token = sampler->sampler.sample(s.last_logits(), history.data(), history.size());
    return FWA_OK;
  });
}

fwa_status fwa_policy_compile(const fwa_model* model, const fwa_policy_pattern* patterns,
                              size_t n_patterns, const char* const* rule_ids, size_t n_rules,
                              fwa_policy** policy) {
  const char* fn = "fwa_policy_compile";
  return guarded(fn, [&] {
    FWA_CHECK_HANDLE(model, model, fn);
    FWA_CHECK_NOT_NULL(policy, fn);
    if (n_patterns && !patterns) return fail(FWA_ERR_NULL_ARGUMENT, "%s: patterns is NULL", fn);
    if (n_rules && !rule_ids) return fail(FWA_ERR_NULL_ARGUMENT, "%s: rule_ids is NULL", fn);
    if (!model->model->has_tokenizer())
      return fail(FWA_ERR_NO_TOKENIZER, "%s: the artifact carries no tokenizer: a code policy "
                  "needs the bytes of its tokens", fn);
    if (n_patterns > fwa::kMaxGuardPatterns || n_rules > fwa::kMaxGuardRules)
      return fail(FWA_ERR_CAP_EXCEEDED, "%s: %zu patterns and %zu rules, the caps are %zu and %zu",
                  fn, n_patterns, n_rules, fwa::kMaxGuardPatterns, fwa::kMaxGuardRules);
    std::vector<std::string> rules;
    for (size_t i = 0; i < n_rules; ++i) {
      if (!rule_ids[i]) return fail(FWA_ERR_NULL_ARGUMENT, "%s: rule_ids[%zu] is NULL", fn, i);
      rules.emplace_back(rule_ids[i]);
    }
    std::vector<fwa::GuardPattern> pats;
    for (size_t i = 0; i < n_patterns; ++i) {
      if (!patterns[i].text)
        return fail(FWA_ERR_NULL_ARGUMENT, "%s: patterns[%zu].text is NULL", fn, i);
      if (patterns[i].kind != FWA_PATTERN_CALL && patterns[i].kind != FWA_PATTERN_LITERAL)
        return fail(FWA_ERR_INVALID_ARGUMENT, "%s: patterns[%zu].kind is %d (FWA_PATTERN_CALL "
                    "or FWA_PATTERN_LITERAL)", fn, i, int(patterns[i].kind));
      const size_t len = strnlen(patterns[i].text, fwa::kMaxGuardPatternBytes + 1);
      pats.push_back({std::string(patterns[i].text, len),
                      fwa::GuardPatternKind(patterns[i].kind), patterns[i].rule});
    }
    std::unique_ptr<fwa_policy> h(new fwa_policy());
    std::string message;
    const fwa::Status st = fwa::CodeGuard::create(pats, rules, *model->model, &h->guard, &message);
    if (st != fwa::Status::ok)
      return fail(fwa_status(int(st)), "%s: %s", fn, message.c_str());
    const fwa_status registered = fwa_capi::register_handle(h.get(), policy, fn);
    if (registered == FWA_OK) h.release();  // the table owns it now
    return registered;
  });
}

void fwa_policy_free(fwa_policy* policy) {
  delete fwa_capi::unregister_handle(policy);  // nothing when not a live policy handle
}

void fwa_generate_params_init(fwa_generate_params* params) {
  if (!params) return;
  std::memset(params, 0, sizeof *params);
  params->struct_size = sizeof *params;
  fwa_sampling_params_init(&params->sampling);
  params->max_tokens = 64;
}

void fwa_generation_stats_init(fwa_generation_stats* stats) {
  if (!stats) return;
  std::memset(stats, 0, sizeof *stats);
  stats->struct_size = sizeof *stats;
}

fwa_status fwa_generate(fwa_session* session, const int32_t* prompt, size_t n_prompt,
                        const fwa_generate_params* params, fwa_token_callback callback,
                        void* user, fwa_generation_stats* stats) {
  const char* fn = "fwa_generate";
  return guarded(fn, [&] {
    FWA_CHECK_HANDLE(session, session, fn);
    FWA_CHECK_NOT_NULL(prompt, fn);
    return run_generate(session, prompt, n_prompt, params, callback, user, stats, fn);
  });
}

fwa_status fwa_generate_text(fwa_session* session, const char* prompt, size_t prompt_len,
                             const fwa_generate_params* params, fwa_token_callback callback,
                             void* user, fwa_generation_stats* stats) {
  const char* fn = "fwa_generate_text";
  return guarded(fn, [&] {
    FWA_CHECK_HANDLE(session, session, fn);
    FWA_CHECK_NOT_NULL(prompt, fn);
    const fwa::Model& m = session->session->model();
    if (!m.has_tokenizer())
      return fail(FWA_ERR_NO_TOKENIZER, "%s: the artifact carries no tokenizer", fn);
    std::vector<int32_t> ids;
    std::string message;
    const fwa::Status st = m.encode(std::string_view(prompt, prompt_len), &ids, &message);
    if (st != fwa::Status::ok) return fail_core(st, message);
    return run_generate(session, ids.data(), ids.size(), params, callback, user, stats, fn);
  });
}

void fwa_energy_model_init(fwa_energy_model* model) {
  if (!model) return;
  std::memset(model, 0, sizeof *model);
  model->struct_size = sizeof *model;
}

void fwa_energy_report_init(fwa_energy_report* report) {
  if (!report) return;
  std::memset(report, 0, sizeof *report);
  report->struct_size = sizeof *report;
}

fwa_status fwa_energy_estimate(const fwa_generation_stats* stats, const fwa_energy_model* model,
                               double grid_intensity_g_per_kwh, double embodied_g,
                               fwa_energy_report* report) {
  const char* fn = "fwa_energy_estimate";
  return guarded(fn, [&] {
    FWA_CHECK_NOT_NULL(stats, fn);
    FWA_CHECK_NOT_NULL(model, fn);
    FWA_CHECK_NOT_NULL(report, fn);
    fwa_status s = FWA_OK;
    if ((struct_size_of(stats) != kGenerationStatsV1 &&  // an older caller's stats still count
         (s = fwa_capi::check_struct(stats, sizeof *stats, fn)) != FWA_OK) ||
        (s = fwa_capi::check_struct(model, sizeof *model, fn)) != FWA_OK ||
        (s = fwa_capi::check_struct(report, sizeof *report, fn)) != FWA_OK)
      return s;
    if (model->reserved0 != 0)
      return fail(FWA_ERR_INVALID_ARGUMENT, "%s: reserved0 must be 0", fn);
    const struct {
      const char* name;
      double value;
    } inputs[] = {{"idle_power_w", model->idle_power_w},
                  {"core_busy_power_w", model->core_busy_power_w},
                  {"core_spin_power_w", model->core_spin_power_w},
                  {"core_parked_power_w", model->core_parked_power_w},
                  {"dram_energy_j_per_byte", model->dram_energy_j_per_byte},
                  {"grid_intensity_g_per_kwh", grid_intensity_g_per_kwh},
                  {"embodied_g", embodied_g},
                  // The activity too: a NaN or negative figure would come out as a NaN or
                  // negative report with FWA_OK.
                  {"stats->wall_s", stats->wall_s},
                  {"stats->busy_core_s", stats->busy_core_s},
                  {"stats->spin_core_s", stats->spin_core_s},
                  {"stats->parked_core_s", stats->parked_core_s},
                  {"stats->process_cpu_s", stats->process_cpu_s}};
    for (const auto& in : inputs)
      if (!std::isfinite(in.value) || in.value < 0)
        return fail(FWA_ERR_INVALID_ARGUMENT, "%s: %s must be finite and >= 0, got %g", fn,
                    in.name, in.value);
    if (stats->weight_bytes_read < 0 || stats->generated_tokens < 0)
      return fail(FWA_ERR_INVALID_ARGUMENT,
                  "%s: stats->weight_bytes_read and stats->generated_tokens must be >= 0", fn);
    fwa::EnergyModel m;
    m.idle_power_w = model->idle_power_w;
    m.core_busy_power_w = model->core_busy_power_w;
    m.core_spin_power_w = model->core_spin_power_w;
    m.core_parked_power_w = model->core_parked_power_w;
    m.dram_energy_j_per_byte = model->dram_energy_j_per_byte;
    fwa::EnergyActivity a;
    a.wall_s = stats->wall_s;
    a.busy_core_s = stats->busy_core_s;
    a.spin_core_s = stats->spin_core_s;
    a.parked_core_s = stats->parked_core_s;
    a.process_cpu_s = stats->process_cpu_s;
    a.weight_bytes_read = double(stats->weight_bytes_read);
    a.generated_tokens = stats->generated_tokens;
    const fwa::EnergyBreakdown e =
        fwa::estimate_energy(a, m, grid_intensity_g_per_kwh, embodied_g);
    fwa_energy_report out;
    fwa_energy_report_init(&out);
    out.static_j = e.static_j;
    out.busy_j = e.busy_j;
    out.spin_j = e.spin_j;
    out.parked_j = e.parked_j;
    out.other_cpu_j = e.other_cpu_j;
    out.memory_j = e.memory_j;
    out.total_j = e.total_j;
    out.energy_kwh = e.energy_kwh;
    out.operational_g = e.operational_g;
    out.total_g = e.total_g;
    out.sci_g_per_1k_tokens = e.sci_g_per_1k_tokens;
    *report = out;
    return FWA_OK;
  });
}

}  // extern "C"
