// Internals shared by the C ABI's translation units: the handle structs, the registry of live
// handles (so a freed or foreign pointer gives FWA_ERR_BAD_HANDLE instead of a crash), the
// thread-local error message, and guarded(), which turns every C++ exception into a status.
#pragma once
#include <cstdarg>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "core/status.h"
#include "fwassist/fwassist.h"
#include "model/generate.h"
#include "model/model.h"
#include "model/sampler.h"
#include "model/session.h"

struct fwa_model {
  std::shared_ptr<fwa::Model> model;
};

struct fwa_session {
  std::unique_ptr<fwa::Session> session;
  fwa::Generation generation;  // reused by fwa_generate: its buffers persist between calls
};

struct fwa_sampler {
  fwa::Sampler sampler;
  int32_t vocab_size = 0;
};

namespace fwa_capi {

enum class Kind : uint8_t { model, session, sampler };

// Registers a new handle; false (and nothing registered) when out of memory.
bool register_handle(const void* h, Kind kind);
void unregister_handle(const void* h);
// True when h is a live handle of this kind. No allocation (a lookup under a mutex).
bool is_live(const void* h, Kind kind);

// Records the failure message for fwa_last_error() (truncated to the buffer) and returns the
// status, so error paths read `return fail(FWA_ERR_..., "...", ...)`.
fwa_status fail(fwa_status status, const char* format, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
// A core status with its message: the values of fwa::Status and fwa_status are the same.
fwa_status fail_core(fwa::Status status, const std::string& message);

// A struct whose first field is uint32_t struct_size: FWA_ERR_BAD_STRUCT_SIZE unless it is a
// size this library knows (today: the current sizeof only).
fwa_status check_struct(const void* s, size_t expected, const char* what);

// Runs f() (returning fwa_status) and maps any escaping exception to a status.
template <class F>
fwa_status guarded(const char* function, F&& f) noexcept {
  try {
    return f();
  } catch (const std::bad_alloc&) {
    return fail(FWA_ERR_OUT_OF_MEMORY, "%s: out of memory", function);
  } catch (const std::exception& e) {
    return fail(FWA_ERR_INTERNAL, "%s: internal error: %s", function, e.what());
  } catch (...) {
    return fail(FWA_ERR_INTERNAL, "%s: internal error (unknown exception)", function);
  }
}

// Copies n bytes of text plus a NUL into buf (cap bytes), or reports the size needed.
fwa_status write_text(const char* text, size_t n, char* buf, size_t cap, size_t* needed,
                      const char* function);

}  // namespace fwa_capi

// Entry-point preconditions: a live handle of the right kind, non-null out-parameters.
#define FWA_CHECK_HANDLE(h, kind, fn)                                                   \
  do {                                                                                  \
    if (!(h)) return ::fwa_capi::fail(FWA_ERR_NULL_ARGUMENT, "%s: " #h " is NULL", fn); \
    if (!::fwa_capi::is_live((h), ::fwa_capi::Kind::kind))                              \
      return ::fwa_capi::fail(FWA_ERR_BAD_HANDLE, "%s: " #h " is not a live " #kind     \
                              " handle (freed, or another kind)", fn);                  \
  } while (0)
#define FWA_CHECK_NOT_NULL(p, fn) \
  do {                            \
    if (!(p)) return ::fwa_capi::fail(FWA_ERR_NULL_ARGUMENT, "%s: " #p " is NULL", fn); \
  } while (0)
