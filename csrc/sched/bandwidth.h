// Memory read bandwidth, measured: the expert scheduler's cost model (a decode step streams
// its weights once, so its time is about bytes / bandwidth at the cores in use) and the
// benchmarks' roofline both use it.
#pragma once
#include <cstddef>
#include <cstdint>

#include "core/thread_pool.h"

namespace fwa {

// Seconds for `threads` threads of `pool` (null: the caller alone) to read bytes[0..n) once,
// each a contiguous slice. XORs the words so the loads cannot be elided.
double read_pass_seconds(ThreadPool* pool, int threads, const uint8_t* bytes, size_t n);

// Bytes per second reading from DRAM with 1..threads threads of `pool`: out[t - 1] is the
// best of three passes over a 64 MiB buffer (larger than the last-level caches of the
// targets). Allocates the buffer for the measurement (~20 ms per thread count on a desktop).
void measure_read_bandwidth(ThreadPool* pool, int threads, double* out);

}  // namespace fwa
