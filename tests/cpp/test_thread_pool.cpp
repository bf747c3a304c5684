#include <doctest/doctest.h>

#include <atomic>
#include <vector>

#include "core/thread_pool.h"

using fwa::ThreadPool;

namespace {

struct Counts {
  std::vector<std::atomic<int>>* hits;
};

void count_chunk(void* ctx, int chunk) { (*static_cast<Counts*>(ctx)->hits)[size_t(chunk)]++; }

}  // namespace

TEST_CASE("every chunk runs exactly once, whatever the thread count") {
  ThreadPool pool(4);  // more threads than this machine's cores: oversubscribed on purpose
  for (int rep = 0; rep < 300; ++rep) {
    const int n_chunks = 1 + rep % 37, n_threads = 1 + rep % 6;
    std::vector<std::atomic<int>> hits(static_cast<size_t>(n_chunks));
    Counts c{&hits};
    pool.run(n_chunks, n_threads, count_chunk, &c);
    for (auto& h : hits) REQUIRE(h.load() == 1);
  }
  std::vector<std::atomic<int>> none(1);
  Counts c{&none};
  pool.run(0, 2, count_chunk, &c);
  CHECK(none[0].load() == 0);
}
