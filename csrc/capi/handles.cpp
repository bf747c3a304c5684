#include "capi/handles.h"

#include <cstdio>
#include <cstring>
#include <mutex>
#include <unordered_map>

namespace fwa_capi {
namespace {

// Live handles and their kinds. Function-local statics: no static initialiser runs at load.
std::mutex& registry_mutex() {
  static std::mutex mu;
  return mu;
}
std::unordered_map<const void*, Kind>& registry() {
  static std::unordered_map<const void*, Kind> handles;
  return handles;
}

// fwa_last_error(): per thread, fixed size (no allocation on the error path either).
thread_local char t_error[1024];

}  // namespace

bool register_handle(const void* h, Kind kind) {
  std::lock_guard<std::mutex> lock(registry_mutex());
  try {
    registry()[h] = kind;
  } catch (const std::bad_alloc&) {
    return false;
  }
  return true;
}

void unregister_handle(const void* h) {
  std::lock_guard<std::mutex> lock(registry_mutex());
  registry().erase(h);
}

bool is_live(const void* h, Kind kind) {
  std::lock_guard<std::mutex> lock(registry_mutex());
  const auto it = registry().find(h);
  return it != registry().end() && it->second == kind;
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
