/* SPDX-License-Identifier: Apache-2.0 */
// Block-quantized weight formats and the canonical packed layout (docs/kernels.md is the
// byte-by-byte specification; keep the two in step).
//
// A weight matrix W has N output rows and K inputs. Each row is cut along K into blocks of
// `block` values (the last block may be short); each (row, block) has one scale s and, for
// formats with zero points, one integer zero point. A weight is w = (u - z) * s, where u is the
// stored unsigned code in [0, 2^bits) and z the stored zero point; symmetric formats store no
// zero point and use z = 2^(bits-1).
//
// Packed layout: rows are grouped into tiles of 16 (the last tile padded with zero rows), K is
// cut into chunks of 32 (the last chunk padded with zero codes). Tile t holds, in order:
//   codes  : k_chunks chunks of 16 rows x 32 codes, 64*bits bytes each, bit planes below
//   scales : n_blocks x 16 scales (fp16 or fp32, little-endian), block-major
//   zeros  : n_blocks x 16 uint8 zero points (only when has_zero)
//   padding to a multiple of 64 bytes (zero)
// Inside a chunk the 32 codes of row r are in groups g = 0..7 of four (k = 4g..4g+3); the byte
// lanes "row r, k = 4g+j" sit at byte 4r+j of a 64-byte plane. So every 32-bit lane of a plane is
// one row, which is what SDOT / VPDPBUSD consume.
#pragma once
#include <cstddef>
#include <cstdint>

#include "core/status.h"

namespace fwa {

constexpr int kTileRows = 16;  // output rows per tile
constexpr int kChunk = 32;     // K values per chunk (also the activation quantization block)
constexpr int kTileAlign = 64; // tile size is a multiple of this

enum class ScaleType : uint8_t { f32 = 0, f16 = 1 };

struct QuantFormat {
  int bits = 4;        // 2, 3, 4 or 8
  int block = 32;      // 32, 64 or 128 values along K per scale
  bool has_zero = false;
  ScaleType scale = ScaleType::f16;
};

// Sizes and offsets of the packed layout of one N x K matrix.
struct PackedLayout {
  QuantFormat fmt;
  int64_t N = 0, K = 0;
  int64_t n_tiles = 0;        // ceil(N / 16)
  int64_t k_chunks = 0;       // ceil(K / 32)
  int64_t n_blocks = 0;       // ceil(K / block)
  int64_t chunks_per_block = 0;
  size_t chunk_bytes = 0;     // 64 * bits
  size_t codes_bytes = 0;     // per tile: k_chunks * chunk_bytes
  size_t scales_offset = 0;   // per tile, from the tile start
  size_t zeros_offset = 0;    // per tile, from the tile start (== tile_bytes when no zeros)
  size_t tile_bytes = 0;      // per tile, multiple of 64
  size_t total_bytes = 0;     // n_tiles * tile_bytes
};

bool is_supported_format(const QuantFormat& fmt);

// Fills `out` for an N x K matrix. Fails on unsupported formats, non-positive or huge shapes.
Status packed_layout(const QuantFormat& fmt, int64_t N, int64_t K, PackedLayout* out);

// The implied zero point of symmetric formats.
inline int symmetric_zero(int bits) { return 1 << (bits - 1); }

// IEEE binary16 <-> binary32, exact in the widening direction; narrowing rounds to nearest even.
float fp16_to_fp32(uint16_t h);
uint16_t fp32_to_fp16(float f);

// Scalar packer. codes: N x K unsigned codes u (row-major, stride K), each < 2^bits.
// scales: N x n_blocks fp32 values, stored in fmt.scale (fp16 scales must be exactly
// representable: the caller converts first). zeros: N x n_blocks values in [0, 255] when
// fmt.has_zero, else ignored. dst: layout.total_bytes bytes, fully written (padding zeroed).
Status pack_weights(const PackedLayout& layout, const uint8_t* codes, const float* scales,
                    const uint8_t* zeros, uint8_t* dst);

// Inverse of pack_weights: codes N x K, scales N x n_blocks (as fp32), zeros N x n_blocks (when
// has_zero; symmetric formats write the implied zero).
void unpack_weights(const PackedLayout& layout, const uint8_t* src, uint8_t* codes, float* scales,
                    uint8_t* zeros);

// Dequantizes to an N x K fp32 matrix: w = float(u - z) * s (one fp32 multiply).
void dequantize_weights(const PackedLayout& layout, const uint8_t* src, float* dst);

// Reads one code u for (row n, column k) straight from the packed bytes (reference accessor).
int packed_code(const PackedLayout& layout, const uint8_t* src, int64_t n, int64_t k);
float packed_scale(const PackedLayout& layout, const uint8_t* src, int64_t n, int64_t b);
int packed_zero(const PackedLayout& layout, const uint8_t* src, int64_t n, int64_t b);

}  // namespace fwa
