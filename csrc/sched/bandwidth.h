/* SPDX-License-Identifier: Apache-2.0 */
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

// Bytes per second reading bytes[0..n) with 1..threads threads of `pool`: out[t - 1] is the
// best of three measurements, each enough passes to read at least 16 MiB. The caller picks
// memory that is already resident (the session: its model's largest dense weight tensor, so
// the probe adds nothing to the process's memory and measures where decode reads from).
void measure_read_bandwidth(ThreadPool* pool, int threads, const uint8_t* bytes, size_t n,
                            double* out);

}  // namespace fwa
