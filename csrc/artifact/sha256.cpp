// SPDX-License-Identifier: Apache-2.0
// Portable SHA-256, backend selection and the two-stream batch verifier.
#include "artifact/sha256.h"

#include <cstring>

#include "artifact/sha256_internal.h"
#include "cpu/cpu_features.h"

namespace fwa {
namespace {

using sha256_detail::kK;

constexpr uint32_t kInit[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                               0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};

inline uint32_t rotr(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }
inline uint32_t load_be32(const uint8_t* p) {
  return (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | uint32_t(p[3]);
}
inline void store_be32(uint8_t* p, uint32_t v) {
  p[0] = uint8_t(v >> 24);
  p[1] = uint8_t(v >> 16);
  p[2] = uint8_t(v >> 8);
  p[3] = uint8_t(v);
}

void blocks_scalar(uint32_t state[8], const uint8_t* data, size_t n) {
  for (; n > 0; --n, data += 64) {
    uint32_t w[64];
    for (int i = 0; i < 16; ++i) w[i] = load_be32(data + 4 * i);
    for (int i = 16; i < 64; ++i) {
      const uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
      const uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
      w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = state[0], b = state[1], c = state[2], d = state[3];
    uint32_t e = state[4], f = state[5], g = state[6], h = state[7];
    for (int i = 0; i < 64; ++i) {
      const uint32_t S1 = rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25);
      const uint32_t ch = (e & f) ^ (~e & g);
      const uint32_t t1 = h + S1 + ch + kK[i] + w[i];
      const uint32_t S0 = rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22);
      const uint32_t maj = (a & b) ^ (a & c) ^ (b & c);
      const uint32_t t2 = S0 + maj;
      h = g;
      g = f;
      f = e;
      e = d + t1;
      d = c;
      c = b;
      b = a;
      a = t1 + t2;
    }
    state[0] += a;
    state[1] += b;
    state[2] += c;
    state[3] += d;
    state[4] += e;
    state[5] += f;
    state[6] += g;
    state[7] += h;
  }
}

constexpr Sha256Backend kScalar{"scalar", blocks_scalar, nullptr};
#if defined(FWA_HAVE_SHANI)
constexpr Sha256Backend kShaNi{"shani", sha256_detail::blocks_shani, sha256_detail::blocks2_shani};
#endif
#if defined(FWA_HAVE_ARM_SHA)
constexpr Sha256Backend kArmV8{"armv8", sha256_detail::blocks_armv8,
                               sha256_detail::blocks2_armv8};
#endif

// Best first; each with the CPU feature it needs (0: none).
struct Candidate {
  const Sha256Backend* backend;
  uint64_t needs;
};
constexpr Candidate kCandidates[] = {
#if defined(FWA_HAVE_SHANI)
    {&kShaNi, kSHA},
#endif
#if defined(FWA_HAVE_ARM_SHA)
    {&kArmV8, kSHA | kNEON},
#endif
    {&kScalar, 0},
};

const Sha256Backend* select_backend() {
  const uint64_t have = cpu_info().features;
  for (const Candidate& c : kCandidates) {
    if ((have & c.needs) == c.needs) return c.backend;
  }
  return &kScalar;
}

// Pads and compresses the final tail (< 64 bytes) of a message of `total` bytes.
Sha256Digest finish(const Sha256Backend& be, uint32_t h[8], const uint8_t* tail, size_t tail_len,
                    uint64_t total) {
  uint8_t block[128] = {};
  if (tail_len > 0) std::memcpy(block, tail, tail_len);
  block[tail_len] = 0x80;
  const size_t len = tail_len < 56 ? 64 : 128;
  const uint64_t bits = total * 8;
  for (int i = 0; i < 8; ++i) block[len - 1 - i] = uint8_t(bits >> (8 * i));
  be.blocks(h, block, len / 64);
  Sha256Digest out;
  for (int i = 0; i < 8; ++i) store_be32(out.data() + 4 * i, h[i]);
  return out;
}

}  // namespace

const Sha256Backend& sha256_backend() {
  static const Sha256Backend* const be = select_backend();
  return *be;
}

const Sha256Backend* sha256_find_backend(const char* name) {
  const uint64_t have = cpu_info().detected;
  for (const Candidate& c : kCandidates) {
    if (std::strcmp(c.backend->name, name) == 0 && (have & c.needs) == c.needs) return c.backend;
  }
  return nullptr;
}

std::string sha256_backend_names() {
  std::string out;
  for (const Candidate& c : kCandidates) {
    if (!sha256_find_backend(c.backend->name)) continue;
    if (!out.empty()) out += ',';
    out += c.backend->name;
  }
  return out;
}

void Sha256::init() {
  std::memcpy(h_, kInit, sizeof h_);
  buf_len_ = 0;
  total_ = 0;
}

void Sha256::update(const void* data, size_t n) {
  if (n == 0) return;
  const uint8_t* p = static_cast<const uint8_t*>(data);
  total_ += n;
  if (buf_len_ > 0) {
    const size_t take = n < 64 - buf_len_ ? n : 64 - buf_len_;
    std::memcpy(buf_ + buf_len_, p, take);
    buf_len_ += take;
    p += take;
    n -= take;
    if (buf_len_ < 64) return;
    be_->blocks(h_, buf_, 1);
    buf_len_ = 0;
  }
  if (n >= 64) {
    be_->blocks(h_, p, n / 64);
    p += n / 64 * 64;
    n %= 64;
  }
  if (n > 0) {
    std::memcpy(buf_, p, n);
    buf_len_ = n;
  }
}

void Sha256::update_pair(Sha256& a, Sha256& b, const void* data, size_t n) {
  const uint8_t* p = static_cast<const uint8_t*>(data);
  if (a.buf_len_ == 0 && b.buf_len_ == 0 && a.be_ == b.be_ && a.be_->blocks2 && n >= 64) {
    const size_t whole = n / 64;
    a.be_->blocks2(a.h_, p, b.h_, p, whole);
    a.total_ += whole * 64;
    b.total_ += whole * 64;
    p += whole * 64;
    n %= 64;
  }
  a.update(p, n);
  b.update(p, n);
}

Sha256Digest Sha256::final() { return finish(*be_, h_, buf_, buf_len_, total_); }

Sha256Digest sha256(const void* data, size_t n, const Sha256Backend& backend) {
  uint32_t h[8];
  std::memcpy(h, kInit, sizeof h);
  const uint8_t* p = static_cast<const uint8_t*>(data);
  if (n >= 64) backend.blocks(h, p, n / 64);
  return finish(backend, h, p + n / 64 * 64, n % 64, n);
}

Sha256Digest sha256(const void* data, size_t n) { return sha256(data, n, sha256_backend()); }

namespace {

// One stream of the batch verifier: the job it works on and how far it is.
struct Lane {
  size_t job = 0;
  bool active = false;
  const uint8_t* p = nullptr;
  size_t blocks_left = 0;
  uint32_t h[8];
};

}  // namespace

size_t sha256_verify_batch(Sha256Job* jobs, size_t n, const Sha256Backend& be) {
  size_t next = 0;       // jobs are taken in order
  size_t first_bad = n;  // lowest failing index seen so far
  Lane lanes[2];

  // Finishes a lane whose full blocks are all compressed.
  auto complete = [&](Lane& l) {
    Sha256Job& j = jobs[l.job];
    j.got = finish(be, l.h, l.p, j.size % 64, j.size);
    j.done = true;
    if (j.got != j.expected && l.job < first_bad) first_bad = l.job;
    l.active = false;
  };
  auto refill = [&](Lane& l) {
    while (!l.active && next < n && next < first_bad) {
      l.job = next++;
      l.active = true;
      l.p = jobs[l.job].data;
      l.blocks_left = jobs[l.job].size / 64;
      std::memcpy(l.h, kInit, sizeof l.h);
      if (l.blocks_left == 0) complete(l);
    }
  };

  for (;;) {
    for (Lane& l : lanes) {
      if (l.active && l.job > first_bad) l.active = false;  // cannot change the answer
      refill(l);
    }
    Lane& a = lanes[0];
    Lane& b = lanes[1];
    if (a.active && b.active) {
      const size_t k = a.blocks_left < b.blocks_left ? a.blocks_left : b.blocks_left;
      if (be.blocks2) {
        be.blocks2(a.h, a.p, b.h, b.p, k);
      } else {
        be.blocks(a.h, a.p, k);
        be.blocks(b.h, b.p, k);
      }
      for (Lane* l : {&a, &b}) {
        l->p += k * 64;
        l->blocks_left -= k;
        if (l->blocks_left == 0) complete(*l);
      }
    } else if (a.active || b.active) {
      Lane& l = a.active ? a : b;
      be.blocks(l.h, l.p, l.blocks_left);
      l.p += l.blocks_left * 64;
      l.blocks_left = 0;
      complete(l);
    } else {
      break;
    }
  }
  return first_bad;
}

std::string digest_hex(const Sha256Digest& d) {
  static const char kHex[] = "0123456789abcdef";
  std::string s(64, '0');
  for (size_t i = 0; i < 32; ++i) {
    s[2 * i] = kHex[d[i] >> 4];
    s[2 * i + 1] = kHex[d[i] & 15];
  }
  return s;
}

bool parse_digest_hex(const char* s, size_t n, Sha256Digest* out) {
  if (n != 64) return false;
  for (size_t i = 0; i < 64; ++i) {
    const char c = s[i];
    int v;
    if (c >= '0' && c <= '9') {
      v = c - '0';
    } else if (c >= 'a' && c <= 'f') {
      v = c - 'a' + 10;
    } else {
      return false;
    }
    if (i % 2 == 0) {
      (*out)[i / 2] = uint8_t(v << 4);
    } else {
      (*out)[i / 2] |= uint8_t(v);
    }
  }
  return true;
}

}  // namespace fwa
