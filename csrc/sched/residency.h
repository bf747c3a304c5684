/* SPDX-License-Identifier: Apache-2.0 */
// Expert residency under a memory budget. The artifact is mapped read-only; with a budget, at
// most `budget` bytes of expert blocks stay resident. A block is acquired (pinned) by every
// forward chunk that routes to it and released after the chunk's matmuls. When the resident
// blocks exceed the budget, the least recently used unpinned ones are dropped from memory
// (madvise MADV_DONTNEED on the whole pages inside the block, so no neighbour loses a page)
// and marked unverified: their next use hashes them again, so a released expert is as
// verified on its return as at load. Pinned blocks are never dropped, so the budget is soft:
// it never goes below the experts one chunk of one session needs.
//
// With mlock, resident blocks are also locked in RAM (the kernel cannot reclaim them behind
// our back); a failed mlock (RLIMIT_MEMLOCK) is counted, not fatal.
//
// Budget 0 (the default) keeps every block once verified, as before: acquire() is then a
// cached check and release() a no-op. Caller memory (open_memory) is never advised: only the
// verification bookkeeping applies.
#pragma once
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "artifact/reader.h"
#include "core/status.h"

namespace fwa {

struct ResidencyStats {
  uint64_t budget_bytes = 0;     // 0: unlimited
  uint64_t resident_bytes = 0;   // blocks verified and kept (budget mode)
  uint64_t hits = 0;             // acquires of a resident block
  uint64_t misses = 0;           // acquires that verified (or re-verified) a block
  uint64_t releases = 0;         // blocks dropped to meet the budget
  uint64_t lock_failures = 0;    // mlock calls refused
  bool locked = false;
};

class ExpertResidency {
 public:
  // `artifact` outlives this object. Allocates the per-block state.
  void init(Artifact* artifact);

  // Sets the budget (0: unlimited) and mlock. Call between forward passes (no pins held).
  // Lowering it releases blocks at once.
  void set_budget(uint64_t bytes, bool lock);

  // Makes the block verified and resident, and pins it until release(). A miss hashes the
  // block (and may allocate its digest jobs); a hit allocates nothing.
  Status acquire(size_t block, std::string* message);
  void release(size_t block);

  ResidencyStats stats() const;

 private:
  void drop(size_t block);     // caller holds mu_
  void enforce_budget();       // caller holds mu_

  Artifact* artifact_ = nullptr;
  size_t page_ = 4096;
  mutable std::mutex mu_;
  std::atomic<uint64_t> budget_{0};  // read without mu_ on the unlimited fast path
  bool lock_ = false;
  uint64_t clock_ = 0;
  std::vector<uint32_t> pins_;
  std::vector<uint64_t> last_use_;   // clock_ at the last acquire; 0: not resident
  std::vector<uint8_t> resident_;
  std::vector<uint8_t> locked_;
  ResidencyStats stats_;
};

}  // namespace fwa
