// SPDX-License-Identifier: Apache-2.0
// The decode-time code guard (model/guard.h): the DFA's identifier boundaries and literals,
// and guarded generations on the test artifact (FWA_TEST_MODEL) over synthetic token bytes:
// interventions without allocation, bit-identity when it never intervenes, the policy stop.
#include <doctest/doctest.h>

#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "count_allocations.h"
#include "model_fixtures.h"
#include "model/generate.h"
#include "model/guard.h"
#include "model/model.h"
#include "model/session.h"

using namespace fwa;
using fwa_test::load_test_model;

namespace {

std::shared_ptr<const CodeGuard> compile(const std::vector<GuardPattern>& pats,
                                         const std::vector<std::string>& tokens) {
  std::shared_ptr<const CodeGuard> g;
  std::string msg;
  REQUIRE_MESSAGE(CodeGuard::create(pats, {"gets", "lit"}, tokens, &g, &msg) == Status::ok, msg);
  return g;
}

int32_t rule_of(const CodeGuard& g, const std::string& text) {
  int32_t rule;
  g.feed(CodeGuard::kStart, reinterpret_cast<const uint8_t*>(text.data()), text.size(), &rule);
  return rule;
}

struct Run {
  std::vector<int32_t> tokens;
  StopReason reason;
  GenerationStats stats;
  long allocs;
};

Run generate(const std::shared_ptr<Model>& m, const GenerateParams& p) {
  SessionOptions o;
  o.max_context = 128;
  std::unique_ptr<Session> s;
  std::string msg, piece;
  REQUIRE(Session::create(m, o, &s, &msg) == Status::ok);
  const std::vector<int32_t> prompt = {1, 2, 3, 4, 5};
  Generation g;
  REQUIRE_MESSAGE(g.start(s.get(), prompt.data(), 5, p, &msg) == Status::ok, msg);
  bool done = false;
  int32_t tok;
  g_allocs = 0;
  g_counting = true;
  while (!done) REQUIRE(g.next(&tok, &piece, &done, &msg) == Status::ok);
  g_counting = false;
  return {g.token_ids(), g.stop_reason(), g.stats(), g_allocs.load()};
}

}  // namespace

TEST_CASE("guard: identifier boundaries, whitespace, literals, split input") {
  const auto g = compile({{"gets", GuardPatternKind::call, 0}, {"%n", GuardPatternKind::literal, 1}},
                         {"a"});
  CHECK(rule_of(*g, "x = gets(") == 0);
  CHECK(rule_of(*g, "gets \n\t(") == 0);
  CHECK(rule_of(*g, "(gets(") == 0);
  CHECK(rule_of(*g, "my_gets(") == -1);
  CHECK(rule_of(*g, "getsx(") == -1);
  CHECK(rule_of(*g, "1gets(") == -1);
  CHECK(rule_of(*g, "fgets(") == -1);
  CHECK(rule_of(*g, "gets x (") == -1);
  CHECK(rule_of(*g, "printf(\"%n\"") == 1);
  // Fed in pieces, the state carries the partial match.
  int32_t r1, r2, r3;
  const uint8_t a[] = {'g', 'e'}, b[] = {'t', 's', ' '}, c[] = {'('};
  int32_t s = g->feed(CodeGuard::kStart, a, 2, &r1);
  s = g->feed(s, b, 3, &r2);
  g->feed(s, c, 1, &r3);
  CHECK(r1 == -1);
  CHECK(r2 == -1);
  CHECK(r3 == 0);
}

TEST_CASE("guard: bad patterns are refused naming them") {
  std::shared_ptr<const CodeGuard> g;
  std::string msg;
  CHECK(CodeGuard::create({{"a b", GuardPatternKind::call, 0}}, {"r"}, {"a"}, &g, &msg) ==
        Status::invalid_argument);
  CHECK(msg.find("pattern 0") != std::string::npos);
  CHECK(CodeGuard::create({{"ab", GuardPatternKind::call, 3}}, {"r"}, {"a"}, &g, &msg) ==
        Status::invalid_argument);
  CHECK(msg.find("rule index 3") != std::string::npos);
  CHECK(CodeGuard::create({{"", GuardPatternKind::literal, 0}}, {"r"}, {"a"}, &g, &msg) ==
        Status::invalid_argument);
  CHECK(!g);
}

TEST_CASE("guarded generation: interventions allocate nothing, never-firing is bit-identical") {
  auto m = load_test_model();
  const int64_t V = m->config().vocab_size;
  // A third of the tokens are "gets", a third "(", the rest "a;": the sampler often picks a
  // "(" after a "gets" and the guard must step in.
  std::vector<std::string> bytes(static_cast<size_t>(V)), inert(static_cast<size_t>(V), "a;");
  for (int64_t i = 0; i < V; ++i) bytes[size_t(i)] = i % 3 == 0 ? "gets" : i % 3 == 1 ? "(" : "a;";
  GenerateParams p;
  p.max_tokens = 40;
  p.sampling.temperature = 1.0f;
  p.sampling.seed = 9;
  const Run plain = generate(m, p);

  GenerateParams q = p;
  q.guard = compile({{"gets", GuardPatternKind::call, 0}}, bytes);
  const Run guarded = generate(m, q);
  REQUIRE(!guarded.stats.interventions.empty());
  CHECK(guarded.allocs == 0);
  CHECK(guarded.reason == StopReason::max_tokens);
  std::string text;
  for (int32_t t : guarded.tokens) text += bytes[size_t(t)];
  int32_t rule;
  q.guard->feed(CodeGuard::kStart, reinterpret_cast<const uint8_t*>(text.data()), text.size(),
                &rule);
  CHECK(rule == -1);  // no banned call in the output
  // Before the first intervention the tokens are the unguarded ones; there the banned token
  // was the unguarded pick.
  const GuardIntervention& first = guarded.stats.interventions[0];
  for (int64_t i = 0; i < first.position; ++i)
    CHECK(guarded.tokens[size_t(i)] == plain.tokens[size_t(i)]);
  CHECK(plain.tokens[size_t(first.position)] == first.token);

  GenerateParams r = p;
  r.guard = compile({{"gets", GuardPatternKind::call, 0}}, inert);
  const Run never = generate(m, r);
  CHECK(never.stats.interventions.empty());
  CHECK(never.tokens == plain.tokens);
}

TEST_CASE("guarded generation: everything banned stops with reason policy") {
  auto m = load_test_model();
  std::vector<std::string> bytes(size_t(m->config().vocab_size), " x(");
  GenerateParams p;
  p.max_tokens = 8;
  p.guard = compile({{"x", GuardPatternKind::call, 0}}, bytes);
  const Run run = generate(m, p);
  CHECK(run.reason == StopReason::policy);
  CHECK(run.tokens.empty());
  REQUIRE(run.stats.interventions.size() == 1);
  CHECK(run.stats.interventions[0].position == 0);
  // A guard for another vocabulary is refused at start.
  GenerateParams q;
  q.guard = compile({{"x", GuardPatternKind::call, 0}}, {"a", "b"});
  SessionOptions o;
  std::unique_ptr<Session> s;
  std::string msg;
  REQUIRE(Session::create(m, o, &s, &msg) == Status::ok);
  Generation g;
  const int32_t prompt[] = {1};
  CHECK(g.start(s.get(), prompt, 1, q, &msg) == Status::invalid_argument);
  CHECK(msg.find("vocabulary of 2") != std::string::npos);
}
