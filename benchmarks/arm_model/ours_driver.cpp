// SPDX-License-Identifier: Apache-2.0
// benchmarks/arm_model.py's driver for fwassist's ARM kernels: one fast-mode GEMV call (M = 1)
// of the named variant on random codes, between two calls of fwa_model_mark() so that the
// qemu execution trace of exactly that call can be cut out.
//   ours_driver VARIANT BITS N K       VARIANT: neon | dotprod | sve   (block 32, fp16 scales)
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "kernels/kernel.h"
#include "kernels/variants.h"

extern "C" __attribute__((noinline)) void fwa_model_mark(int phase) {
  asm volatile("" ::"r"(phase) : "memory");
}

int main(int argc, char** argv) {
  if (argc != 5) {
    std::fprintf(stderr, "usage: %s neon|dotprod|sve BITS N K\n", argv[0]);
    return 2;
  }
  const std::string variant = argv[1];
  fwa::QuantFormat fmt;
  fmt.bits = std::atoi(argv[2]);
  fmt.block = 32;
  fmt.scale = fwa::ScaleType::f16;
  const int64_t N = std::atoll(argv[3]), K = std::atoll(argv[4]);
  fwa::PackedLayout L;
  if (fwa::packed_layout(fmt, N, K, &L) != fwa::Status::ok) return 2;
  // Random code bytes; scales 1.0 (fp16 0x3C00) so the float path sees ordinary values.
  std::vector<uint8_t> w(L.total_bytes);
  uint32_t r = 12345;
  for (auto& b : w) b = uint8_t((r = r * 1664525u + 1013904223u) >> 24);
  for (int64_t t = 0; t < L.n_tiles; ++t)
    for (int64_t i = 0; i < L.n_blocks * fwa::kTileRows; ++i) {
      uint8_t* s = w.data() + t * L.tile_bytes + L.scales_offset + 2 * i;
      s[0] = 0x00;
      s[1] = 0x3C;
    }
  std::vector<int8_t> xq(L.k_chunks * fwa::kChunk);
  for (auto& q : xq) q = int8_t((r = r * 1664525u + 1013904223u) >> 24);
  std::vector<float> xd(L.k_chunks, 0.01f), y(N);
  std::vector<int32_t> xsum(L.k_chunks, 0);
  fwa::MatmulArgs a{};
  a.layout = &L;
  a.w = w.data();
  a.M = 1;
  a.xq = xq.data();
  a.xd = xd.data();
  a.xsum = xsum.data();
  a.xq_stride = L.k_chunks * fwa::kChunk;
  a.xd_stride = L.k_chunks;
  a.y = y.data();
  a.y_stride = N;
  a.tile_begin = 0;
  a.tile_end = L.n_tiles;
  fwa::MatmulFn fn = variant == "neon"      ? fwa::matmul_fast_neon
                     : variant == "dotprod" ? fwa::matmul_fast_dotprod
                     : variant == "sve"     ? fwa::matmul_fast_sve
                                            : nullptr;
  if (!fn) return 2;
  fn(a);  // warm (first-touch page faults stay out of the traced call)
  fwa_model_mark(0);
  fn(a);
  fwa_model_mark(1);
  std::printf("%g\n", double(y[0]));
  return 0;
}
