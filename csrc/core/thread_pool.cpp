#include "core/thread_pool.h"

#include <chrono>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace fwa {
namespace {

constexpr auto kSpinFor = std::chrono::microseconds(50);

inline void cpu_relax() {
#if defined(__x86_64__)
  _mm_pause();
#elif defined(__aarch64__)
  __asm__ volatile("isb" ::: "memory");
#endif
}

}  // namespace

ThreadPool::ThreadPool(int n_threads) {
  for (int i = 1; i < n_threads; ++i) workers_.emplace_back([this, i] { worker_loop(i); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
    ++generation_;
  }
  wake_cv_.notify_all();
  for (std::thread& t : workers_) t.join();
}

int ThreadPool::claim(uint32_t gen) {
  uint64_t s = claim_state_.load(std::memory_order_acquire);
  for (;;) {
    if (uint32_t(s >> 32) != gen || int(uint32_t(s)) >= n_chunks_.load(std::memory_order_relaxed)) return -1;
    if (claim_state_.compare_exchange_weak(s, s + 1, std::memory_order_acq_rel)) {
      return int(uint32_t(s));
    }
  }
}

void ThreadPool::run_chunks(uint32_t gen, TaskFn fn, void* ctx) {
  for (int c = claim(gen); c >= 0; c = claim(gen)) {
    fn(ctx, c);
    if (done_.fetch_add(1, std::memory_order_acq_rel) + 1 ==
        n_chunks_.load(std::memory_order_relaxed)) {
      std::lock_guard<std::mutex> lock(mu_);
      done_cv_.notify_all();
    }
  }
}

void ThreadPool::run(int n_chunks, int n_threads, TaskFn fn, void* ctx) {
  if (n_chunks <= 0) return;
  if (n_threads > size()) n_threads = size();
  if (n_threads <= 1 || n_chunks == 1) {
    for (int c = 0; c < n_chunks; ++c) fn(ctx, c);
    return;
  }
  uint32_t gen;
  {
    std::lock_guard<std::mutex> lock(mu_);
    gen = ++generation_;
    n_chunks_.store(n_chunks, std::memory_order_relaxed);
    n_threads_ = n_threads;
    fn_ = fn;
    ctx_ = ctx;
    done_.store(0, std::memory_order_relaxed);
    claim_state_.store(uint64_t(gen) << 32, std::memory_order_release);
  }
  wake_cv_.notify_all();
  run_chunks(gen, fn, ctx);
  // Every chunk is claimed; wait for the ones still running elsewhere: spin briefly, then block.
  const auto until = std::chrono::steady_clock::now() + kSpinFor;
  while (done_.load(std::memory_order_acquire) != n_chunks) {
    if (std::chrono::steady_clock::now() > until) {
      std::unique_lock<std::mutex> lock(mu_);
      done_cv_.wait(lock, [&] { return done_.load(std::memory_order_acquire) == n_chunks; });
      break;
    }
    cpu_relax();
  }
}

void ThreadPool::worker_loop(int index) {
  uint32_t seen = 0;
  for (;;) {
    uint32_t gen;
    TaskFn fn;
    void* ctx;
    {
      // Spin briefly for the next generation, then sleep on the condition variable.
      const auto until = std::chrono::steady_clock::now() + kSpinFor;
      while (uint32_t(claim_state_.load(std::memory_order_acquire) >> 32) == seen &&
             std::chrono::steady_clock::now() < until) {
        cpu_relax();
      }
      std::unique_lock<std::mutex> lock(mu_);
      wake_cv_.wait(lock, [&] { return generation_ != seen; });
      seen = gen = generation_;
      if (stop_) return;
      if (index >= n_threads_) continue;  // not needed for this run: stay parked
      fn = fn_;
      ctx = ctx_;
    }
    run_chunks(gen, fn, ctx);
  }
}

}  // namespace fwa
