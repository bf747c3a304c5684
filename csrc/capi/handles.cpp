// SPDX-License-Identifier: Apache-2.0
#include "capi/handles.h"

#include <cstdio>
#include <cstring>
#include <mutex>
#include <new>

namespace fwa_capi {
namespace {

constexpr uint32_t kNoSlot = 0xffffffffu;
constexpr uint32_t kLastGeneration = 0xffffffffu;

struct Slot {
  void* object;         // null while free
  uint32_t generation;  // of the token naming the object (bumped on free)
  Kind kind;
  uint32_t next_free;   // while free: the next free slot, or kNoSlot
};

// Constant-initialised (no static initialiser runs at load); chunks are never freed, so a
// lookup never reads freed memory, whatever token it is given.
struct Table {
  std::mutex mu;
  Slot* chunks[kMaxChunks] = {};
  uint32_t used = 0;  // slots ever handed out: indices [0, used) exist
  uint32_t free_head = kNoSlot;
};
Table& table() {
  static Table t;
  return t;
}

Slot& slot_at(Table& t, uint32_t index) {
  return t.chunks[index / kChunkSlots][index % kChunkSlots];
}

uintptr_t encode(uint32_t index, Kind kind, uint32_t generation) {
  return uintptr_t(generation) << 32 | uintptr_t(kind) << 24 | uintptr_t(index + 1);
}

// The live slot `token` names, or null. The caller holds the mutex.
Slot* find_locked(Table& t, uintptr_t token, Kind kind) {
  const uint32_t index_plus_1 = uint32_t(token & 0xffffff);
  if (Kind((token >> 24) & 0xff) != kind || index_plus_1 == 0 || index_plus_1 > t.used)
    return nullptr;
  Slot& s = slot_at(t, index_plus_1 - 1);
  if (!s.object || s.kind != kind || s.generation != uint32_t(token >> 32)) return nullptr;
  return &s;
}

// fwa_last_error(): per thread, fixed size (no allocation on the error path either).
thread_local char t_error[1024];

}  // namespace

fwa_status add_handle(void* object, Kind kind, uintptr_t* token, const char* function) {
  Table& t = table();
  std::lock_guard<std::mutex> lock(t.mu);
  uint32_t index;
  if (t.free_head != kNoSlot) {
    index = t.free_head;
    t.free_head = slot_at(t, index).next_free;
  } else {
    if (t.used == kMaxHandles)
      return fail(FWA_ERR_OUT_OF_MEMORY, "%s: handle table full (%u live handles, or slots "
                  "retired after 2^32 reuses)", function, unsigned(kMaxHandles));
    Slot*& chunk = t.chunks[t.used / kChunkSlots];
    if (!chunk) {
      chunk = new (std::nothrow) Slot[kChunkSlots];
      if (!chunk) return fail(FWA_ERR_OUT_OF_MEMORY, "%s: out of memory", function);
      for (uint32_t i = 0; i < kChunkSlots; ++i) chunk[i] = Slot{nullptr, 1, kind, kNoSlot};
    }
    index = t.used++;
  }
  Slot& s = slot_at(t, index);
  s.object = object;
  s.kind = kind;
  s.next_free = kNoSlot;
  *token = encode(index, kind, s.generation);
  return FWA_OK;
}

void* find_handle(uintptr_t token, Kind kind) {
  Table& t = table();
  std::lock_guard<std::mutex> lock(t.mu);
  const Slot* s = find_locked(t, token, kind);
  return s ? s->object : nullptr;
}

void* remove_handle(uintptr_t token, Kind kind) {
  Table& t = table();
  std::lock_guard<std::mutex> lock(t.mu);
  Slot* s = find_locked(t, token, kind);
  if (!s) return nullptr;
  void* object = s->object;
  s->object = nullptr;
  if (s->generation == kLastGeneration) return object;  // retired: its tokens are all used
  ++s->generation;
  s->next_free = t.free_head;
  t.free_head = uint32_t(uintptr_t(token & 0xffffff) - 1);
  return object;
}

fwa_status handle_error(const void* token, const char* name, const char* kind,
                        const char* function) {
  if (!token) return fail(FWA_ERR_NULL_ARGUMENT, "%s: %s is NULL", function, name);
  return fail(FWA_ERR_BAD_HANDLE, "%s: %s is not a live %s handle (freed, or another kind)",
              function, name, kind);
}

fwa_status fail(fwa_status status, const char* format, ...) {
  va_list args;
  va_start(args, format);
  std::vsnprintf(t_error, sizeof t_error, format, args);
  va_end(args);
  return status;
}

fwa_status fail_core(fwa::Status status, const std::string& message) {
  return fail(fwa_status(int(status)), "%s", message.empty() ? fwa::status_string(status)
                                                             : message.c_str());
}

fwa_status check_struct(const void* s, size_t expected, const char* what) {
  uint32_t size;
  std::memcpy(&size, s, sizeof size);
  if (size != expected)
    return fail(FWA_ERR_BAD_STRUCT_SIZE,
                "%s: struct_size is %u, this library knows %zu (call the *_init function)",
                what, unsigned(size), expected);
  return FWA_OK;
}

fwa_status write_text(const char* text, size_t n, char* buf, size_t cap, size_t* needed,
                      const char* function) {
  if (!needed) return fail(FWA_ERR_NULL_ARGUMENT, "%s: needed is NULL", function);
  *needed = n + 1;
  if (!buf || cap < n + 1)
    return fail(FWA_ERR_BUFFER_TOO_SMALL, "%s: the buffer holds %zu bytes, %zu are needed",
                function, buf ? cap : size_t(0), n + 1);
  if (n) std::memcpy(buf, text, n);
  buf[n] = '\0';
  return FWA_OK;
}

}  // namespace fwa_capi

extern "C" const char* fwa_last_error(void) { return fwa_capi::t_error; }
