/* SPDX-License-Identifier: Apache-2.0 */
// The core-count policy of a session: how many of its pool's threads the next decode steps
// use, decided from measured decode step times. A state machine with no model or session
// dependency (Session feeds it; tests/cpp/test_core_policy.cpp drives it with synthetic
// timings). Results never depend on it: only the speed does.
//
// set(max_active, target_ms, initial) starts a policy: at most max_active cores; target_ms > 0
// a per-token latency budget for decode steps (initial: the core count the session's cost
// model picked), 0 "fastest" (initial: max_active). Then every kWindow decode steps the
// window's mean decides:
//   - latency budget, with hysteresis: one core more as soon as the mean misses the budget,
//     one fewer at once when the mean scaled to one fewer core (linear scaling, the
//     pessimistic case) stays under 85 %; otherwise, while the mean stays under 85 %, a trial
//     window on one core fewer after a hold (kHoldMin windows after a core was added): kept if
//     it meets the budget, undone otherwise with the hold doubled (up to kHoldMax). A miss
//     caused by a passing load therefore does not keep the extra core for good.
//   - fastest: all max_active cores, unless a core turns out to be taken by another process.
//     A window whose calling thread was off its core for more than kContendedWait of the time
//     (wall minus thread CPU time: parked at a run's end waiting for a descheduled worker's
//     chunk, or descheduled itself; a few % otherwise) triggers a trial on one core fewer; the
//     trial window's mean decides, against the window before it, whether to keep the change
//     (more than kTrialGain faster) or undo it. The shed core is tried again after a hold of
//     windows; a failed trial holds all trials off and doubles the hold (kHoldMin..kHoldMax
//     windows); regaining the core resets it. At most one core is shed. The first
//     kWarmupWindows windows after set() start no trial: their steps carry the warm-up (the
//     workers' first runs, cold caches and TLBs), so a trial judged against them looks
//     faster than it is and a core nobody else wanted was kept shed (scale_30b, 3-bit, on an
//     idle machine: 2 threads ran on 1 core for the whole run).
// With max_active <= 1 nothing is measured or changed.
#pragma once

namespace fwa {

class CorePolicy {
 public:
  static constexpr int kWindow = 16;
  static constexpr double kContendedWait = 0.2, kTrialGain = 0.03;
  static constexpr int kHoldMin = 4, kHoldMax = 64;
  static constexpr int kWarmupWindows = 1;
  // The share of the budget a decode step should stay under before a core is given up.
  static constexpr double kBudgetMargin = 0.85;

  // Starts a policy (see above); initial is clamped to [1, max_active].
  void set(int max_active, double target_ms, int initial);
  // One decode step's wall time and the part of it the calling thread was off its core.
  void account(double ms, double off_cpu_ms);

  int active() const { return active_; }
  int max_active() const { return max_active_; }
  double target_ms() const { return target_ms_; }

 private:
  void fastest_window(double avg_ms, double off_fraction);
  void latency_window(double avg_ms);

  int active_ = 1, max_active_ = 1;
  double target_ms_ = 0;
  double window_ms_ = 0, window_off_ms_ = 0;  // decode and off-core time summed over the window
  int window_steps_ = 0;
  // The trial under way (0 none, -1 one core fewer, +1 the shed core back), the mean of the
  // window before it, windows before the next trial, the next hold.
  int trial_ = 0, hold_ = 0, hold_next_ = kHoldMin;
  int warmup_ = 0;  // windows left that only measure (fastest)
  double before_trial_ms_ = 0;
};

}  // namespace fwa
