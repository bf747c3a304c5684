// SPDX-License-Identifier: Apache-2.0
// Prints the SHA-256 of the logits of fixed prompts on a model, in both compute modes (with the
// float32 KV cache, then with the f16 and bf16 ones), and of the ids of a seeded sampled
// generation: the cross-ISA check (tests/cross/run_qemu_matrix.sh)
// runs it natively and under qemu-aarch64 for every CPU model and requires identical lines.
// Usage: fwa_logits_digest MODEL.fwa
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "artifact/sha256.h"
#include "model/generate.h"
#include "model/model.h"
#include "model/session.h"

using namespace fwa;

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s MODEL.fwa\n", argv[0]);
    return 2;
  }
  std::shared_ptr<Model> m;
  std::string msg;
  if (Model::load(argv[1], ModelLoadOptions(), &m, &msg) != Status::ok) {
    std::fprintf(stderr, "load: %s\n", msg.c_str());
    return 1;
  }
  std::vector<int32_t> ids(48);
  for (size_t i = 0; i < ids.size(); ++i)
    ids[i] = int32_t((i * 37 + 11) % size_t(m->config().vocab_size));
  for (ComputeMode mode : {ComputeMode::exact, ComputeMode::fast}) {
    SessionOptions o;
    o.mode = mode;
    o.n_threads = 2;
    o.prefill_chunk = 16;
    o.max_context = 128;
    std::unique_ptr<Session> s;
    if (Session::create(m, o, &s, &msg) != Status::ok) {
      std::fprintf(stderr, "session: %s\n", msg.c_str());
      return 1;
    }
    std::vector<float> logits(ids.size() * size_t(m->config().vocab_size));
    if (s->eval(ids.data(), int64_t(ids.size()), LogitsOut::all, logits.data(), &msg) !=
        Status::ok) {
      std::fprintf(stderr, "eval: %s\n", msg.c_str());
      return 1;
    }
    const char* name = mode == ComputeMode::exact ? "exact" : "fast";
    std::printf("logits %s sha256:%s\n", name,
                digest_hex(sha256(logits.data(), logits.size() * 4)).c_str());
    // Two samplers: top-k + top-p + repetition penalty, and top-p over the whole vocabulary.
    for (int32_t top_k : {40, 0}) {
      s->reset();
      GenerateParams p;
      p.max_tokens = 24;
      p.sampling.temperature = 0.8f;
      p.sampling.top_k = top_k;
      p.sampling.top_p = 0.9f;
      p.sampling.repetition_penalty = top_k ? 1.05f : 1.0f;
      p.sampling.seed = 2026;
      Generation g;
      if (g.start(s.get(), ids.data(), 8, p, &msg) != Status::ok) {
        std::fprintf(stderr, "generate: %s\n", msg.c_str());
        return 1;
      }
      bool done = false;
      int32_t tok;
      std::string piece;
      while (!done)
        if (g.next(&tok, &piece, &done, &msg) != Status::ok) {
          std::fprintf(stderr, "generate: %s\n", msg.c_str());
          return 1;
        }
      std::printf("sampled %s top_k=%d", name, top_k);
      for (int32_t t : g.token_ids()) std::printf(" %d", t);
      std::printf("\n");
    }
  }
  // The 16-bit KV caches (kernels/half.h): their own digests, just as ISA-independent (their
  // own prefix: the "logits " lines are those `fwassist logits-digest` reproduces).
  for (ComputeMode mode : {ComputeMode::exact, ComputeMode::fast})
    for (KvType kv : {KvType::f16, KvType::bf16}) {
      SessionOptions o;
      o.mode = mode;
      o.n_threads = 2;
      o.prefill_chunk = 16;
      o.max_context = 128;
      o.kv_cache = kv;
      std::unique_ptr<Session> s;
      std::vector<float> logits(ids.size() * size_t(m->config().vocab_size));
      if (Session::create(m, o, &s, &msg) != Status::ok ||
          s->eval(ids.data(), int64_t(ids.size()), LogitsOut::all, logits.data(), &msg) !=
              Status::ok) {
        std::fprintf(stderr, "kv cache: %s\n", msg.c_str());
        return 1;
      }
      std::printf("kv-cache %s %s logits sha256:%s\n", kv == KvType::f16 ? "f16" : "bf16",
                  mode == ComputeMode::exact ? "exact" : "fast",
                  digest_hex(sha256(logits.data(), logits.size() * 4)).c_str());
    }
  return 0;
}
