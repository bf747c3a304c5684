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
#include "model_fixtures.h"
#include "model/model.h"
#include "model/session.h"

using namespace fwa;
using fwa_test::load_model;
using fwa_test::make_session;
using fwa_test::random_ids;
using fwa_test::same_bits;
using fwa_test::copy_of_test_model;
using fwa_test::test_model_path;

namespace {

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
  const auto base_model = load_model(test_model_path());
  const auto ids = random_ids(*base_model, 40, 3);
  auto base = make_session(base_model, ComputeMode::fast, 2, 8);
  const auto want = decode_logits(*base, ids);

  for (const bool on : {false, true}) {
    CAPTURE(on);
    auto m = load_model(test_model_path());  // its own residency
    const uint64_t block = m->artifact().expert_blocks()[0].length;
    // Two layers' top-k: room for the pinned layer and part of the next one's prediction.
    m->set_expert_budget(uint64_t(2 * m->config().experts_per_tok) * block, false);
    m->set_expert_prefetch(on);
    CHECK(m->expert_prefetching() == on);
    auto s = make_session(m, ComputeMode::fast, 2, 8);
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
  auto m = load_model(path);
  const uint64_t block = m->artifact().expert_blocks()[0].length;
  m->set_expert_budget(uint64_t(m->config().experts_per_tok) * block, false);
  m->set_expert_prefetch(true);
  auto s = make_session(m, ComputeMode::fast, 1, 8);
  const auto ids = random_ids(*m, 12, 9);
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
  const auto mapped = load_model(path);
  const auto ids = random_ids(*mapped, 10, 5);
  auto ref = make_session(mapped, ComputeMode::fast, 1, 8);
  const auto want = decode_logits(*ref, ids);

  auto m = load_model(path, true);
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
  auto s = make_session(m, ComputeMode::fast, 1, 8);
  CHECK(same_bits(decode_logits(*s, ids), want));
  CHECK(mapped->private_dense_bytes() == 0);
  std::remove(path.c_str());
}
