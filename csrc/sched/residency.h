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
//
// Prefetch (budget mode, set_prefetch): prefetch(block) queues a block the caller predicts it
// will acquire soon (the next layer's router on the current hidden state, model/moe.cpp). One
// background I/O thread takes the queue in order: it asks the kernel to read the block ahead
// (MADV_WILLNEED), faults its pages in (mlock when locking, else a read per page), then
// verifies it (verify_block hashes it) and makes it resident under the budget like an
// acquire without a pin. A prefetch therefore only warms: acquire() still checks that the block
// is verified, a block whose digest fails stays failed (the acquire reports it), and the
// logits cannot change. The queue and the per-block state are allocated by init(): issuing a
// prefetch allocates nothing. cancel_prefetch() empties the queue (the layer has routed: what
// was not fetched yet is fetched on demand). Counted: issued, useful (acquired before being
// dropped), wasted (dropped unused), and bytes read for verification (demand and prefetch).
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
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
  bool prefetch = false;           // prefetching enabled
  uint64_t expert_bytes = 0;       // all expert blocks
  uint64_t prefetch_issued = 0;    // blocks queued by prefetch()
  uint64_t prefetch_fetched = 0;   // of those, made resident by the I/O thread
  uint64_t prefetch_useful = 0;    // prefetched blocks acquired before being dropped
  uint64_t prefetch_wasted = 0;    // prefetched blocks dropped unused
  uint64_t bytes_verified = 0;     // expert bytes hashed (read from the mapping) since init
  uint64_t stall_ns = 0;           // acquire() time spent fetching and verifying (misses)
  uint64_t prefetch_skipped = 0;   // predictions not queued: prefetch paused (see prefetch())
  uint64_t predicted = 0;          // experts predicted for a layer (decode steps)
  uint64_t predicted_routed = 0;   // of those, routed when the layer ran: the precision
};

class ExpertResidency {
 public:
  ExpertResidency() = default;
  ExpertResidency(const ExpertResidency&) = delete;
  ExpertResidency& operator=(const ExpertResidency&) = delete;
  ~ExpertResidency();  // stops the I/O thread

  // `artifact` outlives this object. Allocates the per-block state and the prefetch queue.
  void init(Artifact* artifact);

  // Sets the budget (0: unlimited) and mlock. Call between forward passes (no pins held).
  // Lowering it releases blocks at once.
  void set_budget(uint64_t bytes, bool lock);

  // Makes the block verified and resident, and pins it until release(). A miss hashes the
  // block (and may allocate its digest jobs); a hit allocates nothing.
  Status acquire(size_t block, std::string* message);
  void release(size_t block);

  // Prefetching on or off (off by default; effective only with a budget). Turning it on
  // starts the I/O thread once; off empties the queue.
  void set_prefetch(bool on);
  bool prefetching() const {
    return prefetch_.load(std::memory_order_relaxed) && budget_.load(std::memory_order_relaxed);
  }
  // Queues `block` for the I/O thread unless it is resident, queued or being fetched. Never
  // blocks on I/O and allocates nothing. Self-limiting: over each window of 64 prefetched
  // blocks that were used or dropped, if fewer than half were used (a wasted fetch costs a
  // storage read and a hash that a useful one saves), prefetch pauses and queues only one
  // prediction in 16 to keep measuring, until a window is useful again.
  void prefetch(size_t block);
  void cancel_prefetch();
  // The predictor's accuracy, independent of I/O timing: `n` experts were predicted for a
  // layer and `routed` of them were then routed there.
  void count_prediction(uint64_t n, uint64_t routed);

  ResidencyStats stats() const;

 private:
  void drop(size_t block);     // caller holds mu_
  void enforce_budget();       // caller holds mu_
  void io_loop();
  // Faults the block's pages in (and locks them when lock_): the bytes verify_block will hash
  // are then the ones in RAM. Takes no lock. True when mlock was refused.
  bool fetch_pages(size_t block, bool lock);

  Artifact* artifact_ = nullptr;
  size_t page_ = 4096;
  mutable std::mutex mu_;
  std::atomic<uint64_t> budget_{0};  // read without mu_ on the unlimited fast path
  bool lock_ = false;
  uint64_t clock_ = 0;
  uint64_t pinned_bytes_ = 0;       // blocks with pins > 0
  std::vector<uint32_t> pins_;
  std::vector<uint64_t> last_use_;   // clock_ at the last acquire; 0: not resident
  std::vector<uint8_t> resident_;
  std::vector<uint8_t> locked_;
  std::vector<uint8_t> prefetched_;  // resident through prefetch, not acquired yet
  std::vector<uint8_t> queued_;      // in the queue
  std::vector<uint8_t> loading_;     // being fetched by the I/O thread
  std::vector<uint32_t> queue_;      // ring of capacity = blocks
  size_t q_head_ = 0, q_size_ = 0;
  std::atomic<bool> prefetch_{false};
  bool paused_ = false;
  uint64_t window_useful_ = 0, window_wasted_ = 0, probe_ = 0;
  bool stop_ = false;
  std::condition_variable cv_;       // queue work for the I/O thread; loading_ done
  std::thread io_;
  ResidencyStats stats_;
};

}  // namespace fwa
