// SPDX-License-Identifier: Apache-2.0
// The runtime on a real artifact (tests/cross/make_test_model.py writes it; FWA_TEST_MODEL
// names it): logits bit-identical across thread counts, prefill chunk sizes, runs and
// context edits; a decode step that allocates nothing; clear errors that leave the session
// unchanged. The same binary runs under qemu-aarch64, and tests/cpp/logits_digest.cpp
// compares the logits' digests across ISAs.
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <cstring>
#include <new>
#include <string>
#include <utility>
#include <vector>

#include "artifact/json.h"
#include "artifact/sha256.h"
#include "count_allocations.h"
#include "model_fixtures.h"
#include "model/generate.h"
#include "model/model.h"
#include "model/moe.h"
#include "model/sampler.h"
#include "model/session.h"
#include "quant/format.h"

using namespace fwa;
using fwa_test::load_test_model;
using fwa_test::make_session;
using fwa_test::random_ids;
using fwa_test::same_bits;
using fwa_test::copy_of_test_model;

namespace {

std::vector<float> all_logits(Session& s, const std::vector<int32_t>& ids) {
  std::vector<float> out(ids.size() * size_t(s.vocab_size()));
  std::string msg;
  REQUIRE_MESSAGE(s.eval(ids.data(), int64_t(ids.size()), LogitsOut::all, out.data(), &msg) ==
                      Status::ok,
                  msg);
  return out;
}

std::string temp_path(const char* name) {
  return std::string(std::getenv("TMPDIR") ? std::getenv("TMPDIR") : "/tmp") + "/" + name;
}

// Writes to `dst` a copy of the test model with patch() applied to the bytes of each tensor of
// `names`, and every digest the change touches resealed (the tensors', their expert blocks',
// the manifest sections' and the header's): an artifact that verifies and holds the values a
// test wants.
using Patch = std::function<void(uint8_t* bytes, const TensorInfo& t)>;
void resealed_copy(const std::string& dst, const std::vector<std::string>& names,
                   const Patch& patch) {
  const char* src = std::getenv("FWA_TEST_MODEL");
  REQUIRE(src != nullptr);
  std::unique_ptr<Artifact> a;
  std::string msg;
  REQUIRE_MESSAGE(Artifact::open_file(src, OpenOptions(), &a, &msg) == Status::ok, msg);
  std::vector<uint8_t> buf;
  {
    FILE* f = std::fopen(src, "rb");
    REQUIRE(f != nullptr);
    uint8_t chunk[65536];
    size_t n;
    while ((n = std::fread(chunk, 1, sizeof chunk, f)) > 0) buf.insert(buf.end(), chunk, chunk + n);
    std::fclose(f);
  }
  const uint64_t doff = a->data_offset();
  std::string m(reinterpret_cast<const char*>(buf.data()) + kArtifactHeaderBytes,
                a->manifest_size());
  auto section_digest = [](const std::string& manifest, const char* key) {
    json::Document doc;
    std::string why;
    REQUIRE(doc.parse(reinterpret_cast<const uint8_t*>(manifest.data()), manifest.size(),
                      json::Limits(), &why) == Status::ok);
    const std::string_view raw = doc.root().find(key).raw();
    return digest_hex(sha256(raw.data(), raw.size()));
  };
  const std::string old_tensors = section_digest(m, "tensors");
  const std::string old_blocks = section_digest(m, "expert_blocks");
  auto replace_after = [&m](size_t from, const std::string& old_hex, const std::string& hex) {
    const size_t at = m.find(old_hex, from);
    REQUIRE(at != std::string::npos);
    m.replace(at, old_hex.size(), hex);
  };
  for (const std::string& name : names) {
    const TensorInfo* t = a->find_tensor(name);
    REQUIRE_MESSAGE(t != nullptr, name);
    uint8_t* bytes = buf.data() + doff + t->offset;
    patch(bytes, *t);
    replace_after(m.find("\"name\":\"" + name + "\""), digest_hex(t->sha256),
                  digest_hex(sha256(bytes, size_t(t->length))));
    if (t->block >= 0) {
      const ExpertBlockInfo& b = a->expert_blocks()[size_t(t->block)];
      replace_after(m.find("\"expert_blocks\""), digest_hex(b.sha256),
                    digest_hex(sha256(buf.data() + doff + b.offset, size_t(b.length))));
    }
  }
  const size_t sections = m.find("\"sections\"");
  replace_after(sections, old_tensors, section_digest(m, "tensors"));
  replace_after(sections, old_blocks, section_digest(m, "expert_blocks"));
  std::memcpy(buf.data() + kArtifactHeaderBytes, m.data(), m.size());
  const Sha256Digest root = sha256(m.data(), m.size());
  std::memcpy(buf.data() + 48, root.data(), 32);
  FILE* f = std::fopen(dst.c_str(), "wb");
  REQUIRE(f != nullptr);
  REQUIRE(std::fwrite(buf.data(), 1, buf.size(), f) == buf.size());
  std::fclose(f);
}

// Sets every f32 value of a float tensor to v.
Patch fill_f32(float v) {
  return [v](uint8_t* bytes, const TensorInfo& t) {
    REQUIRE(t.dtype == DType::f32);
    for (uint64_t i = 0; i < t.length; i += 4) std::memcpy(bytes + i, &v, 4);
  };
}

// Sets the first block scale of row `row` of a packed tensor to NaN.
Patch nan_scale(int64_t row) {
  return [row](uint8_t* bytes, const TensorInfo& t) {
    REQUIRE(t.dtype == DType::packed);
    PackedLayout L;
    REQUIRE(packed_layout(t.quant, t.shape[0], t.shape[1], &L) == Status::ok);
    uint8_t* scale = bytes + size_t(row / kTileRows) * L.tile_bytes + L.scales_offset;
    if (L.fmt.scale == ScaleType::f16) {
      const uint16_t h = 0x7e00;
      std::memcpy(scale + size_t(row % kTileRows) * 2, &h, 2);
    } else {
      const uint32_t f = 0x7fc00000u;
      std::memcpy(scale + size_t(row % kTileRows) * 4, &f, 4);
    }
  };
}

std::vector<std::string> expert_gate_names(int layer, int experts) {
  std::vector<std::string> names;
  for (int e = 0; e < experts; ++e)
    names.push_back("model.layers." + std::to_string(layer) + ".mlp.experts." + std::to_string(e) +
                    ".gate_proj.weight");
  return names;
}

}  // namespace

TEST_CASE("logits are bit-identical across threads, chunk sizes and runs") {
  auto m = load_test_model();
  const auto ids = random_ids(*m, 37, 1);
  for (ComputeMode mode : {ComputeMode::exact, ComputeMode::fast}) {
    CAPTURE(int(mode));
    auto ref = make_session(m, mode, 1, 64);
    const auto want = all_logits(*ref, ids);
    for (int threads : {1, 2, 3})
      for (int64_t chunk : {1, 5, 16, 64}) {
        CAPTURE(threads);
        CAPTURE(chunk);
        auto s = make_session(m, mode, threads, chunk);
        CHECK(same_bits(all_logits(*s, ids), want));
      }
    // Feeding the prompt in pieces (a KV cache carried between calls) changes nothing.
    auto s = make_session(m, mode, 2, 8);
    std::vector<int32_t> a(ids.begin(), ids.begin() + 11), b(ids.begin() + 11, ids.end());
    auto la = all_logits(*s, a), lb = all_logits(*s, b);
    la.insert(la.end(), lb.begin(), lb.end());
    CHECK(same_bits(la, want));
  }
}

TEST_CASE("a 16-bit KV cache: bit-identical across threads, chunks and pieces, near float32") {
  auto m = load_test_model();
  const auto ids = random_ids(*m, 37, 1);
  const size_t V = size_t(m->config().vocab_size);
  for (ComputeMode mode : {ComputeMode::exact, ComputeMode::fast}) {
    const auto f32 = all_logits(*make_session(m, mode, 1, 64), ids);
    for (KvType kv : {KvType::f16, KvType::bf16}) {
      CAPTURE(int(mode));
      CAPTURE(int(kv));
      auto ref = make_session(m, mode, 1, 64, 128, kv);
      const auto want = all_logits(*ref, ids);
      // Half the float32 cache's bytes: 128 tokens of kv_bytes_per_token.
      CHECK(ref->kv_cache_bytes() == size_t(128 * kv_bytes_per_token(m->config(), kv)));
      CHECK(2 * ref->kv_cache_bytes() == make_session(m, mode, 1, 64)->kv_cache_bytes());
      // Three (threads, chunk) pairs: each thread count and chunk size once (qemu time).
      for (const auto& tc : {std::pair<int, int64_t>{1, 1}, {2, 5}, {3, 16}}) {
        CAPTURE(tc.first);
        CAPTURE(tc.second);
        CHECK(same_bits(all_logits(*make_session(m, mode, tc.first, tc.second, 128, kv), ids),
                        want));
      }
      auto s = make_session(m, mode, 2, 8, 128, kv);
      std::vector<int32_t> a(ids.begin(), ids.begin() + 11), b(ids.begin() + 11, ids.end());
      auto la = all_logits(*s, a), lb = all_logits(*s, b);
      la.insert(la.end(), lb.begin(), lb.end());
      CHECK(same_bits(la, want));
      // Not float32's bits (the cache really is 16-bit), but close, top-1 mostly the same.
      CHECK_FALSE(same_bits(want, f32));
      double max_abs = 0, max_ref = 0;
      int agree = 0;
      for (size_t t = 0; t < ids.size(); ++t) {
        size_t a1 = 0, b1 = 0;
        for (size_t j = 0; j < V; ++j) {
          const size_t i = t * V + j;
          max_abs = std::max(max_abs, double(std::fabs(want[i] - f32[i])));
          max_ref = std::max(max_ref, double(std::fabs(f32[i])));
          if (want[i] > want[t * V + a1]) a1 = j;
          if (f32[i] > f32[t * V + b1]) b1 = j;
        }
        agree += a1 == b1;
      }
      MESSAGE("kv ", int(kv), " mode ", int(mode), ": max |logit - f32| ", max_abs, " of ",
              max_ref, ", top-1 agrees on ", agree, "/", ids.size());
      CHECK(max_abs < 0.05 * max_ref);
      CHECK(agree >= int(ids.size()) - 3);
    }
  }
  CHECK(kv_bytes_per_token(m->config(), KvType::f16) * 2 ==
        kv_bytes_per_token(m->config(), KvType::f32));
  CHECK(kv_bytes_per_token(m->config(), KvType::bf16) ==
        2 * m->config().num_layers * m->config().num_kv_heads * m->config().head_dim * 2);
  SessionOptions bad;
  bad.kv_cache = KvType(7);
  std::unique_ptr<Session> s;
  std::string msg;
  CHECK(Session::create(m, bad, &s, &msg) == Status::invalid_argument);
  CHECK(msg.find("kv_cache") != std::string::npos);
}

TEST_CASE("truncate and reset rewind the context exactly") {
  auto m = load_test_model();
  const auto ids = random_ids(*m, 30, 2);
  auto s = make_session(m, ComputeMode::exact, 2, 7);
  const auto want = all_logits(*s, ids);
  const size_t V = size_t(s->vocab_size());
  std::string msg;
  REQUIRE(s->truncate(12, &msg) == Status::ok);
  CHECK(s->n_past() == 12);
  std::vector<int32_t> rest(ids.begin() + 12, ids.end());
  const auto again = all_logits(*s, rest);
  CHECK(std::memcmp(again.data(), want.data() + 12 * V, again.size() * 4) == 0);
  // A different continuation, then back: still the original logits.
  REQUIRE(s->truncate(5, &msg) == Status::ok);
  all_logits(*s, random_ids(*m, 9, 3));
  REQUIRE(s->truncate(5, &msg) == Status::ok);
  std::vector<int32_t> tail(ids.begin() + 5, ids.end());
  const auto back = all_logits(*s, tail);
  CHECK(std::memcmp(back.data(), want.data() + 5 * V, back.size() * 4) == 0);
  s->reset();
  CHECK(s->n_past() == 0);
  CHECK(same_bits(all_logits(*s, ids), want));
  CHECK(s->truncate(31, &msg) == Status::invalid_argument);
}

TEST_CASE("a decode step allocates nothing") {
  auto m = load_test_model();
  for (KvType kv : {KvType::f32, KvType::f16, KvType::bf16})
  for (ComputeMode mode : {ComputeMode::exact, ComputeMode::fast}) {
    CAPTURE(int(kv));
    auto s = make_session(m, mode, 2, 16, 128, kv);
    Sampler sampler;
    std::string msg;
    REQUIRE(sampler.init(int32_t(s->vocab_size()), &msg) == Status::ok);
    SamplingParams p;
    p.temperature = 0.8f;
    p.top_k = 20;
    p.top_p = 0.9f;
    p.repetition_penalty = 1.1f;
    p.seed = 5;
    sampler.reset(p);
    const auto ids = random_ids(*m, 9, 4);
    REQUIRE(s->eval(ids.data(), 9, LogitsOut::last, nullptr, &msg) == Status::ok);
    g_allocs = 0;
    g_counting = true;
    Status st = Status::ok;
    for (int i = 0; i < 24 && st == Status::ok; ++i) {
      const int32_t t = sampler.sample(s->last_logits(), s->tokens().data(), size_t(s->n_past()));
      st = s->eval(&t, 1, LogitsOut::last, nullptr, nullptr);
    }
    g_counting = false;
    CHECK(st == Status::ok);
    CHECK(g_allocs.load() == 0);
    CHECK(s->n_past() == 33);
  }
}

TEST_CASE("lazy mode: the first use of every expert allocates nothing") {
  const char* path = std::getenv("FWA_TEST_MODEL");
  REQUIRE(path != nullptr);
  for (ComputeMode mode : {ComputeMode::exact, ComputeMode::fast}) {
    std::shared_ptr<Model> m;
    std::string msg;
    ModelLoadOptions o;
    o.lazy = true;
    REQUIRE_MESSAGE(Model::load(path, o, &m, &msg) == Status::ok, msg);
    auto s = make_session(m, mode, 2, 16, 160);
    Sampler sampler;
    REQUIRE(sampler.init(int32_t(s->vocab_size()), &msg) == Status::ok);
    SamplingParams p;
    p.temperature = 1.0f;
    p.seed = 9;
    sampler.reset(p);
    const int32_t first = 3;
    REQUIRE(s->eval(&first, 1, LogitsOut::last, nullptr, &msg) == Status::ok);
    size_t verified_before = 0;
    for (size_t b = 0; b < m->artifact().expert_blocks().size(); ++b)
      verified_before += m->artifact().block_verified(b);
    g_allocs = 0;
    g_counting = true;
    Status st = Status::ok;
    for (int i = 0; i < 100 && st == Status::ok; ++i) {
      const int32_t t = sampler.sample(s->last_logits(), s->tokens().data(), size_t(s->n_past()));
      st = s->eval(&t, 1, LogitsOut::last, nullptr, nullptr);
    }
    g_counting = false;
    CHECK(st == Status::ok);
    CHECK(g_allocs.load() == 0);
    size_t verified_after = 0;
    for (size_t b = 0; b < m->artifact().expert_blocks().size(); ++b)
      verified_after += m->artifact().block_verified(b);
    CHECK(verified_after > verified_before);  // experts were verified on first use meanwhile
  }
}

TEST_CASE("bad input is refused and leaves the session unchanged") {
  auto m = load_test_model();
  auto s = make_session(m, ComputeMode::fast, 1, 8, 16);
  const auto ids = random_ids(*m, 10, 5);
  std::string msg;
  REQUIRE(s->eval(ids.data(), 10, LogitsOut::last, nullptr, &msg) == Status::ok);
  std::vector<float> before(s->last_logits(), s->last_logits() + s->vocab_size());

  const int32_t bad[2] = {3, int32_t(m->config().vocab_size)};
  CHECK(s->eval(bad, 2, LogitsOut::last, nullptr, &msg) == Status::invalid_argument);
  CHECK(msg.find("token id " + std::to_string(m->config().vocab_size)) != std::string::npos);
  const int32_t neg = -1;
  CHECK(s->eval(&neg, 1, LogitsOut::last, nullptr, &msg) == Status::invalid_argument);
  const auto long_prompt = random_ids(*m, 7, 6);
  CHECK(s->eval(long_prompt.data(), 7, LogitsOut::last, nullptr, &msg) ==
        Status::invalid_argument);
  CHECK(msg.find("exceed the context of 16 tokens") != std::string::npos);
  CHECK(s->n_past() == 10);

  // The context still continues exactly as if nothing had happened.
  auto fresh = make_session(m, ComputeMode::fast, 1, 8, 16);
  const int32_t next = 7;
  REQUIRE(s->truncate(9, &msg) == Status::ok);
  REQUIRE(s->eval(&ids[9], 1, LogitsOut::last, nullptr, &msg) == Status::ok);
  CHECK(std::memcmp(before.data(), s->last_logits(), before.size() * 4) == 0);
  REQUIRE(s->eval(&next, 1, LogitsOut::last, nullptr, &msg) == Status::ok);
  std::vector<int32_t> all(ids);
  all.push_back(next);
  REQUIRE(fresh->eval(all.data(), 11, LogitsOut::last, nullptr, &msg) == Status::ok);
  CHECK(std::memcmp(fresh->last_logits(), s->last_logits(), before.size() * 4) == 0);

  SessionOptions o;
  o.max_context = m->config().max_position_embeddings + 1;
  std::unique_ptr<Session> none;
  CHECK(Session::create(m, o, &none, &msg) == Status::invalid_argument);
  o.max_context = 8;
  o.n_threads = 0;
  CHECK(Session::create(m, o, &none, &msg) == Status::invalid_argument);
}

TEST_CASE("generation: prefix cache, stop ids, max tokens, seeded sampling") {
  auto m = load_test_model();
  auto s = make_session(m, ComputeMode::exact, 1, 64);
  const auto ids = random_ids(*m, 12, 7);
  GenerateParams p;
  p.max_tokens = 10;
  p.sampling.temperature = 0.9f;
  p.sampling.top_p = 0.95f;
  p.sampling.seed = 42;
  auto run = [&](Session& ses, const std::vector<int32_t>& pr, GenerateParams gp,
                 GenerationStats* stats) {
    Generation g;
    std::string msg, piece;
    REQUIRE_MESSAGE(g.start(&ses, pr.data(), int64_t(pr.size()), gp, &msg) == Status::ok, msg);
    bool done = false;
    int32_t tok;
    while (!done) REQUIRE(g.next(&tok, &piece, &done, &msg) == Status::ok);
    if (stats) *stats = g.stats();
    return std::make_pair(g.token_ids(), g.stop_reason());
  };
  GenerationStats st;
  const auto a = run(*s, ids, p, &st);
  CHECK(a.first.size() == 10);
  CHECK(a.second == StopReason::max_tokens);
  CHECK(st.cached_tokens == 0);
  CHECK(st.generated_tokens == 10);
  // Same prompt again on the same session: the whole prompt but its last token is cached, and
  // the seeded sampler draws the same tokens.
  const auto b = run(*s, ids, p, &st);
  CHECK(st.cached_tokens == 11);
  CHECK(b.first == a.first);
  auto fresh = make_session(m, ComputeMode::exact, 2, 3);
  CHECK(run(*fresh, ids, p, nullptr).first == a.first);
  GenerateParams q = p;
  q.sampling.seed = 43;
  q.max_tokens = 40;
  p.max_tokens = 40;
  CHECK(run(*fresh, ids, q, nullptr).first != run(*fresh, ids, p, nullptr).first);
  // A stop id ends generation before that token.
  GenerateParams r = p;
  r.stop_ids = {a.first[3]};
  const auto c = run(*fresh, ids, r, nullptr);
  CHECK(c.second == StopReason::stop_id);
  CHECK(c.first.size() <= 3);
}

TEST_CASE("generation with a C callback: every token reported, cancel stops") {
  auto m = load_test_model();
  auto s = make_session(m, ComputeMode::fast, 1, 16);
  const auto ids = random_ids(*m, 6, 8);
  GenerateParams p;
  p.max_tokens = 12;
  struct Seen {
    std::vector<int32_t> ids;
    int stop_after;
  } seen{{}, 1000};
  auto cb = [](void* user, int32_t token, const char*, size_t) {
    auto* v = static_cast<Seen*>(user);
    if (token >= 0) v->ids.push_back(token);
    return int(v->ids.size()) < v->stop_after;
  };
  Generation g;
  std::string msg;
  REQUIRE(generate(s.get(), ids.data(), 6, p, cb, &seen, &g, &msg) == Status::ok);
  CHECK(seen.ids == g.token_ids());
  CHECK(g.stop_reason() == StopReason::max_tokens);
  CHECK(s->n_past() == 6 + 12);
  seen = Seen{{}, 5};
  Generation g2;
  REQUIRE(generate(s.get(), ids.data(), 6, p, cb, &seen, &g2, &msg) == Status::ok);
  CHECK(g2.stop_reason() == StopReason::cancelled);
  CHECK(seen.ids.size() == 5);
  CHECK(g2.token_ids().size() == 5);
  CHECK(g2.stats().generated_tokens == 5);
  CHECK(s->n_past() == 6 + 5);
}

TEST_CASE("a memory budget smaller than the experts gives the same logits") {
  auto m = load_test_model();
  const auto ids = random_ids(*m, 23, 11);
  auto base = make_session(m, ComputeMode::fast, 2, 8);
  const auto want = all_logits(*base, ids);

  auto small = load_test_model();  // its own residency
  const ExpertBlockInfo& b0 = small->artifact().expert_blocks()[0];
  const uint64_t budget = 3 * b0.length;  // three experts: less than one layer's top-k share
  small->set_expert_budget(budget, false);
  auto s = make_session(small, ComputeMode::fast, 2, 8);
  CHECK(same_bits(all_logits(*s, ids), want));
  ResidencyStats st = small->residency_stats();
  CHECK(st.budget_bytes == budget);
  CHECK(st.misses > 0);
  CHECK(st.releases > 0);
  CHECK(st.resident_bytes <= budget);
  // Released experts were verified again on their return: more misses than distinct blocks.
  CHECK(st.misses > uint64_t(small->artifact().expert_blocks().size()) / 4);
  // Lifting the budget keeps the resident ones; the next pass hits.
  small->set_expert_budget(0, false);
  s->reset();
  CHECK(same_bits(all_logits(*s, ids), want));
}

TEST_CASE("an expert released under a budget is verified again: tampering on disk is caught") {
  const std::string path = copy_of_test_model("fwa-residency-tamper.fwa");
  std::shared_ptr<Model> m = fwa_test::load_model(path);
  m->set_expert_budget(1, false);  // every expert is released after each chunk
  auto s = make_session(m, ComputeMode::exact, 1, 4);
  const auto ids = random_ids(*m, 6, 5);
  all_logits(*s, ids);
  // Flip one byte inside every expert block of layer 0 on disk.
  const Artifact& a = m->artifact();
  FILE* f = std::fopen(path.c_str(), "r+b");
  REQUIRE(f != nullptr);
  for (const ExpertBlockInfo& b : a.expert_blocks()) {
    if (b.layer != 0) continue;
    const long at = long(a.data_offset() + b.offset + 7);
    std::fseek(f, at, SEEK_SET);
    const int c = std::fgetc(f);
    std::fseek(f, at, SEEK_SET);
    std::fputc(c ^ 0x20, f);
  }
  std::fclose(f);
  const int64_t before = s->n_past();
  const int32_t t = ids[0];
  std::string msg;
  const Status st = s->eval(&t, 1, LogitsOut::last, nullptr, &msg);
  CHECK(st == Status::digest_mismatch);
  CHECK(msg.find("expert") != std::string::npos);
  CHECK(s->n_past() == before);
  std::remove(path.c_str());
}

TEST_CASE("the latency policy: the cost model picks the first cores; logits never change") {
  auto m = load_test_model();
  const auto ids = random_ids(*m, 40, 21);
  auto ref = make_session(m, ComputeMode::fast, 1, 8);
  const auto want = all_logits(*ref, ids);

  auto s = make_session(m, ComputeMode::fast, 3, 8);
  CHECK(s->active_threads() == 3);
  CHECK(s->decode_bytes_per_token() > 0);
  s->set_policy(0, 1e9);  // any core count meets it: the cost model picks one core
  CHECK(s->active_threads() == 1);
  CHECK(s->max_active_threads() == 3);
  s->set_policy(2, 1e-9);  // none does: the cap
  CHECK(s->active_threads() == 2);

  // The measured steps then decide (tests/cpp/test_core_policy.cpp): a window of misses
  // adds a core to the session's pool.
  s->set_policy(3, 10.0);
  const int start = s->active_threads();
  for (int i = 0; i < CorePolicy::kWindow; ++i) s->account_decode_step(20.0, 0.0);
  CHECK(s->active_threads() == std::min(3, start + 1));

  // Whatever the decisions, the logits are those of one thread.
  s->reset();
  std::vector<float> got(ids.size() * size_t(s->vocab_size()));
  std::string msg;
  for (size_t i = 0; i < ids.size(); ++i) {
    s->set_policy(int(i % 3) + 1, 0.0);
    REQUIRE(s->eval(&ids[i], 1, LogitsOut::all, &got[i * size_t(s->vocab_size())], &msg) ==
            Status::ok);
  }
  CHECK(same_bits(got, want));
}

TEST_CASE("non-finite weights are refused at open, naming the tensor") {
  const std::string path = temp_path("fwa-nan-norm.fwa");
  std::shared_ptr<Model> m;
  std::string msg;
  // Resealed but unchanged: the helper itself gives a loadable artifact.
  const std::string norm = "model.layers.0.input_layernorm.weight";
  resealed_copy(path, {norm}, [](uint8_t*, const TensorInfo&) {});
  REQUIRE_MESSAGE(Model::load(path, ModelLoadOptions(), &m, &msg) == Status::ok, msg);
  for (float bad : {std::nanf(""), INFINITY, -INFINITY}) {
    resealed_copy(path, {norm}, [bad](uint8_t* bytes, const TensorInfo&) {
      std::memcpy(bytes + 4 * 5, &bad, 4);
    });
    CHECK(Model::load(path, ModelLoadOptions(), &m, &msg) == Status::non_finite);
    CHECK(msg.find(norm) != std::string::npos);
    CHECK(msg.find("column 5") != std::string::npos);
  }
  // A float matrix (the embedding), and a quantization scale of a packed layer.
  resealed_copy(path, {"model.embed_tokens.weight"}, [](uint8_t* bytes, const TensorInfo&) {
    const float nan = std::nanf("");
    std::memcpy(bytes + 4 * (3 * 128 + 7), &nan, 4);
  });
  CHECK(Model::load(path, ModelLoadOptions(), &m, &msg) == Status::non_finite);
  CHECK(msg.find("model.embed_tokens.weight holds a non-finite value (NaN or Inf) at row 3, "
                 "column 7") != std::string::npos);
  resealed_copy(path, {"model.layers.0.self_attn.k_proj.weight"}, nan_scale(17));
  CHECK(Model::load(path, ModelLoadOptions(), &m, &msg) == Status::non_finite);
  CHECK(msg.find("k_proj.weight holds a non-finite value (NaN or Inf) in the scale of row 17, "
                 "block 0") != std::string::npos);
  std::remove(path.c_str());
}

TEST_CASE("a NaN scale in an expert: refused at open, or at its first use in lazy mode") {
  const std::string path = temp_path("fwa-nan-expert.fwa");
  resealed_copy(path, expert_gate_names(0, 16), nan_scale(2));
  std::shared_ptr<Model> m;
  std::string msg;
  CHECK(Model::load(path, ModelLoadOptions(), &m, &msg) == Status::non_finite);
  CHECK(msg.find("mlp.experts.0.gate_proj.weight") != std::string::npos);
  ModelLoadOptions lazy;
  lazy.lazy = true;
  REQUIRE_MESSAGE(Model::load(path, lazy, &m, &msg) == Status::ok, msg);
  for (ComputeMode mode : {ComputeMode::exact, ComputeMode::fast}) {
    auto s = make_session(m, mode, 1, 4);
    const auto ids = random_ids(*m, 3, 8);
    CHECK(s->eval(ids.data(), 3, LogitsOut::last, nullptr, &msg) == Status::non_finite);
    CHECK(msg.find("gate_proj.weight holds a non-finite value (NaN or Inf) in the scale of row "
                   "2, block 0") != std::string::npos);
    CHECK(s->n_past() == 0);
    CHECK(m->residency_stats().resident_bytes == 0);
  }
  std::remove(path.c_str());
}

TEST_CASE("finite weights that overflow: non_finite in exact mode as in fast mode") {
  const std::string path = temp_path("fwa-overflow.fwa");
  // Huge but finite norm weights: the hidden states (input norm of layer 0) or the logits
  // (final norm) overflow float32.
  for (const char* name : {"model.layers.0.input_layernorm.weight", "model.norm.weight"}) {
    CAPTURE(name);
    resealed_copy(path, {name}, fill_f32(3e38f));
    std::shared_ptr<Model> m;
    std::string msg;
    REQUIRE_MESSAGE(Model::load(path, ModelLoadOptions(), &m, &msg) == Status::ok, msg);
    for (ComputeMode mode : {ComputeMode::exact, ComputeMode::fast}) {
      CAPTURE(int(mode));
      auto s = make_session(m, mode, 2, 4);
      const auto ids = random_ids(*m, 6, 3);
      std::vector<float> logits(6 * size_t(s->vocab_size()));
      CHECK(s->eval(ids.data(), 6, LogitsOut::all, logits.data(), &msg) == Status::non_finite);
      CHECK(s->n_past() == 0);
      CHECK(s->eval(ids.data(), 1, LogitsOut::last, nullptr, &msg) == Status::non_finite);
      CHECK(!s->has_last_logits());
      // Generation reports it too, instead of emitting a token.
      Generation g;
      GenerateParams p;
      p.max_tokens = 4;
      CHECK(g.start(s.get(), ids.data(), 6, p, &msg) == Status::non_finite);
    }
  }
  std::remove(path.c_str());
}

TEST_CASE("interleaved generations on one session: the earlier one is superseded") {
  auto m = load_test_model();
  auto s = make_session(m, ComputeMode::exact, 1, 8);
  const auto pa = random_ids(*m, 5, 31), pb = random_ids(*m, 7, 32);
  GenerateParams p;
  p.max_tokens = 8;
  std::string msg, piece;
  int32_t tok;
  bool done = false;
  Generation a, b;
  REQUIRE(a.start(s.get(), pa.data(), 5, p, &msg) == Status::ok);
  REQUIRE(a.next(&tok, &piece, &done, &msg) == Status::ok);
  CHECK(!a.superseded());
  REQUIRE(b.start(s.get(), pb.data(), 7, p, &msg) == Status::ok);
  CHECK(a.superseded());
  CHECK(a.next(&tok, &piece, &done, &msg) == Status::invalid_argument);
  CHECK(msg.find("superseded") != std::string::npos);
  CHECK(a.next(&tok, &piece, &done, &msg) == Status::invalid_argument);  // for good
  // b is unaffected and continues from its own prompt: the same tokens as alone.
  while (!done) REQUIRE(b.next(&tok, &piece, &done, &msg) == Status::ok);
  auto ref_s = make_session(m, ComputeMode::exact, 1, 8);
  Generation ref;
  REQUIRE(generate(ref_s.get(), pb.data(), 7, p, nullptr, nullptr, &ref, &msg) == Status::ok);
  CHECK(b.token_ids() == ref.token_ids());
  CHECK(!b.superseded());  // finished: nothing left to refuse

  // Any call that changes the context supersedes a generation under way.
  for (int how = 0; how < 3; ++how) {
    Generation g;
    done = false;
    REQUIRE(g.start(s.get(), pa.data(), 5, p, &msg) == Status::ok);
    REQUIRE(g.next(&tok, &piece, &done, &msg) == Status::ok);
    if (how == 0) REQUIRE(s->eval(pb.data(), 1, LogitsOut::last, nullptr, &msg) == Status::ok);
    if (how == 1) REQUIRE(s->truncate(s->n_past() - 1, &msg) == Status::ok);
    if (how == 2) s->reset();
    CHECK(g.next(&tok, &piece, &done, &msg) == Status::invalid_argument);
  }
  // A refused call changes nothing, so it supersedes nothing.
  Generation g;
  REQUIRE(g.start(s.get(), pa.data(), 5, p, &msg) == Status::ok);
  const int32_t bad = int32_t(s->vocab_size());
  CHECK(s->eval(&bad, 1, LogitsOut::last, nullptr, &msg) == Status::invalid_argument);
  CHECK(s->truncate(1000, &msg) == Status::invalid_argument);
  CHECK(g.next(&tok, &piece, &done, &msg) == Status::ok);

  // The callback API: a callback that uses the session ends the generation with the error.
  struct Ctx {
    Session* s;
    int32_t id;
  } ctx{s.get(), pb[0]};
  auto cb = [](void* user, int32_t, const char*, size_t) {
    Ctx& c = *static_cast<Ctx*>(user);
    c.s->eval(&c.id, 1, LogitsOut::last, nullptr, nullptr);
    return true;
  };
  Generation h;
  CHECK(generate(s.get(), pa.data(), 5, p, cb, &ctx, &h, &msg) == Status::invalid_argument);
  CHECK(msg.find("superseded") != std::string::npos);
}

TEST_CASE("the MoE block refuses a chunk larger than its scratch plan instead of overflowing") {
  auto m = load_test_model();
  const ModelConfig& c = m->config();
  int64_t moe_layer = -1;
  for (int64_t l = 0; l < c.num_layers && moe_layer < 0; ++l)
    if (m->layer(l).moe) moe_layer = l;
  REQUIRE(moe_layer >= 0);
  // The block's persistent buffers and a scratch planned for 2 rows.
  MoeBlock moe;
  BufferPlan persistent;
  moe.declare(*m, 1, 2, ComputeMode::exact, &persistent);
  std::unique_ptr<uint8_t[]> storage;
  std::string msg;
  REQUIRE(persistent.allocate(&storage, &msg) == Status::ok);
  BufferPlan scratch_plan;
  moe.declare_scratch(2, &scratch_plan);
  const size_t bytes = scratch_plan.bytes();
  // Guard bytes after the scratch: nothing may be written there.
  std::vector<uint8_t> scratch(bytes + 64 + 4096, 0xA5);
  uint8_t* base = scratch.data() + (64 - reinterpret_cast<uintptr_t>(scratch.data()) % 64) % 64;
  ThreadPool pool(1);
  uint64_t read = 0;
  BlockContext ctx;
  ctx.pool = &pool;
  ctx.weight_bytes_read = &read;
  const int64_t H = c.hidden_size;
  std::vector<float> xn(size_t(8 * H), 0.25f), out(size_t(8 * H), 0.0f);
  for (int64_t rows : {1, 2}) {
    CHECK(moe.run(ctx, moe_layer, xn.data(), rows, out.data(), base, bytes, &msg) == Status::ok);
  }
  CHECK(moe.run(ctx, moe_layer, xn.data(), 3, out.data(), base, bytes, &msg) ==
        Status::buffer_too_small);
  CHECK(msg.find("does not fit") != std::string::npos);
  for (size_t i = size_t(base - scratch.data()) + bytes; i < scratch.size(); ++i)
    REQUIRE(scratch[i] == 0xA5);
}
