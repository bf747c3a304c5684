/* SPDX-License-Identifier: Apache-2.0 */
// The software prefetch of the x86 fast GEMV kernels (M == 1, memory bound).
//
// A kernel call walks NT adjacent tiles side by side, one stream each, chunk by chunk; the
// caller then moves on to the next NT tiles. "Ahead" is therefore ahead in stream time: once
// a stream's target passes the end of its tile, the data it needs next is the tile NT further
// on (the next call's), not the adjacent one (a sibling stream's, read at the same time).
// A plain `p + ahead` would prefetch data already read there and leave every call's start
// cold, which costs most on short tiles (K = 256: 2 KiB per tile). Nothing is prefetched
// past the matrix's last tile.
#pragma once
#include <immintrin.h>

#include <cstddef>
#include <cstdint>

#include "kernels/kernel.h"

namespace fwa {
// Internal linkage on purpose: each ISA file gets its own copy, compiled with its own flags
// (a shared COMDAT instantiation could be picked for another ISA's caller; see
// tests/check_isa_objects.sh).
namespace {

template <int NT>
class GemvPrefetch {
 public:
  // w: the packed matrix; n_rows: its N; t0: the first tile of this call; ahead: bytes.
  GemvPrefetch(const uint8_t* w, size_t tile_bytes, int64_t n_rows, int64_t t0, int64_t ahead)
      : w_(w),
        tile_bytes_(int64_t(tile_bytes)),
        n_tiles_((n_rows + kTileRows - 1) / kTileRows),
        tile_(t0),
        off_(ahead) {
    while (off_ >= tile_bytes_) {
      off_ -= tile_bytes_;
      tile_ += NT;
    }
  }

  // Prefetches `lines` cache lines into L2 for every stream, then moves on by one chunk.
  void next_chunk(int lines, size_t chunk_bytes) {
    const int64_t streams = tile_ + NT <= n_tiles_ ? NT : n_tiles_ - tile_;
    const uint8_t* p = w_ + tile_ * tile_bytes_ + off_;
    for (int64_t t = 0; t < streams; ++t)
      for (int l = 0; l < lines; ++l)
        _mm_prefetch(reinterpret_cast<const char*>(p + t * tile_bytes_ + 64 * l), _MM_HINT_T1);
    off_ += int64_t(chunk_bytes);
    if (off_ >= tile_bytes_) {
      off_ -= tile_bytes_;
      tile_ += NT;
    }
  }

 private:
  const uint8_t* w_;
  int64_t tile_bytes_, n_tiles_, tile_, off_;
};

}  // namespace
}  // namespace fwa
