// SPDX-License-Identifier: Apache-2.0
// SHA-256 with the ARMv8 cryptographic extension (SHA256H/SHA256H2/SHA256SU0/SHA256SU1).
// Compiled with -march=armv8-a+crypto for this file only; called only when cpu_info() reports
// kSHA (HWCAP_SHA2). Functions only: no static initialisers.
//
// The state is ABCD and EFGH in two registers. Each group of four rounds adds the round
// constants to four message words, then SHA256H/SHA256H2 run the rounds while SHA256SU0/SU1
// compute the message words twelve rounds ahead. blocks2 interleaves two independent streams.
#include <arm_neon.h>

#include <cstddef>
#include <cstdint>
#include <utility>

#include "artifact/sha256_internal.h"

namespace fwa {
namespace sha256_detail {
namespace {

#define FWA_INLINE inline __attribute__((always_inline))

struct State {
  uint32x4_t abcd, efgh;
};

FWA_INLINE void load_block(uint32x4_t w[4], const uint8_t* data) {
  for (int i = 0; i < 4; ++i) w[i] = vreinterpretq_u32_u8(vrev32q_u8(vld1q_u8(data + 16 * i)));
}

// Rounds 4i..4i+3. w[] holds message words W[4j..4j+3] in slot j % 4 (all four slots are
// loaded before round 0: SHA256SU0/SU1 of the first groups read the later words).
template <int i>
FWA_INLINE void group(State& st, uint32x4_t w[4]) {
  const uint32x4_t msg = vaddq_u32(w[i % 4], vld1q_u32(kK + 4 * i));
  if (i < 12) w[i % 4] = vsha256su0q_u32(w[i % 4], w[(i + 1) % 4]);
  const uint32x4_t abcd = st.abcd;
  st.abcd = vsha256hq_u32(st.abcd, st.efgh, msg);
  st.efgh = vsha256h2q_u32(st.efgh, abcd, msg);
  if (i < 12) w[i % 4] = vsha256su1q_u32(w[i % 4], w[(i + 2) % 4], w[(i + 3) % 4]);
}

template <size_t... I>
FWA_INLINE void all_groups(State& st, uint32x4_t w[4], std::index_sequence<I...>) {
  (group<int(I)>(st, w), ...);
}

template <size_t... I>
FWA_INLINE void all_groups2(State& sa, uint32x4_t wa[4], State& sb, uint32x4_t wb[4],
                            std::index_sequence<I...>) {
  ((group<int(I)>(sa, wa), group<int(I)>(sb, wb)), ...);
}

}  // namespace

void blocks_armv8(uint32_t state[8], const uint8_t* data, size_t n) {
  if (n == 0) return;
  State st{vld1q_u32(state), vld1q_u32(state + 4)};
  for (; n > 0; --n, data += 64) {
    const State save = st;
    uint32x4_t w[4];
    load_block(w, data);
    all_groups(st, w, std::make_index_sequence<16>());
    st.abcd = vaddq_u32(st.abcd, save.abcd);
    st.efgh = vaddq_u32(st.efgh, save.efgh);
  }
  vst1q_u32(state, st.abcd);
  vst1q_u32(state + 4, st.efgh);
}

void blocks2_armv8(uint32_t sa[8], const uint8_t* a, uint32_t sb[8], const uint8_t* b,
                   size_t n) {
  if (n == 0) return;
  State xa{vld1q_u32(sa), vld1q_u32(sa + 4)}, xb{vld1q_u32(sb), vld1q_u32(sb + 4)};
  for (; n > 0; --n, a += 64, b += 64) {
    const State save_a = xa, save_b = xb;
    uint32x4_t wa[4], wb[4];
    load_block(wa, a);
    load_block(wb, b);
    all_groups2(xa, wa, xb, wb, std::make_index_sequence<16>());
    xa.abcd = vaddq_u32(xa.abcd, save_a.abcd);
    xa.efgh = vaddq_u32(xa.efgh, save_a.efgh);
    xb.abcd = vaddq_u32(xb.abcd, save_b.abcd);
    xb.efgh = vaddq_u32(xb.efgh, save_b.efgh);
  }
  vst1q_u32(sa, xa.abcd);
  vst1q_u32(sa + 4, xa.efgh);
  vst1q_u32(sb, xb.abcd);
  vst1q_u32(sb + 4, xb.efgh);
}

}  // namespace sha256_detail
}  // namespace fwa
