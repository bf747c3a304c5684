// SPDX-License-Identifier: Apache-2.0
// libFuzzer target: the artifact reader over an in-memory buffer (Artifact::open_memory), in
// full and lazy mode, without a pin, with the pin the header claims and with a wrong pin; and the
// manifest JSON parser on the raw input. Built and run by tests/fuzz/run_fuzz.sh with
// -fsanitize=fuzzer,address,undefined.
//
// Each input is tried as is and "re-sealed": the section digests and the header's manifest
// digest recomputed, so that mutated manifests get past the digest checks and reach the schema
// and table checks.
//
// Besides memory safety it checks the reader's invariants (a violation traps):
//   * an opened artifact's root digest is the header's, every tensor lies inside the buffer;
//   * full mode accepts exactly when lazy mode accepts and then every expert verifies;
//   * the header's own digest as pin changes nothing about acceptance; a wrong pin never opens.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "artifact/json.h"
#include "artifact/reader.h"
#include "artifact/sha256.h"

namespace {

void check(bool ok) {
  if (!ok) __builtin_trap();
}

struct Result {
  fwa::Status status;
  bool experts_ok = true;  // lazy: every tensor (so every expert block) verified on access
};

Result open_and_use(const uint8_t* data, size_t size, bool lazy, const std::string& pin) {
  fwa::OpenOptions opt;
  opt.lazy = lazy;
  if (!pin.empty()) opt.pin = pin;  // "" here: no pin (an empty pin itself is malformed)
  std::unique_ptr<fwa::Artifact> a;
  std::string msg;
  Result r;
  r.status = fwa::Artifact::open_memory(data, size, opt, &a, &msg);
  check((r.status == fwa::Status::ok) == (a != nullptr));
  check(r.status == fwa::Status::ok || !msg.empty());
  if (!a) return r;
  check(size >= 128 && std::memcmp(a->root_digest().data(), data + 48, 32) == 0);
  check(a->manifest_data() == data + 128 && 128 + a->manifest_size() <= size);
  check(a->data_offset() + a->data_length() == size);
  for (size_t i = 0; i < a->tensors().size(); ++i) {
    fwa::TensorView v;
    const fwa::Status st = a->tensor_at(i, &v, &msg);
    if (st != fwa::Status::ok) {
      check(lazy && a->tensors()[i].block >= 0 && v.data == nullptr);
      r.experts_ok = false;
      continue;
    }
    check(v.data >= data && v.data + v.info->length <= data + size);
    check(fwa::sha256(v.data, v.info->length) == v.info->sha256);
  }
  for (size_t b = 0; b < a->expert_blocks().size(); ++b) {
    const fwa::Status st = a->verify_block(b, &msg);
    if (st != fwa::Status::ok) r.experts_ok = false;
    check((st == fwa::Status::ok) == a->block_verified(b));
  }
  return r;
}

void walk_json(const uint8_t* data, size_t size) {
  fwa::json::Document doc;
  fwa::json::Limits lim;
  std::string msg;
  if (doc.parse(data, size, lim, &msg) != fwa::Status::ok) return;
  // Iterative walk over every value.
  std::vector<fwa::json::Value> stack{doc.root()};
  size_t visited = 0;
  while (!stack.empty()) {
    const fwa::json::Value v = stack.back();
    stack.pop_back();
    ++visited;
    check(v.raw().size() >= 1);
    std::string s;
    int64_t i;
    bool b;
    v.get_string(&s);
    v.get_int(&i);
    v.get_bool(&b);
    for (fwa::json::Value c = v.first(); c.valid(); c = c.next()) {
      if (c.key().valid()) check(c.key().is(fwa::json::Type::string));
      stack.push_back(c);
    }
  }
  check(visited <= size);
}

}  // namespace

namespace {

// Recomputes the section digests (when the manifest parses) and the header's manifest digest.
void reseal(std::vector<uint8_t>& f) {
  if (f.size() < 128) return;
  uint64_t ml = 0;
  for (int k = 0; k < 8; ++k) ml |= uint64_t(f[16 + size_t(k)]) << (8 * k);
  if (ml > f.size() - 128) return;
  uint8_t* m = f.data() + 128;
  fwa::json::Document doc;
  if (doc.parse(m, size_t(ml), fwa::json::Limits(), nullptr) == fwa::Status::ok) {
    const fwa::json::Value root = doc.root();
    for (fwa::json::Value v = root.find("sections").first(); v.valid(); v = v.next()) {
      std::string key;
      if (!v.key().get_string(&key) || key == "sections" || v.raw().size() != 66) continue;
      const fwa::json::Value target = root.find(key);
      if (!target.valid()) continue;
      const std::string hex =
          fwa::digest_hex(fwa::sha256(target.raw().data(), target.raw().size()));
      std::memcpy(m + v.offset() + 1, hex.data(), 64);
    }
  }
  const fwa::Sha256Digest d = fwa::sha256(m, size_t(ml));
  std::memcpy(f.data() + 48, d.data(), 32);
}

void check_input(const uint8_t* data, size_t size);

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  walk_json(data, size);
  check_input(data, size);
  std::vector<uint8_t> sealed(data, data + size);
  reseal(sealed);
  if (size >= 128 && std::memcmp(sealed.data(), data, size) != 0) {
    check_input(sealed.data(), sealed.size());
  }
  return 0;
}

namespace {

void check_input(const uint8_t* data, size_t size) {

  const Result full = open_and_use(data, size, false, "");
  const Result lazy = open_and_use(data, size, true, "");
  const bool full_ok = full.status == fwa::Status::ok;
  check(full_ok == (lazy.status == fwa::Status::ok && lazy.experts_ok));
  // Up to the padding step both modes run the same checks in the same order.
  if (lazy.status != fwa::Status::ok && lazy.status != fwa::Status::nonzero_padding &&
      lazy.status != fwa::Status::digest_mismatch) {
    check(full.status == lazy.status);
  }

  if (size >= 80) {
    fwa::Sha256Digest claimed;
    std::memcpy(claimed.data(), data + 48, 32);
    const std::string pin = "sha256:" + fwa::digest_hex(claimed);
    const Result pinned = open_and_use(data, size, (size & 1) != 0, pin);
    check((pinned.status == fwa::Status::ok) == ((size & 1) ? lazy.status == fwa::Status::ok
                                                             : full_ok));
    claimed[0] ^= 0xff;
    const Result wrong = open_and_use(data, size, false, "sha256:" + fwa::digest_hex(claimed));
    check(wrong.status != fwa::Status::ok);
  }
}

}  // namespace
