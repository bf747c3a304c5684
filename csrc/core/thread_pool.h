// A small fork-join pool: run(n, fn, ctx) calls fn(ctx, i) for i in [0, n) with the caller
// taking task 0 and up to n-1 workers the rest, and returns when all are done. Idle workers spin
// briefly (bounded by time), then block on a condition variable, so an idle pool burns no CPU.
// Tasks are assigned statically (task i always runs the same work slice), so results never
// depend on which thread ran what.
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
  using TaskFn = void (*)(void* ctx, int task);

  explicit ThreadPool(int n_threads);  // n_threads >= 1, including the caller
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return int(workers_.size()) + 1; }
  // n_tasks is clamped to [1, size()]. Not reentrant: one run() at a time per pool.
  void run(int n_tasks, TaskFn fn, void* ctx);

 private:
  void worker_loop(int index);

  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable wake_cv_, done_cv_;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> pending_{0};
  int n_tasks_ = 0;
  TaskFn fn_ = nullptr;
  void* ctx_ = nullptr;
  bool stop_ = false;
};

}  // namespace fwa
