// SPDX-License-Identifier: Apache-2.0
// The C ABI's handle table on its own (csrc/capi/handles.cpp, compiled into this test): its
// documented capacity, the error when it is full, and slot reuse with a new generation.
#include <doctest/doctest.h>

#include <cstdint>
#include <cstring>
#include <vector>

#include "capi/handles.h"

using fwa_capi::Kind;

TEST_CASE("the handle table holds kMaxHandles live handles, then reports it is full") {
  static int object;
  std::vector<uintptr_t> tokens(fwa_capi::kMaxHandles);
  for (uintptr_t& t : tokens) REQUIRE(fwa_capi::add_handle(&object, Kind::sampler, &t, "t") == FWA_OK);
  uintptr_t extra = 0;
  CHECK(fwa_capi::add_handle(&object, Kind::sampler, &extra, "test") == FWA_ERR_OUT_OF_MEMORY);
  CHECK(std::strstr(fwa_last_error(), "handle table full") != nullptr);
  CHECK(extra == 0);
  // Freeing one makes room; the new token names the same slot with the next generation.
  const uintptr_t freed = tokens[12345];
  CHECK(fwa_capi::remove_handle(freed, Kind::sampler) == &object);
  CHECK(fwa_capi::find_handle(freed, Kind::sampler) == nullptr);
  REQUIRE(fwa_capi::add_handle(&object, Kind::model, &extra, "test") == FWA_OK);
  CHECK((extra & 0xffffff) == (freed & 0xffffff));
  CHECK((extra >> 32) == (freed >> 32) + 1);
  CHECK(fwa_capi::find_handle(freed, Kind::sampler) == nullptr);
  CHECK(fwa_capi::find_handle(extra, Kind::sampler) == nullptr);  // another kind
  CHECK(fwa_capi::find_handle(extra, Kind::model) == &object);
  CHECK(fwa_capi::remove_handle(freed, Kind::sampler) == nullptr);  // stale: nothing removed
  CHECK(fwa_capi::find_handle(extra, Kind::model) == &object);
  CHECK(fwa_capi::remove_handle(extra, Kind::model) == &object);
  for (uintptr_t t : tokens)
    if (t != freed) REQUIRE(fwa_capi::remove_handle(t, Kind::sampler) == &object);
}
