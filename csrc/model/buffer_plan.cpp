// SPDX-License-Identifier: Apache-2.0
#include "model/buffer_plan.h"

namespace fwa {

size_t BufferPlan::bytes() const {
  size_t at = 0;  // from a kBufferAlign-aligned base, every alignment divides kBufferAlign
  for (int i = 0; i < n_; ++i) at = (at + entries_[i].align - 1) / entries_[i].align *
                                        entries_[i].align + entries_[i].bytes;
  return at;
}

Status BufferPlan::carve(void* base, size_t bytes, bool construct, std::string* message) const {
  if (overflow_) {
    if (message) *message = "buffer plan: a declaration is out of range (a bug)";
    return Status::invalid_argument;
  }
  Arena arena(base, bytes);
  for (int i = 0; i < n_; ++i) {
    const Entry& e = entries_[i];
    void* p = arena.take_bytes(e.bytes, e.align);
    if (!p) {
      if (message)
        *message = std::string("buffer plan: ") + e.name + " (" + std::to_string(e.bytes) +
                   " bytes) does not fit: " + std::to_string(bytes - arena.used()) + " of " +
                   std::to_string(bytes) + " bytes left";
      return Status::buffer_too_small;
    }
    if (construct) e.init(p, e.count);
    *e.slot = p;
  }
  return Status::ok;
}

Status BufferPlan::allocate(std::unique_ptr<uint8_t[]>* storage, std::string* message) const {
  const size_t n = bytes() + kBufferAlign;
  uint8_t* p = nullptr;
  try {
    p = new uint8_t[n]();
  } catch (const std::bad_alloc&) {
    if (message) *message = "buffer plan: out of memory for " + std::to_string(n) + " bytes";
    return Status::io_error;
  }
  storage->reset(p);
  const size_t skew = size_t((kBufferAlign - reinterpret_cast<uintptr_t>(p) % kBufferAlign) %
                             kBufferAlign);
  return carve(p + skew, n - skew, true, message);
}

}  // namespace fwa
