/* SPDX-License-Identifier: Apache-2.0 */
// Counts heap allocations (operator new) while g_counting is set: the zero-allocation decode
// checks. count_allocations.cpp replaces the global operator new/delete of the executable it is
// linked into; the replacement also serves shared libraries (libfwassist.so) loaded by it.
#pragma once
#include <atomic>

extern std::atomic<bool> g_counting;
extern std::atomic<long> g_allocs;
