// SPDX-License-Identifier: Apache-2.0
#include "sched/bandwidth.h"

#include <algorithm>
#include <chrono>

namespace fwa {

namespace {

struct ReadJob {
  const uint64_t* p;
  size_t words;
  int tasks;
  uint64_t sums[64];
};

void read_slice(void* ctx, int task) {
  ReadJob& j = *static_cast<ReadJob*>(ctx);
  const size_t b = j.words * size_t(task) / size_t(j.tasks);
  const size_t e = j.words * size_t(task + 1) / size_t(j.tasks);
  uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  for (size_t i = b; i + 4 <= e; i += 4) {
    s0 ^= j.p[i];
    s1 ^= j.p[i + 1];
    s2 ^= j.p[i + 2];
    s3 ^= j.p[i + 3];
  }
  j.sums[task & 63] = s0 ^ s1 ^ s2 ^ s3;
}

}  // namespace

double read_pass_seconds(ThreadPool* pool, int threads, const uint8_t* bytes, size_t n) {
  threads = std::max(1, std::min(threads, 64));
  ReadJob job{reinterpret_cast<const uint64_t*>(bytes), n / 8, threads, {}};
  const auto t0 = std::chrono::steady_clock::now();
  if (pool && threads > 1) {
    pool->run(threads, threads, read_slice, &job);
  } else {
    for (int t = 0; t < threads; ++t) read_slice(&job, t);
  }
  const auto t1 = std::chrono::steady_clock::now();
  return std::chrono::duration<double>(t1 - t0).count();
}

void measure_read_bandwidth(ThreadPool* pool, int threads, const uint8_t* bytes, size_t n,
                            double* out) {
  const size_t passes = std::max<size_t>(1, ((size_t(16) << 20) + n - 1) / std::max<size_t>(n, 1));
  for (int t = 1; t <= threads; ++t) {
    double best = 1e30;
    for (int rep = 0; rep < 3; ++rep) {
      double s = 0;
      for (size_t i = 0; i < passes; ++i) s += read_pass_seconds(pool, t, bytes, n);
      best = std::min(best, s);
    }
    out[t - 1] = double(n) * double(passes) / std::max(best, 1e-9);
  }
}

}  // namespace fwa
