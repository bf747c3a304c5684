/* SPDX-License-Identifier: Apache-2.0 */
// SHA-256 (FIPS 180-4): a portable scalar implementation plus SHA-NI (x86) and ARMv8 crypto
// extension backends, chosen once at run time from the CPU features (cpu/cpu_features.h; the
// FWA_CPU_FEATURES mask can force the scalar path by dropping "sha").
//
// Streaming (Sha256: init/update/final), one-shot (sha256) and a batch verifier
// (sha256_verify_batch) that hashes independent messages two at a time: SHA-NI and the ARM
// SHA256H instructions have a long latency but pipeline, so two interleaved streams cost little
// more than one.
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>
#include <string>

namespace fwa {

using Sha256Digest = std::array<uint8_t, 32>;

// A compression function: `blocks` processes n 64-byte blocks into `state` (8 words, host
// order); `blocks2` (may be null) processes n blocks of each of two independent streams.
struct Sha256Backend {
  const char* name;  // "scalar", "shani", "armv8"
  void (*blocks)(uint32_t state[8], const uint8_t* data, size_t n);
  void (*blocks2)(uint32_t state_a[8], const uint8_t* a, uint32_t state_b[8], const uint8_t* b,
                  size_t n);
};

// The backend in use: the fastest this build has and the CPU (after FWA_CPU_FEATURES) runs.
// Chosen on first call, then constant.
const Sha256Backend& sha256_backend();

// A backend by name when this build has it and this CPU runs it (ignores FWA_CPU_FEATURES, for
// tests and benchmarks), else null. "scalar" always exists.
const Sha256Backend* sha256_find_backend(const char* name);

// Names of the backends sha256_find_backend finds here, best first, comma-separated.
std::string sha256_backend_names();

class Sha256 {
 public:
  Sha256() : Sha256(sha256_backend()) {}
  explicit Sha256(const Sha256Backend& backend) : be_(&backend) { init(); }
  void init();
  void update(const void* data, size_t n);
  // The digest of everything passed to update since init; the object must be init()ed before
  // it is used again.
  Sha256Digest final();
  // a.update(data, n) and b.update(data, n) at once: when both are at a 64-byte boundary the
  // whole blocks go through the backend's two-stream path (one pass over the data, the two
  // SHA pipelines interleaved). Both must use the same backend.
  static void update_pair(Sha256& a, Sha256& b, const void* data, size_t n);

 private:
  const Sha256Backend* be_;
  uint32_t h_[8];
  uint8_t buf_[64];
  size_t buf_len_;
  uint64_t total_;
};

Sha256Digest sha256(const void* data, size_t n);
Sha256Digest sha256(const void* data, size_t n, const Sha256Backend& backend);

// One message of a batch: `got` receives its digest, `expected` is compared against it.
struct Sha256Job {
  const uint8_t* data = nullptr;
  size_t size = 0;
  Sha256Digest expected{};
  Sha256Digest got{};
  bool done = false;  // set when `got` holds the digest
};

// Hashes the jobs (two streams at once when the backend interleaves) and returns the index of
// the first job, in array order, whose digest differs from its expected one, or n when all
// match. It stops as soon as that answer is known: jobs after the first mismatch may be left
// undone (done == false), every job before it is done.
size_t sha256_verify_batch(Sha256Job* jobs, size_t n, const Sha256Backend& backend);
inline size_t sha256_verify_batch(Sha256Job* jobs, size_t n) {
  return sha256_verify_batch(jobs, n, sha256_backend());
}

// Lowercase hex of a digest, and the inverse (exactly 64 lowercase hex digits).
std::string digest_hex(const Sha256Digest& d);
bool parse_digest_hex(const char* s, size_t n, Sha256Digest* out);

}  // namespace fwa
