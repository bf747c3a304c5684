/* SPDX-License-Identifier: Apache-2.0 */
// Internals shared by the C ABI's translation units: the handle structs, the handle table (so a
// freed, forged or wrong-kind handle gives FWA_ERR_BAD_HANDLE instead of a crash), the
// thread-local error message, and guarded(), which turns every C++ exception into a status.
#pragma once
#include <cstdarg>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>

#include "core/status.h"
#include "fwassist/fwassist.h"
#include "model/generate.h"
#include "model/guard.h"
#include "model/model.h"
#include "model/sampler.h"
#include "model/session.h"
#include "release/release.h"

struct fwa_model {
  std::shared_ptr<fwa::Model> model;
  std::optional<fwa::release::Verdict> release;  // set when opened with a trust policy
};

struct fwa_session {
  std::unique_ptr<fwa::Session> session;
  fwa::Generation generation;  // reused by fwa_generate: its buffers persist between calls
};

struct fwa_sampler {
  fwa::Sampler sampler;
  int32_t vocab_size = 0;
};

struct fwa_policy {
  std::shared_ptr<const fwa::CodeGuard> guard;
};

namespace fwa_capi {

// Handles. The value the caller holds (an fwa_model*, ...) is a token, never an address:
//   bits 63..32  the slot's generation (1 .. 2^32-1)
//   bits 31..24  the kind (1 model, 2 session, 3 sampler, 4 policy)
//   bits 23..0   the slot index + 1 (never 0, so a token is never NULL)
// A token names a live handle only while its slot holds an object of that kind with that
// generation; freeing bumps the slot's generation, so every earlier token of the slot stays
// dead when the slot is reused. A slot whose generation would wrap is retired, never reused:
// a stale token can never match again. Slots come in chunks allocated on creation (none in a
// lookup), up to kMaxHandles live handles of all kinds together; creating one more gives
// FWA_ERR_OUT_OF_MEMORY ("handle table full").
enum class Kind : uint8_t { model = 1, session = 2, sampler = 3, policy = 4 };
constexpr uint32_t kChunkSlots = 1024;
constexpr uint32_t kMaxChunks = 1024;
constexpr uint32_t kMaxHandles = kChunkSlots * kMaxChunks;  // 1,048,576
static_assert(sizeof(uintptr_t) == 8, "handle tokens need 64-bit pointers");

template <class T> struct KindOf;
template <> struct KindOf<fwa_model> { static constexpr Kind value = Kind::model; };
template <> struct KindOf<fwa_session> { static constexpr Kind value = Kind::session; };
template <> struct KindOf<fwa_sampler> { static constexpr Kind value = Kind::sampler; };
template <> struct KindOf<fwa_policy> { static constexpr Kind value = Kind::policy; };

// The type-erased table: add (FWA_OK and the token, or a failure with its message), find and
// remove (the object, or null when the token is not a live handle of this kind). All three
// take one mutex; find allocates nothing.
fwa_status add_handle(void* object, Kind kind, uintptr_t* token, const char* function);
void* find_handle(uintptr_t token, Kind kind);
void* remove_handle(uintptr_t token, Kind kind);

// Registers `object` (owned by the caller until this succeeds) and returns its token as *token.
template <class T>
fwa_status register_handle(T* object, T** token, const char* function) {
  uintptr_t t = 0;
  const fwa_status s = add_handle(object, KindOf<T>::value, &t, function);
  if (s == FWA_OK) *token = reinterpret_cast<T*>(t);
  return s;
}
// The object a token names (T may be const), or null when it is not a live handle of T's kind.
template <class T>
T* lookup(T* token) {
  using Object = std::remove_const_t<T>;
  return static_cast<T*>(find_handle(reinterpret_cast<uintptr_t>(token), KindOf<Object>::value));
}
// Unregisters a token and returns its object for the caller to delete (null: not live).
template <class T>
T* unregister_handle(T* token) {
  return static_cast<T*>(remove_handle(reinterpret_cast<uintptr_t>(token), KindOf<T>::value));
}

// FWA_ERR_NULL_ARGUMENT for a null token, FWA_ERR_BAD_HANDLE otherwise, with the message.
fwa_status handle_error(const void* token, const char* name, const char* kind,
                        const char* function);

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

// Reads a caller's fwa_counter (struct size, reserved field, a path or a read callback).
fwa_status read_counter(const fwa_counter* c, fwa::release::Counter* out, const char* function);

// Copies n bytes of text plus a NUL into buf (cap bytes), or reports the size needed.
fwa_status write_text(const char* text, size_t n, char* buf, size_t cap, size_t* needed,
                      const char* function);

}  // namespace fwa_capi

// Entry-point precondition: the token h is a live handle of this kind (else NULL_ARGUMENT or
// BAD_HANDLE is returned). It then declares, in the entry point's body (the lambda given to
// guarded()), a pointer named h to the handle's object, which hides the caller's token: the
// code after it reads h->field.
#define FWA_CHECK_HANDLE(h, kind, fn)                                                      \
  static_assert(::fwa_capi::KindOf<std::remove_const_t<std::remove_pointer_t<decltype(h)>>>:: \
                        value == ::fwa_capi::Kind::kind,                                   \
                #h " is not a " #kind " handle");                                          \
  auto* const fwa_object_##h = ::fwa_capi::lookup(h);                                      \
  if (!fwa_object_##h) return ::fwa_capi::handle_error(h, #h, #kind, fn);                  \
  auto* const h = fwa_object_##h
#define FWA_CHECK_NOT_NULL(p, fn) \
  do {                            \
    if (!(p)) return ::fwa_capi::fail(FWA_ERR_NULL_ARGUMENT, "%s: " #p " is NULL", fn); \
  } while (0)
