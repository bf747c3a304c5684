// A small fork-join pool with dynamic work claiming: run(n_chunks, n_threads, fn, ctx) calls
// fn(ctx, i) exactly once for every i in [0, n_chunks). The caller and up to n_threads-1 woken
// workers claim chunks from one atomic counter, and run() returns as soon as every chunk is
// done: a worker that is descheduled (more threads than free cores) delays nothing, the others
// take its share. Chunks are whole units of work (e.g. a fixed tile range), so results never
// depend on which thread ran what. Idle workers spin briefly (bounded by time), then block on a
// condition variable: an idle pool burns no CPU.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

namespace fwa {

class ThreadPool {
 public:
  using TaskFn = void (*)(void* ctx, int chunk);

  explicit ThreadPool(int n_threads);  // n_threads >= 1, including the caller
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return int(workers_.size()) + 1; }
  // Not reentrant: one run() at a time per pool. n_threads is clamped to [1, size()].
  void run(int n_chunks, int n_threads, TaskFn fn, void* ctx);

 private:
  void worker_loop(int index);
  // Claims the next chunk of generation `gen`; -1 when none is left (or gen is over).
  int claim(uint32_t gen);
  void run_chunks(uint32_t gen, TaskFn fn, void* ctx);

  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable wake_cv_, done_cv_;
  // (generation << 32) | next unclaimed chunk: claims from an old generation fail.
  std::atomic<uint64_t> claim_state_{0};
  std::atomic<int> done_{0};  // chunks finished in the current generation
  uint32_t generation_ = 0;   // guarded by mu_
  std::atomic<int> n_chunks_{0};
  int n_threads_ = 0;
  TaskFn fn_ = nullptr;
  void* ctx_ = nullptr;
  bool stop_ = false;
};

}  // namespace fwa
