// SPDX-License-Identifier: Apache-2.0
// Experts beyond memory (sched/residency.h, model/moe.cpp): prefetch of the next layer's
// predicted experts under a tiny budget gives the same logits bit for bit as without it, moves
// its counters, allocates nothing per decode step, and a block changed on disk after open is
// caught with digest_mismatch when it is read back (by the I/O thread or on demand). The
// non-expert weights copied to private memory (ModelLoadOptions::private_dense) are verified
// copies: a later change to the file does not reach them.
#include <doctest/doctest.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "count_allocations.h"
#include "model/model.h"
#include "model/session.h"

using namespace fwa;

namespace {

const char* test_model_path() {
  const char* path = std::getenv("FWA_TEST_MODEL");
  REQUIRE_MESSAGE(path != nullptr, "set FWA_TEST_MODEL (tests/cross/make_test_model.py)");
  return path;
}

std::shared_ptr<Model> load(const std::string& path, bool private_dense = false) {
  std::shared_ptr<Model> m;
  std::string msg;
  ModelLoadOptions o;
  o.private_dense = private_dense;
  REQUIRE_MESSAGE(Model::load(path, o, &m, &msg) == Status::ok, msg);
  return m;
}

std::unique_ptr<Session> make(std::shared_ptr<Model> m, int threads) {
  SessionOptions o;
  o.mode = ComputeMode::fast;
  o.n_threads = threads;
  o.prefill_chunk = 8;
  o.max_context = 128;
  std::unique_ptr<Session> s;
  std::string msg;
  REQUIRE_MESSAGE(Session::create(m, o, &s, &msg) == Status::ok, msg);
  return s;
}

std::vector<int32_t> prompt(const Model& m, int n, uint32_t seed) {
  std::vector<int32_t> ids(static_cast<size_t>(n));
  uint32_t s = seed;
  for (int& i : ids) {
    s = s * 1664525u + 1013904223u;
    i = int32_t((s >> 8) % uint32_t(m.config().vocab_size));
  }
  return ids;
}

// Token by token (prefetch runs on single-row chunks): every step's logits, concatenated.
std::vector<float> decode_logits(Session& s, const std::vector<int32_t>& ids) {
  const size_t V = size_t(s.vocab_size());
  std::vector<float> out(ids.size() * V);
  std::string msg;
  for (size_t i = 0; i < ids.size(); ++i)
    REQUIRE_MESSAGE(s.eval(&ids[i], 1, LogitsOut::last, out.data() + i * V, &msg) == Status::ok,
                    msg);
  return out;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * 4) == 0;
}

std::string copy_of_test_model(const char* name) {
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

void flip_byte(const std::string& path, uint64_t at) {
  FILE* f = std::fopen(path.c_str(), "r+b");
  REQUIRE(f != nullptr);
  std::fseek(f, long(at), SEEK_SET);
  const int c = std::fgetc(f);
  std::fseek(f, long(at), SEEK_SET);
  std::fputc(c ^ 0x20, f);
  std::fclose(f);
}

}  // namespace

TEST_CASE("prefetch under a tiny budget: the same logits, counted, no allocation per step") {
  const auto base_model = load(test_model_path());
  const auto ids = prompt(*base_model, 40, 3);
  auto base = make(base_model, 2);
  const auto want = decode_logits(*base, ids);

  for (const bool on : {false, true}) {
    CAPTURE(on);
    auto m = load(test_model_path());  // its own residency
    const uint64_t block = m->artifact().expert_blocks()[0].length;
    // Two layers' top-k: room for the pinned layer and part of the next one's prediction.
    m->set_expert_budget(uint64_t(2 * m->config().experts_per_tok) * block, false);
    m->set_expert_prefetch(on);
    CHECK(m->expert_prefetching() == on);
    auto s = make(m, 2);
    CHECK(same_bits(decode_logits(*s, ids), want));
    ResidencyStats st = m->residency_stats();
    CHECK(st.resident_bytes <= st.budget_bytes);
    CHECK(st.bytes_verified >= st.misses * block);
    if (!on) {
      CHECK(st.prefetch_issued == 0);
      CHECK(st.prefetch_fetched == 0);
      continue;
    }
    CHECK(st.prefetch);
    CHECK(st.prefetch_issued > 0);
    CHECK(st.prefetch_fetched > 0);
    CHECK(st.prefetch_fetched <= st.prefetch_issued);
    CHECK(st.prefetch_useful > 0);
    CHECK(st.prefetch_useful + st.prefetch_wasted <= st.prefetch_fetched);
    CHECK(st.expert_bytes == block * m->artifact().expert_blocks().size());

    // Decode steps with prefetch allocate nothing (the queue is preallocated), on this thread
    // or the I/O thread.
    const int32_t t = ids[0];
    std::string msg;
    g_allocs = 0;
    g_counting = true;
    Status r = Status::ok;
    for (int i = 0; i < 16 && r == Status::ok; ++i) r = s->eval(&t, 1, LogitsOut::last, nullptr, nullptr);
    g_counting = false;
    CHECK(r == Status::ok);
    CHECK(g_allocs.load() == 0);
    CHECK(m->residency_stats().prefetch_issued > st.prefetch_issued);
  }
}

TEST_CASE("prefetch: a block changed on disk after open is caught when read back") {
  const std::string path = copy_of_test_model("fwa-prefetch-tamper.fwa");
  auto m = load(path);
  const uint64_t block = m->artifact().expert_blocks()[0].length;
  m->set_expert_budget(uint64_t(m->config().experts_per_tok) * block, false);
  m->set_expert_prefetch(true);
  auto s = make(m, 1);
  const auto ids = prompt(*m, 12, 9);
  decode_logits(*s, ids);
  // Every expert block of the last MoE layer: its experts are only ever fetched after the
  // earlier layers ran, by the prefetch thread or on demand, and each read is verified.
  const Artifact& a = m->artifact();
  const int64_t last = a.expert_blocks().back().layer;
  for (const ExpertBlockInfo& b : a.expert_blocks())
    if (b.layer == last) flip_byte(path, a.data_offset() + b.offset + 11);
  // Whatever of that layer is resident now was verified before the change: drop it.
  m->set_expert_budget(1, false);
  m->set_expert_budget(uint64_t(m->config().experts_per_tok) * block, false);
  std::string msg;
  const int64_t before = s->n_past();
  const Status st = s->eval(&ids[0], 1, LogitsOut::last, nullptr, &msg);
  CHECK(st == Status::digest_mismatch);
  CHECK(msg.find("expert") != std::string::npos);
  CHECK(s->n_past() == before);
  std::remove(path.c_str());
}

TEST_CASE("private_dense: the non-expert weights are a verified private copy") {
  const std::string path = copy_of_test_model("fwa-private-dense.fwa");
  const auto mapped = load(path);
  const auto ids = prompt(*mapped, 10, 5);
  auto ref = make(mapped, 1);
  const auto want = decode_logits(*ref, ids);

  auto m = load(path, true);
  uint64_t dense = 0;
  const TensorInfo* attn = nullptr;
  for (const TensorInfo& t : m->artifact().tensors()) {
    if (t.block >= 0) continue;
    dense += (t.length + 63) / 64 * 64;
    if (t.role == "q_proj" && t.layer == 0) attn = &t;
  }
  CHECK(m->private_dense_bytes() == dense);
  REQUIRE(attn != nullptr);
  // The file's attention weights change after open: the model runs its verified copy.
  flip_byte(path, m->artifact().data_offset() + attn->offset + 3);
  auto s = make(m, 1);
  CHECK(same_bits(decode_logits(*s, ids), want));
  CHECK(mapped->private_dense_bytes() == 0);
  std::remove(path.c_str());
}
