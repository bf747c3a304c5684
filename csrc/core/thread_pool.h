/* SPDX-License-Identifier: Apache-2.0 */
// A small fork-join pool that parks its idle workers: run(n_chunks, n_threads, fn, ctx) calls
// fn(ctx, i) exactly once for every i in [0, n_chunks) and returns when all are done. Chunks
// are whole units of work (e.g. a fixed tile range), so results never depend on which thread
// ran what. The caller is thread 0 and takes part; workers are threads 1..size()-1.
//
// Protocol (one run = one generation g, 31 bits, never 0 after the first run):
//  1. Publish: the caller writes fn/ctx/n_chunks, resets the done word, then stores the claim
//     word (g << 32 | remaining = n_chunks) with release.
//  2. Wake: for each needed worker i in 1..k-1 (k = min(n_threads, n_chunks, size())) the caller
//     exchanges worker i's own 32-bit futex word to (g << 1); bit 0 of that word is the
//     worker's "parked" flag, so FUTEX_WAKE is issued only if it was set. Workers >= k are never
//     touched: they stay parked and cost nothing.
//  3. Claim: every participant decrements `remaining` by CAS, and only while the claim word still
//     carries its generation g, so a late worker can never take a chunk of a newer run. The
//     chunk index is n_chunks - remaining; fn/ctx/n_chunks are read only after a successful
//     claim, when the run cannot end before that chunk does.
//  4. Done: each finished chunk adds 2 to the done word (count << 1 | waiter flag). The caller
//     spins briefly for count == n_chunks, then sets the waiter flag and futex-waits; whoever
//     finishes the last chunk with the flag set wakes it. run() returns as soon as all chunks
//     are done: a descheduled worker delays nothing, the others take its share.
//  5. Wait: an idle worker watches its word with a time-bounded low-power spin (PAUSE on x86,
//     WFE on aarch64, never yield), then sets the parked flag by CAS and futex-waits on it.
// The spin budget (ThreadPoolOptions::spin_ns) is forced to 0 when the pool has more threads
// than CPUs this process may run on: spinning then only steals the core the awaited thread
// needs. Each thread accounts its own busy/spin/parked time and counts (stats()).
#pragma once
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#if !defined(__linux__)
#include <condition_variable>
#endif

namespace fwa {

struct ThreadPoolOptions {
  int n_threads = 1;        // >= 1, including the caller
  int64_t spin_ns = 50000;  // spin before parking; forced to 0 when oversubscribed
};

// Per-thread accounting since construction or reset_stats(). Thread 0 is the caller. Each
// interval is added when it ends: a park that began before reset_stats() counts in full.
struct ThreadPoolThreadStats {
  int64_t busy_ns = 0;    // dispatching and running chunks
  int64_t spin_ns = 0;    // waiting actively (PAUSE/WFE loop)
  int64_t parked_ns = 0;  // inside the futex wait
  int64_t runs = 0;       // runs taken part in (caller: every run() with chunks)
  int64_t wakes = 0;      // futex wakes received
};

constexpr int kThreadPoolMaxStatsThreads = 64;

struct ThreadPoolStats {
  int n_threads = 0;  // size() of the pool; thread[] holds the first min(n_threads, 64)
  // Totals over all threads. Core-seconds spent (the energy input) = busy_ns + spin_ns.
  int64_t busy_ns = 0, spin_ns = 0, parked_ns = 0;
  int64_t runs = 0, wakes = 0;
  ThreadPoolThreadStats thread[kThreadPoolMaxStatsThreads];
};

class ThreadPool {
 public:
  using TaskFn = void (*)(void* ctx, int chunk);

  explicit ThreadPool(int n_threads);  // n_threads >= 1, including the caller; default spin
  explicit ThreadPool(const ThreadPoolOptions& options);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return n_threads_; }
  // The spin budget in effect: the requested one, or 0 when oversubscribed.
  int64_t spin_ns() const { return spin_ns_; }
  // CPUs this process may run on (sched_getaffinity), as read at construction.
  int available_cpus() const { return n_cpus_; }

  // Not reentrant: one run() at a time per pool. n_threads is clamped to [1, size()] and to
  // n_chunks. Allocates nothing.
  void run(int n_chunks, int n_threads, TaskFn fn, void* ctx);

  // A snapshot (relaxed loads; each counter is written only by its own thread).
  void stats(ThreadPoolStats* out) const;
  void reset_stats();

 private:
  struct Counters {
    int64_t busy_ns, spin_ns, parked_ns, runs, wakes;
  };
  // One per thread (index 0 = caller), on its own cache line. `word` is the worker's futex
  // word (gen << 1 | parked); the counters are written only by the owning thread.
  struct alignas(64) Slot {
    std::atomic<uint32_t> word{0};
    std::atomic<int64_t> busy_ns{0}, spin_ns{0}, parked_ns{0}, runs{0}, wakes{0};
  };

  void worker_loop(int index);
  void shutdown();  // stops and joins the workers
  // Claims and runs chunks of generation gen until none is left.
  void run_chunks(uint32_t gen);
  // Blocks until *word != val (FUTEX_WAIT_PRIVATE); true if woken by a wake call.
  bool park(std::atomic<uint32_t>* word, uint32_t val);
  void unpark(std::atomic<uint32_t>* word);  // FUTEX_WAKE_PRIVATE, one waiter
  static void add(std::atomic<int64_t>& c, int64_t d) {
    c.store(c.load(std::memory_order_relaxed) + d, std::memory_order_relaxed);
  }

  int n_threads_ = 1;
  int n_cpus_ = 1;
  int64_t spin_ns_ = 0;
  std::unique_ptr<Slot[]> slots_;
  std::vector<std::thread> workers_;

  // The run being executed (written by the caller before the claim word is published).
  TaskFn fn_ = nullptr;
  void* ctx_ = nullptr;
  int n_chunks_ = 0;
  uint32_t generation_ = 0;  // caller-only
  alignas(64) std::atomic<uint64_t> claim_{0};  // gen << 32 | chunks not yet claimed
  alignas(64) std::atomic<uint32_t> done_{0};   // chunks done << 1 | caller parked
  std::atomic<bool> stop_{false};

  mutable std::mutex stats_mu_;  // guards base_ (reset_stats baselines)
  std::vector<Counters> base_;

#if !defined(__linux__)
  std::mutex park_mu_;  // portable parking: one mutex + condvar for all words
  std::condition_variable park_cv_;
#endif
};

}  // namespace fwa
