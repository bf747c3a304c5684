// SPDX-License-Identifier: Apache-2.0
// Declared buffer plans (model/buffer_plan.h): sizes computed from the declarations, buffers
// carved aligned and disjoint, and a plan/usage mismatch caught as an error.
#include <doctest/doctest.h>

#include <cstdint>
#include <memory>
#include <string>

#include "core/status.h"
#include "model/buffer_plan.h"
#include "model/linear.h"

using namespace fwa;

TEST_CASE("a plan's buffers are aligned, disjoint, zeroed, and its size is what they take") {
  float* a = nullptr;
  int32_t* b = nullptr;
  uint8_t* c = nullptr;
  LinearRequest* r = nullptr;
  BufferPlan p;
  p.declare(&a, 3, "a");
  p.declare(&b, 17, "b");
  p.declare(&c, 1, "c", 1);
  p.declare(&r, 2, "r");
  // 12 -> 64, +68 -> 132, +1 -> 133, LinearRequest at 192.
  CHECK(p.bytes() == 192 + 2 * sizeof(LinearRequest));
  std::unique_ptr<uint8_t[]> storage;
  std::string msg;
  REQUIRE(p.allocate(&storage, &msg) == Status::ok);
  for (const void* q : {static_cast<const void*>(a), static_cast<const void*>(b),
                        static_cast<const void*>(r)})
    CHECK(reinterpret_cast<uintptr_t>(q) % kBufferAlign == 0);
  CHECK(reinterpret_cast<uint8_t*>(b) >= reinterpret_cast<uint8_t*>(a + 3));
  CHECK(c >= reinterpret_cast<uint8_t*>(b + 17));
  CHECK(reinterpret_cast<uint8_t*>(r) > c);
  for (int i = 0; i < 17; ++i) CHECK(b[i] == 0);
  CHECK(r[1].M == 1);  // constructed: LinearRequest's defaults
  CHECK(r[1].x == nullptr);
}

TEST_CASE("a plan larger than its memory is refused, naming the buffer") {
  float* a = nullptr;
  float* b = nullptr;
  BufferPlan p;
  p.declare(&a, 16, "first");
  p.declare(&b, 16, "second");
  alignas(64) uint8_t mem[128];
  std::string msg;
  CHECK(p.carve(mem, sizeof mem, false, &msg) == Status::ok);
  CHECK(a == reinterpret_cast<float*>(mem));
  CHECK(b == reinterpret_cast<float*>(mem + 64));
  // One byte short: the second buffer does not fit, nothing is written past the memory.
  a = b = nullptr;
  CHECK(p.carve(mem, sizeof mem - 1, false, &msg) == Status::buffer_too_small);
  CHECK(msg.find("second") != std::string::npos);
  CHECK(b == nullptr);
  // Misaligned memory needs the padding the plan did not count.
  CHECK(p.carve(mem + 4, sizeof mem - 4, false, &msg) == Status::buffer_too_small);
}

TEST_CASE("out-of-range declarations make the plan refuse to carve") {
  float* a = nullptr;
  BufferPlan p;
  p.declare(&a, -1, "negative");
  alignas(64) uint8_t mem[64];
  std::string msg;
  CHECK(p.carve(mem, sizeof mem, false, &msg) == Status::invalid_argument);
  BufferPlan q;
  for (int i = 0; i <= BufferPlan::kMaxBuffers; ++i) q.declare(&a, 0, "many");
  CHECK(q.carve(mem, sizeof mem, false, &msg) == Status::invalid_argument);
  BufferPlan r;
  r.declare(&a, 1, "over-aligned", 128);
  CHECK(r.carve(mem, sizeof mem, false, &msg) == Status::invalid_argument);
}

TEST_CASE("Arena::take is bounds-checked and takes nothing when it fails") {
  alignas(64) uint8_t mem[256];
  Arena arena(mem, sizeof mem);
  float* x = arena.take<float>(10);
  REQUIRE(x == reinterpret_cast<float*>(mem));
  CHECK(arena.used() == 40);
  CHECK(arena.take<float>(60) == nullptr);  // 64 + 240 > 256
  CHECK(arena.used() == 40);
  CHECK(arena.take<float>(-1) == nullptr);
  CHECK(arena.take<double>(int64_t(1) << 61) == nullptr);  // count * size overflows
  uint8_t* y = arena.take<uint8_t>(192);
  CHECK(y == mem + 64);
  CHECK(arena.used() == 256);
  CHECK(arena.take_bytes(0) == mem + 256);  // an empty buffer at the end still fits
  CHECK(arena.take_bytes(1, 1) == nullptr);
}
