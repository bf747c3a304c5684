// SPDX-License-Identifier: Apache-2.0
#include "sched/core_policy.h"

#include <algorithm>

namespace fwa {

void CorePolicy::set(int max_active, double target_ms, int initial) {
  max_active_ = std::max(1, max_active);
  target_ms_ = target_ms > 0 ? target_ms : 0;
  active_ = std::min(std::max(1, initial), max_active_);
  window_ms_ = window_off_ms_ = 0;
  window_steps_ = 0;
  trial_ = hold_ = 0;
  hold_next_ = kHoldMin;
  before_trial_ms_ = 0;
  warmup_ = kWarmupWindows;
}

void CorePolicy::account(double ms, double off_cpu_ms) {
  if (max_active_ <= 1) return;
  window_ms_ += ms;
  window_off_ms_ += off_cpu_ms;
  if (++window_steps_ < kWindow) return;
  const double avg = window_ms_ / window_steps_;
  const double off = window_ms_ > 0 ? window_off_ms_ / window_ms_ : 0;
  window_ms_ = window_off_ms_ = 0;
  window_steps_ = 0;
  if (target_ms_ <= 0)
    fastest_window(avg, off);
  else
    latency_window(avg);
}

void CorePolicy::latency_window(double avg_ms) {
  if (trial_ != 0) {  // this window ran on one core fewer: kept if it met the budget
    if (avg_ms <= target_ms_) {
      hold_next_ = kHoldMin;
    } else {
      ++active_;
      hold_next_ = std::min(2 * hold_next_, kHoldMax);
      hold_ = hold_next_;
    }
    trial_ = 0;
    return;
  }
  if (avg_ms > target_ms_ && active_ < max_active_) {
    ++active_;
    hold_ = hold_next_;
  } else if (active_ > 1 && avg_ms * active_ / (active_ - 1) < kBudgetMargin * target_ms_) {
    --active_;  // even linear scaling would meet the budget
  } else if (hold_ > 0) {
    --hold_;
  } else if (active_ > 1 && avg_ms < kBudgetMargin * target_ms_) {
    --active_;  // decode rarely scales linearly: measure one core fewer
    trial_ = -1;
  }
}

void CorePolicy::fastest_window(double avg_ms, double off_fraction) {
  if (trial_ != 0) {  // this window ran the trial: keep it only if clearly faster
    const bool kept = avg_ms < (1 - kTrialGain) * before_trial_ms_;
    if (kept && trial_ > 0) {  // the shed core is free again
      hold_ = 0;
      hold_next_ = kHoldMin;
    } else if (kept) {  // shed: retry the core after a hold
      hold_ = hold_next_;
    } else {  // no gain: undo, and wait longer before the next trial
      active_ -= trial_;
      hold_next_ = std::min(2 * hold_next_, kHoldMax);
      hold_ = hold_next_;
    }
    trial_ = 0;
    return;
  }
  if (warmup_ > 0) {
    --warmup_;
    return;
  }
  if (hold_ > 0) {
    --hold_;
    return;
  }
  if (active_ < max_active_) {
    trial_ = +1;
  } else if (active_ > 1 && off_fraction > kContendedWait) {
    trial_ = -1;
  } else {
    return;
  }
  before_trial_ms_ = avg_ms;
  active_ += trial_;
}

}  // namespace fwa
