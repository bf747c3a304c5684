// SPDX-License-Identifier: Apache-2.0
// Batched decoding (model/batch.h) on FWA_TEST_MODEL: every row of a DecodeBatch step equals,
// bit for bit, the same session decoding alone (N = 1..8 sessions at different positions,
// both compute modes, 1 and 2 threads, every KV cache type), and a BatchGenerator step
// allocates nothing. Tokens and sampling against Session.generate: tests/test_batch_decode.py.
#include <doctest/doctest.h>

#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "count_allocations.h"
#include "model_fixtures.h"
#include "model/batch.h"
#include "model/model.h"
#include "model/session.h"

using namespace fwa;
using fwa_test::load_test_model;
using fwa_test::random_ids;

namespace {

BatchOptions options(ComputeMode mode, int threads, int slots, KvType kv = KvType::f32) {
  BatchOptions o;
  o.slots = slots;
  o.session.mode = mode;
  o.session.n_threads = threads;
  o.session.max_context = 64;
  o.session.prefill_chunk = 16;
  o.session.kv_cache = kv;
  return o;
}

}  // namespace

TEST_CASE("a batched step equals each session decoding alone, bit for bit") {
  auto m = load_test_model();
  const int64_t V = m->config().vocab_size;
  for (KvType kv : {KvType::f32, KvType::bf16})
  for (ComputeMode mode : {ComputeMode::exact, ComputeMode::fast})
  for (int threads : {1, 2}) {
    CAPTURE(int(kv));
    CAPTURE(int(mode));
    CAPTURE(threads);
    std::unique_ptr<DecodeBatch> b;
    std::string msg;
    REQUIRE_MESSAGE(DecodeBatch::create(m, options(mode, threads, 8, kv), &b, &msg) ==
                        Status::ok, msg);
    for (int n = 1; n <= 8; ++n) {
      CAPTURE(n);
      std::vector<std::unique_ptr<Session>> solo(static_cast<size_t>(n));
      std::vector<int> slot(static_cast<size_t>(n));
      std::vector<int32_t> next(static_cast<size_t>(n));
      for (int i = 0; i < n; ++i) {
        slot[size_t(i)] = 7 - i;  // rows in an order of their own, not the slots'
        Session& s = b->session(slot[size_t(i)]);
        s.reset();
        const auto p = random_ids(*m, 1 + (5 * i + n) % 23, uint32_t(31 * n + i));
        REQUIRE(s.eval(p.data(), int64_t(p.size()), LogitsOut::last, nullptr, &msg) ==
                Status::ok);
        SessionOptions so = options(mode, 1, 1, kv).session;
        REQUIRE(Session::create(m, so, &solo[size_t(i)], &msg) == Status::ok);
        REQUIRE(solo[size_t(i)]->eval(p.data(), int64_t(p.size()), LogitsOut::last, nullptr,
                                      &msg) == Status::ok);
        next[size_t(i)] = int32_t((7 * i + n) % V);
      }
      for (int step = 0; step < 4; ++step) {
        REQUIRE_MESSAGE(b->step(slot.data(), next.data(), n, &msg) == Status::ok, msg);
        for (int i = 0; i < n; ++i) {
          Session& s = *solo[size_t(i)];
          REQUIRE(s.eval(&next[size_t(i)], 1, LogitsOut::last, nullptr, &msg) == Status::ok);
          CHECK(std::memcmp(b->logits(i), s.last_logits(), size_t(V) * 4) == 0);
          CHECK(b->session(slot[size_t(i)]).tokens() == s.tokens());
          next[size_t(i)] = int32_t((next[size_t(i)] * 31 + 7 + i) % V);
        }
      }
    }
  }
}

TEST_CASE("a batched step refuses bad rows and changes nothing") {
  auto m = load_test_model();
  std::unique_ptr<DecodeBatch> b;
  std::string msg;
  REQUIRE(DecodeBatch::create(m, options(ComputeMode::exact, 1, 3), &b, &msg) == Status::ok);
  const int32_t t = 1, bad = int32_t(m->config().vocab_size);
  const int twice[2] = {1, 1}, out_of_range[1] = {3};
  const int32_t two[2] = {t, t};
  CHECK(b->step(twice, two, 2, &msg) == Status::invalid_argument);
  CHECK(msg.find("already in this step") != std::string::npos);
  CHECK(b->step(out_of_range, &t, 1, &msg) == Status::invalid_argument);
  CHECK(b->step(twice, &bad, 1, &msg) == Status::invalid_argument);
  CHECK(msg.find("outside the vocabulary") != std::string::npos);
  CHECK(b->step(twice, two, 4, &msg) == Status::invalid_argument);
  for (int s = 0; s < 3; ++s) CHECK(b->session(s).n_past() == 0);
}

TEST_CASE("a batched generation step allocates nothing") {
  auto m = load_test_model();
  // A guard that bans every other token (its one byte is 'b'): many interventions, never
  // everything masked. A guard for another vocabulary is refused.
  const int64_t V = m->config().vocab_size;
  std::vector<std::string> token_bytes(size_t(V), "a");
  for (int64_t t = 1; t < V; t += 2) token_bytes[size_t(t)] = "b";
  const std::vector<GuardPattern> patterns = {{"b", GuardPatternKind::literal, 0}};
  std::shared_ptr<const CodeGuard> guard, small;
  std::string gmsg;
  REQUIRE(CodeGuard::create(patterns, {"no-b"}, token_bytes, &guard, &gmsg) == Status::ok);
  REQUIRE(CodeGuard::create(patterns, {"no-b"}, {"a", "b"}, &small, &gmsg) == Status::ok);
  {
    std::unique_ptr<BatchGenerator> g;
    REQUIRE(BatchGenerator::create(m, options(ComputeMode::exact, 1, 1), &g, &gmsg) ==
            Status::ok);
    SlotParams p;
    p.guard = small;
    const auto ids = random_ids(*m, 3, 1);
    int slot = -1;
    CHECK(g->add(ids.data(), 3, p, &slot, &gmsg) == Status::invalid_argument);
    CHECK(gmsg.find("vocabulary of 2 tokens") != std::string::npos);
    CHECK(g->active_count() == 0);
  }
  for (ComputeMode mode : {ComputeMode::exact, ComputeMode::fast}) {
    std::unique_ptr<BatchGenerator> g;
    std::string msg;
    REQUIRE(BatchGenerator::create(m, options(mode, 2, 6), &g, &msg) == Status::ok);
    for (int i = 0; i < 6; ++i) {
      SlotParams p;
      if (i % 2) p.guard = guard;  // half the slots guarded: the guarded draw allocates nothing
      p.max_tokens = 1000;
      p.sampling.temperature = i % 2 ? 0.8f : 0.0f;
      p.sampling.top_k = 20 * (i % 3);
      p.sampling.top_p = 0.9f;
      p.sampling.seed = uint64_t(i);
      const auto ids = random_ids(*m, 3 + 2 * i, uint32_t(i));
      int slot = -1;
      REQUIRE(g->add(ids.data(), int64_t(ids.size()), p, &slot, &msg) == Status::ok);
    }
    g_allocs = 0;
    g_counting = true;
    Status st = Status::ok;
    int n = 0;
    for (int i = 0; i < 20 && st == Status::ok; ++i) st = g->step(&n, nullptr);
    g_counting = false;
    CHECK(st == Status::ok);
    CHECK(n == 6);
    CHECK(g_allocs.load() == 0);
    for (int slot = 0; slot < 6; ++slot) {
      const std::vector<GuardIntervention>& iv = g->stats(slot).interventions;
      if (g->guard(slot) == nullptr) {
        CHECK(iv.empty());
        continue;
      }
      CHECK(!iv.empty());
      for (const GuardIntervention& x : iv) CHECK(x.token % 2 == 1);
      // No kept token is banned: every generated token has the byte 'a'.
      const std::vector<int32_t>& t = g->tokens(slot);
      for (size_t k = t.size() - size_t(g->stats(slot).generated_tokens); k < t.size(); ++k)
        CHECK(t[k] % 2 == 0);
    }
  }
}
