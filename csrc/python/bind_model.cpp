// SPDX-License-Identifier: Apache-2.0
// Bindings of the runtime (csrc/model): NativeModel (a loaded, verified model), NativeSession
// (context, KV cache, forward), NativeGeneration (pull-style generation) and NativeBatch
// (generations in slots decoded together, model/batch.h). fwassist.runtime
// wraps them in the typed API. The GIL is released around every forward pass; a session's
// calls are serialised by its own mutex, so two Python threads cannot race on one session.
// That mutex is only ever taken with the GIL released (with_session): a thread holding it may
// be waiting for the GIL, so blocking on it while holding the GIL would deadlock.
//
// Errors: artifact statuses (digest mismatch of a lazily verified expert, wrong pin...) raise
// fwassist._core.ArtifactFailure(status, message); invalid arguments raise ValueError; use
// after close and anything else RuntimeError.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>
#include <nanobind/stl/vector.h>

#include <chrono>
#include <cstring>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "artifact/reader.h"
#include "bind_release.h"
#include "errors.h"
#include "model/batch.h"
#include "model/generate.h"
#include "model/guard.h"
#include "model/model.h"
#include "model/session.h"

namespace nb = nanobind;
using namespace nb::literals;

namespace {

// Artifact statuses (10..22) and non_finite (a NaN or Inf weight refused at open or on an
// expert's first use, or values that overflow float32, in either mode) become
// fwassist._core.ArtifactFailure through the translator of bind_artifact.cpp; invalid
// arguments ValueError; anything else RuntimeError.
[[noreturn]] void raise_status(fwa::Status st, const std::string& message) {
  if ((int(st) >= 10 && int(st) <= 22) || st == fwa::Status::non_finite)
    throw fwa_python::ArtifactFailure{st, message};
  if (st == fwa::Status::invalid_argument) throw nb::value_error(message.c_str());
  throw std::runtime_error(std::string(fwa::status_string(st)) + ": " + message);
}

void check(fwa::Status st, const std::string& message) {
  if (st != fwa::Status::ok) raise_status(st, message);
}

// Runs f(&message) -> Status with the GIL released (f must not touch Python objects), then
// raises its failure.
template <typename F>
void check_nogil(F&& f) {
  std::string msg;
  fwa::Status st;
  {
    nb::gil_scoped_release nogil;
    st = f(&msg);
  }
  check(st, msg);
}

struct NativeModel {
  std::shared_ptr<fwa::Model> model;
  std::optional<int64_t> security_version;  // set once verify_release succeeded
  std::optional<int64_t> policy_version;    // ... with a signed policy (root keys)
};

struct NativeSession {
  std::shared_ptr<fwa::Model> model;
  std::unique_ptr<fwa::Session> session;  // null once closed
  std::mutex mu;
};

struct Closed {};

// Runs f(*obj) under mu, with the GIL released; f must not touch Python objects. Raises
// RuntimeError(closed_message) if obj is null (closed).
template <typename T, typename F>
auto with_lock(std::mutex& mu, const std::unique_ptr<T>& obj, const char* closed_message, F&& f)
    -> decltype(f(*obj)) {
  try {
    nb::gil_scoped_release nogil;
    std::lock_guard<std::mutex> lock(mu);
    if (!obj) throw Closed();
    return f(*obj);
  } catch (const Closed&) {
    throw std::runtime_error(closed_message);
  }
}

// f(session) under the session's lock (with_lock).
template <typename F>
auto with_session(NativeSession& ns, F&& f) -> decltype(f(*ns.session)) {
  return with_lock(ns.mu, ns.session, "the session is closed", std::forward<F>(f));
}

// pin: None for no pin; "" is a malformed pin (parse_pin).
NativeModel load_model(const std::string& path, const std::optional<std::string>& pin, bool lazy,
                       bool copy, bool strict, bool private_dense) {
  fwa::ModelLoadOptions o;
  o.private_dense = private_dense;
  o.pin = pin;
  o.lazy = lazy;
  o.copy = copy;
  o.strict = strict;
  std::shared_ptr<fwa::Model> m;
  check_nogil([&](std::string* msg) { return fwa::Model::load(path, o, &m, msg); });
  return NativeModel{std::move(m)};
}

fwa::KvType kv_type(const std::string& name) {
  if (name == "f32") return fwa::KvType::f32;
  if (name == "f16") return fwa::KvType::f16;
  if (name == "bf16") return fwa::KvType::bf16;
  throw nb::value_error(("kv_cache must be 'f32', 'f16' or 'bf16', got '" + name + "'").c_str());
}

// The options of a session and of a batch decoder's slots.
fwa::SessionOptions session_options(int64_t max_context, const std::string& mode, int threads,
                                    int64_t prefill_chunk, const std::string& kv_cache) {
  fwa::SessionOptions o;
  o.max_context = max_context;
  if (mode == "exact")
    o.mode = fwa::ComputeMode::exact;
  else if (mode == "fast")
    o.mode = fwa::ComputeMode::fast;
  else
    throw nb::value_error(("mode must be 'exact' or 'fast', got '" + mode + "'").c_str());
  o.n_threads = threads;
  o.prefill_chunk = prefill_chunk;
  o.kv_cache = kv_type(kv_cache);
  return o;
}

NativeSession* make_session(const NativeModel& m, int64_t max_context, const std::string& mode,
                            int threads, int64_t prefill_chunk, const std::string& kv_cache) {
  const fwa::SessionOptions o =
      session_options(max_context, mode, threads, prefill_chunk, kv_cache);
  std::unique_ptr<fwa::Session> s;
  check_nogil([&](std::string* msg) { return fwa::Session::create(m.model, o, &s, msg); });
  auto* out = new NativeSession();
  out->model = m.model;
  out->session = std::move(s);
  return out;
}

using IdArray = nb::ndarray<const int32_t, nb::ndim<1>, nb::c_contig, nb::device::cpu>;
using LogitArray = nb::ndarray<float, nb::ndim<2>, nb::c_contig, nb::device::cpu>;

// Appends ids and writes every position's logits into out [n, vocab].
void session_logits(NativeSession& ns, IdArray ids, LogitArray out) {
  const int64_t n = int64_t(ids.shape(0));
  const int32_t* id_data = ids.data();
  float* out_data = out.data();
  const int64_t rows = int64_t(out.shape(0)), cols = int64_t(out.shape(1));
  std::string msg;
  const fwa::Status st = with_session(ns, [&](fwa::Session& s) {
    if (rows != n || cols != s.vocab_size()) {
      msg = "logits: the output array must be [len(ids), vocab_size]";
      return fwa::Status::invalid_argument;
    }
    return s.eval(id_data, n, fwa::LogitsOut::all, out_data, &msg);
  });
  check(st, msg);
}

// A compiled code policy bound to a vocabulary (model/guard.h); immutable, shared.
struct NativeGuard {
  std::shared_ptr<const fwa::CodeGuard> guard;
};

std::vector<fwa::GuardPattern> make_patterns(const std::vector<std::string>& texts,
                                             const std::vector<int32_t>& kinds,
                                             const std::vector<int32_t>& rules) {
  if (texts.size() != kinds.size() || texts.size() != rules.size())
    throw nb::value_error("texts, kinds and rules must have the same length");
  std::vector<fwa::GuardPattern> out;
  for (size_t i = 0; i < texts.size(); ++i) {
    if (kinds[i] != 0 && kinds[i] != 1) throw nb::value_error("a pattern kind is 0 or 1");
    out.push_back({texts[i], fwa::GuardPatternKind(kinds[i]), rules[i]});
  }
  return out;
}

NativeGuard* guard_for_model(const NativeModel& m, const std::vector<std::string>& texts,
                             const std::vector<int32_t>& kinds, const std::vector<int32_t>& rules,
                             const std::vector<std::string>& rule_names) {
  auto g = std::make_unique<NativeGuard>();
  const std::vector<fwa::GuardPattern> pats = make_patterns(texts, kinds, rules);
  check_nogil([&](std::string* msg) {
    return fwa::CodeGuard::create(pats, rule_names, *m.model, &g->guard, msg);
  });
  return g.release();
}

NativeGuard* guard_for_tokens(const std::vector<std::string>& texts,
                              const std::vector<int32_t>& kinds, const std::vector<int32_t>& rules,
                              const std::vector<std::string>& rule_names,
                              const std::vector<nb::bytes>& tokens) {
  auto g = std::make_unique<NativeGuard>();
  std::vector<std::string> bytes;
  bytes.reserve(tokens.size());
  for (const nb::bytes& t : tokens) bytes.emplace_back(t.c_str(), t.size());
  std::string msg;
  check(fwa::CodeGuard::create(make_patterns(texts, kinds, rules), rule_names, bytes, &g->guard,
                               &msg),
        msg);
  return g.release();
}

nb::tuple guard_feed(const NativeGuard& g, int32_t state, const nb::bytes& data) {
  if (state < 0 || state >= g.guard->num_states()) throw nb::value_error("no such state");
  int32_t rule;
  const int32_t to = g.guard->feed(state, reinterpret_cast<const uint8_t*>(data.c_str()),
                                   data.size(), &rule);
  return nb::make_tuple(to, rule);
}

std::vector<int32_t> guard_banned(const NativeGuard& g, int32_t state) {
  if (state < 0 || state >= g.guard->num_states()) throw nb::value_error("no such state");
  const uint64_t* mask = g.guard->banned(state);
  std::vector<int32_t> out;
  for (int32_t t = 0; t < g.guard->vocab_size(); ++t)
    if (mask[t >> 6] >> (t & 63) & 1) out.push_back(t);
  return out;
}

// The sampler path of one decode step, timed per step over rows of logits (benchmarks/guard.py):
// with a guard, the guard's work of Generation::next (walk the sampled token; on a banned one,
// the masked second draw) is included and its state follows the chosen tokens. Returns (tokens,
// nanoseconds per step, interventions).
nb::tuple bench_guard_sample(nb::ndarray<const float, nb::ndim<2>, nb::c_contig, nb::device::cpu> logits,
                             float temperature, int32_t top_k, float top_p, uint64_t seed,
                             const NativeGuard* guard, int32_t start_state) {
  const int64_t steps = int64_t(logits.shape(0)), vocab = int64_t(logits.shape(1));
  if (guard && guard->guard->vocab_size() != vocab)
    throw nb::value_error("the guard's vocabulary differs from the logits' width");
  fwa::Sampler sampler;
  std::string msg;
  check(sampler.init(int32_t(vocab), &msg), msg);
  fwa::SamplingParams sp;
  sp.temperature = temperature;
  sp.top_k = top_k;
  sp.top_p = top_p;
  sp.seed = seed;
  check(fwa::check_sampling_params(sp, &msg), msg);
  sampler.reset(sp);
  std::vector<int32_t> tokens(static_cast<size_t>(steps));
  std::vector<int64_t> ns(static_cast<size_t>(steps));
  int64_t interventions = 0;
  {
    nb::gil_scoped_release release;
    const fwa::CodeGuard* g = guard ? guard->guard.get() : nullptr;
    int32_t state = start_state;
    for (int64_t i = 0; i < steps; ++i) {
      const float* row = logits.data() + i * vocab;
      const auto t0 = std::chrono::steady_clock::now();
      const fwa::Rng before = sampler.rng();
      int32_t tok = sampler.sample(row, nullptr, 0);
      if (g) {
        int32_t rule;
        int32_t next = g->feed_token(state, tok, &rule);
        if (rule >= 0) {
          ++interventions;
          sampler.restore_rng(before);
          tok = sampler.sample(row, nullptr, 0, g->banned(state));
          next = g->feed_token(state, tok, &rule);
        }
        state = next;
      }
      ns[size_t(i)] = std::chrono::duration_cast<std::chrono::nanoseconds>(
                          std::chrono::steady_clock::now() - t0).count();
      tokens[size_t(i)] = tok;
    }
  }
  return nb::make_tuple(tokens, ns, interventions);
}

fwa::SamplingParams sampling_params(float temperature, int32_t top_k, float top_p,
                                    float repetition_penalty, uint64_t seed) {
  fwa::SamplingParams sp;
  sp.temperature = temperature;
  sp.top_k = top_k;
  sp.top_p = top_p;
  sp.repetition_penalty = repetition_penalty;
  sp.seed = seed;
  return sp;
}

// The stats dict of a stream (experts: its activated experts per layer) and of a batch slot
// (experts null); rules: the names of its guard's rules, for the interventions.
nb::dict stats_dict(const fwa::GenerationStats& s, const std::vector<int64_t>* experts,
                    nb::object stop_reason, const std::vector<std::string>& rules) {
  nb::dict d;
  d["prompt_tokens"] = s.prompt_tokens;
  d["cached_tokens"] = s.cached_tokens;
  d["generated_tokens"] = s.generated_tokens;
  d["prefill_ms"] = s.prefill_ms;
  d["decode_ms"] = s.decode_ms;
  d["prefill_tokens_per_s"] = s.prefill_tokens_per_s();
  d["decode_tokens_per_s"] = s.decode_tokens_per_s();
  d["ttft_ms"] = s.ttft_ms;
  if (experts) d["experts_activated"] = *experts;
  d["busy_core_s"] = s.busy_core_s;
  d["spin_core_s"] = s.spin_core_s;
  d["parked_core_s"] = s.parked_core_s;
  d["weight_bytes_read"] = s.weight_bytes_read;
  d["stop_reason"] = stop_reason;
  nb::list iv;
  for (const fwa::GuardIntervention& x : s.interventions) {
    nb::dict e;
    e["rule"] = rules[size_t(x.rule)];
    e["position"] = x.position;
    e["token"] = x.token;
    iv.append(e);
  }
  d["interventions"] = iv;
  return d;
}

struct NativeGeneration {
  nb::object session_ref;  // keeps the NativeSession alive
  NativeSession* ns = nullptr;
  fwa::Generation gen;
  bool started = false;
  std::vector<std::string> guard_rules;  // the rule names of its guard (for the stats)
};

NativeGeneration* start_generation(nb::object session_obj, IdArray prompt, int64_t max_tokens,
                                   float temperature, int32_t top_k, float top_p,
                                   float repetition_penalty, uint64_t seed,
                                   std::vector<std::string> stop,
                                   std::vector<int32_t> stop_ids, const NativeGuard* guard) {
  NativeSession& ns = nb::cast<NativeSession&>(session_obj);
  auto g = std::make_unique<NativeGeneration>();
  g->session_ref = session_obj;
  g->ns = &ns;
  fwa::GenerateParams p;
  p.max_tokens = max_tokens;
  p.sampling = sampling_params(temperature, top_k, top_p, repetition_penalty, seed);
  p.stop_strings = std::move(stop);
  p.stop_ids = std::move(stop_ids);
  if (guard) {
    p.guard = guard->guard;
    g->guard_rules = guard->guard->rule_names();
  }
  const int32_t* prompt_data = prompt.data();
  const int64_t n = int64_t(prompt.shape(0));
  std::string msg;
  fwa::GenerateParams* pp = &p;
  NativeGeneration* gp = g.get();
  const fwa::Status st = with_session(
      ns, [&](fwa::Session& s) { return gp->gen.start(&s, prompt_data, n, *pp, &msg); });
  check(st, msg);
  g->started = true;
  return g.release();
}

// (token or -1, text piece, done)
nb::tuple generation_next(NativeGeneration& g) {
  int32_t tok = -1;
  std::string piece, msg;
  bool done = false, superseded = false;
  const fwa::Status st = with_session(*g.ns, [&](fwa::Session&) {
    superseded = g.gen.superseded();
    return g.gen.next(&tok, &piece, &done, &msg);
  });
  // Not a bad argument of this call: the stream's session moved on (RuntimeError).
  if (superseded)
    throw std::runtime_error(
        "this stream was superseded by a later generation or call (logits, truncate, reset) on "
        "the same session: its context is gone; start a new stream");
  check(st, msg);
  return nb::make_tuple(tok, nb::str(piece.data(), piece.size()), done);
}

nb::dict generation_stats(const NativeGeneration& g) {
  const fwa::GenerationStats& s = g.gen.stats();
  return stats_dict(s, &s.experts_activated, nb::str(fwa::stop_reason_name(g.gen.stop_reason())),
                    g.guard_rules);
}

struct NativeBatch {
  std::shared_ptr<fwa::Model> model;
  std::unique_ptr<fwa::BatchGenerator> gen;  // null once closed
  std::mutex mu;
};

// f(generator) under the batch's lock (with_lock).
template <typename F>
auto with_batch(NativeBatch& nb_, F&& f) -> decltype(f(*nb_.gen)) {
  return with_lock(nb_.mu, nb_.gen, "the batch decoder is closed", std::forward<F>(f));
}

NativeBatch* make_batch(const NativeModel& m, int slots, int64_t max_context,
                        const std::string& mode, int threads, int64_t prefill_chunk,
                        const std::string& kv_cache) {
  fwa::BatchOptions o;
  o.slots = slots;
  o.session = session_options(max_context, mode, threads, prefill_chunk, kv_cache);
  std::unique_ptr<fwa::BatchGenerator> g;
  check_nogil([&](std::string* msg) { return fwa::BatchGenerator::create(m.model, o, &g, msg); });
  auto* out = new NativeBatch();
  out->model = m.model;
  out->gen = std::move(g);
  return out;
}

// (outcome, message, slot): "ok" with the slot; "invalid" (invalid_argument) or "full" (no
// free slot) with the message, for fwassist.batch to raise as its own errors; any other status
// raises here.
nb::tuple batch_add(NativeBatch& b, IdArray prompt, int64_t max_tokens, float temperature,
                    int32_t top_k, float top_p, float repetition_penalty, uint64_t seed,
                    std::vector<int32_t> stop_ids, const NativeGuard* guard) {
  fwa::SlotParams p;
  p.max_tokens = max_tokens;
  p.sampling = sampling_params(temperature, top_k, top_p, repetition_penalty, seed);
  p.stop_ids = std::move(stop_ids);
  if (guard) p.guard = guard->guard;
  const int32_t* data = prompt.data();
  const int64_t n = int64_t(prompt.shape(0));
  int slot = -1;
  std::string msg;
  const fwa::Status st =
      with_batch(b, [&](fwa::BatchGenerator& g) { return g.add(data, n, p, &slot, &msg); });
  if (st != fwa::Status::ok && st != fwa::Status::invalid_argument &&
      st != fwa::Status::cap_exceeded)
    raise_status(st, msg);
  const char* outcome = st == fwa::Status::ok                 ? "ok"
                        : st == fwa::Status::invalid_argument ? "invalid"
                                                              : "full";
  return nb::make_tuple(outcome, msg, slot);
}

// [(slot, token or -1, stop reason or None)] for every active slot.
nb::list batch_step(NativeBatch& b) {
  std::string msg;
  std::vector<fwa::SlotResult> results;  // copied under the lock: another thread may step next
  const fwa::Status st = with_batch(b, [&](fwa::BatchGenerator& g) {
    int n = 0;
    const fwa::Status s = g.step(&n, &msg);
    results.assign(g.results(), g.results() + n);
    return s;
  });
  check(st, msg);
  nb::list out;
  for (const fwa::SlotResult& r : results)
    out.append(nb::make_tuple(r.slot, r.token,
                              r.reason == fwa::StopReason::none
                                  ? nb::object(nb::none())
                                  : nb::object(nb::str(fwa::stop_reason_name(r.reason)))));
  return out;
}

nb::dict batch_stats(NativeBatch& b, int slot) {
  fwa::GenerationStats s;
  const char* reason = "none";
  bool active = false;
  std::vector<std::string> rules;  // of the slot's guard
  with_batch(b, [&](fwa::BatchGenerator& g) {
    if (slot < 0 || slot >= g.slots())
      throw nb::value_error(("slot " + std::to_string(slot) + " is outside [0, " +
                             std::to_string(g.slots()) + ")").c_str());
    s = g.stats(slot);
    reason = fwa::stop_reason_name(g.stop_reason(slot));
    active = g.active(slot);
    if (const fwa::CodeGuard* guard = g.guard(slot)) rules = guard->rule_names();
  });
  return stats_dict(s, nullptr, active ? nb::object(nb::none()) : nb::object(nb::str(reason)),
                    rules);
}

}  // namespace

void bind_model(nb::module_& m) {
  nb::class_<NativeModel>(m, "NativeModel")
      .def_static("load", &load_model, "path"_a, "pin"_a = nb::none(), "lazy"_a = false,
                  "copy"_a = false, "strict"_a = false, "private_dense"_a = false)
      .def("pin", [](const NativeModel& m) { return m.model->pin(); })
      .def(
          "verify_release",
          [](NativeModel& m, const nb::bytes& policy, const nb::bytes& signatures,
             const std::optional<std::string>& counter_path, nb::object counter,
             nb::object verifier, const std::vector<std::string>& root_keys,
             int64_t root_threshold, nb::object policy_signatures,
             const std::optional<std::string>& policy_counter_path, nb::object policy_counter) {
            int64_t sv = 0;
            std::optional<int64_t> pv;
            nb::tuple verdict = fwa_python::verify_release(
                *m.model, policy, signatures, {counter_path, counter}, verifier,
                {root_keys, root_threshold, policy_signatures,
                 {policy_counter_path, policy_counter}},
                &sv, &pv);
            m.security_version = sv;
            m.policy_version = pv;
            return verdict;
          },
          "policy"_a, "signatures"_a, "counter_path"_a.none(), "counter"_a.none(),
          "verifier"_a.none() = nb::none(), "root_keys"_a = std::vector<std::string>(),
          "root_threshold"_a = 1, "policy_signatures"_a.none() = nb::none(),
          "policy_counter_path"_a.none() = nb::none(), "policy_counter"_a.none() = nb::none())
      .def(
          "commit_security_version",
          [](const NativeModel& m, const std::optional<std::string>& counter_path,
             nb::object counter) {
            if (!m.security_version)
              throw nb::value_error("the model was loaded without trust=: no verified "
                                    "security version to commit");
            fwa_python::commit_security_version(*m.security_version, {counter_path, counter});
          },
          "counter_path"_a.none(), "counter"_a.none())
      .def(
          "commit_policy_version",
          [](const NativeModel& m, const std::optional<std::string>& counter_path,
             nb::object counter) {
            if (!m.policy_version)
              throw nb::value_error("the model was loaded without a signed trust policy "
                                    "(root_keys=): no verified policy version to commit");
            fwa_python::commit_security_version(*m.policy_version, {counter_path, counter});
          },
          "counter_path"_a.none(), "counter"_a.none())
      .def("protection",
           [](const NativeModel& m) { return fwa::protection_name(m.model->protection()); })
      .def("config_json",
           [](const NativeModel& m) { return std::string(m.model->config_json()); })
      .def("tokenizer_json",
           [](const NativeModel& m) -> nb::object {
             if (!m.model->has_tokenizer()) return nb::none();
             const std::string_view j = m.model->tokenizer_json();
             return nb::str(j.data(), j.size());
           })
      .def("generation_json",
           [](const NativeModel& m) -> nb::object {
             const std::string_view j = m.model->generation_json();
             if (j.empty()) return nb::none();  // format 1.0: no generation metadata
             return nb::str(j.data(), j.size());
           })
      .def("eos_ids", [](const NativeModel& m) { return m.model->eos_ids(); })
      .def_prop_ro("vocab_size", [](const NativeModel& m) { return m.model->config().vocab_size; })
      .def("set_expert_budget",
           [](const NativeModel& m, uint64_t bytes, bool mlock) {
             m.model->set_expert_budget(bytes, mlock);
           },
           "bytes"_a, "mlock"_a = false)
      .def("residency",
           [](const NativeModel& m) {
             const fwa::ResidencyStats r = m.model->residency_stats();
             nb::dict d;
             d["budget_bytes"] = r.budget_bytes;
             d["resident_bytes"] = r.resident_bytes;
             d["hits"] = r.hits;
             d["misses"] = r.misses;
             d["releases"] = r.releases;
             d["lock_failures"] = r.lock_failures;
             d["locked"] = r.locked;
             d["prefetch"] = r.prefetch;
             d["expert_bytes"] = r.expert_bytes;
             d["private_dense_bytes"] = m.model->private_dense_bytes();
             d["prefetch_issued"] = r.prefetch_issued;
             d["prefetch_fetched"] = r.prefetch_fetched;
             d["prefetch_useful"] = r.prefetch_useful;
             d["prefetch_wasted"] = r.prefetch_wasted;
             d["bytes_verified"] = r.bytes_verified;
             d["stall_ns"] = r.stall_ns;
             d["prefetch_skipped"] = r.prefetch_skipped;
             d["predicted"] = r.predicted;
             d["predicted_routed"] = r.predicted_routed;
             return d;
           })
      .def("set_expert_prefetch",
           [](const NativeModel& m, bool on) { m.model->set_expert_prefetch(on); }, "on"_a)
      .def("session", &make_session, "max_context"_a, "mode"_a, "threads"_a, "prefill_chunk"_a,
           "kv_cache"_a, nb::rv_policy::take_ownership)
      .def(
          "kv_bytes_per_token",
          [](const NativeModel& m, const std::string& kv) {
            return fwa::kv_bytes_per_token(m.model->config(), kv_type(kv));
          },
          "kv_cache"_a);

  nb::class_<NativeSession>(m, "NativeSession")
      .def("logits", &session_logits, "ids"_a, "out"_a)
      .def("truncate",
           [](NativeSession& ns, int64_t n) {
             std::string msg;
             const fwa::Status st =
                 with_session(ns, [&](fwa::Session& s) { return s.truncate(n, &msg); });
             check(st, msg);
           })
      .def("reset", [](NativeSession& ns) { with_session(ns, [](fwa::Session& s) { s.reset(); }); })
      .def("set_policy",
           [](NativeSession& ns, int max_cores, double target_ms) {
             with_session(ns, [&](fwa::Session& s) { s.set_policy(max_cores, target_ms); });
           },
           "max_active_cores"_a, "target_ms_per_token"_a)
      .def("policy",
           [](NativeSession& ns) {
             return with_session(ns, [](fwa::Session& s) {
               return std::make_tuple(s.max_active_threads(), s.target_ms_per_token(),
                                      s.active_threads());
             });
           })
      .def("expert_tokens",
           [](NativeSession& ns) {
             return with_session(ns, [](fwa::Session& s) {
               const fwa::ModelConfig& c = s.model().config();
               const uint64_t* t = s.expert_tokens();
               return std::vector<uint64_t>(t, t + c.num_layers * c.num_experts);
             });
           })
      .def("close",
           [](NativeSession& ns) {
             nb::gil_scoped_release nogil;
             std::lock_guard<std::mutex> lock(ns.mu);
             ns.session.reset();
           })
      .def_prop_ro("closed",
                   [](NativeSession& ns) {
                     nb::gil_scoped_release nogil;
                     std::lock_guard<std::mutex> lock(ns.mu);
                     return !ns.session;
                   })
      .def_prop_ro("n_past",
                   [](NativeSession& ns) {
                     return with_session(ns, [](fwa::Session& s) { return s.n_past(); });
                   })
      .def_prop_ro("max_context",
                   [](NativeSession& ns) {
                     return with_session(
                         ns, [](fwa::Session& s) { return s.options().max_context; });
                   })
      .def_prop_ro("threads",
                   [](NativeSession& ns) {
                     return with_session(ns,
                                         [](fwa::Session& s) { return s.options().n_threads; });
                   })
      .def_prop_ro("prefill_chunk",
                   [](NativeSession& ns) {
                     return with_session(
                         ns, [](fwa::Session& s) { return s.options().prefill_chunk; });
                   })
      .def_prop_ro("mode",
                   [](NativeSession& ns) {
                     return with_session(ns, [](fwa::Session& s) {
                       return s.options().mode == fwa::ComputeMode::exact ? "exact" : "fast";
                     });
                   })
      .def_prop_ro("tokens",
                   [](NativeSession& ns) {
                     return with_session(ns, [](fwa::Session& s) { return s.tokens(); });
                   })
      .def_prop_ro("vocab_size", [](NativeSession& ns) {
        return with_session(ns, [](fwa::Session& s) { return s.vocab_size(); });
      });

  nb::class_<NativeGuard>(m, "NativeGuard")
      .def_static("for_model", &guard_for_model, "model"_a, "texts"_a, "kinds"_a, "rules"_a,
                  "rule_names"_a, nb::rv_policy::take_ownership)
      .def_static("for_tokens", &guard_for_tokens, "texts"_a, "kinds"_a, "rules"_a,
                  "rule_names"_a, "tokens"_a, nb::rv_policy::take_ownership)
      .def("feed", &guard_feed, "state"_a, "data"_a)
      .def("banned", &guard_banned, "state"_a)
      .def_prop_ro("num_states", [](const NativeGuard& g) { return g.guard->num_states(); })
      .def_prop_ro("vocab_size", [](const NativeGuard& g) { return g.guard->vocab_size(); })
      .def_prop_ro("rule_names", [](const NativeGuard& g) { return g.guard->rule_names(); });
  m.def("bench_guard_sample", &bench_guard_sample, "logits"_a, "temperature"_a, "top_k"_a,
        "top_p"_a, "seed"_a, "guard"_a.none(), "start_state"_a);
  m.def("batch", &make_batch, "model"_a, "slots"_a, "max_context"_a, "mode"_a, "threads"_a,
        "prefill_chunk"_a, "kv_cache"_a, nb::rv_policy::take_ownership);
  nb::class_<NativeBatch>(m, "NativeBatch")
      .def("add", &batch_add, "prompt"_a, "max_tokens"_a, "temperature"_a, "top_k"_a,
           "top_p"_a, "repetition_penalty"_a, "seed"_a, "stop_ids"_a, "guard"_a.none())
      .def("step", &batch_step)
      .def("cancel",
           [](NativeBatch& b, int slot) {
             return with_batch(b, [&](fwa::BatchGenerator& g) { return g.cancel(slot); });
           },
           "slot"_a)
      .def("stats", &batch_stats, "slot"_a)
      .def("tokens",
           [](NativeBatch& b, int slot) {
             return with_batch(b, [&](fwa::BatchGenerator& g) {
               if (slot < 0 || slot >= g.slots())
                 throw nb::value_error(("slot " + std::to_string(slot) + " is outside [0, " +
                                        std::to_string(g.slots()) + ")").c_str());
               return g.tokens(slot);
             });
           },
           "slot"_a)
      .def("logits",
           [](NativeBatch& b, int slot,
              nb::ndarray<float, nb::ndim<1>, nb::c_contig, nb::device::cpu> out) {
             float* dst = out.data();
             const size_t n = out.shape(0);
             return with_batch(b, [&](fwa::BatchGenerator& g) {
               if (slot < 0 || slot >= g.slots() || !g.logits(slot) ||
                   int64_t(n) != b.model->config().vocab_size)
                 return false;
               std::memcpy(dst, g.logits(slot), n * sizeof(float));
               return true;
             });
           },
           "slot"_a, "out"_a)
      .def("expert_tokens",
           [](NativeBatch& b) {
             const fwa::ModelConfig& c = b.model->config();
             std::vector<uint64_t> out(size_t(c.num_layers * c.num_experts));
             with_batch(b, [&](fwa::BatchGenerator& g) { g.expert_tokens(out.data()); });
             return out;
           })
      .def("active",
           [](NativeBatch& b) {
             return with_batch(b, [](fwa::BatchGenerator& g) {
               std::vector<int> out;
               for (int i = 0; i < g.slots(); ++i)
                 if (g.active(i)) out.push_back(i);
               return out;
             });
           })
      .def_prop_ro("slots",
                   [](NativeBatch& b) {
                     return with_batch(b, [](fwa::BatchGenerator& g) { return g.slots(); });
                   })
      .def("close",
           [](NativeBatch& b) {
             nb::gil_scoped_release nogil;
             std::lock_guard<std::mutex> lock(b.mu);
             b.gen.reset();
           })
      .def_prop_ro("closed", [](NativeBatch& b) {
        nb::gil_scoped_release nogil;
        std::lock_guard<std::mutex> lock(b.mu);
        return !b.gen;
      });

  nb::class_<NativeGeneration>(m, "NativeGeneration")
      .def_static("start", &start_generation, "session"_a, "prompt"_a, "max_tokens"_a,
                  "temperature"_a, "top_k"_a, "top_p"_a, "repetition_penalty"_a, "seed"_a,
                  "stop"_a, "stop_ids"_a, "guard"_a.none(), nb::rv_policy::take_ownership)
      .def("next", &generation_next)
      .def("stats", &generation_stats)
      .def_prop_ro("text", [](const NativeGeneration& g) { return g.gen.text(); })
      .def_prop_ro("token_ids", [](const NativeGeneration& g) { return g.gen.token_ids(); })
      .def_prop_ro("stop_reason",
                   [](const NativeGeneration& g) { return fwa::stop_reason_name(g.gen.stop_reason()); });
}
