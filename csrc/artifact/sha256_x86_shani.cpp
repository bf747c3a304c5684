// SPDX-License-Identifier: Apache-2.0
// SHA-256 with the x86 SHA extensions (SHA-NI) and SSSE3/SSE4.1. Compiled with -msha -msse4.1
// for this file only; called only when cpu_info() reports kSHA. Functions only: no static
// initialisers.
//
// The state lives in two registers, ABEF and CDGH, as SHA256RNDS2 wants it. Each group of four
// rounds adds the round constants to four message words and runs SHA256RNDS2 twice (two rounds
// each); SHA256MSG1/MSG2 compute the message schedule four words at a time. blocks2 runs two
// independent streams in the same loop: SHA256RNDS2 has a latency of several cycles but
// pipelines, so the second stream fills the gaps of the first.
#include <immintrin.h>

#include <cstddef>
#include <cstdint>
#include <utility>

#include "artifact/sha256_internal.h"

namespace fwa {
namespace sha256_detail {
namespace {

#define FWA_INLINE inline __attribute__((always_inline))

struct State {
  __m128i abef, cdgh;
};

FWA_INLINE State load_state(const uint32_t s[8]) {
  const __m128i dcba = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s));
  const __m128i hgfe = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + 4));
  const __m128i cdab = _mm_shuffle_epi32(dcba, 0xB1);
  const __m128i efgh = _mm_shuffle_epi32(hgfe, 0x1B);
  return {_mm_alignr_epi8(cdab, efgh, 8), _mm_blend_epi16(efgh, cdab, 0xF0)};
}

FWA_INLINE void store_state(const State& st, uint32_t s[8]) {
  const __m128i feba = _mm_shuffle_epi32(st.abef, 0x1B);
  const __m128i dchg = _mm_shuffle_epi32(st.cdgh, 0xB1);
  _mm_storeu_si128(reinterpret_cast<__m128i*>(s), _mm_blend_epi16(feba, dchg, 0xF0));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(s + 4), _mm_alignr_epi8(dchg, feba, 8));
}

// Rounds 4i..4i+3. w[] holds message words W[4j..4j+3] in slot j % 4.
template <int i>
FWA_INLINE void group(State& st, __m128i w[4], const uint8_t* data, __m128i bswap) {
  if (i < 4) {
    w[i] = _mm_shuffle_epi8(_mm_loadu_si128(reinterpret_cast<const __m128i*>(data + 16 * i)),
                            bswap);
  }
  __m128i msg =
      _mm_add_epi32(w[i % 4], _mm_load_si128(reinterpret_cast<const __m128i*>(kK + 4 * i)));
  st.cdgh = _mm_sha256rnds2_epu32(st.cdgh, st.abef, msg);
  if (i >= 3 && i <= 14) {  // finish W[4(i+1)..]: add W[t-7] and run MSG2
    __m128i& nxt = w[(i + 1) % 4];
    nxt = _mm_add_epi32(nxt, _mm_alignr_epi8(w[i % 4], w[(i + 3) % 4], 4));
    nxt = _mm_sha256msg2_epu32(nxt, w[i % 4]);
  }
  msg = _mm_shuffle_epi32(msg, 0x0E);
  st.abef = _mm_sha256rnds2_epu32(st.abef, st.cdgh, msg);
  if (i >= 1 && i <= 12) {  // start W[4(i+3)..]: MSG1 on the oldest slot
    w[(i + 3) % 4] = _mm_sha256msg1_epu32(w[(i + 3) % 4], w[i % 4]);
  }
}

template <size_t... I>
FWA_INLINE void all_groups(State& st, __m128i w[4], const uint8_t* data, __m128i bswap,
                           std::index_sequence<I...>) {
  (group<int(I)>(st, w, data, bswap), ...);
}

template <size_t... I>
FWA_INLINE void all_groups2(State& sa, __m128i wa[4], const uint8_t* a, State& sb, __m128i wb[4],
                            const uint8_t* b, __m128i bswap, std::index_sequence<I...>) {
  ((group<int(I)>(sa, wa, a, bswap), group<int(I)>(sb, wb, b, bswap)), ...);
}

FWA_INLINE __m128i bswap_mask() {
  return _mm_set_epi64x(0x0c0d0e0f08090a0bLL, 0x0405060700010203LL);
}

}  // namespace

void blocks_shani(uint32_t state[8], const uint8_t* data, size_t n) {
  if (n == 0) return;
  const __m128i bswap = bswap_mask();
  State st = load_state(state);
  for (; n > 0; --n, data += 64) {
    const State save = st;
    __m128i w[4];
    all_groups(st, w, data, bswap, std::make_index_sequence<16>());
    st.abef = _mm_add_epi32(st.abef, save.abef);
    st.cdgh = _mm_add_epi32(st.cdgh, save.cdgh);
  }
  store_state(st, state);
}

void blocks2_shani(uint32_t sa[8], const uint8_t* a, uint32_t sb[8], const uint8_t* b,
                   size_t n) {
  if (n == 0) return;
  const __m128i bswap = bswap_mask();
  State xa = load_state(sa), xb = load_state(sb);
  for (; n > 0; --n, a += 64, b += 64) {
    const State save_a = xa, save_b = xb;
    __m128i wa[4], wb[4];
    all_groups2(xa, wa, a, xb, wb, b, bswap, std::make_index_sequence<16>());
    xa.abef = _mm_add_epi32(xa.abef, save_a.abef);
    xa.cdgh = _mm_add_epi32(xa.cdgh, save_a.cdgh);
    xb.abef = _mm_add_epi32(xb.abef, save_b.abef);
    xb.cdgh = _mm_add_epi32(xb.cdgh, save_b.cdgh);
  }
  store_state(xa, sa);
  store_state(xb, sb);
}

}  // namespace sha256_detail
}  // namespace fwa
