// SPDX-License-Identifier: Apache-2.0
// The thread pool: every chunk exactly once (also with more threads than cores), only the
// needed workers woken, parked workers burning no CPU, accounting, shutdown.
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <ctime>
#include <memory>
#include <thread>
#include <vector>

#if defined(__linux__)
#include <dirent.h>
#include <sched.h>
#endif

#include "core/thread_pool.h"

using fwa::ThreadPool;
using fwa::ThreadPoolOptions;
using fwa::ThreadPoolStats;

namespace {

constexpr int kMaxChunks = 97;

struct Job {
  std::atomic<int> hits[kMaxChunks];
  std::thread::id who[kMaxChunks];
  int work = 0;  // busy-loop iterations per chunk, so that workers get a share
  Job() {
    for (auto& h : hits) h.store(0);
  }
};

void job_chunk(void* ctx, int chunk) {
  Job* j = static_cast<Job*>(ctx);
  volatile uint32_t x = uint32_t(chunk);
  for (int i = 0; i < j->work; ++i) x = x * 1664525u + 1013904223u;
  j->who[chunk] = std::this_thread::get_id();
  j->hits[chunk].fetch_add(1, std::memory_order_relaxed);
}

// One run; false unless every chunk ran exactly once on at most `limit` distinct threads.
bool run_and_check(ThreadPool& pool, Job& job, int n_chunks, int n_threads) {
  for (auto& h : job.hits) h.store(0, std::memory_order_relaxed);
  pool.run(n_chunks, n_threads, job_chunk, &job);
  bool ok = true;
  for (int c = 0; c < kMaxChunks; ++c) ok &= job.hits[c].load() == (c < n_chunks ? 1 : 0);
  const int limit = std::max(1, std::min({n_threads, pool.size(), n_chunks}));
  std::thread::id seen[kMaxChunks];
  int distinct = 0;
  for (int c = 0; c < n_chunks; ++c) {
    if (std::find(seen, seen + distinct, job.who[c]) == seen + distinct) {
      seen[distinct++] = job.who[c];
    }
  }
  return ok && distinct <= limit;
}

double process_cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}

int affinity_cpus() {
#if defined(__linux__)
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_COUNT(&set) > 0) return CPU_COUNT(&set);
#endif
  return int(std::max(1u, std::thread::hardware_concurrency()));
}

// Threads of this process (Linux: /proc/self/task); -1 where unknown.
int count_threads() {
#if defined(__linux__)
  DIR* d = opendir("/proc/self/task");
  if (!d) return -1;
  int n = 0;
  while (dirent* e = readdir(d)) n += e->d_name[0] != '.';
  closedir(d);
  return n;
#else
  return -1;
#endif
}

void settle() { std::this_thread::sleep_for(std::chrono::milliseconds(100)); }

// The thread count once it equals `want` (joined threads can stay listed for a moment, longer
// under qemu-user), or the last count after 2 s.
int threads_when(int want) {
  int n = count_threads();
  for (int i = 0; i < 200 && n != want; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    n = count_threads();
  }
  return n;
}

}  // namespace

TEST_CASE("thread pool: every chunk runs exactly once, pool sizes 1..8, many runs") {
  auto job = std::make_unique<Job>();
  // spin 0 parks at once (the oversubscribed path), 50 us is the default, 2 ms makes workers
  // catch nearly every run while spinning; both wait paths of the caller get exercised.
  for (const int64_t spin : {int64_t(0), int64_t(50000), int64_t(2000000)}) {
    for (int size = 1; size <= 8; ++size) {
      ThreadPool pool(ThreadPoolOptions{size, spin});
      CHECK(pool.size() == size);
      int bad = 0;
      for (int rep = 0; rep < 1500; ++rep) {
        const int n_chunks = 1 + (rep * 7) % kMaxChunks, n_threads = 1 + rep % 9;
        job->work = rep % 3 == 0 ? 200 : 0;
        bad += !run_and_check(pool, *job, n_chunks, n_threads);
      }
      INFO("pool size " << size << ", spin " << spin << " ns");
      CHECK(bad == 0);
    }
  }
  // Degenerate calls: no chunks runs nothing; thread counts out of range are clamped.
  ThreadPool pool(3);
  job->hits[0].store(0);
  pool.run(0, 2, job_chunk, job.get());
  pool.run(-1, 2, job_chunk, job.get());
  CHECK(job->hits[0].load() == 0);
  CHECK(run_and_check(pool, *job, 5, 0));
  CHECK(run_and_check(pool, *job, 5, -3));
  CHECK(run_and_check(pool, *job, 5, 100));
}

TEST_CASE("thread pool: alternating thread counts never let a late worker into a newer run") {
  // Tiny runs that alternate between all workers and only the caller plus one: a worker woken
  // for a run that is already over must never claim a chunk of the next one (checked by the
  // distinct-thread bound in run_and_check).
  auto job = std::make_unique<Job>();
  job->work = 0;
  for (const int64_t spin : {int64_t(0), int64_t(50000)}) {
    ThreadPool pool(ThreadPoolOptions{6, spin});
    int bad = 0;
    for (int rep = 0; rep < 4000; ++rep) {
      bad += !run_and_check(pool, *job, rep % 2 ? 2 : 12, rep % 2 ? 2 : 6);
    }
    CHECK(bad == 0);
  }
}

TEST_CASE("thread pool: an idle pool burns no CPU") {
  ThreadPool pool4(4);                            // default options
  ThreadPool pool2(ThreadPoolOptions{2, 50000});  // spins 50 us unless oversubscribed
  auto job = std::make_unique<Job>();
  job->work = 1000;
  CHECK(run_and_check(pool4, *job, 16, 4));
  CHECK(run_and_check(pool2, *job, 16, 2));
  const double c0 = process_cpu_seconds();
  std::this_thread::sleep_for(std::chrono::seconds(1));
  const double used = process_cpu_seconds() - c0;
  MESSAGE("process CPU over 1 s with 2 idle pools (4 + 2 threads): " << used * 1e3 << " ms");
  CHECK(used < 0.020);
}

TEST_CASE("thread pool: only the workers a run needs are woken") {
  ThreadPool pool(ThreadPoolOptions{4, 0});  // no spin: every dispatch to a worker is a wake
  auto job = std::make_unique<Job>();
  job->work = 100;
  settle();  // all three workers parked
  int bad = 0, runs = 0;
  for (int rep = 0; rep < 1000; ++rep, ++runs) {
    if (rep % 100 == 0) std::this_thread::sleep_for(std::chrono::milliseconds(2));
    bad += !run_and_check(pool, *job, 8, 2);
  }
  // More threads asked than chunks: clamped to the chunks, so still workers 0 and 1 only.
  for (int rep = 0; rep < 200; ++rep, ++runs) bad += !run_and_check(pool, *job, 2, 4);
  CHECK(bad == 0);
  settle();
  ThreadPoolStats st;
  pool.stats(&st);
  CHECK(st.n_threads == 4);
  CHECK(st.thread[0].runs == runs);
  CHECK(st.thread[1].runs > 0);
  CHECK(st.thread[1].runs <= runs);
  CHECK(st.thread[1].wakes > 0);
  CHECK(st.thread[1].busy_ns > 0);
  for (int i = 2; i < 4; ++i) {
    INFO("worker " << i);
    CHECK(st.thread[i].runs == 0);
    CHECK(st.thread[i].wakes == 0);
    CHECK(st.thread[i].busy_ns == 0);
    CHECK(st.thread[i].spin_ns == 0);
  }
}

TEST_CASE("thread pool: more threads than cores") {
  const int cpus = affinity_cpus();
  ThreadPool pool(16);
  CHECK(pool.available_cpus() == cpus);
  CHECK(pool.spin_ns() == (16 > cpus ? 0 : 50000));
  ThreadPool two(ThreadPoolOptions{2, 50000});
  CHECK(two.spin_ns() == (2 > cpus ? 0 : 50000));
  ThreadPool zero(ThreadPoolOptions{2, 0});
  CHECK(zero.spin_ns() == 0);

  auto job = std::make_unique<Job>();
  job->work = 50;
  const auto t0 = std::chrono::steady_clock::now();
  int bad = 0;
  for (int rep = 0; rep < 2000; ++rep) bad += !run_and_check(pool, *job, 32, 16);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  MESSAGE("2000 runs of 32 chunks on 16 threads, " << cpus << " CPUs: " << secs << " s");
  CHECK(bad == 0);
  CHECK(secs < 10.0);
}

TEST_CASE("thread pool: stats") {
  ThreadPool pool(ThreadPoolOptions{2, 50000});
  auto job = std::make_unique<Job>();
  job->work = 2000;
  settle();
  pool.reset_stats();
  const auto t0 = std::chrono::steady_clock::now();
  int bad = 0;
  for (int rep = 0; rep < 200; ++rep) bad += !run_and_check(pool, *job, 16, 2);
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  CHECK(bad == 0);
  settle();
  ThreadPoolStats st;
  pool.stats(&st);
  CHECK(st.n_threads == 2);
  CHECK(st.thread[0].runs == 200);
  CHECK(st.thread[0].busy_ns > 0);
  CHECK(st.thread[1].runs <= 200);
  int64_t busy = 0, spin = 0, parked = 0, runs = 0, wakes = 0;
  for (int i = 0; i < st.n_threads; ++i) {
    const auto& t = st.thread[i];
    CHECK(t.busy_ns >= 0);
    CHECK(t.spin_ns >= 0);
    CHECK(t.parked_ns >= 0);
    CHECK(t.wakes <= t.runs + 1);  // woken only to take a run (or to stop)
    busy += t.busy_ns;
    spin += t.spin_ns;
    parked += t.parked_ns;
    runs += t.runs;
    wakes += t.wakes;
  }
  CHECK(st.busy_ns == busy);
  CHECK(st.spin_ns == spin);
  CHECK(st.parked_ns == parked);
  CHECK(st.runs == runs);
  CHECK(st.wakes == wakes);
  // The caller's own time is within the wall time of the loop (plus the settle after it).
  CHECK(double(st.thread[0].busy_ns + st.thread[0].spin_ns + st.thread[0].parked_ns) * 1e-9 <=
        wall + 0.01);
  MESSAGE("200 runs: busy " << st.busy_ns / 1000 << " us, spin " << st.spin_ns / 1000
                            << " us, parked " << st.parked_ns / 1000 << " us, wakes " << st.wakes
                            << ", worker runs " << st.thread[1].runs);

  pool.reset_stats();
  pool.stats(&st);
  CHECK(st.busy_ns == 0);
  CHECK(st.spin_ns == 0);
  CHECK(st.parked_ns == 0);
  CHECK(st.runs == 0);
  CHECK(st.wakes == 0);
  for (int i = 0; i < st.n_threads; ++i) CHECK(st.thread[i].runs == 0);

  // After a reset, counting starts again from zero; inline runs count for the caller too.
  CHECK(run_and_check(pool, *job, 4, 1));
  pool.stats(&st);
  CHECK(st.thread[0].runs == 1);
  CHECK(st.thread[0].busy_ns > 0);

  ThreadPool one(1);
  CHECK(run_and_check(one, *job, 7, 4));
  one.stats(&st);
  CHECK(st.n_threads == 1);
  CHECK(st.runs == 1);
  CHECK(st.busy_ns > 0);
  CHECK(st.wakes == 0);
}

TEST_CASE("thread pool: shutdown while parked, spinning or starting; a pool of 1 has no threads") {
  auto job = std::make_unique<Job>();
  settle();
  const int before = count_threads();
  {
    ThreadPool one(1);
    if (before >= 0) CHECK(count_threads() <= before);
    CHECK(run_and_check(one, *job, 9, 8));
  }
  {
    auto four = std::make_unique<ThreadPool>(ThreadPoolOptions{4, 0});
    if (before >= 0) CHECK(threads_when(before + 3) == before + 3);
    CHECK(run_and_check(*four, *job, 9, 4));
    settle();  // parked in the futex
    const auto t0 = std::chrono::steady_clock::now();
    four.reset();
    CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(2));
  }
  if (before >= 0) CHECK(threads_when(before) == before);
  for (int i = 0; i < 50; ++i) {
    ThreadPool p(ThreadPoolOptions{3, i % 2 ? 0 : 5000000});  // destroyed while starting up
    if (i % 3 == 0) CHECK(run_and_check(p, *job, 6, 3));  // ... or while spinning after a run
  }
  if (before >= 0) CHECK(threads_when(before) == before);
}
