// SPDX-License-Identifier: Apache-2.0
#include "quant/format.h"

#include <cstring>

namespace fwa {
namespace {

// Limits that keep every size below 2^62 and every per-row index in int64.
constexpr int64_t kMaxDim = int64_t(1) << 31;

size_t scale_size(ScaleType t) { return t == ScaleType::f16 ? 2 : 4; }

// Byte position of code (row r of the tile, k within the chunk) for the plane that holds its
// low bits, and the shift inside that byte. See docs/kernels.md, "Bit planes".
struct CodePos {
  size_t byte;
  int shift;
};

CodePos low_code_pos(int bits, int r, int kk) {
  const int g = kk / 4, j = kk % 4;
  const int planes = bits == 3 ? 2 : bits;  // 3-bit: low 2 bits packed like 2-bit
  const int low_bits = bits == 3 ? 2 : bits;
  const int plane = g % planes;
  return {size_t(plane) * 64 + size_t(4 * r + j), low_bits * (g / planes)};
}

size_t high_plane_byte(int r, int kk) { return 128 + size_t(4 * r + kk % 4); }

}  // namespace

bool is_supported_format(const QuantFormat& f) {
  const bool bits_ok = f.bits == 2 || f.bits == 3 || f.bits == 4 || f.bits == 8;
  const bool block_ok = f.block == 32 || f.block == 64 || f.block == 128;
  const bool scale_ok = f.scale == ScaleType::f16 || f.scale == ScaleType::f32;
  return bits_ok && block_ok && scale_ok;
}

Status packed_layout(const QuantFormat& fmt, int64_t N, int64_t K, PackedLayout* out) {
  if (!is_supported_format(fmt)) return Status::unsupported_format;
  if (N <= 0 || K <= 0 || N > kMaxDim || K > kMaxDim) return Status::invalid_argument;
  PackedLayout L;
  L.fmt = fmt;
  L.N = N;
  L.K = K;
  L.n_tiles = (N + kTileRows - 1) / kTileRows;
  L.k_chunks = (K + kChunk - 1) / kChunk;
  L.n_blocks = (K + fmt.block - 1) / fmt.block;
  L.chunks_per_block = fmt.block / kChunk;
  L.chunk_bytes = size_t(64) * size_t(fmt.bits);
  L.codes_bytes = size_t(L.k_chunks) * L.chunk_bytes;
  L.scales_offset = L.codes_bytes;
  L.zeros_offset = L.scales_offset + size_t(L.n_blocks) * kTileRows * scale_size(fmt.scale);
  size_t end = L.zeros_offset + (fmt.has_zero ? size_t(L.n_blocks) * kTileRows : 0);
  L.tile_bytes = (end + kTileAlign - 1) / kTileAlign * kTileAlign;
  L.total_bytes = size_t(L.n_tiles) * L.tile_bytes;
  *out = L;
  return Status::ok;
}

float fp16_to_fp32(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1f, mant = h & 0x3ff, bits;
  if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (mant << 13);
  } else if (exp != 0) {
    bits = sign | ((exp + 112) << 23) | (mant << 13);
  } else if (mant == 0) {
    bits = sign;
  } else {  // subnormal: normalise
    int e = -1;
    do {
      mant <<= 1;
      ++e;
    } while (!(mant & 0x400));
    bits = sign | (uint32_t(112 - e) << 23) | ((mant & 0x3ff) << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

uint16_t fp32_to_fp16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint16_t sign = uint16_t((x >> 16) & 0x8000);
  const uint32_t absx = x & 0x7fffffffu;
  if (absx >= 0x7f800000u) return sign | 0x7c00 | (absx > 0x7f800000u ? 0x200 : 0);
  if (absx >= 0x477ff000u) return sign | 0x7c00;  // rounds to >= 65520: overflow to Inf
  if (absx < 0x38800000u) {                       // below the smallest normal: subnormal or 0
    if (absx < 0x33000000u) return sign;          // < 2^-25 rounds to zero
    const uint32_t e = absx >> 23, m = (absx & 0x7fffff) | 0x800000;
    const uint32_t shift = 126 - e;               // 14..24
    uint32_t v = m >> shift;
    const uint32_t rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (v & 1))) ++v;
    return uint16_t(sign | v);
  }
  uint32_t v = ((absx >> 13) - (112u << 10));
  const uint32_t rem = absx & 0x1fff;
  if (rem > 0x1000 || (rem == 0x1000 && (v & 1))) ++v;
  return uint16_t(sign | v);
}

Status pack_weights(const PackedLayout& L, const uint8_t* codes, const float* scales,
                    const uint8_t* zeros, uint8_t* dst) {
  const QuantFormat& f = L.fmt;
  const int umax = (1 << f.bits) - 1;
  for (int64_t i = 0; i < L.N * L.K; ++i) {
    if (codes[i] > umax) return Status::invalid_argument;
  }
  for (int64_t i = 0; i < L.N * L.n_blocks; ++i) {
    if (!(scales[i] - scales[i] == 0.0f)) return Status::non_finite;
    if (f.scale == ScaleType::f16 && fp16_to_fp32(fp32_to_fp16(scales[i])) != scales[i]) {
      return Status::invalid_argument;  // not representable as fp16
    }
  }
  std::memset(dst, 0, L.total_bytes);
  for (int64_t n = 0; n < L.N; ++n) {
    uint8_t* tile = dst + size_t(n / kTileRows) * L.tile_bytes;
    const int r = int(n % kTileRows);
    for (int64_t k = 0; k < L.K; ++k) {
      const int u = codes[n * L.K + k];
      uint8_t* chunk = tile + size_t(k / kChunk) * L.chunk_bytes;
      const int kk = int(k % kChunk);
      const CodePos p = low_code_pos(f.bits, r, kk);
      chunk[p.byte] |= uint8_t((f.bits == 3 ? (u & 3) : u) << p.shift);
      if (f.bits == 3) chunk[high_plane_byte(r, kk)] |= uint8_t(((u >> 2) & 1) << (kk / 4));
    }
    for (int64_t b = 0; b < L.n_blocks; ++b) {
      const float s = scales[n * L.n_blocks + b];
      const size_t idx = size_t(b) * kTileRows + size_t(r);
      if (f.scale == ScaleType::f16) {
        const uint16_t h = fp32_to_fp16(s);
        std::memcpy(tile + L.scales_offset + idx * 2, &h, 2);  // little-endian hosts only
      } else {
        std::memcpy(tile + L.scales_offset + idx * 4, &s, 4);
      }
      if (f.has_zero) tile[L.zeros_offset + idx] = zeros[n * L.n_blocks + b];
    }
  }
  return Status::ok;
}

int packed_code(const PackedLayout& L, const uint8_t* src, int64_t n, int64_t k) {
  const int bits = L.fmt.bits;
  const uint8_t* chunk = src + size_t(n / kTileRows) * L.tile_bytes + size_t(k / kChunk) * L.chunk_bytes;
  const int r = int(n % kTileRows), kk = int(k % kChunk);
  const CodePos p = low_code_pos(bits, r, kk);
  const int low_bits = bits == 3 ? 2 : bits;
  int u = (chunk[p.byte] >> p.shift) & ((1 << low_bits) - 1);
  if (bits == 3) u |= ((chunk[high_plane_byte(r, kk)] >> (kk / 4)) & 1) << 2;
  return u;
}

float packed_scale(const PackedLayout& L, const uint8_t* src, int64_t n, int64_t b) {
  const uint8_t* tile = src + size_t(n / kTileRows) * L.tile_bytes;
  const size_t idx = size_t(b) * kTileRows + size_t(n % kTileRows);
  if (L.fmt.scale == ScaleType::f16) {
    uint16_t h;
    std::memcpy(&h, tile + L.scales_offset + idx * 2, 2);
    return fp16_to_fp32(h);
  }
  float s;
  std::memcpy(&s, tile + L.scales_offset + idx * 4, 4);
  return s;
}

int packed_zero(const PackedLayout& L, const uint8_t* src, int64_t n, int64_t b) {
  if (!L.fmt.has_zero) return symmetric_zero(L.fmt.bits);
  const uint8_t* tile = src + size_t(n / kTileRows) * L.tile_bytes;
  return tile[L.zeros_offset + size_t(b) * kTileRows + size_t(n % kTileRows)];
}

void unpack_weights(const PackedLayout& L, const uint8_t* src, uint8_t* codes, float* scales,
                    uint8_t* zeros) {
  for (int64_t n = 0; n < L.N; ++n) {
    for (int64_t k = 0; k < L.K; ++k) codes[n * L.K + k] = uint8_t(packed_code(L, src, n, k));
    for (int64_t b = 0; b < L.n_blocks; ++b) {
      scales[n * L.n_blocks + b] = packed_scale(L, src, n, b);
      if (zeros) zeros[n * L.n_blocks + b] = uint8_t(packed_zero(L, src, n, b));
    }
  }
}

void dequantize_weights(const PackedLayout& L, const uint8_t* src, float* dst) {
  for (int64_t n = 0; n < L.N; ++n) {
    for (int64_t k = 0; k < L.K; ++k) {
      const int64_t b = k / L.fmt.block;
      const int q = packed_code(L, src, n, k) - packed_zero(L, src, n, b);
      dst[n * L.K + k] = float(q) * packed_scale(L, src, n, b);
    }
  }
}

}  // namespace fwa
