// SPDX-License-Identifier: Apache-2.0
#include "core/thread_pool.h"

#include <algorithm>
#include <chrono>

#if defined(__linux__)
#include <linux/futex.h>
#include <sched.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace fwa {
namespace {

static_assert(sizeof(std::atomic<uint32_t>) == 4 && std::atomic<uint32_t>::is_always_lock_free,
              "futex words must be plain 32-bit words");

// Generations are 31 bits (they are stored as gen << 1 in the futex words) and skip 0, the
// value every worker word starts with.
constexpr uint32_t kGenMask = 0x7fffffffu;
inline uint32_t next_generation(uint32_t g) {
  g = (g + 1) & kGenMask;
  return g ? g : 1;
}

// steady_clock is CLOCK_MONOTONIC, read through the vDSO on Linux: no syscall.
inline int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// Waits actively while w == val, until the deadline (now_ns() time). Returns the last value
// read: == val means the deadline passed. Never yields the CPU: a yield either does nothing
// (most ARM cores) or hands the core to another thread mid-run.
inline uint32_t spin_while_equal(const std::atomic<uint32_t>& w, uint32_t val, int64_t deadline) {
#if defined(__aarch64__) && (defined(__GNUC__) || defined(__clang__))
  for (;;) {
    uint32_t v;
    // The load-exclusive arms this core's monitor: a store to the line by another core clears
    // it and ends the WFE at once. Otherwise WFE ends on the generic-timer event stream Linux
    // runs at ~10 kHz (HWCAP_EVTSTRM) or on any interrupt, so the deadline check still runs:
    // parking may come up to ~100 us late (a tick late without the event stream), spent in a
    // low-power wait. A store to the word is never missed.
    __asm__ volatile("ldaxr %w0, [%1]" : "=&r"(v) : "r"(&w) : "memory");
    if (v != val || now_ns() >= deadline) return v;
    __asm__ volatile("wfe" ::: "memory");
  }
#else
  for (;;) {
    // Several PAUSEs per clock read: the clock read is cheap but not a low-power wait.
    for (int i = 0; i < 16; ++i) {
      const uint32_t v = w.load(std::memory_order_acquire);
      if (v != val) return v;
#if defined(__x86_64__) || defined(__i386__)
      _mm_pause();
#else
      std::atomic_signal_fence(std::memory_order_seq_cst);
#endif
    }
    if (now_ns() >= deadline) return val;
  }
#endif
}

int count_available_cpus() {
#if defined(__linux__)
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    const int n = CPU_COUNT(&set);
    if (n > 0) return n;
  }
#endif
  const unsigned n = std::thread::hardware_concurrency();
  return n ? int(n) : 1;
}

}  // namespace

ThreadPool::ThreadPool(int n_threads) : ThreadPool(ThreadPoolOptions{n_threads}) {}

ThreadPool::ThreadPool(const ThreadPoolOptions& options)
    : n_threads_(std::max(1, options.n_threads)),
      n_cpus_(count_available_cpus()),
      // Oversubscribed: a spinning thread would only take the core the awaited one needs.
      spin_ns_(n_threads_ > n_cpus_ ? 0 : std::max<int64_t>(0, options.spin_ns)),
      slots_(new Slot[size_t(n_threads_)]),
      base_(size_t(n_threads_), Counters{0, 0, 0, 0, 0}) {
  workers_.reserve(size_t(n_threads_ - 1));
  try {
    for (int i = 1; i < n_threads_; ++i) workers_.emplace_back([this, i] { worker_loop(i); });
  } catch (...) {
    shutdown();
    throw;
  }
}

ThreadPool::~ThreadPool() { shutdown(); }

void ThreadPool::shutdown() {
  stop_.store(true, std::memory_order_release);
  // A generation no worker has seen yet changes every word, parked or not.
  const uint32_t word = next_generation(generation_) << 1;
  for (size_t i = 0; i < workers_.size(); ++i) {
    Slot& s = slots_[i + 1];
    if (s.word.exchange(word, std::memory_order_acq_rel) & 1u) unpark(&s.word);
  }
  for (std::thread& t : workers_) t.join();
  workers_.clear();
}

#if defined(__linux__)
bool ThreadPool::park(std::atomic<uint32_t>* word, uint32_t val) {
  // Returns at once (EAGAIN) if *word != val already; 0 means a FUTEX_WAKE reached us.
  return syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAIT_PRIVATE, val, nullptr,
                 nullptr, 0) == 0;
}

void ThreadPool::unpark(std::atomic<uint32_t>* word) {
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAKE_PRIVATE, 1, nullptr, nullptr,
          0);
}
#else
// Portable parking: the word is checked under the mutex, and unpark() takes the mutex after
// the word changed, so no wake is lost. Wakes every parked thread; each re-checks its word
// (only a changed word counts as a wake).
bool ThreadPool::park(std::atomic<uint32_t>* word, uint32_t val) {
  std::unique_lock<std::mutex> lock(park_mu_);
  if (word->load(std::memory_order_acquire) != val) return false;
  park_cv_.wait(lock);
  return word->load(std::memory_order_acquire) != val;
}

void ThreadPool::unpark(std::atomic<uint32_t>*) {
  { std::lock_guard<std::mutex> lock(park_mu_); }
  park_cv_.notify_all();
}
#endif

void ThreadPool::run_chunks(uint32_t gen) {
  uint64_t s = claim_.load(std::memory_order_acquire);
  for (;;) {
    const uint32_t remaining = uint32_t(s);
    if (uint32_t(s >> 32) != gen || remaining == 0) return;
    if (!claim_.compare_exchange_weak(s, s - 1, std::memory_order_acq_rel,
                                      std::memory_order_acquire)) {
      continue;
    }
    // Our unfinished chunk keeps the run open, so the job fields are stable until done_ moves.
    const int n = n_chunks_;
    fn_(ctx_, n - int(remaining));
    const uint32_t old = done_.fetch_add(2, std::memory_order_acq_rel);
    if ((old >> 1) + 1 == uint32_t(n) && (old & 1u)) unpark(&done_);
    s = claim_.load(std::memory_order_acquire);
  }
}

void ThreadPool::run(int n_chunks, int n_threads, TaskFn fn, void* ctx) {
  if (n_chunks <= 0) return;
  Slot& me = slots_[0];
  const int64_t t0 = now_ns();
  add(me.runs, 1);
  // Never wake a worker that could find nothing to claim.
  const int k = std::min(std::min(n_threads, n_threads_), n_chunks);
  if (k <= 1) {
    for (int c = 0; c < n_chunks; ++c) fn(ctx, c);
    add(me.busy_ns, now_ns() - t0);
    return;
  }

  // Publish the run: the release store of claim_ makes fn_/ctx_/n_chunks_/done_ visible to
  // whoever claims a chunk of this generation.
  const uint32_t gen = generation_ = next_generation(generation_);
  fn_ = fn;
  ctx_ = ctx;
  n_chunks_ = n_chunks;
  done_.store(0, std::memory_order_relaxed);
  claim_.store(uint64_t(gen) << 32 | uint32_t(n_chunks), std::memory_order_release);
  // Wake exactly workers 1..k-1; a syscall only for those that are parked.
  for (int i = 1; i < k; ++i) {
    if (slots_[i].word.exchange(gen << 1, std::memory_order_acq_rel) & 1u) unpark(&slots_[i].word);
  }

  run_chunks(gen);
  int64_t t = now_ns();
  add(me.busy_ns, t - t0);

  // Every chunk is claimed; wait for those still running elsewhere: spin briefly, then park.
  const uint32_t target = uint32_t(n_chunks);
  uint32_t v = done_.load(std::memory_order_acquire);
  if ((v >> 1) != target && spin_ns_ > 0) {
    const int64_t deadline = t + spin_ns_;
    for (;;) {
      const uint32_t v2 = spin_while_equal(done_, v, deadline);
      if (v2 == v) break;  // deadline
      v = v2;
      if ((v >> 1) == target) break;
    }
    const int64_t t1 = now_ns();
    add(me.spin_ns, t1 - t);
    t = t1;
  }
  if ((v >> 1) != target) {
    while ((v >> 1) != target) {
      // Set the waiter flag first: the thread finishing the last chunk then sees it and wakes us.
      if (!(v & 1u)) {
        if (!done_.compare_exchange_weak(v, v | 1u, std::memory_order_acq_rel,
                                         std::memory_order_acquire)) {
          continue;
        }
        v |= 1u;
      }
      if (park(&done_, v)) add(me.wakes, 1);
      v = done_.load(std::memory_order_acquire);
    }
    add(me.parked_ns, now_ns() - t);
  }
}

void ThreadPool::worker_loop(int index) {
  Slot& s = slots_[index];
  uint32_t seen = 0;  // our word when we last took a run (gen << 1)
  int64_t t = now_ns();
  for (;;) {
    uint32_t w = s.word.load(std::memory_order_acquire);
    if (w == seen && spin_ns_ > 0) {
      w = spin_while_equal(s.word, seen, t + spin_ns_);
      const int64_t t1 = now_ns();
      add(s.spin_ns, t1 - t);
      t = t1;
    }
    if (w == seen) {
      // Park: set our flag (only we set it; the dispatcher's exchange clears it), then sleep
      // until the word changes. A failed CAS means a run arrived meanwhile.
      if (s.word.compare_exchange_strong(w, seen | 1u, std::memory_order_acq_rel,
                                         std::memory_order_acquire)) {
        do {
          if (park(&s.word, seen | 1u)) add(s.wakes, 1);
          w = s.word.load(std::memory_order_acquire);
        } while (w == (seen | 1u));
        const int64_t t1 = now_ns();
        add(s.parked_ns, t1 - t);
        t = t1;
      }
    }
    seen = w;
    if (stop_.load(std::memory_order_acquire)) return;
    add(s.runs, 1);
    run_chunks(w >> 1);
    const int64_t t1 = now_ns();
    add(s.busy_ns, t1 - t);
    t = t1;
  }
}

void ThreadPool::stats(ThreadPoolStats* out) const {
  *out = ThreadPoolStats{};
  out->n_threads = n_threads_;
  std::lock_guard<std::mutex> lock(stats_mu_);
  for (int i = 0; i < n_threads_; ++i) {
    const Slot& s = slots_[i];
    const Counters& b = base_[size_t(i)];
    ThreadPoolThreadStats t;
    t.busy_ns = s.busy_ns.load(std::memory_order_relaxed) - b.busy_ns;
    t.spin_ns = s.spin_ns.load(std::memory_order_relaxed) - b.spin_ns;
    t.parked_ns = s.parked_ns.load(std::memory_order_relaxed) - b.parked_ns;
    t.runs = s.runs.load(std::memory_order_relaxed) - b.runs;
    t.wakes = s.wakes.load(std::memory_order_relaxed) - b.wakes;
    out->busy_ns += t.busy_ns;
    out->spin_ns += t.spin_ns;
    out->parked_ns += t.parked_ns;
    out->runs += t.runs;
    out->wakes += t.wakes;
    if (i < kThreadPoolMaxStatsThreads) out->thread[i] = t;
  }
}

void ThreadPool::reset_stats() {
  // Counters are written only by their threads; a reset moves the baseline instead.
  std::lock_guard<std::mutex> lock(stats_mu_);
  for (int i = 0; i < n_threads_; ++i) {
    const Slot& s = slots_[i];
    base_[size_t(i)] = Counters{s.busy_ns.load(std::memory_order_relaxed),
                                s.spin_ns.load(std::memory_order_relaxed),
                                s.parked_ns.load(std::memory_order_relaxed),
                                s.runs.load(std::memory_order_relaxed),
                                s.wakes.load(std::memory_order_relaxed)};
  }
}

}  // namespace fwa
