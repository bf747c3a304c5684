// SPDX-License-Identifier: Apache-2.0
// The C ABI's decode loop (fwa_session_decode + fwa_session_logits + fwa_sampler_sample)
// allocates nothing (count_allocations.cpp replaces operator new, also for libfwassist.so),
// with every KV cache type.
// FWA_TEST_MODEL names the artifact (tests/cross/make_test_model.py).
#include <doctest/doctest.h>

#include <cstdlib>
#include <initializer_list>

#include "count_allocations.h"
#include "fwassist/fwassist.h"

TEST_CASE("the C ABI decode loop allocates nothing") {
  const char* path = std::getenv("FWA_TEST_MODEL");
  REQUIRE_MESSAGE(path, "set FWA_TEST_MODEL to an artifact");
  fwa_model* model = nullptr;
  REQUIRE(fwa_model_open_file(path, nullptr, &model) == FWA_OK);
  for (int32_t kv : {FWA_KV_F32, FWA_KV_F16, FWA_KV_BF16})
  for (int32_t mode : {FWA_MODE_EXACT, FWA_MODE_FAST}) {
    CAPTURE(kv);
    fwa_session_options o;
    fwa_session_options_init(&o);
    o.mode = mode;
    o.kv_cache = kv;
    o.n_threads = 2;
    o.prefill_chunk = 16;
    fwa_session* s = nullptr;
    REQUIRE(fwa_session_create(model, &o, &s) == FWA_OK);
    fwa_sampling_params p;
    fwa_sampling_params_init(&p);
    p.temperature = 0.8f;
    p.top_k = 20;
    p.top_p = 0.9f;
    p.repetition_penalty = 1.1f;
    p.seed = 5;
    fwa_sampler* sampler = nullptr;
    REQUIRE(fwa_sampler_create(model, &p, &sampler) == FWA_OK);
    const int32_t prompt[5] = {1, 2, 3, 4, 5};
    REQUIRE(fwa_session_eval(s, prompt, 5) == FWA_OK);
    g_allocs = 0;
    g_counting = true;
    fwa_status st = FWA_OK;
    double sum = 0;
    for (int i = 0; i < 24 && st == FWA_OK; ++i) {
      int32_t t = -1;
      st = fwa_sampler_sample(sampler, s, &t);
      if (st == FWA_OK) st = fwa_session_decode(s, t);
      const float* logits = nullptr;
      size_t n = 0;
      if (st == FWA_OK) st = fwa_session_logits(s, &logits, &n);
      if (st == FWA_OK) sum += double(logits[0]);
    }
    g_counting = false;
    CHECK(st == FWA_OK);
    CHECK(g_allocs.load() == 0);
    CHECK(sum == sum);
    int64_t n_past = 0;
    CHECK(fwa_session_n_past(s, &n_past) == FWA_OK);
    CHECK(n_past == 29);
    fwa_sampler_free(sampler);
    fwa_session_free(s);
  }
  fwa_model_free(model);
}
