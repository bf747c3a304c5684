// SPDX-License-Identifier: Apache-2.0
#include "sched/residency.h"

#include <sys/mman.h>
#include <unistd.h>

#include <chrono>
#include <system_error>

namespace fwa {

namespace {

// The whole pages inside [p, p + n): dropping them never touches a neighbour's bytes.
bool inner_pages(const uint8_t* p, uint64_t n, size_t page, uint8_t** start, size_t* len) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  const uintptr_t lo = (a + page - 1) / page * page;
  const uintptr_t hi = (a + n) / page * page;
  if (hi <= lo) return false;
  *start = reinterpret_cast<uint8_t*>(lo);
  *len = size_t(hi - lo);
  return true;
}

uint64_t now_ns() {
  return uint64_t(std::chrono::duration_cast<std::chrono::nanoseconds>(
                      std::chrono::steady_clock::now().time_since_epoch())
                      .count());
}

}  // namespace

ExpertResidency::~ExpertResidency() {
  {
    std::lock_guard<std::mutex> g(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (io_.joinable()) io_.join();
}

void ExpertResidency::init(Artifact* artifact) {
  artifact_ = artifact;
  const long ps = sysconf(_SC_PAGESIZE);
  page_ = ps > 0 ? size_t(ps) : 4096;
  const size_t n = artifact->expert_blocks().size();
  pins_.assign(n, 0);
  last_use_.assign(n, 0);
  resident_.assign(n, 0);
  locked_.assign(n, 0);
  prefetched_.assign(n, 0);
  queued_.assign(n, 0);
  loading_.assign(n, 0);
  queue_.assign(n, 0);
  stats_.expert_bytes = 0;
  for (const ExpertBlockInfo& b : artifact->expert_blocks()) stats_.expert_bytes += b.length;
}

void ExpertResidency::set_budget(uint64_t bytes, bool lock) {
  std::lock_guard<std::mutex> g(mu_);
  budget_.store(bytes, std::memory_order_relaxed);
  lock_ = lock;
  stats_.budget_bytes = bytes;
  stats_.locked = lock;
  enforce_budget();  // a no-op when unlimited: what is resident stays
}

void ExpertResidency::set_prefetch(bool on) {
  std::lock_guard<std::mutex> g(mu_);
  if (on && !io_.joinable()) {
    try {
      io_ = std::thread([this] { io_loop(); });
    } catch (const std::system_error&) {
      on = false;  // no thread: demand fetching only
    }
  }
  prefetch_.store(on, std::memory_order_relaxed);
  stats_.prefetch = on;
  if (!on) {
    for (size_t i = 0; i < q_size_; ++i) queued_[queue_[(q_head_ + i) % queue_.size()]] = 0;
    q_size_ = 0;
  }
}

void ExpertResidency::prefetch(size_t block) {
  if (!prefetching() || block >= queue_.size()) return;
  {
    std::lock_guard<std::mutex> g(mu_);
    if (resident_[block] || queued_[block] || loading_[block]) return;
    if (window_useful_ + window_wasted_ >= 64) {
      paused_ = window_useful_ * 2 < window_useful_ + window_wasted_;
      window_useful_ = window_wasted_ = 0;
    }
    if (paused_ && probe_++ % 16 != 0) {
      ++stats_.prefetch_skipped;
      return;
    }
    queue_[(q_head_ + q_size_) % queue_.size()] = uint32_t(block);  // never full: one per block
    ++q_size_;
    queued_[block] = 1;
    ++stats_.prefetch_issued;
  }
  cv_.notify_all();
}

void ExpertResidency::cancel_prefetch() {
  if (!prefetch_.load(std::memory_order_relaxed)) return;
  std::lock_guard<std::mutex> g(mu_);
  for (size_t i = 0; i < q_size_; ++i) queued_[queue_[(q_head_ + i) % queue_.size()]] = 0;
  q_size_ = 0;
}

void ExpertResidency::count_prediction(uint64_t n, uint64_t routed) {
  std::lock_guard<std::mutex> g(mu_);
  stats_.predicted += n;
  stats_.predicted_routed += routed;
}

bool ExpertResidency::fetch_pages(size_t block, bool lock) {
  if (!artifact_->source()->file_backed()) return false;
  const ExpertBlockInfo& b = artifact_->expert_blocks()[block];
  const uint8_t* p = artifact_->source()->data() + artifact_->data_offset() + b.offset;
  uint8_t* start;
  size_t len;
  // One large read request instead of a fault (and a small readahead window) per page.
  if (inner_pages(p, b.length, page_, &start, &len)) madvise(start, len, MADV_WILLNEED);
  if (lock) {
    if (mlock(p, size_t(b.length)) == 0) {
      locked_[block] = 1;
      return false;
    }
  }
  // Fault every page in before hashing, so the hash runs from RAM.
  volatile uint8_t sink = 0;
  for (uint64_t off = 0; off < b.length; off += page_) sink = sink + p[off];
  (void)sink;
  return lock;  // mlock refused
}

void ExpertResidency::io_loop() {
  std::unique_lock<std::mutex> g(mu_);
  for (;;) {
    cv_.wait(g, [&] { return stop_ || q_size_ > 0; });
    if (stop_) return;
    const size_t block = queue_[q_head_];
    q_head_ = (q_head_ + 1) % queue_.size();
    --q_size_;
    queued_[block] = 0;
    const uint64_t budget = budget_.load(std::memory_order_relaxed);
    const uint64_t len = artifact_->expert_blocks()[block].length;
    // Fetch only what fits next to the pinned blocks: anything else would be dropped at once.
    if (resident_[block] || budget == 0 || pinned_bytes_ + len > budget) continue;
    loading_[block] = 1;
    const bool lock = lock_;
    locked_[block] = 0;
    g.unlock();
    const bool refused = fetch_pages(block, lock);  // locked_[block] is ours while loading_
    const Status st = artifact_->verify_block(block, nullptr);
    g.lock();
    if (refused) ++stats_.lock_failures;
    loading_[block] = 0;
    if (st == Status::ok && !resident_[block]) {
      resident_[block] = 1;
      prefetched_[block] = 1;
      last_use_[block] = ++clock_;
      stats_.resident_bytes += len;
      stats_.bytes_verified += len;
      ++stats_.prefetch_fetched;
      enforce_budget();
    } else if (locked_[block] && !resident_[block]) {
      const uint8_t* p =
          artifact_->source()->data() + artifact_->data_offset() +
          artifact_->expert_blocks()[block].offset;
      munlock(p, size_t(len));
      locked_[block] = 0;
    }
    cv_.notify_all();  // an acquire may wait for this block
  }
}

Status ExpertResidency::acquire(size_t block, std::string* message) {
  if (budget_.load(std::memory_order_relaxed) == 0) {  // unlimited: cached verification
    if (artifact_->block_verified(block)) return Status::ok;
    return artifact_->verify_block(block, message);
  }
  std::unique_lock<std::mutex> g(mu_);
  ++clock_;
  // The I/O thread has it under way: its pages are coming in; wait rather than read twice.
  cv_.wait(g, [&] { return !loading_[block]; });
  if (resident_[block] && artifact_->block_verified(block)) {
    ++stats_.hits;
    if (prefetched_[block]) {
      prefetched_[block] = 0;
      ++stats_.prefetch_useful;
      ++window_useful_;
    }
  } else {
    const uint64_t t0 = now_ns();
    const ExpertBlockInfo& b = artifact_->expert_blocks()[block];
    // Pages in (and locked, with mlock) before the hash: the hashed bytes are the ones kept.
    locked_[block] = 0;
    if (fetch_pages(block, lock_)) ++stats_.lock_failures;
    const Status st = artifact_->verify_block(block, message);
    if (st != Status::ok) {
      if (locked_[block]) {
        munlock(artifact_->source()->data() + artifact_->data_offset() + b.offset,
                size_t(b.length));
        locked_[block] = 0;
      }
      return st;
    }
    ++stats_.misses;
    resident_[block] = 1;
    stats_.resident_bytes += b.length;
    stats_.bytes_verified += b.length;
    stats_.stall_ns += now_ns() - t0;
  }
  if (pins_[block]++ == 0) pinned_bytes_ += artifact_->expert_blocks()[block].length;
  last_use_[block] = clock_;
  enforce_budget();
  return Status::ok;
}

void ExpertResidency::release(size_t block) {
  if (budget_.load(std::memory_order_relaxed) == 0) return;
  std::lock_guard<std::mutex> g(mu_);
  if (pins_[block] > 0 && --pins_[block] == 0)
    pinned_bytes_ -= artifact_->expert_blocks()[block].length;
  enforce_budget();
}

void ExpertResidency::drop(size_t block) {
  const ExpertBlockInfo& b = artifact_->expert_blocks()[block];
  const uint8_t* p = artifact_->source()->data() + artifact_->data_offset() + b.offset;
  // Unverified first: from here on the next use hashes the block again.
  artifact_->forget_block(block);
  if (artifact_->source()->file_backed()) {
    if (locked_[block]) munlock(p, size_t(b.length));
    uint8_t* start;
    size_t len;
    if (inner_pages(p, b.length, page_, &start, &len)) madvise(start, len, MADV_DONTNEED);
  }
  if (prefetched_[block]) {
    prefetched_[block] = 0;
    ++stats_.prefetch_wasted;
    ++window_wasted_;
  }
  locked_[block] = 0;
  resident_[block] = 0;
  last_use_[block] = 0;
  stats_.resident_bytes -= b.length;
  ++stats_.releases;
}

void ExpertResidency::enforce_budget() {
  const uint64_t budget = budget_.load(std::memory_order_relaxed);
  while (budget != 0 && stats_.resident_bytes > budget) {
    size_t victim = resident_.size();
    for (size_t i = 0; i < resident_.size(); ++i)
      if (resident_[i] && pins_[i] == 0 &&
          (victim == resident_.size() || last_use_[i] < last_use_[victim]))
        victim = i;
    if (victim == resident_.size()) return;  // every resident block is pinned
    drop(victim);
  }
}

ResidencyStats ExpertResidency::stats() const {
  std::lock_guard<std::mutex> g(mu_);
  return stats_;
}

}  // namespace fwa
