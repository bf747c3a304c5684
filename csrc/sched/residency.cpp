// SPDX-License-Identifier: Apache-2.0
#include "sched/residency.h"

#include <sys/mman.h>
#include <unistd.h>

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

}  // namespace

void ExpertResidency::init(Artifact* artifact) {
  artifact_ = artifact;
  const long ps = sysconf(_SC_PAGESIZE);
  page_ = ps > 0 ? size_t(ps) : 4096;
  const size_t n = artifact->expert_blocks().size();
  pins_.assign(n, 0);
  last_use_.assign(n, 0);
  resident_.assign(n, 0);
  locked_.assign(n, 0);
}

void ExpertResidency::set_budget(uint64_t bytes, bool lock) {
  std::lock_guard<std::mutex> g(mu_);
  budget_.store(bytes, std::memory_order_relaxed);
  lock_ = lock;
  stats_.budget_bytes = bytes;
  stats_.locked = lock;
  enforce_budget();  // a no-op when unlimited: what is resident stays
}

Status ExpertResidency::acquire(size_t block, std::string* message) {
  if (budget_.load(std::memory_order_relaxed) == 0) {  // unlimited: cached verification
    if (artifact_->block_verified(block)) return Status::ok;
    return artifact_->verify_block(block, message);
  }
  std::lock_guard<std::mutex> g(mu_);
  ++clock_;
  if (resident_[block] && artifact_->block_verified(block)) {
    ++stats_.hits;
  } else {
    const Status st = artifact_->verify_block(block, message);
    if (st != Status::ok) return st;
    ++stats_.misses;
    resident_[block] = 1;
    stats_.resident_bytes += artifact_->expert_blocks()[block].length;
    if (lock_ && artifact_->source()->file_backed()) {
      const ExpertBlockInfo& b = artifact_->expert_blocks()[block];
      const uint8_t* p = artifact_->source()->data() + artifact_->data_offset() + b.offset;
      if (mlock(p, size_t(b.length)) == 0) {
        locked_[block] = 1;
      } else {
        ++stats_.lock_failures;
      }
    }
  }
  ++pins_[block];
  last_use_[block] = clock_;
  enforce_budget();
  return Status::ok;
}

void ExpertResidency::release(size_t block) {
  if (budget_.load(std::memory_order_relaxed) == 0) return;
  std::lock_guard<std::mutex> g(mu_);
  if (pins_[block] > 0) --pins_[block];
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
