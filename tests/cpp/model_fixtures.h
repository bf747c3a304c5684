/* SPDX-License-Identifier: Apache-2.0 */
// The runtime tests' fixtures on the real artifact FWA_TEST_MODEL names
// (tests/cross/make_test_model.py): the model, sessions over it, and token ids in its
// vocabulary.
#pragma once
#include <doctest/doctest.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "model/model.h"
#include "model/session.h"

namespace fwa_test {

inline const char* test_model_path() {
  const char* path = std::getenv("FWA_TEST_MODEL");
  REQUIRE_MESSAGE(path != nullptr, "set FWA_TEST_MODEL (tests/cross/make_test_model.py)");
  return path;
}

inline std::shared_ptr<fwa::Model> load_model(const std::string& path,
                                              bool private_dense = false) {
  std::shared_ptr<fwa::Model> m;
  std::string msg;
  fwa::ModelLoadOptions o;
  o.private_dense = private_dense;
  REQUIRE_MESSAGE(fwa::Model::load(path, o, &m, &msg) == fwa::Status::ok, msg);
  return m;
}

inline std::shared_ptr<fwa::Model> load_test_model() { return load_model(test_model_path()); }

// A copy of the test model in $TMPDIR (default /tmp) under `name`, for tests that change it.
inline std::string copy_of_test_model(const char* name) {
  const std::string path =
      std::string(std::getenv("TMPDIR") ? std::getenv("TMPDIR") : "/tmp") + "/" + name;
  FILE* in = std::fopen(test_model_path(), "rb");
  FILE* out = std::fopen(path.c_str(), "wb");
  REQUIRE((in && out));
  char buf[65536];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, in)) > 0) std::fwrite(buf, 1, n, out);
  std::fclose(in);
  std::fclose(out);
  return path;
}

// n ids in the model's vocabulary from a linear congruential generator (the same on every
// platform).
inline std::vector<int32_t> random_ids(const fwa::Model& m, int n, uint32_t seed) {
  std::vector<int32_t> ids(static_cast<size_t>(n));
  uint32_t s = seed;
  for (int32_t& i : ids) {
    s = s * 1664525u + 1013904223u;
    i = int32_t((s >> 8) % uint32_t(m.config().vocab_size));
  }
  return ids;
}

inline bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * 4) == 0;
}

inline std::unique_ptr<fwa::Session> make_session(std::shared_ptr<fwa::Model> m,
                                                  fwa::ComputeMode mode, int threads,
                                                  int64_t chunk, int64_t ctx = 128,
                                                  fwa::KvType kv = fwa::KvType::f32) {
  fwa::SessionOptions o;
  o.kv_cache = kv;
  o.mode = mode;
  o.n_threads = threads;
  o.prefill_chunk = chunk;
  o.max_context = ctx;
  std::unique_ptr<fwa::Session> s;
  std::string msg;
  REQUIRE_MESSAGE(fwa::Session::create(m, o, &s, &msg) == fwa::Status::ok, msg);
  return s;
}

}  // namespace fwa_test
