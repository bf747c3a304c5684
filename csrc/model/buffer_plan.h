/* SPDX-License-Identifier: Apache-2.0 */
// Declared buffer plans: every buffer of a session is declared once, with its element type,
// count and alignment; the plan's size is computed from the declarations, and the buffers are
// carved from one allocation by the bounds-checked Arena::take, in declaration order. A plan
// that does not fit the memory it is carved from is an error (buffer_too_small, naming the
// buffer), never an overflow.
//
// A session uses two kinds: the plan of its persistent buffers, allocated once at create(), and
// per-chunk plans (the MoE block's scratch for the rows of a chunk) carved, on every chunk,
// from one region of the persistent plan sized for the largest chunk. A BufferPlan holds its
// declarations in a fixed array, so declaring and carving allocate nothing (decode steps do
// both).
#pragma once
#include <cstddef>
#include <algorithm>
#include <cstdint>
#include <memory>
#include <new>
#include <string>
#include <type_traits>

#include "core/status.h"

namespace fwa {

constexpr size_t kBufferAlign = 64;  // a cache line: no two buffers share one

// Bump carving over [base, base + bytes).
class Arena {
 public:
  Arena() = default;
  Arena(void* base, size_t bytes) : base_(static_cast<uint8_t*>(base)), bytes_(bytes) {}

  // The next `bytes` bytes at `align` (a power of two); null, with nothing taken, when they
  // do not fit.
  void* take_bytes(size_t bytes, size_t align = kBufferAlign) {
    const uintptr_t start = reinterpret_cast<uintptr_t>(base_) + used_;
    const size_t pad = size_t((align - start % align) % align);
    if (pad > bytes_ - used_ || bytes > bytes_ - used_ - pad) return nullptr;
    used_ += pad + bytes;
    return base_ + (used_ - bytes);
  }
  // `count` elements of T (trivially copyable), aligned to `align`; null if they do not fit.
  template <typename T>
  T* take(int64_t count, size_t align = kBufferAlign) {
    static_assert(std::is_trivially_copyable<T>::value, "arena buffers hold plain data");
    if (count < 0 || size_t(count) > (bytes_ - used_) / sizeof(T)) return nullptr;
    return static_cast<T*>(take_bytes(size_t(count) * sizeof(T), std::max(align, alignof(T))));
  }
  size_t used() const { return used_; }
  size_t capacity() const { return bytes_; }

 private:
  uint8_t* base_ = nullptr;
  size_t bytes_ = 0, used_ = 0;
};

class BufferPlan {
 public:
  static constexpr int kMaxBuffers = 32;

  // Declares `count` elements of T at `align` bytes (a power of two, at most kBufferAlign), to
  // be carved into *slot. `name` (a literal) names it in errors. A declaration past
  // kMaxBuffers or out of range is a programming error: the plan then refuses to carve.
  template <typename T>
  void declare(T** slot, int64_t count, const char* name, size_t align = kBufferAlign) {
    static_assert(std::is_trivially_copyable<T>::value, "plan buffers hold plain data");
    static_assert(alignof(T) <= kBufferAlign, "over-aligned element type");
    if (n_ == kMaxBuffers || count < 0 || align > kBufferAlign || (align & (align - 1)) ||
        size_t(count) > (SIZE_MAX / 2) / sizeof(T)) {
      overflow_ = true;
      return;
    }
    entries_[n_++] = Entry{reinterpret_cast<void**>(slot), size_t(count) * sizeof(T),
                           std::max(align, alignof(T)), name, &construct<T>, size_t(count)};
  }

  // Bytes that hold every buffer carved from memory aligned to kBufferAlign (the sum of the
  // sizes and their alignment padding, computed by the same carving as carve()).
  size_t bytes() const;
  // Carves every buffer from [base, base + bytes) in declaration order; with `construct`, each
  // element is value-initialised (zero for plain data), else the memory is left as it is (the
  // per-chunk scratch: every value is written before it is read). buffer_too_small, naming
  // the first buffer that does not fit, if the memory is smaller than the plan; invalid_argument
  // for a plan with a bad declaration. Allocates nothing unless it fails.
  Status carve(void* base, size_t bytes, bool construct, std::string* message) const;
  // One zeroed allocation of bytes() (+ alignment), carved and constructed. io_error when it
  // cannot be allocated.
  Status allocate(std::unique_ptr<uint8_t[]>* storage, std::string* message) const;

 private:
  struct Entry {
    void** slot;
    size_t bytes, align;
    const char* name;
    void (*init)(void*, size_t);
    size_t count;
  };
  template <typename T>
  static void construct(void* p, size_t n) {
    T* t = static_cast<T*>(p);
    for (size_t i = 0; i < n; ++i) new (t + i) T();
  }

  Entry entries_[kMaxBuffers];
  int n_ = 0;
  bool overflow_ = false;
};

}  // namespace fwa
