#include "sched/bandwidth.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <memory>

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

void measure_read_bandwidth(ThreadPool* pool, int threads, double* out) {
  const size_t n = size_t(64) << 20;
  std::unique_ptr<uint64_t[]> buf(new uint64_t[n / 8]);
  std::memset(buf.get(), 1, n);  // fault the pages in before timing
  const uint8_t* p = reinterpret_cast<const uint8_t*>(buf.get());
  for (int t = 1; t <= threads; ++t) {
    double best = 1e30;
    for (int rep = 0; rep < 3; ++rep) best = std::min(best, read_pass_seconds(pool, t, p, n));
    out[t - 1] = double(n) / best;
  }
}

}  // namespace fwa
