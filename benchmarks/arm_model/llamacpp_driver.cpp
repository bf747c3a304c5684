// SPDX-License-Identifier: Apache-2.0
// benchmarks/arm_model.py's driver for llama.cpp's ARM CPU kernels (ggml-cpu/arch/arm/quants.c
// and repack.cpp of the pinned llama-cpp-python sdist, compiled by the same clang): one call of
// the named kernel on random blocks between two calls of fwa_model_mark(), so that the qemu
// execution trace of exactly that call can be cut out.
//   llamacpp_driver KERNEL ROWS K
//     q4_0 | q4_K | q3_K | q2_K   ggml_vec_dot_<type>_q8_<0|K>, ROWS calls of one row (nrc = 1)
//     q4_0_4x4 | q4_0_4x8 | q4_0_8x8   ggml_gemv_q4_0_<layout>_q8_0, one call for ROWS rows
// Only the arithmetic path matters: the blocks hold random bytes except the fp16 scales, which
// are set to 1.0 so no NaN or Inf enters the float path.
#include <sys/prctl.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

extern "C" {
void ggml_vec_dot_q4_0_q8_0(int n, float* s, size_t bs, const void* vx, size_t bx,
                            const void* vy, size_t by, int nrc);
void ggml_vec_dot_q4_K_q8_K(int n, float* s, size_t bs, const void* vx, size_t bx,
                            const void* vy, size_t by, int nrc);
void ggml_vec_dot_q3_K_q8_K(int n, float* s, size_t bs, const void* vx, size_t bx,
                            const void* vy, size_t by, int nrc);
void ggml_vec_dot_q2_K_q8_K(int n, float* s, size_t bs, const void* vx, size_t bx,
                            const void* vy, size_t by, int nrc);
void ggml_gemv_q4_0_4x4_q8_0(int n, float* s, size_t bs, const void* vx, const void* vy,
                             int nr, int nc);
void ggml_gemv_q4_0_4x8_q8_0(int n, float* s, size_t bs, const void* vx, const void* vy,
                             int nr, int nc);
void ggml_gemv_q4_0_8x8_q8_0(int n, float* s, size_t bs, const void* vx, const void* vy,
                             int nr, int nc);
// ggml-cpu.c's (not linked): the SVE vector length in bytes, which the SVE kernels switch on.
int ggml_cpu_get_sve_cnt(void) {
  const long vl = prctl(PR_SVE_GET_VL);
  return vl < 0 ? 0 : int(vl & PR_SVE_VL_LEN_MASK);
}
__attribute__((noinline)) void fwa_model_mark(int phase) {
  asm volatile("" ::"r"(phase) : "memory");
}
}

namespace {

using VecDot = void (*)(int, float*, size_t, const void*, size_t, const void*, size_t, int);
using Gemv = void (*)(int, float*, size_t, const void*, const void*, int, int);

struct Kernel {
  const char* name;
  VecDot vec_dot;
  Gemv gemv;
  int qk;             // weights per block
  size_t wbytes;      // bytes per weight block (per row; repacked: per row too)
  size_t abytes;      // bytes per activation block (q8_0: 34, q8_K: 292)
  size_t scale_off;   // offset of the first fp16 scale in a weight block
  int n_scales;       // fp16 scales at scale_off
};

// ggml-common.h: block_q4_0 {d, qs[16]}; block_q4_K {d, dmin, scales[12], qs[128]};
// block_q3_K {hmask[32], qs[64], scales[12], d}; block_q2_K {scales[16], qs[64], d, dmin};
// block_q8_0 {d, qs[32]}; block_q8_K {float d, qs[256], bsums[16]}; block_q4_0xN {d[N], qs}.
const Kernel kKernels[] = {
    {"q4_0", ggml_vec_dot_q4_0_q8_0, nullptr, 32, 18, 34, 0, 1},
    {"q4_K", ggml_vec_dot_q4_K_q8_K, nullptr, 256, 144, 292, 0, 2},
    {"q3_K", ggml_vec_dot_q3_K_q8_K, nullptr, 256, 110, 292, 108, 1},
    {"q2_K", ggml_vec_dot_q2_K_q8_K, nullptr, 256, 84, 292, 80, 2},
    {"q4_0_4x4", nullptr, ggml_gemv_q4_0_4x4_q8_0, 32, 18, 34, 0, 4},
    {"q4_0_4x8", nullptr, ggml_gemv_q4_0_4x8_q8_0, 32, 18, 34, 0, 4},
    {"q4_0_8x8", nullptr, ggml_gemv_q4_0_8x8_q8_0, 32, 18, 34, 0, 8},
};

void fill(std::vector<uint8_t>& v, uint32_t seed) {
  for (auto& b : v) b = uint8_t((seed = seed * 1664525u + 1013904223u) >> 24);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: %s KERNEL ROWS K\n", argv[0]);
    return 2;
  }
  const std::string name = argv[1];
  const int rows = std::atoi(argv[2]), K = std::atoi(argv[3]);
  const Kernel* k = nullptr;
  for (const Kernel& c : kKernels)
    if (name == c.name) k = &c;
  if (!k || rows <= 0 || K <= 0 || K % k->qk != 0) return 2;
  const int nb = K / k->qk;
  std::vector<uint8_t> w(size_t(rows) * nb * k->wbytes), x(size_t(nb) * k->abytes);
  fill(w, 1);
  fill(x, 2);
  // fp16 1.0 in every weight scale; q8_0 activation scales too (q8_K's is a float: 1.0f).
  if (k->gemv) {  // repacked: groups of n_scales rows share one block {d[n], qs[16 n]}
    const size_t group = size_t(k->n_scales) * k->wbytes;
    for (size_t off = 0; off < w.size(); off += group)
      for (int i = 0; i < k->n_scales; ++i) w[off + 2 * i] = 0x00, w[off + 2 * i + 1] = 0x3C;
  } else {
    for (size_t off = 0; off < w.size(); off += k->wbytes)
      for (int i = 0; i < k->n_scales; ++i)
        w[off + k->scale_off + 2 * i] = 0x00, w[off + k->scale_off + 2 * i + 1] = 0x3C;
  }
  for (size_t off = 0; off < x.size(); off += k->abytes) {
    if (k->qk == 32) {
      x[off] = 0x00, x[off + 1] = 0x3C;
    } else {
      const float one = 1.0f;
      __builtin_memcpy(&x[off], &one, 4);
    }
  }
  std::vector<float> y(rows);
  auto call = [&] {
    if (k->gemv) {
      k->gemv(K, y.data(), 0, w.data(), x.data(), 1, rows);
    } else {
      for (int r = 0; r < rows; ++r)
        k->vec_dot(K, &y[r], 0, w.data() + size_t(r) * nb * k->wbytes, 0, x.data(), 0, 1);
    }
  };
  call();  // warm
  fwa_model_mark(0);
  call();
  fwa_model_mark(1);
  std::printf("%g\n", double(y[0]));
  return 0;
}
