// SPDX-License-Identifier: Apache-2.0
// The core-count policy (sched/core_policy.h) driven by synthetic decode timings: no model, no
// threads. The cost model that picks the initial count under a latency budget, and the logits'
// independence of the policy, are tested on a real session in test_model.cpp.
#include <doctest/doctest.h>

#include "sched/core_policy.h"

using fwa::CorePolicy;

namespace {

constexpr int kW = CorePolicy::kWindow;

// One window of steps of `ms`, the caller off its core for `off` of each.
void feed(CorePolicy& p, double ms, double off = 0.0) {
  for (int i = 0; i < kW; ++i) p.account(ms, off * ms);
}

}  // namespace

TEST_CASE("the fastest policy sheds a contended core by trial, retries it after a hold") {
  CorePolicy p;
  auto held = [&](int windows, double ms) {  // contended windows that change nothing
    const int n = p.active();
    for (int i = 0; i < windows; ++i) {
      feed(p, ms, 0.5);
      CHECK(p.active() == n);
    }
  };
  p.set(2, 0.0, 2);
  CHECK(p.active() == 2);
  feed(p, 6.0, 0.05);  // a few % off-core: balanced, nothing to try
  CHECK(p.active() == 2);
  for (int i = 0; i < kW - 1; ++i) p.account(10.0, 5.0);
  CHECK(p.active() == 2);  // the window is not over
  p.account(10.0, 5.0);
  CHECK(p.active() == 1);  // half the time off-core: trial on one core fewer
  feed(p, 8.0);            // clearly faster: kept
  CHECK(p.active() == 1);
  for (int i = 0; i < CorePolicy::kHoldMin; ++i) {
    feed(p, 8.0);
    CHECK(p.active() == 1);  // held
  }
  feed(p, 8.0);
  CHECK(p.active() == 2);  // hold over: the core is tried again
  feed(p, 10.0, 0.5);      // still contended, slower: back to one core
  CHECK(p.active() == 1);
  for (int i = 0; i < 2 * CorePolicy::kHoldMin; ++i) {
    feed(p, 8.0);
    CHECK(p.active() == 1);  // the failed retry doubled the hold
  }
  feed(p, 8.0);
  CHECK(p.active() == 2);
  feed(p, 6.0, 0.02);  // the neighbour left: faster on two, kept, hold reset
  CHECK(p.active() == 2);
  feed(p, 6.0, 0.02);
  CHECK(p.active() == 2);

  // A false alarm: one core fewer is slower, so the trial is undone and trials are held off.
  feed(p, 6.0, 0.5);
  CHECK(p.active() == 1);
  feed(p, 9.0);
  CHECK(p.active() == 2);
  held(2 * CorePolicy::kHoldMin, 6.0);
  feed(p, 6.0, 0.5);  // hold over: contention is tried again
  CHECK(p.active() == 1);

  // A 1-core cap or a latency budget leaves the contention trials out.
  p.set(1, 0.0, 1);
  feed(p, 6.0, 0.9);
  CHECK(p.active() == 1);
  p.set(2, 1e-9, 2);
  feed(p, 6.0, 0.9);
  CHECK(p.active() == 2);
}

TEST_CASE("the fastest policy's first window is the warm-up: no trial is judged against it") {
  CorePolicy p;
  p.set(2, 0.0, 2);
  feed(p, 20.0, 0.5);  // first steps: slow, the caller waiting on cold workers
  CHECK(p.active() == 2);
  feed(p, 6.0, 0.1);  // steady, balanced: nothing to try
  CHECK(p.active() == 2);
  feed(p, 6.0, 0.5);  // contended now: the trial starts from a steady window
  CHECK(p.active() == 1);
  feed(p, 6.1);  // not faster than 6.0: undone
  CHECK(p.active() == 2);
  // set() starts a new warm-up
  p.set(2, 0.0, 2);
  feed(p, 20.0, 0.5);
  CHECK(p.active() == 2);
}

TEST_CASE("the fastest policy's hold doubles up to kHoldMax and a regained core resets it") {
  CorePolicy p;
  p.set(2, 0.0, 2);
  feed(p, 6.0);  // the warm-up window
  int expected_hold = CorePolicy::kHoldMin;
  for (int round = 0; round < 6; ++round) {
    feed(p, 6.0, 0.5);  // contended: trial on one core
    REQUIRE(p.active() == 1);
    feed(p, 9.0);  // slower: undone, hold doubled
    REQUIRE(p.active() == 2);
    expected_hold = expected_hold * 2 > CorePolicy::kHoldMax ? CorePolicy::kHoldMax
                                                             : expected_hold * 2;
    for (int i = 0; i < expected_hold; ++i) {
      feed(p, 6.0, 0.5);
      REQUIRE(p.active() == 2);
    }
  }
  CHECK(expected_hold == CorePolicy::kHoldMax);
}

TEST_CASE("the latency policy: measured steps with hysteresis, trials after a hold") {
  CorePolicy p;
  p.set(3, 10.0, 1);  // the cost model's pick
  feed(p, 20.0);      // misses the budget
  CHECK(p.active() == 2);
  feed(p, 20.0);
  CHECK(p.active() == 3);
  feed(p, 20.0);  // at the cap: stays
  CHECK(p.active() == 3);
  feed(p, 6.0);  // on 2 cores: 6 * 3 / 2 = 9 ms, over 8.5: keep 3
  CHECK(p.active() == 3);
  feed(p, 5.0);  // 7.5 ms on 2 cores: shed one
  CHECK(p.active() == 2);
  for (int i = 0; i < kW - 1; ++i) p.account(1.0, 0.0);
  CHECK(p.active() == 2);  // a window is not over yet
  p.account(1.0, 0.0);
  CHECK(p.active() == 1);

  // In between (6 ms on 2 cores: 12 ms if scaling were linear), after the hold a trial
  // window on one core fewer decides; a failed trial doubles the hold.
  p.set(2, 10.0, 1);
  feed(p, 20.0);
  CHECK(p.active() == 2);
  for (int i = 0; i < CorePolicy::kHoldMin; ++i) {
    feed(p, 6.0);
    CHECK(p.active() == 2);
  }
  feed(p, 6.0);
  CHECK(p.active() == 1);  // the trial
  feed(p, 12.0);           // misses: back to two cores
  CHECK(p.active() == 2);
  for (int i = 0; i < 2 * CorePolicy::kHoldMin; ++i) {
    feed(p, 6.0);
    CHECK(p.active() == 2);
  }
  feed(p, 6.0);
  CHECK(p.active() == 1);
  feed(p, 8.0);  // meets the budget: kept
  CHECK(p.active() == 1);
  feed(p, 8.0);
  CHECK(p.active() == 1);
}

TEST_CASE("set clamps its arguments and a one-core policy measures nothing") {
  CorePolicy p;
  p.set(4, 0.0, 9);
  CHECK(p.active() == 4);
  CHECK(p.max_active() == 4);
  p.set(4, 5.0, 0);
  CHECK(p.active() == 1);
  CHECK(p.target_ms() == 5.0);
  p.set(0, -3.0, 0);
  CHECK(p.max_active() == 1);
  CHECK(p.target_ms() == 0.0);
  for (int i = 0; i < 10 * kW; ++i) p.account(100.0, 100.0);
  CHECK(p.active() == 1);
  // A new policy forgets a half-filled window of the previous one.
  p.set(2, 10.0, 1);
  for (int i = 0; i < kW - 1; ++i) p.account(1.0, 0.0);
  p.set(2, 10.0, 1);
  p.account(50.0, 0.0);  // one step of a fresh window: no decision yet
  CHECK(p.active() == 1);
}
