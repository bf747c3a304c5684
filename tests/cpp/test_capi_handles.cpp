// SPDX-License-Identifier: Apache-2.0
// C handles are generation-tagged tokens (csrc/capi/handles.h): a freed handle stays
// FWA_ERR_BAD_HANDLE after its slot is reused by a new handle, and so do forged values and
// handles of another kind. FWA_TEST_MODEL names the artifact (tests/cross/make_test_model.py).
#include <doctest/doctest.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <thread>
#include <vector>

#include "fwassist/fwassist.h"

namespace {

fwa_model* open_model() {
  const char* path = std::getenv("FWA_TEST_MODEL");
  REQUIRE_MESSAGE(path, "set FWA_TEST_MODEL to an artifact");
  fwa_model* model = nullptr;
  REQUIRE(fwa_model_open_file(path, nullptr, &model) == FWA_OK);
  return model;
}

fwa_sampler* make_sampler(const fwa_model* model) {
  fwa_sampling_params p;
  fwa_sampling_params_init(&p);
  fwa_sampler* sampler = nullptr;
  REQUIRE(fwa_sampler_create(model, &p, &sampler) == FWA_OK);
  return sampler;
}

// The slot index lives in the token's low 32 bits (handles.h): equal low bits, same slot.
bool same_slot(const void* a, const void* b) {
  return (uintptr_t(a) & 0xffffffffu) == (uintptr_t(b) & 0xffffffffu);
}

// Every model entry point refuses `m` with FWA_ERR_BAD_HANDLE.
void check_model_refused(const fwa_model* m) {
  fwa_model_info info;
  fwa_model_info_init(&info);
  CHECK(fwa_model_get_info(m, &info) == FWA_ERR_BAD_HANDLE);
  char buf[64];
  size_t needed = 0;
  CHECK(fwa_model_manifest_json(m, "config", buf, sizeof buf, &needed) == FWA_ERR_BAD_HANDLE);
  int32_t ids[8];
  CHECK(fwa_model_eos_ids(m, ids, 8, &needed) == FWA_ERR_BAD_HANDLE);
  CHECK(fwa_tokenize(m, "ab", 2, ids, 8, &needed) == FWA_ERR_BAD_HANDLE);
  const int32_t one = 1;
  CHECK(fwa_detokenize(m, &one, 1, 0, buf, sizeof buf, &needed) == FWA_ERR_BAD_HANDLE);
  fwa_residency_stats stats;
  fwa_residency_stats_init(&stats);
  CHECK(fwa_model_residency(m, &stats) == FWA_ERR_BAD_HANDLE);
  fwa_session* s = nullptr;
  CHECK(fwa_session_create(const_cast<fwa_model*>(m), nullptr, &s) == FWA_ERR_BAD_HANDLE);
  CHECK(s == nullptr);
  fwa_sampling_params p;
  fwa_sampling_params_init(&p);
  fwa_sampler* sampler = nullptr;
  CHECK(fwa_sampler_create(m, &p, &sampler) == FWA_ERR_BAD_HANDLE);
  CHECK(sampler == nullptr);
}

// Every session entry point refuses `s` with FWA_ERR_BAD_HANDLE.
void check_session_refused(fwa_session* s) {
  const int32_t ids[2] = {1, 2};
  CHECK(fwa_session_eval(s, ids, 2) == FWA_ERR_BAD_HANDLE);
  CHECK(fwa_session_decode(s, 1) == FWA_ERR_BAD_HANDLE);
  const float* logits = nullptr;
  size_t n = 0;
  CHECK(fwa_session_logits(s, &logits, &n) == FWA_ERR_BAD_HANDLE);
  int64_t n_past = 0;
  CHECK(fwa_session_n_past(s, &n_past) == FWA_ERR_BAD_HANDLE);
  CHECK(fwa_session_truncate(s, 0) == FWA_ERR_BAD_HANDLE);
  CHECK(fwa_session_reset(s) == FWA_ERR_BAD_HANDLE);
  fwa_sched_policy policy;
  fwa_sched_policy_init(&policy);
  CHECK(fwa_session_get_policy(s, &policy) == FWA_ERR_BAD_HANDLE);
  CHECK(fwa_session_set_policy(s, &policy) == FWA_ERR_BAD_HANDLE);
  int64_t per_layer[64];
  CHECK(fwa_session_experts_activated(s, per_layer, 64, &n) == FWA_ERR_BAD_HANDLE);
  uint64_t counts[64];
  CHECK(fwa_session_expert_tokens(s, counts, 64, &n) == FWA_ERR_BAD_HANDLE);
  CHECK(fwa_session_clear_expert_stats(s) == FWA_ERR_BAD_HANDLE);
  fwa_generate_params gp;
  fwa_generate_params_init(&gp);
  CHECK(fwa_generate(s, ids, 2, &gp, nullptr, nullptr, nullptr) == FWA_ERR_BAD_HANDLE);
  CHECK(fwa_generate_text(s, "ab", 2, &gp, nullptr, nullptr, nullptr) == FWA_ERR_BAD_HANDLE);
}

// Every sampler entry point refuses `sampler` with FWA_ERR_BAD_HANDLE (with a live session).
void check_sampler_refused(fwa_sampler* sampler, const fwa_session* live) {
  fwa_sampling_params p;
  fwa_sampling_params_init(&p);
  CHECK(fwa_sampler_reset(sampler, &p) == FWA_ERR_BAD_HANDLE);
  int32_t token = -1;
  CHECK(fwa_sampler_sample(sampler, live, &token) == FWA_ERR_BAD_HANDLE);
  CHECK(token == -1);
}

}  // namespace

TEST_CASE("a freed handle stays bad after its slot is reused") {
  fwa_model* old_model = open_model();
  fwa_model_free(old_model);
  fwa_model* model = open_model();
  REQUIRE(same_slot(old_model, model));  // the scenario: the new handle took the old slot
  CHECK(old_model != model);
  check_model_refused(old_model);
  fwa_model_info info;
  fwa_model_info_init(&info);
  CHECK(fwa_model_get_info(model, &info) == FWA_OK);
  // A format 1.0 artifact pins no end-of-sequence id (tests/test_capi_cffi.py: 1.1).
  size_t n_eos = 99;
  CHECK(fwa_model_eos_ids(model, nullptr, 0, &n_eos) == FWA_OK);
  CHECK(n_eos == 0);
  CHECK(fwa_model_eos_ids(model, nullptr, 0, nullptr) == FWA_ERR_NULL_ARGUMENT);

  fwa_session* old_session = nullptr;
  REQUIRE(fwa_session_create(model, nullptr, &old_session) == FWA_OK);
  fwa_session_free(old_session);
  fwa_session* session = nullptr;
  REQUIRE(fwa_session_create(model, nullptr, &session) == FWA_OK);
  REQUIRE(same_slot(old_session, session));
  check_session_refused(old_session);
  const int32_t ids[2] = {1, 2};
  CHECK(fwa_session_eval(session, ids, 2) == FWA_OK);

  fwa_sampler* old_sampler = make_sampler(model);
  fwa_sampler_free(old_sampler);
  fwa_sampler* sampler = make_sampler(model);
  REQUIRE(same_slot(old_sampler, sampler));
  check_sampler_refused(old_sampler, session);
  int32_t token = -1;
  CHECK(fwa_sampler_sample(sampler, session, &token) == FWA_OK);

  // Freeing a stale handle again must not free the handle that now holds its slot.
  fwa_model_free(old_model);
  fwa_session_free(old_session);
  fwa_sampler_free(old_sampler);
  CHECK(fwa_model_get_info(model, &info) == FWA_OK);
  CHECK(fwa_session_decode(session, 3) == FWA_OK);
  CHECK(fwa_sampler_sample(sampler, session, &token) == FWA_OK);

  fwa_sampler_free(sampler);
  fwa_session_free(session);
  fwa_model_free(model);
  check_model_refused(model);
}

TEST_CASE("forged, NULL and cross-kind handles are refused") {
  fwa_model* model = open_model();
  fwa_session* session = nullptr;
  REQUIRE(fwa_session_create(model, nullptr, &session) == FWA_OK);
  fwa_sampler* sampler = make_sampler(model);

  // Cross-kind: each live handle passed where another kind is expected.
  check_model_refused(reinterpret_cast<fwa_model*>(session));
  check_model_refused(reinterpret_cast<fwa_model*>(sampler));
  check_session_refused(reinterpret_cast<fwa_session*>(model));
  check_session_refused(reinterpret_cast<fwa_session*>(sampler));
  check_sampler_refused(reinterpret_cast<fwa_sampler*>(session), session);
  check_sampler_refused(reinterpret_cast<fwa_sampler*>(model), session);

  // Forged: a live token with its generation, kind or slot changed, small integers, all
  // ones, and real addresses (the caller's memory; never dereferenced by the library).
  const uintptr_t m = uintptr_t(model);
  char memory[256] = {};
  const uintptr_t stack = uintptr_t(&m);
  for (uintptr_t forged : {m ^ (uintptr_t(1) << 32), m ^ (uintptr_t(1) << 63), m + 1, m - 1,
                           m ^ (uintptr_t(1) << 24), m ^ (uintptr_t(3) << 28), uintptr_t(1),
                           uintptr_t(8), uintptr_t(0xffffffffu), ~uintptr_t(0),
                           uintptr_t(memory), stack}) {
    INFO("forged token " << forged);
    check_model_refused(reinterpret_cast<fwa_model*>(forged));
    check_session_refused(reinterpret_cast<fwa_session*>(forged));
    check_sampler_refused(reinterpret_cast<fwa_sampler*>(forged), session);
    fwa_model_free(reinterpret_cast<fwa_model*>(forged));  // ignored
    fwa_session_free(reinterpret_cast<fwa_session*>(forged));
    fwa_sampler_free(reinterpret_cast<fwa_sampler*>(forged));
  }
  for (char c : memory) REQUIRE(c == 0);  // nothing was written through a forged handle

  // NULL is a null argument, not a bad handle.
  fwa_model_info info;
  fwa_model_info_init(&info);
  CHECK(fwa_model_get_info(nullptr, &info) == FWA_ERR_NULL_ARGUMENT);
  CHECK(fwa_session_decode(nullptr, 1) == FWA_ERR_NULL_ARGUMENT);
  int32_t token = -1;
  CHECK(fwa_sampler_sample(nullptr, session, &token) == FWA_ERR_NULL_ARGUMENT);

  // The live handles still work after all of the above.
  CHECK(fwa_model_get_info(model, &info) == FWA_OK);
  const int32_t ids[2] = {1, 2};
  CHECK(fwa_session_eval(session, ids, 2) == FWA_OK);
  CHECK(fwa_sampler_sample(sampler, session, &token) == FWA_OK);
  fwa_sampler_free(sampler);
  fwa_session_free(session);
  fwa_model_free(model);
}

TEST_CASE("handles are created, used and freed from many threads at once") {
  fwa_model* model = open_model();
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      fwa_sampling_params p;
      fwa_sampling_params_init(&p);
      fwa_sampler* previous = nullptr;
      for (int i = 0; i < 2000; ++i) {
        fwa_sampler* s = nullptr;
        if (fwa_sampler_create(model, &p, &s) != FWA_OK) ++failures;
        if (fwa_sampler_reset(s, &p) != FWA_OK) ++failures;
        if (previous && fwa_sampler_reset(previous, &p) != FWA_ERR_BAD_HANDLE) ++failures;
        fwa_sampler_free(s);
        previous = s;
      }
    });
  }
  for (std::thread& t : threads) t.join();
  CHECK(failures.load() == 0);
  fwa_model_free(model);
}
