// SPDX-License-Identifier: Apache-2.0
// The artifact reader (docs/artifact-format.md): SHA-256 on every backend this CPU runs (NIST
// FIPS 180-4 vectors, streaming == one-shot, two-stream == one-stream, the batch verifier), the
// strict manifest JSON parser, and the verifier on small artifacts built here from the spec:
// every header field, every single-bit flip of header and manifest, truncations, appended
// bytes, table errors, padding, digests, pins and lazy experts.
//
// FWA_ARTIFACT_BENCH_MB=<n> additionally times SHA-256 per backend and a full verify of an
// n-MB artifact (skipped otherwise).
#include <doctest/doctest.h>

#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "artifact/json.h"
#include "artifact/reader.h"
#include "artifact/sha256.h"
#include "quant/format.h"

using namespace fwa;

namespace {

// ---------------------------------------------------------------------------------------------
// SHA-256 helpers

std::vector<const Sha256Backend*> backends() {
  std::vector<const Sha256Backend*> out;
  for (const char* n : {"shani", "armv8", "scalar"}) {
    if (const Sha256Backend* b = sha256_find_backend(n)) out.push_back(b);
  }
  return out;
}

std::string hex_of(const std::string& s, const Sha256Backend& be) {
  return digest_hex(sha256(s.data(), s.size(), be));
}

std::vector<uint8_t> random_bytes(size_t n, std::mt19937_64& rng) {
  std::vector<uint8_t> v(n);
  for (auto& b : v) b = uint8_t(rng());
  return v;
}

// ---------------------------------------------------------------------------------------------
// A canonical JSON writer for building manifests (keys sorted by byte value, Python's escapes).

struct J {
  enum Kind { Null, Bool, Int, Str, Arr, Obj } kind = Null;
  bool b = false;
  int64_t i = 0;
  std::string s;
  std::vector<J> a;
  std::map<std::string, J> o;  // std::string orders by unsigned byte value

  J() = default;
  J(bool v) : kind(Bool), b(v) {}
  J(int v) : kind(Int), i(v) {}
  J(int64_t v) : kind(Int), i(v) {}
  J(uint64_t v) : kind(Int), i(int64_t(v)) {}
  J(const char* v) : kind(Str), s(v) {}
  J(std::string v) : kind(Str), s(std::move(v)) {}
  static J arr(std::vector<J> v = {}) {
    J j;
    j.kind = Arr;
    j.a = std::move(v);
    return j;
  }
  static J obj() {
    J j;
    j.kind = Obj;
    return j;
  }
  J& operator[](const std::string& k) {
    kind = Obj;
    return o[k];
  }
};

void dump_string(const std::string& s, std::string* out) {
  *out += '"';
  for (unsigned char c : s) {
    switch (c) {
      case '"': *out += "\\\""; break;
      case '\\': *out += "\\\\"; break;
      case '\n': *out += "\\n"; break;
      case '\r': *out += "\\r"; break;
      case '\t': *out += "\\t"; break;
      case '\b': *out += "\\b"; break;
      case '\f': *out += "\\f"; break;
      default:
        if (c < 0x20) {
          char b[8];
          std::snprintf(b, sizeof b, "\\u%04x", c);
          *out += b;
        } else {
          *out += char(c);
        }
    }
  }
  *out += '"';
}

void dump(const J& j, std::string* out) {
  switch (j.kind) {
    case J::Null: *out += "null"; break;
    case J::Bool: *out += j.b ? "true" : "false"; break;
    case J::Int: *out += std::to_string(j.i); break;
    case J::Str: dump_string(j.s, out); break;
    case J::Arr:
      *out += '[';
      for (size_t k = 0; k < j.a.size(); ++k) {
        if (k) *out += ',';
        dump(j.a[k], out);
      }
      *out += ']';
      break;
    case J::Obj: {
      *out += '{';
      bool first = true;
      for (const auto& kv : j.o) {
        if (!first) *out += ',';
        first = false;
        dump_string(kv.first, out);
        *out += ':';
        dump(kv.second, out);
      }
      *out += '}';
      break;
    }
  }
}

std::string dump(const J& j) {
  std::string s;
  dump(j, &s);
  return s;
}

std::string sha_hex(const std::string& s) { return digest_hex(sha256(s.data(), s.size())); }
std::string sha_hex(const uint8_t* p, size_t n) { return digest_hex(sha256(p, n)); }

// ---------------------------------------------------------------------------------------------
// Artifact builder following docs/artifact-format.md.

struct TSpec {
  std::string name, role;
  int64_t layer = -1, expert = -1;
  std::string dtype;  // packed, f32, f16, bf16
  std::vector<int64_t> shape;
  QuantFormat q;
};

uint64_t roundup(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

uint64_t byte_size(const TSpec& t) {
  if (t.dtype == "packed") {
    PackedLayout L;
    REQUIRE(packed_layout(t.q, t.shape[0], t.shape[1], &L) == Status::ok);
    return L.total_bytes;
  }
  uint64_t n = t.dtype == "f32" ? 4 : 2;
  for (int64_t d : t.shape) n *= uint64_t(d);
  return n;
}

struct Built {
  J manifest;
  std::vector<uint8_t> data;  // the data region
  std::vector<uint8_t> file;
};

void put_le(std::vector<uint8_t>& f, size_t at, uint64_t v, int bytes) {
  for (int k = 0; k < bytes; ++k) f[at + size_t(k)] = uint8_t(v >> (8 * k));
}

// Serialises manifest + data into a file; recomputes `sections` and `data_length` first unless
// told not to (tests that corrupt them).
// The header's minor version is 1 for a manifest with "generation" (format 1.1), else 0,
// unless `minor` says otherwise.
std::vector<uint8_t> assemble(J& m, const std::vector<uint8_t>& data, bool fix_sections = true,
                              int minor = -1) {
  const bool v11 = m.o.count("generation") != 0;
  if (minor < 0) minor = v11 ? 1 : 0;
  if (fix_sections) {
    J secs = J::obj();
    for (const char* k : {"config", "tokenizer", "tensors", "expert_blocks", "provenance",
                          "model_card", "sbom", "evidence", "generation"}) {
      if (m.o.count(k)) secs[k] = J(sha_hex(dump(m.o[k])));
    }
    m["sections"] = secs;
  }
  const std::string ms = dump(m);
  const uint64_t data_offset = roundup(128 + ms.size(), 4096);
  std::vector<uint8_t> f(data_offset + data.size(), 0);
  std::memcpy(f.data(), kArtifactMagic, 8);
  put_le(f, 8, 1, 2);
  put_le(f, 10, uint64_t(minor), 2);
  put_le(f, 16, ms.size(), 8);
  put_le(f, 24, data_offset, 8);
  put_le(f, 32, data.size(), 8);
  put_le(f, 40, data_offset + data.size(), 8);
  const Sha256Digest d = sha256(ms.data(), ms.size());
  std::memcpy(f.data() + 48, d.data(), 32);
  std::memcpy(f.data() + 128, ms.data(), ms.size());
  if (!data.empty()) std::memcpy(f.data() + data_offset, data.data(), data.size());
  return f;
}

// Lays the tensors out in the given order: consecutive tensors of one (layer, expert) share a
// 4096-aligned expert block; other tensors are 64-aligned. Contents are random bytes.
Built build(const std::vector<TSpec>& specs, uint64_t seed = 1) {
  std::mt19937_64 rng(seed);
  Built b;
  J tensors = J::arr(), blocks = J::arr();
  uint64_t pos = 0;
  struct Place {
    uint64_t off, len;
  };
  std::vector<Place> places;
  size_t i = 0;
  while (i < specs.size()) {
    if (specs[i].expert < 0) {
      pos = roundup(pos, 64);
      places.push_back({pos, byte_size(specs[i])});
      pos += places.back().len;
      ++i;
      continue;
    }
    const uint64_t bstart = roundup(pos, 4096);
    pos = bstart;
    size_t j = i;
    while (j < specs.size() && specs[j].layer == specs[i].layer &&
           specs[j].expert == specs[i].expert) {
      pos = roundup(pos, 64);
      places.push_back({pos, byte_size(specs[j])});
      pos += places.back().len;
      ++j;
    }
    pos = roundup(pos, 4096);
    J blk = J::obj();
    blk["layer"] = J(specs[i].layer);
    blk["expert"] = J(specs[i].expert);
    blk["offset"] = J(bstart);
    blk["length"] = J(pos - bstart);
    blk["sha256"] = J("");  // filled below
    blocks.a.push_back(blk);
    i = j;
  }
  b.data.assign(roundup(pos, 64), 0);
  for (size_t k = 0; k < specs.size(); ++k) {
    for (uint64_t x = 0; x < places[k].len; ++x) b.data[places[k].off + x] = uint8_t(rng());
    const TSpec& t = specs[k];
    J e = J::obj();
    e["name"] = J(t.name);
    e["role"] = J(t.role);
    e["layer"] = t.layer < 0 ? J() : J(t.layer);
    e["expert"] = t.expert < 0 ? J() : J(t.expert);
    e["dtype"] = J(t.dtype);
    J shape = J::arr();
    for (int64_t d : t.shape) shape.a.push_back(J(d));
    e["shape"] = shape;
    if (t.dtype == "packed") {
      J q = J::obj();
      q["bits"] = J(t.q.bits);
      q["block"] = J(t.q.block);
      q["zero_points"] = J(t.q.has_zero);
      q["scale"] = J(t.q.scale == ScaleType::f16 ? "f16" : "f32");
      e["quant"] = q;
    } else {
      e["quant"] = J();
    }
    e["offset"] = J(places[k].off);
    e["length"] = J(places[k].len);
    e["sha256"] = J(sha_hex(b.data.data() + places[k].off, places[k].len));
    tensors.a.push_back(e);
  }
  for (J& blk : blocks.a) {
    blk["sha256"] =
        J(sha_hex(b.data.data() + blk.o["offset"].i, size_t(blk.o["length"].i)));
  }
  J& m = b.manifest;
  m["format"] = J("fwassist.artifact");
  m["format_version"] = J::arr({J(1), J(0)});
  m["data_length"] = J(uint64_t(b.data.size()));
  J req = J::obj();
  req["endianness"] = J("little");
  req["kernel_layout"] = J(1);
  m["requires"] = req;
  J cfg = J::obj();
  cfg["architecture"] = J("qwen3_moe");
  cfg["hidden_size"] = J(16);
  cfg["num_experts"] = J(4);
  cfg["rms_norm_eps"] = J("1e-06");
  cfg["rope_theta"] = J("1000000.0");
  cfg["tie_word_embeddings"] = J(false);
  cfg["mlp_only_layers"] = J::arr();
  m["config"] = cfg;
  m["tokenizer"] = J();
  m["tensors"] = tensors;
  m["expert_blocks"] = blocks;
  J prov = J::obj();
  prov["exporter"] = J("test_artifact.cpp");
  prov["source_sha256"] = J(std::string(64, '0'));
  m["provenance"] = prov;
  J card = J::obj();
  card["known_limitations"] = J::arr({J("test model, \"not\" for use\n")});
  m["model_card"] = card;
  J sbom = J::obj();
  sbom["bomFormat"] = J("CycloneDX");
  sbom["specVersion"] = J("1.6");
  m["sbom"] = sbom;
  J ev = J::obj();
  ev["note"] = J("caf\xc3\xa9 \xe2\x9c\x93");  // non-ASCII text
  m["evidence"] = ev;
  b.file = assemble(m, b.data);
  return b;
}

QuantFormat qf(int bits, int block, bool zp, ScaleType s) { return QuantFormat{bits, block, zp, s}; }

// A small Qwen3-MoE-like model: embedding, norms, a router, four experts of layer 0, an lm_head.
std::vector<TSpec> small_model() {
  std::vector<TSpec> v;
  v.push_back({"model.embed_tokens.weight", "embed", -1, -1, "f32", {8, 16}, {}});
  v.push_back({"model.layers.0.input_layernorm.weight", "input_norm", 0, -1, "f16", {16}, {}});
  v.push_back({"model.layers.0.mlp.gate.weight", "router", 0, -1, "bf16", {4, 16}, {}});
  v.push_back({"model.layers.0.self_attn.q_proj.weight", "q_proj", 0, -1, "packed", {16, 16},
               qf(3, 32, false, ScaleType::f16)});
  for (int e = 0; e < 4; ++e) {
    const std::string p = "model.layers.0.mlp.experts." + std::to_string(e) + ".";
    v.push_back({p + "gate_proj.weight", "expert_gate", 0, e, "packed", {24, 16},
                 qf(4, 32, false, ScaleType::f16)});
    v.push_back({p + "up_proj.weight", "expert_up", 0, e, "packed", {24, 16},
                 qf(4, 32, false, ScaleType::f16)});
    v.push_back({p + "down_proj.weight", "expert_down", 0, e, "packed", {16, 24},
                 qf(2, 64, true, ScaleType::f32)});
  }
  v.push_back({"model.norm.weight", "final_norm", -1, -1, "f32", {16}, {}});
  v.push_back({"lm_head.weight", "lm_head", -1, -1, "packed", {8, 16},
               qf(8, 128, true, ScaleType::f32)});
  return v;
}

struct Opened {
  Status st;
  std::string msg;
  std::unique_ptr<Artifact> a;
};

Opened open_buf(const std::vector<uint8_t>& f, bool lazy = false, const std::string& pin = "") {
  Opened o;
  OpenOptions opt;
  opt.lazy = lazy;
  if (!pin.empty()) opt.pin = pin;  // "" here: no pin (an empty pin itself is malformed)
  o.st = Artifact::open_memory(f.data(), f.size(), opt, &o.a, &o.msg);
  if (o.st == Status::ok) {
    CHECK(o.a != nullptr);
  } else {
    CHECK(o.a == nullptr);
    CHECK(!o.msg.empty());
  }
  return o;
}

// Re-assembles the file after editing the manifest (header and sections made consistent).
std::vector<uint8_t> with_manifest(Built b, void (*edit)(J&), bool fix_sections = true) {
  edit(b.manifest);
  return assemble(b.manifest, b.data, fix_sections);
}

bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

const Built& model() {
  static const Built b = build(small_model());
  return b;
}

uint64_t data_offset_of(const std::vector<uint8_t>& f) {
  uint64_t v = 0;
  for (int k = 0; k < 8; ++k) v |= uint64_t(f[24 + size_t(k)]) << (8 * k);
  return v;
}

}  // namespace

// =============================================================================================
// SHA-256

TEST_CASE("sha256: NIST FIPS 180-4 vectors on every backend") {
  const auto bes = backends();
  REQUIRE(!bes.empty());
  REQUIRE(bes.back()->name == std::string("scalar"));
  MESSAGE("sha256 backends here: " << sha256_backend_names()
                                   << "; in use: " << std::string(sha256_backend().name));
  // The test scripts state which backend the emulated or forced CPU must select.
  if (const char* want = std::getenv("FWA_EXPECT_SHA256_BACKEND")) {
    CHECK(std::string(sha256_backend().name) == want);
    CHECK(contains(sha256_backend_names(), want));
  }
  const std::string million(1000000, 'a');
  for (const Sha256Backend* be : bes) {
    INFO("backend " << std::string(be->name));
    CHECK(hex_of("", *be) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    CHECK(hex_of("abc", *be) ==
          "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    CHECK(hex_of("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq", *be) ==
          "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    CHECK(hex_of("abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnop"
                 "qklmnopqrlmnopqrsmnopqrstnopqrstu",
                 *be) == "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1");
    CHECK(hex_of(million, *be) ==
          "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
    // Streaming, one byte at a time and in uneven pieces.
    Sha256 s(*be);
    for (char c : std::string("abc")) s.update(&c, 1);
    CHECK(digest_hex(s.final()) ==
          "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    s.init();
    for (size_t p = 0; p < million.size();) {
      const size_t n = std::min<size_t>(million.size() - p, 1 + (p * 7919) % 1000);
      s.update(million.data() + p, n);
      p += n;
    }
    CHECK(digest_hex(s.final()) ==
          "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
  }
}

TEST_CASE("sha256: streaming with random split points equals one-shot, all backends agree") {
  std::mt19937_64 rng(42);
  const auto bes = backends();
  const Sha256Backend& scalar = *sha256_find_backend("scalar");
  for (int iter = 0; iter < 300; ++iter) {
    const size_t n = iter < 200 ? size_t(iter) : size_t(rng() % 5000);
    const auto data = random_bytes(n, rng);
    const Sha256Digest ref = sha256(data.data(), n, scalar);
    for (const Sha256Backend* be : bes) {
      INFO("backend " << std::string(be->name) << " n=" << n);
      CHECK(sha256(data.data(), n, *be) == ref);
      Sha256 s(*be);
      size_t p = 0;
      while (p < n) {
        const size_t k = std::min<size_t>(n - p, rng() % 150);
        s.update(data.data() + p, k);
        p += k;
      }
      CHECK(s.final() == ref);
    }
  }
}

TEST_CASE("sha256: the two-stream compression equals two single streams") {
  std::mt19937_64 rng(7);
  for (const Sha256Backend* be : backends()) {
    if (!be->blocks2) continue;
    INFO("backend " << std::string(be->name));
    for (size_t nblocks : {size_t(1), size_t(2), size_t(5), size_t(33)}) {
      const auto a = random_bytes(64 * nblocks, rng), b = random_bytes(64 * nblocks, rng);
      uint32_t sa[8], sb[8], ra[8], rb[8];
      for (int k = 0; k < 8; ++k) sa[k] = ra[k] = uint32_t(rng()), sb[k] = rb[k] = uint32_t(rng());
      be->blocks2(sa, a.data(), sb, b.data(), nblocks);
      be->blocks(ra, a.data(), nblocks);
      be->blocks(rb, b.data(), nblocks);
      CHECK(std::memcmp(sa, ra, 32) == 0);
      CHECK(std::memcmp(sb, rb, 32) == 0);
    }
  }
}

TEST_CASE("sha256: the batch verifier finds the first mismatch and stops after it") {
  std::mt19937_64 rng(11);
  for (const Sha256Backend* be : backends()) {
    INFO("backend " << std::string(be->name));
    for (int iter = 0; iter < 40; ++iter) {
      const size_t n = size_t(rng() % 9);
      std::vector<std::vector<uint8_t>> bufs;
      std::vector<Sha256Job> jobs(n);
      for (size_t k = 0; k < n; ++k) {
        bufs.push_back(random_bytes(size_t(rng() % 3000), rng));
        jobs[k].data = bufs[k].data();
        jobs[k].size = bufs[k].size();
        jobs[k].expected = sha256(bufs[k].data(), bufs[k].size());
      }
      size_t bad = n;
      if (n > 0 && rng() % 2) {
        bad = size_t(rng() % n);
        jobs[bad].expected[rng() % 32] ^= 1;
        if (rng() % 2 && bad + 1 < n) jobs[n - 1].expected[0] ^= 1;  // a later one too
      }
      CHECK(sha256_verify_batch(jobs.data(), n, *be) == bad);
      for (size_t k = 0; k < n && k <= bad; ++k) {
        if (k < n) {
          CHECK(jobs[k].done);
          CHECK(jobs[k].got == sha256(bufs[k].data(), bufs[k].size()));
        }
      }
    }
  }
}

TEST_CASE("sha256: digest hex round trip rejects non-canonical text") {
  Sha256Digest d;
  const std::string good = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
  REQUIRE(parse_digest_hex(good.data(), good.size(), &d));
  CHECK(digest_hex(d) == good);
  std::string upper = good;
  upper[0] = 'B';
  CHECK(!parse_digest_hex(upper.data(), upper.size(), &d));
  CHECK(!parse_digest_hex(good.data(), 63, &d));
  std::string bad = good;
  bad[10] = 'g';
  CHECK(!parse_digest_hex(bad.data(), bad.size(), &d));
}

// =============================================================================================
// JSON

namespace {

Status parse_json(const std::string& s, std::string* msg = nullptr, json::Limits lim = {}) {
  json::Document d;
  std::string m;
  const Status st = d.parse(reinterpret_cast<const uint8_t*>(s.data()), s.size(), lim, &m);
  if (msg) *msg = m;
  return st;
}

}  // namespace

TEST_CASE("json: accepts canonical documents and navigates them") {
  const std::string s =
      "{\"a\":1,\"b\":[true,false,null,-9007199254740992,9007199254740992],\"c\":\"x\\n\\u0001"
      "\\\"\\\\\xc3\xa9\",\"d\":{},\"e\":[],\"f\":{\"g\":{\"h\":0}}}";
  json::Document d;
  std::string msg;
  REQUIRE_MESSAGE(d.parse(reinterpret_cast<const uint8_t*>(s.data()), s.size(), {}, &msg) ==
                      Status::ok,
                  msg);
  const json::Value r = d.root();
  CHECK(r.is(json::Type::object));
  CHECK(r.size() == 6);
  int64_t v;
  CHECK(r.find("a").get_int(&v));
  CHECK(v == 1);
  const json::Value b = r.find("b");
  CHECK(b.size() == 5);
  bool t;
  CHECK(b.first().get_bool(&t));
  CHECK(t);
  CHECK(b.first().next().next().is(json::Type::null));
  CHECK(b.first().next().next().next().get_int(&v));
  CHECK(v == -9007199254740992LL);
  std::string str;
  CHECK(r.find("c").get_string(&str));
  CHECK(str == "x\n\x01\"\\\xc3\xa9");
  CHECK(r.find("c").string_equals("x\n\x01\"\\\xc3\xa9"));
  CHECK(!r.find("c").string_equals("x\n\x01\"\\\xc3"));
  CHECK(r.find("d").size() == 0);
  CHECK(!r.find("d").first().valid());
  CHECK(r.find("f").find("g").find("h").get_int(&v));
  CHECK(v == 0);
  CHECK(r.find("f").raw() == "{\"g\":{\"h\":0}}");
  CHECK(!r.find("zz").valid());
  CHECK(!r.find("a").find("x").valid());
  CHECK(r.find("b").first().key().valid() == false);
  CHECK(r.find("e").key().string_equals("e"));
  for (const char* ok : {"{}", "[]", "0", "-1", "\"\"", "true", "[[[]]]", "{\"\":0}",
                         "{\"A\":0,\"a\":0}", "{\"a\":0,\"ab\":0,\"b\":0}", "[\"\\u001f\"]"}) {
    INFO(std::string(ok));
    CHECK(parse_json(ok) == Status::ok);
  }
}

TEST_CASE("json: rejects everything outside the canonical form") {
  struct Case {
    const char* text;
    const char* why;
  };
  const Case bad[] = {
      {"{\"a\":1,\"a\":2}", "duplicate"},
      {"{\"b\":1,\"a\":2}", "not sorted"},
      {"{\"a\\n\":1,\"a\\t\":2}", "not sorted"},  // unescaped \n (0x0a) > \t (0x09)
      {"1.5", "non-integer"},
      {"1e3", "non-integer"},
      {"1E3", "non-integer"},
      {"-0", "-0"},
      {"01", "leading zero"},
      {"-", "invalid number"},
      {"9007199254740993", "outside"},
      {"-9007199254740993", "outside"},
      {"123456789012345678901234567890", "outside"},
      {"{\"a\":1}x", "after the top-level"},
      {"{ \"a\":1}", "start a key"},
      {" {}", "whitespace"},
      {"[1, 2]", "whitespace"},
      {"{}\n", "after the top-level"},
      {"\"\\u0041\"", "non-canonical"},
      {"\"\\u000a\"", "non-canonical"},
      {"\"\\u001F\"", "4 lowercase hex"},
      {"\"\\/\"", "escape"},
      {"\"\\x\"", "escape"},
      {"\"\\ud800\"", "non-canonical"},
      {"\"a\tb\"", "control character"},
      {"\"\xc0\x80\"", "UTF-8"},          // overlong NUL
      {"\"\xc1\xbf\"", "UTF-8"},          // overlong
      {"\"\xe0\x80\xaf\"", "UTF-8"},      // overlong '/'
      {"\"\xed\xa0\x80\"", "UTF-8"},      // surrogate
      {"\"\xf4\x90\x80\x80\"", "UTF-8"},  // above U+10FFFF
      {"\"\xff\"", "UTF-8"},
      {"\"\x80\"", "UTF-8"},
      {"\"\xe2\x82\"", "UTF-8"},  // sequence cut by the quote
      {"\xef\xbb\xbf{}", "unexpected character"},  // BOM
      {"tru", "literal"},
      {"nul", "literal"},
      {"True", "unexpected"},
      {"[1,]", "unexpected"},
      {"{\"a\":1,}", "start a key"},
      {"{\"a\"}", "':'"},
      {"{1:2}", "start a key"},
      {"[", "unexpected end"},
      {"", "unexpected end"},
      {"[1", "unexpected end"},
      {"\"abc", "unterminated"},
      {"[]]", "after the top-level"},
  };
  for (const Case& c : bad) {
    INFO("input: " << std::string(c.text));
    std::string msg;
    CHECK(parse_json(c.text, &msg) == Status::malformed);
    CHECK_MESSAGE(contains(msg, c.why), msg);
  }
  // Embedded NUL.
  CHECK(parse_json(std::string("\"a\0b\"", 5)) == Status::malformed);
}

TEST_CASE("json: every truncation of a valid document is rejected") {
  const std::string s =
      "{\"a\":[1,-23,{\"b\":\"c\\u0001\xc3\xa9\"},true,false,null],\"z\":{\"y\":[]}}";
  REQUIRE(parse_json(s) == Status::ok);
  for (size_t n = 0; n < s.size(); ++n) {
    INFO("prefix " << n);
    const Status st = parse_json(s.substr(0, n));
    // A prefix can be a complete value only for scalars; this document is an object.
    CHECK(st == Status::malformed);
  }
}

TEST_CASE("json: caps on depth, string length and input size") {
  std::string deep64(64, '['), deep65(65, '[');
  deep64 += std::string(64, ']');
  deep65 += std::string(65, ']');
  CHECK(parse_json(deep64) == Status::ok);
  std::string msg;
  CHECK(parse_json(deep65, &msg) == Status::cap_exceeded);
  CHECK(contains(msg, "nesting"));
  // Very deep input (far beyond the cap) fails fast without recursion.
  std::string deep(1 << 20, '[');
  CHECK(parse_json(deep) == Status::cap_exceeded);
  std::string objs;
  for (int k = 0; k < 70; ++k) objs += "{\"a\":";
  objs += "0" + std::string(70, '}');
  CHECK(parse_json(objs) == Status::cap_exceeded);

  json::Limits small;
  small.max_string = 8;
  CHECK(parse_json("\"12345678\"", nullptr, small) == Status::ok);
  CHECK(parse_json("\"123456789\"", &msg, small) == Status::cap_exceeded);
  CHECK(contains(msg, "string longer"));
  CHECK(parse_json("{\"123456789\":0}", nullptr, small) == Status::cap_exceeded);
  CHECK(parse_json("\"\\n\\n\\n\\n\\n\\n\\n\\n\"", nullptr, small) == Status::ok);  // 8 decoded
  CHECK(parse_json("\"\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\"", nullptr, small) ==
        Status::cap_exceeded);  // 10 UTF-8 bytes
  small.max_input = 4;
  CHECK(parse_json("[1,2]", nullptr, small) == Status::cap_exceeded);
  CHECK(parse_json("[12]", nullptr, small) == Status::ok);
  // The default caps: 4 MiB strings.
  std::string big = "\"" + std::string((4u << 20) + 1, 'x') + "\"";
  CHECK(parse_json(big) == Status::cap_exceeded);
  big.erase(1, 1);
  CHECK(parse_json(big) == Status::ok);
}

// =============================================================================================
// Reader: valid artifacts

TEST_CASE("reader: a valid artifact opens in full and lazy mode, with and without its pin") {
  const Built& b = model();
  const std::string ms = dump(b.manifest);
  const std::string pin = "sha256:" + sha_hex(ms);
  for (bool lazy : {false, true}) {
    for (const std::string& p : {std::string(), pin}) {
      INFO("lazy=" << lazy << " pin=" << p);
      Opened o = open_buf(b.file, lazy, p);
      REQUIRE_MESSAGE(o.st == Status::ok, o.msg);
      Artifact& a = *o.a;
      CHECK(a.pin() == pin);
      CHECK(digest_hex(a.root_digest()) == sha_hex(ms));
      CHECK(std::string(reinterpret_cast<const char*>(a.manifest_data()), a.manifest_size()) ==
            ms);
      CHECK(a.data_offset() == roundup(128 + ms.size(), 4096));
      CHECK(a.data_length() == b.data.size());
      CHECK(a.tensors().size() == small_model().size());
      CHECK(a.expert_blocks().size() == 4);
      CHECK(a.lazy() == lazy);
      for (size_t k = 0; k < a.expert_blocks().size(); ++k) CHECK(a.block_verified(k) == !lazy);
      // Every tensor: metadata and bytes as built.
      const auto specs = small_model();
      for (size_t k = 0; k < specs.size(); ++k) {
        TensorView v;
        std::string m;
        REQUIRE_MESSAGE(a.tensor(specs[k].name, &v, &m) == Status::ok, m);
        CHECK(v.info->name == specs[k].name);
        CHECK(v.info->role == specs[k].role);
        CHECK(v.info->layer == specs[k].layer);
        CHECK(v.info->expert == specs[k].expert);
        CHECK(std::string(dtype_name(v.info->dtype)) == specs[k].dtype);
        CHECK(v.info->rank == int(specs[k].shape.size()));
        for (size_t d = 0; d < specs[k].shape.size(); ++d) CHECK(v.info->shape[d] == specs[k].shape[d]);
        CHECK(v.info->length == byte_size(specs[k]));
        if (specs[k].dtype == "packed") {
          CHECK(v.info->quant.bits == specs[k].q.bits);
          CHECK(v.info->quant.block == specs[k].q.block);
          CHECK(v.info->quant.has_zero == specs[k].q.has_zero);
          CHECK(v.info->quant.scale == specs[k].q.scale);
        }
        CHECK(v.data == o.a->source()->data() + a.data_offset() + v.info->offset);
        CHECK(std::memcmp(v.data, b.data.data() + v.info->offset, v.info->length) == 0);
        CHECK(reinterpret_cast<uintptr_t>(v.data) % 64 ==
              reinterpret_cast<uintptr_t>(b.file.data()) % 64);
      }
      for (size_t k = 0; k < a.expert_blocks().size(); ++k) CHECK(a.block_verified(k));
      TensorView v;
      std::string m;
      CHECK(a.tensor("nope", &v, &m) == Status::invalid_argument);
      CHECK(v.data == nullptr);
      CHECK(contains(m, "nope"));
      CHECK(a.verify_expert(0, 3, &m) == Status::ok);
      CHECK(a.verify_expert(0, 4, &m) == Status::invalid_argument);
      CHECK(a.verify_expert(1, 0, &m) == Status::invalid_argument);
      CHECK(a.tensor_at(a.tensors().size(), &v, &m) == Status::invalid_argument);
    }
  }
}

TEST_CASE("reader: artifacts without tensors, without experts, and with an empty data region") {
  for (const auto& specs :
       {std::vector<TSpec>{}, std::vector<TSpec>{{"w", "embed", -1, -1, "f32", {3}, {}}},
        std::vector<TSpec>{{"e", "expert_up", 2, 7, "f16", {5, 3}, {}}}}) {
    const Built b = build(specs);
    Opened o = open_buf(b.file);
    CHECK_MESSAGE(o.st == Status::ok, o.msg);
    Opened l = open_buf(b.file, true);
    CHECK_MESSAGE(l.st == Status::ok, l.msg);
  }
}

TEST_CASE("reader: open_file maps the file; I/O errors are io_error") {
  const Built& b = model();
  char path[] = "/tmp/fwa_artifact_testXXXXXX";
  const int fd = mkstemp(path);
  REQUIRE(fd >= 0);
  REQUIRE(write(fd, b.file.data(), b.file.size()) == ssize_t(b.file.size()));
  close(fd);
  std::unique_ptr<Artifact> a;
  std::string m;
  OpenOptions opt;
  CHECK(Artifact::open_file(path, opt, &a, &m) == Status::ok);
  REQUIRE(a);
  TensorView v;
  CHECK(a->tensor("lm_head.weight", &v, &m) == Status::ok);
  CHECK(std::memcmp(v.data, b.data.data() + v.info->offset, v.info->length) == 0);
  // The handle's source outlives the handle.
  auto src = a->source();
  a.reset();
  CHECK(src->size() == b.file.size());
  src.reset();
  // A truncated file on disk.
  REQUIRE(truncate(path, 4000) == 0);
  CHECK(Artifact::open_file(path, opt, &a, &m) == Status::truncated);
  REQUIRE(truncate(path, 0) == 0);
  CHECK(Artifact::open_file(path, opt, &a, &m) == Status::truncated);
  unlink(path);
  CHECK(Artifact::open_file(path, opt, &a, &m) == Status::io_error);
  CHECK(contains(m, path));
  CHECK(Artifact::open_file("/tmp", opt, &a, &m) == Status::io_error);
  CHECK(!a);
}

// =============================================================================================
// Reader: header

namespace {

// A temporary file holding `bytes`; removed with the object.
struct TempFile {
  std::string path;
  explicit TempFile(const std::vector<uint8_t>& bytes) {
    char p[] = "/tmp/fwa_open_testXXXXXX";
    const int fd = mkstemp(p);
    REQUIRE(fd >= 0);
    REQUIRE(write(fd, bytes.data(), bytes.size()) == ssize_t(bytes.size()));
    close(fd);
    path = p;
  }
  ~TempFile() { unlink(path.c_str()); }
};

}  // namespace

TEST_CASE("reader: parse_pin is the one pin rule; an empty pin is malformed, no pin is absent") {
  const Built& b = model();
  const std::string pin = "sha256:" + sha_hex(dump(b.manifest));
  Sha256Digest d{};
  std::string m;
  CHECK(parse_pin(pin, &d, &m) == Status::ok);
  CHECK("sha256:" + digest_hex(d) == pin);
  CHECK(parse_pin("", &d, &m) == Status::invalid_argument);
  CHECK(contains(m, "empty pin"));
  CHECK(parse_pin(std::string_view(pin.data(), 70), &d, &m) == Status::invalid_argument);
  // An empty pin is refused by every open, before the file is even looked at.
  OpenOptions opt;
  opt.pin = std::string();
  std::unique_ptr<Artifact> a;
  CHECK(Artifact::open_memory(b.file.data(), b.file.size(), opt, &a, &m) ==
        Status::invalid_argument);
  CHECK(Artifact::open_file("/nonexistent/model.fwa", opt, &a, &m) == Status::invalid_argument);
  CHECK(contains(m, "empty pin"));
  TempFile f(b.file);
  opt.copy = true;
  CHECK(Artifact::open_file(f.path, opt, &a, &m) == Status::invalid_argument);
  CHECK(!a);
  opt.pin.reset();
  CHECK(Artifact::open_file(f.path, opt, &a, &m) == Status::ok);
}

TEST_CASE("reader: only regular files are opened, at once; a path with a NUL is refused") {
  const Built& b = model();
  TempFile f(b.file);
  char dir[] = "/tmp/fwa_open_dirXXXXXX";
  REQUIRE(mkdtemp(dir) != nullptr);
  const std::string fifo = std::string(dir) + "/model.fwa";
  REQUIRE(mkfifo(fifo.c_str(), 0600) == 0);
  std::unique_ptr<Artifact> a;
  std::string m;
  for (bool copy : {false, true}) {
    OpenOptions opt;
    opt.copy = copy;
    alarm(20);  // a blocking open of the FIFO fails the run instead of hanging it
    CHECK(Artifact::open_file(fifo, opt, &a, &m) == Status::io_error);
    alarm(0);
    CHECK(contains(m, "is a FIFO, not a regular file"));
    CHECK(Artifact::open_file(dir, opt, &a, &m) == Status::io_error);
    CHECK(contains(m, "is a directory"));
    CHECK(Artifact::open_file("/dev/null", opt, &a, &m) == Status::io_error);
    CHECK(contains(m, "is a character device"));
    // Cut at the NUL, the path names a valid artifact: it must not be opened.
    CHECK(Artifact::open_file(f.path + std::string(1, '\0') + ".other", opt, &a, &m) ==
          Status::invalid_argument);
    CHECK(contains(m, "NUL"));
    CHECK(!a);
  }
  unlink(fifo.c_str());
  rmdir(dir);
}

TEST_CASE("reader: copies are private; strict refuses an unprotected mapping") {
  const Built& b = model();
  TempFile f(b.file);
  std::unique_ptr<Artifact> mapped, copied;
  std::string m;
  OpenOptions opt;
  REQUIRE(Artifact::open_file(f.path, opt, &mapped, &m) == Status::ok);
  CHECK(mapped->source()->file_backed());
  opt.copy = true;
  opt.strict = true;  // a copy is protected
  REQUIRE(Artifact::open_file(f.path, opt, &copied, &m) == Status::ok);
  CHECK(copied->protection() == Protection::copy);
  CHECK(!copied->source()->file_backed());
  CHECK(std::string(protection_name(copied->protection())) == "copy");
  // Overwrite the data region in place: the copy keeps the verified bytes.
  const uint64_t off = copied->data_offset();
  const std::vector<uint8_t> junk(b.data.size(), 0xA5);
  {
    FILE* w = std::fopen(f.path.c_str(), "r+b");
    REQUIRE(w);
    std::fseek(w, long(off), SEEK_SET);
    std::fwrite(junk.data(), 1, junk.size(), w);
    std::fclose(w);
  }
  TensorView v;
  REQUIRE(copied->tensor("lm_head.weight", &v, &m) == Status::ok);
  CHECK(std::memcmp(v.data, b.data.data() + v.info->offset, v.info->length) == 0);
  if (mapped->protection() == Protection::none) {
    // The same write shows through the mapping: why "none" must be reported and refusable.
    REQUIRE(mapped->tensor("lm_head.weight", &v, &m) == Status::ok);
    CHECK(std::memcmp(v.data, junk.data(), v.info->length) == 0);
    opt.copy = false;
    std::unique_ptr<Artifact> strict;
    CHECK(Artifact::open_file(f.path, opt, &strict, &m) == Status::io_error);
    CHECK(contains(m, "unprotected mapping"));
    CHECK(!strict);
  }
  // Caller memory is the caller's; copied, it is private.
  std::vector<uint8_t> buf = b.file;
  OpenOptions mem;
  std::unique_ptr<Artifact> borrowed;
  REQUIRE(Artifact::open_memory(buf.data(), buf.size(), mem, &borrowed, &m) == Status::ok);
  CHECK(borrowed->protection() == Protection::caller_memory);
  mem.copy = true;
  REQUIRE(Artifact::open_memory(buf.data(), buf.size(), mem, &copied, &m) == Status::ok);
  CHECK(copied->protection() == Protection::copy);
  std::fill(buf.begin(), buf.end(), uint8_t(0));
  REQUIRE(copied->tensor("lm_head.weight", &v, &m) == Status::ok);
  CHECK(std::memcmp(v.data, b.data.data() + v.info->offset, v.info->length) == 0);
}

TEST_CASE("reader: a mapped file truncated after open reads as zeros and marks the source") {
  const Built& b = model();
  TempFile f(b.file), other(b.file);
  std::unique_ptr<Artifact> a, untouched;
  std::string m;
  REQUIRE(Artifact::open_file(f.path, OpenOptions(), &a, &m) == Status::ok);
  REQUIRE(Artifact::open_file(other.path, OpenOptions(), &untouched, &m) == Status::ok);
  CHECK(!a->source()->faulted());
  REQUIRE(truncate(f.path.c_str(), 4096) == 0);
  // Every byte past the first page is gone: reading them raises SIGBUS, which the reader's
  // handler turns into zero pages and the faulted flag.
  const uint8_t* p = a->source()->data();
  unsigned sum = 0;
  for (size_t i = 4096; i < a->source()->size(); ++i) sum += p[i];
  CHECK(sum == 0);
  CHECK(a->source()->faulted());
  CHECK(!untouched->source()->faulted());
  a.reset();
  CHECK(Artifact::open_file(f.path, OpenOptions(), &a, &m) == Status::truncated);
}

TEST_CASE("reader: each corrupted header field gives its status") {
  const std::vector<uint8_t>& good = model().file;
  struct Case {
    const char* what;
    size_t at;
    uint64_t value;
    int bytes;
    Status want;
  };
  const uint64_t ml = good[16] | (uint64_t(good[17]) << 8);
  const Case cases[] = {
      {"magic", 1, 'f', 1, Status::bad_magic},
      {"magic last byte", 7, 0x0b, 1, Status::bad_magic},
      {"major 2", 8, 2, 2, Status::unsupported_version},
      {"major 0", 8, 0, 2, Status::unsupported_version},
      {"minor 2", 10, 2, 2, Status::unsupported_version},
      {"minor 1 over a 1.0 manifest (no generation)", 10, 1, 2, Status::malformed},
      {"flags", 12, 1, 4, Status::malformed},
      {"flags high bit", 12, 0x80000000u, 4, Status::malformed},
      {"manifest_length above the cap", 16, (16u << 20) + 1, 8, Status::cap_exceeded},
      {"manifest_length huge", 16, ~uint64_t(0), 8, Status::cap_exceeded},
      {"manifest_length 1", 16, 1, 8, Status::malformed},
      {"manifest_length 0", 16, 0, 8, Status::malformed},
      {"manifest_length + 1 (same data_offset)", 16, ml + 1, 8, Status::digest_mismatch},
      {"data_offset", 24, data_offset_of(good) + 4096, 8, Status::malformed},
      {"data_offset 0", 24, 0, 8, Status::malformed},
      {"data_length not a multiple of 64", 32, 100, 8, Status::malformed},
      {"data_length", 32, 64, 8, Status::malformed},
      {"data_length huge", 32, ~uint64_t(63), 8, Status::malformed},
      {"file_length", 40, 5, 8, Status::malformed},
      {"manifest_sha256", 48, 0, 1, Status::digest_mismatch},
      {"manifest_sha256 last byte", 79, 0xff, 1, Status::digest_mismatch},
      {"reserved first", 80, 1, 1, Status::malformed},
      {"reserved last", 127, 0x80, 1, Status::malformed},
  };
  for (const Case& c : cases) {
    INFO(std::string(c.what));
    std::vector<uint8_t> f = good;
    put_le(f, c.at, c.value, c.bytes);
    Opened o = open_buf(f);
    CHECK_MESSAGE(o.st == c.want, (std::string(status_name(o.st)) + ": " + o.msg));
  }
  // data_length and file_length consistently larger: the file is too short.
  std::vector<uint8_t> f = good;
  const uint64_t dl = model().data.size();
  put_le(f, 32, dl + 64, 8);
  put_le(f, 40, data_offset_of(good) + dl + 64, 8);
  Opened o = open_buf(f);
  CHECK(o.st == Status::truncated);
  CHECK(contains(o.msg, "file_length"));
  // ...and with the bytes appended, the manifest's data_length disagrees.
  f.resize(f.size() + 64, 0);
  CHECK(open_buf(f).st == Status::malformed);
  // Header messages name the field and both values.
  f = good;
  put_le(f, 24, 12345, 8);
  o = open_buf(f);
  CHECK(contains(o.msg, "data_offset is 12345, expected " + std::to_string(data_offset_of(good))));
}

TEST_CASE("reader: truncation at every section boundary, and appended bytes") {
  const std::vector<uint8_t>& good = model().file;
  const uint64_t ml = good[16] | (uint64_t(good[17]) << 8);
  const uint64_t doff = data_offset_of(good);
  for (uint64_t cut : {uint64_t(0), uint64_t(1), uint64_t(8), uint64_t(127), uint64_t(128),
                       128 + ml / 2, 128 + ml - 1, 128 + ml, doff - 1, doff, doff + 1,
                       doff + 4096, uint64_t(good.size() - 4096), uint64_t(good.size() - 1)}) {
    INFO("cut at " << cut);
    std::vector<uint8_t> f(good.begin(), good.begin() + ptrdiff_t(cut));
    for (bool lazy : {false, true}) {
      Opened o = open_buf(f, lazy);
      CHECK(o.st == Status::truncated);
    }
  }
  for (size_t extra : {size_t(1), size_t(64), size_t(4096)}) {
    std::vector<uint8_t> f = good;
    f.resize(f.size() + extra, 0);
    Opened o = open_buf(f);
    CHECK(o.st == Status::trailing_bytes);
    CHECK(contains(o.msg, std::to_string(extra) + " after"));
  }
  // A null buffer of size 0 is just a truncated file.
  std::unique_ptr<Artifact> a;
  std::string m;
  CHECK(Artifact::open_memory(nullptr, 0, {}, &a, &m) == Status::truncated);
  CHECK(Artifact::open_memory(nullptr, 5, {}, &a, &m) == Status::invalid_argument);
}

TEST_CASE("reader: every single-bit flip of header, manifest and the gap is rejected") {
  // A smaller artifact keeps this quick: header + manifest + gap = 4096 bytes = 32768 flips.
  const Built b = build({{"w", "embed", -1, -1, "f32", {4}, {}},
                         {"e", "expert_up", 0, 1, "f16", {8}, {}}});
  const uint64_t doff = data_offset_of(b.file);
  const std::string pin = "sha256:" + sha_hex(dump(b.manifest));
  REQUIRE(open_buf(b.file).st == Status::ok);
  std::map<Status, int> seen;
  std::vector<uint8_t> f = b.file;
  for (uint64_t byte = 0; byte < doff; ++byte) {
    for (int bit = 0; bit < 8; ++bit) {
      f[byte] ^= uint8_t(1 << bit);
      const bool with_pin = (byte + uint64_t(bit)) % 2 == 0;
      std::unique_ptr<Artifact> a;
      std::string m;
      OpenOptions opt;
      if (with_pin) opt.pin = pin;
      opt.lazy = bit % 3 == 0;
      const Status st = Artifact::open_memory(f.data(), f.size(), opt, &a, &m);
      if (st == Status::ok) FAIL_CHECK("bit flip accepted at byte " << byte << " bit " << bit);
      seen[st]++;
      f[byte] ^= uint8_t(1 << bit);
    }
  }
  for (const auto& kv : seen) MESSAGE(std::string(status_name(kv.first)) << ": " << kv.second);
  CHECK(seen.count(Status::bad_magic));
  CHECK(seen.count(Status::unsupported_version));
  CHECK(seen.count(Status::malformed));
  CHECK(seen.count(Status::digest_mismatch));
  CHECK(seen.count(Status::pin_mismatch));
  CHECK(seen.count(Status::nonzero_padding));
  CHECK(seen.count(Status::cap_exceeded));
}

TEST_CASE("reader: a flipped bit anywhere in the data region is rejected (full mode)") {
  const Built& b = model();
  const uint64_t doff = data_offset_of(b.file);
  std::mt19937_64 rng(5);
  std::vector<uint8_t> f = b.file;
  for (uint64_t at = doff; at < f.size(); at += 61) {
    const uint8_t mask = uint8_t(1 << (rng() % 8));
    f[at] ^= mask;
    Opened o = open_buf(f);
    CHECK(o.st != Status::ok);
    CHECK((o.st == Status::digest_mismatch || o.st == Status::nonzero_padding));
    f[at] ^= mask;
  }
}

// =============================================================================================
// Reader: pin

TEST_CASE("reader: pins are checked before the manifest is parsed") {
  const Built& b = model();
  const std::string pin = "sha256:" + sha_hex(dump(b.manifest));
  std::string wrong = pin;
  wrong.back() = wrong.back() == '0' ? '1' : '0';
  Opened o = open_buf(b.file, false, wrong);
  CHECK(o.st == Status::pin_mismatch);
  CHECK(contains(o.msg, wrong.substr(7)));
  CHECK(contains(o.msg, pin.substr(7)));
  for (const std::string& bad : {std::string("sha256:"), pin.substr(0, 70), pin + "0",
                                 "SHA256:" + pin.substr(7), "sha256:" + std::string(64, 'A'),
                                 std::string("md5:abc"), pin.substr(7)}) {
    INFO(bad);
    CHECK(open_buf(b.file, false, bad).st == Status::invalid_argument);
  }
  // A manifest that is not even JSON, with a consistent header: the pin decides first.
  std::string text = "this is not json";
  std::vector<uint8_t> f(4096, 0);
  std::memcpy(f.data(), kArtifactMagic, 8);
  put_le(f, 8, 1, 2);
  put_le(f, 16, text.size(), 8);
  put_le(f, 24, 4096, 8);
  put_le(f, 40, 4096, 8);
  const Sha256Digest d = sha256(text.data(), text.size());
  std::memcpy(f.data() + 48, d.data(), 32);
  std::memcpy(f.data() + 128, text.data(), text.size());
  CHECK(open_buf(f, false, pin).st == Status::pin_mismatch);
  CHECK(open_buf(f, false, "sha256:" + digest_hex(d)).st == Status::malformed);
  CHECK(open_buf(f).st == Status::malformed);
  // Pin matches but the header digest was changed: digest_mismatch.
  std::vector<uint8_t> g = b.file;
  g[60] ^= 1;
  CHECK(open_buf(g, false, pin).st == Status::digest_mismatch);
  CHECK(open_buf(g, false, wrong).st == Status::pin_mismatch);
}

// =============================================================================================
// Reader: manifest schema and tables

namespace {

J& tensor_entry(J& m, const std::string& name) {
  for (J& e : m.o["tensors"].a) {
    if (e.o["name"].s == name) return e;
  }
  FAIL("no tensor " << name);
  return m;
}

struct Edit {
  const char* what;
  void (*edit)(J&);
  Status want;
  const char* in_message;
};

}  // namespace

TEST_CASE("reader: manifest and table errors give their status and name the culprit") {
  const Edit edits[] = {
      {"unknown top-level key", [](J& m) { m["extra"] = J(1); }, Status::malformed, "extra"},
      {"missing top-level key", [](J& m) { m.o.erase("sbom"); }, Status::malformed, "sbom"},
      {"format", [](J& m) { m["format"] = J("other"); }, Status::malformed, "format"},
      {"format_version", [](J& m) { m["format_version"] = J::arr({J(1), J(1)}); },
       Status::malformed, "format_version"},
      {"format_version type", [](J& m) { m["format_version"] = J("1.0"); }, Status::malformed,
       "format_version"},
      {"data_length", [](J& m) { m.o["data_length"].i += 64; }, Status::malformed, "data_length"},
      {"requires kernel_layout 2", [](J& m) { m.o["requires"]["kernel_layout"] = J(2); },
       Status::incompatible, "kernel_layout"},
      {"requires big endian", [](J& m) { m.o["requires"]["endianness"] = J("big"); },
       Status::incompatible, "big"},
      {"requires something new", [](J& m) { m.o["requires"]["sparse_attention"] = J(true); },
       Status::incompatible, "sparse_attention"},
      {"requires missing key", [](J& m) { m.o["requires"].o.erase("kernel_layout"); },
       Status::malformed, "kernel_layout"},
      {"requires wins over unknown keys",
       [](J& m) {
         m["extra"] = J(1);
         m.o["requires"]["kernel_layout"] = J(2);
       },
       Status::incompatible, "kernel_layout"},
      {"config not an object", [](J& m) { m["config"] = J::arr(); }, Status::malformed, "config"},
      {"config without architecture", [](J& m) { m.o["config"].o.erase("architecture"); },
       Status::malformed, "architecture"},
      {"tokenizer a string", [](J& m) { m["tokenizer"] = J("x"); }, Status::malformed,
       "tokenizer"},
      {"empty known_limitations", [](J& m) { m.o["model_card"]["known_limitations"] = J::arr(); },
       Status::malformed, "known_limitations"},
      {"known_limitations not strings",
       [](J& m) { m.o["model_card"]["known_limitations"] = J::arr({J(1)}); }, Status::malformed,
       "known_limitations"},
      // The spec (§3.2) asks for limitations, so "" is not one (the Python verifier agreed).
      {"known_limitations holding an empty string",
       [](J& m) { m.o["model_card"]["known_limitations"] = J::arr({J("a"), J("")}); },
       Status::malformed, "non-empty strings"},
      // §3.8 caps: refused at open, before the tokenizer or the binder allocates for them.
      {"vocab token id at the cap",
       [](J& m) { m["tokenizer"]["model"]["vocab"]["a"] = J(int64_t(1) << 21); },
       Status::cap_exceeded, "tokenizer.model.vocab holds token id 2097152"},
      {"added token id 1e8",
       [](J& m) {
         J a = J::obj();
         a["id"] = J(100000000);
         a["content"] = J("<x>");
         m["tokenizer"]["added_tokens"] = J::arr({a});
       },
       Status::cap_exceeded, "100000000"},
      {"too many added tokens",
       [](J& m) {
         m["tokenizer"]["added_tokens"] = J::arr();
         m.o["tokenizer"].o["added_tokens"].a.assign(65537, J(0));
       },
       Status::cap_exceeded, "added_tokens has 65537 entries"},
      {"config vocab_size above the cap",
       [](J& m) { m["config"]["vocab_size"] = J((int64_t(1) << 21) + 1); },
       Status::cap_exceeded, "config.vocab_size"},
      {"config num_hidden_layers above the cap",
       [](J& m) { m["config"]["num_hidden_layers"] = J(4097); }, Status::cap_exceeded,
       "config.num_hidden_layers"},
      {"config max_position_embeddings above the cap",
       [](J& m) { m["config"]["max_position_embeddings"] = J(int64_t(1) << 30); },
       Status::cap_exceeded, "config.max_position_embeddings"},
      {"tensor unknown key",
       [](J& m) { tensor_entry(m, "model.norm.weight")["comment"] = J("x"); }, Status::malformed,
       "comment"},
      {"tensor missing key", [](J& m) { tensor_entry(m, "model.norm.weight").o.erase("role"); },
       Status::malformed, "role"},
      {"unknown dtype", [](J& m) { tensor_entry(m, "model.norm.weight")["dtype"] = J("int8"); },
       Status::malformed, "int8"},
      {"rank 0", [](J& m) { tensor_entry(m, "model.norm.weight")["shape"] = J::arr(); },
       Status::malformed, "rank 0"},
      {"rank 5",
       [](J& m) {
         tensor_entry(m, "model.norm.weight")["shape"] =
             J::arr({J(1), J(1), J(1), J(1), J(16)});
       },
       Status::cap_exceeded, "rank 5"},
      {"dimension 0",
       [](J& m) { tensor_entry(m, "model.norm.weight")["shape"] = J::arr({J(0)}); },
       Status::malformed, "dimension 0"},
      {"dimension above 2^31",
       [](J& m) {
         tensor_entry(m, "model.norm.weight")["shape"] = J::arr({J((int64_t(1) << 31) + 1)});
       },
       Status::cap_exceeded, "2^31"},
      {"float shape overflow",
       [](J& m) {
         const J big(int64_t(1) << 31);
         tensor_entry(m, "model.norm.weight")["shape"] = J::arr({big, big, big, big});
       },
       Status::malformed, "overflow"},
      {"length mismatch", [](J& m) { tensor_entry(m, "model.norm.weight").o["length"].i += 4; },
       Status::malformed, "length is 68"},
      {"packed length mismatch",
       [](J& m) { tensor_entry(m, "lm_head.weight")["shape"] = J::arr({J(17), J(16)}); },
       Status::malformed, "lm_head.weight"},
      {"packed rank 1", [](J& m) { tensor_entry(m, "lm_head.weight")["shape"] = J::arr({J(8)}); },
       Status::malformed, "[N, K]"},
      {"quant bits 5", [](J& m) { tensor_entry(m, "lm_head.weight").o["quant"]["bits"] = J(5); },
       Status::incompatible, "bits=5"},
      {"quant huge bits",
       [](J& m) {
         tensor_entry(m, "lm_head.weight").o["quant"]["bits"] = J(int64_t(1) << 40);
       },
       Status::incompatible, "bits="},
      {"quant block 16",
       [](J& m) { tensor_entry(m, "lm_head.weight").o["quant"]["block"] = J(16); },
       Status::incompatible, "block=16"},
      {"quant scale f64",
       [](J& m) { tensor_entry(m, "lm_head.weight").o["quant"]["scale"] = J("f64"); },
       Status::incompatible, "f64"},
      {"quant zero_points not bool",
       [](J& m) { tensor_entry(m, "lm_head.weight").o["quant"]["zero_points"] = J(1); },
       Status::malformed, "zero_points"},
      {"quant extra key",
       [](J& m) { tensor_entry(m, "lm_head.weight").o["quant"]["group"] = J(1); },
       Status::malformed, "group"},
      {"quant on a float tensor",
       [](J& m) { tensor_entry(m, "model.norm.weight")["quant"] = J::obj(); }, Status::malformed,
       "quant must be null"},
      {"misaligned offset",
       [](J& m) { tensor_entry(m, "model.embed_tokens.weight").o["offset"].i += 4; },
       Status::malformed, "multiple of 64"},
      {"negative offset",
       [](J& m) { tensor_entry(m, "model.embed_tokens.weight")["offset"] = J(-64); },
       Status::malformed, "non-negative"},
      {"offset out of bounds",
       [](J& m) { tensor_entry(m, "lm_head.weight").o["offset"].i = m.o["data_length"].i; },
       Status::out_of_bounds, "lm_head.weight"},
      {"offset + length overflows",
       [](J& m) {
         tensor_entry(m, "lm_head.weight")["offset"] = J(int64_t(9007199254740992LL) - 64);
       },
       Status::out_of_bounds, "outside the data region"},
      {"offset above 2^53",
       [](J& m) {
         tensor_entry(m, "lm_head.weight")["offset"] = J(int64_t(9007199254740992LL) + 64);
       },
       Status::malformed, "outside [-2^53, 2^53]"},
      {"overlapping tensors",
       [](J& m) { tensor_entry(m, "model.layers.0.input_layernorm.weight").o["offset"].i -= 64; },
       Status::overlap, "overlaps tensor 'model.embed_tokens.weight'"},
      {"unsorted tensors",
       [](J& m) { std::swap(m.o["tensors"].a[0], m.o["tensors"].a[1]); }, Status::malformed,
       "not sorted"},
      {"duplicate tensor name",
       [](J& m) { tensor_entry(m, "model.norm.weight")["name"] = J("lm_head.weight"); },
       Status::malformed, "duplicate"},
      {"empty name", [](J& m) { tensor_entry(m, "model.norm.weight")["name"] = J(""); },
       Status::malformed, "name"},
      {"layer negative", [](J& m) { tensor_entry(m, "model.norm.weight")["layer"] = J(-1); },
       Status::malformed, "layer"},
      {"expert without layer",
       [](J& m) { tensor_entry(m, "model.norm.weight")["expert"] = J(0); }, Status::malformed,
       "needs a layer"},
      {"sha256 uppercase",
       [](J& m) {
         J& e = tensor_entry(m, "model.norm.weight");
         for (char& c : e.o["sha256"].s) c = char(std::toupper(c));
       },
       Status::malformed, "sha256"},
      {"sha256 short",
       [](J& m) { tensor_entry(m, "model.norm.weight").o["sha256"].s.pop_back(); },
       Status::malformed, "sha256"},
      {"expert tensor without its block",
       [](J& m) { tensor_entry(m, "model.layers.0.mlp.experts.0.up_proj.weight")["expert"] = J(9); },
       Status::malformed, "no expert block"},
      {"expert tensor in another expert's block",
       [](J& m) { tensor_entry(m, "model.layers.0.mlp.experts.0.up_proj.weight")["expert"] = J(1); },
       Status::out_of_bounds, "not inside its expert block (layer 0, expert 1)"},
      {"non-expert tensor inside a block",
       [](J& m) { tensor_entry(m, "model.layers.0.mlp.experts.2.up_proj.weight")["expert"] = J(); },
       Status::overlap, "overlaps expert block (layer 0, expert 2)"},
      {"block overlapping a non-expert tensor",
       [](J& m) {
         J& blk = m.o["expert_blocks"].a[0];
         blk.o["offset"].i -= 4096;
         blk.o["length"].i += 4096;
       },
       Status::overlap, "overlaps expert block (layer 0, expert 0)"},
      {"overlapping blocks",
       [](J& m) { m.o["expert_blocks"].a[0].o["length"].i += 4096; }, Status::overlap,
       "overlaps expert block (layer 0, expert 0)"},
      {"misaligned block", [](J& m) { m.o["expert_blocks"].a[1].o["offset"].i += 64; },
       Status::malformed, "multiples of 4096"},
      {"zero-length block", [](J& m) { m.o["expert_blocks"].a[3]["length"] = J(0); },
       Status::malformed, "multiples of 4096"},
      {"block out of bounds", [](J& m) { m.o["expert_blocks"].a[3].o["offset"].i += 1 << 20; },
       Status::out_of_bounds, "outside the data region"},
      {"unsorted blocks",
       [](J& m) { std::swap(m.o["expert_blocks"].a[1], m.o["expert_blocks"].a[2]); },
       Status::malformed, "not sorted"},
      {"duplicate block",
       [](J& m) { m.o["expert_blocks"].a[1]["expert"] = J(0); }, Status::malformed,
       "listed twice"},
      {"block unknown key", [](J& m) { m.o["expert_blocks"].a[1]["note"] = J(0); },
       Status::malformed, "note"},
      {"too many tensors",
       [](J& m) {
         m["tensors"] = J::arr();
         m.o["tensors"].a.assign(65537, J::obj());
       },
       Status::cap_exceeded, "65537 tensors"},
      {"too many blocks",
       [](J& m) {
         m["expert_blocks"] = J::arr();
         m.o["expert_blocks"].a.assign(65537, J::obj());
       },
       Status::cap_exceeded, "65537 expert blocks"},
  };
  for (const Edit& e : edits) {
    INFO(std::string(e.what));
    const std::vector<uint8_t> f = with_manifest(model(), e.edit);
    Opened o = open_buf(f);
    CHECK_MESSAGE(o.st == e.want, (std::string(status_name(o.st)) + ": " + o.msg));
    CHECK_MESSAGE(contains(o.msg, e.in_message), o.msg);
    Opened l = open_buf(f, true);
    CHECK(l.st == o.st);
  }
}

// Format 1.1: the generation metadata of spec §3.9 (tests/test_differential.py checks every
// rule against the Python verifier; these are the C++ reader's own checks and messages).
static void add_generation(J& m) {
  J g = J::obj();
  g["bos_token_id"] = J();
  g["chat_template"] = J("{{ messages }}\n");
  g["eos_token_ids"] = J::arr({J(2), J(7)});
  g["pad_token_id"] = J(0);
  J src = J::obj();
  src["chat_template.jinja"] = J(std::string(64, 'a'));
  src["generation_config.json"] = J();
  src["tokenizer_config.json"] = J(std::string(64, 'b'));
  g["sources"] = src;
  m["generation"] = g;
  m["format_version"] = J::arr({J(1), J(1)});
  m["config"]["vocab_size"] = J(8);
}

TEST_CASE("reader: format 1.1 generation metadata is accepted and each rule enforced") {
  Opened ok = open_buf(with_manifest(model(), [](J& m) { add_generation(m); }));
  REQUIRE_MESSAGE(ok.st == Status::ok, ok.msg);
  // The 1.0 artifact is unchanged and still opens.
  CHECK(open_buf(model().file).st == Status::ok);
  const Edit edits[] = {
      {"generation not an object", [](J& m) { add_generation(m); m["generation"] = J(1); },
       Status::malformed, "generation must be an object"},
      {"unknown key", [](J& m) { add_generation(m); m["generation"]["x"] = J(1); },
       Status::malformed, "unknown key 'x'"},
      {"missing key", [](J& m) { add_generation(m); m["generation"].o.erase("sources"); },
       Status::malformed, "missing key 'sources'"},
      {"no vocab_size", [](J& m) { add_generation(m); m["config"].o.erase("vocab_size"); },
       Status::malformed, "config.vocab_size"},
      {"bos out of range", [](J& m) { add_generation(m); m["generation"]["bos_token_id"] = J(8); },
       Status::malformed, "bos_token_id = 8 is outside [0, vocab_size 8)"},
      {"template empty", [](J& m) { add_generation(m); m["generation"]["chat_template"] = J(""); },
       Status::malformed, "chat_template is empty"},
      {"template above the cap",
       [](J& m) {
         add_generation(m);
         m["generation"]["chat_template"] = J(std::string((256 << 10) + 1, 'x'));
       },
       Status::cap_exceeded, "262145 bytes"},
      {"no eos", [](J& m) { add_generation(m); m["generation"]["eos_token_ids"] = J::arr(); },
       Status::malformed, "eos_token_ids is empty"},
      {"too many eos",
       [](J& m) {
         add_generation(m);
         m["generation"]["eos_token_ids"] = J::arr();
         for (int i = 0; i < 65; ++i) m["generation"]["eos_token_ids"].a.push_back(J(i));
       },
       Status::cap_exceeded, "65 entries"},
      {"eos unsorted",
       [](J& m) { add_generation(m); m["generation"]["eos_token_ids"] = J::arr({J(7), J(2)}); },
       Status::malformed, "strictly increasing"},
      {"pad a string", [](J& m) { add_generation(m); m["generation"]["pad_token_id"] = J("0"); },
       Status::malformed, "pad_token_id must be an integer"},
      {"bad source digest",
       [](J& m) {
         add_generation(m);
         m["generation"]["sources"]["generation_config.json"] = J(std::string(64, 'G'));
       },
       Status::malformed, "generation_config.json"},
      {"generation in a 1.0 manifest",
       [](J& m) {
         add_generation(m);
         m["format_version"] = J::arr({J(1), J(0)});
       },
       Status::malformed, "unknown key 'generation'"},
  };
  for (const Edit& e : edits) {
    INFO(std::string(e.what));
    Built b = model();
    e.edit(b.manifest);
    const bool v11 = e.in_message != std::string("unknown key 'generation'");
    const std::vector<uint8_t> f = assemble(b.manifest, b.data, true, v11 ? 1 : 0);
    Opened o = open_buf(f);
    CHECK_MESSAGE(o.st == e.want, (std::string(status_name(o.st)) + ": " + o.msg));
    CHECK_MESSAGE(contains(o.msg, e.in_message), o.msg);
  }
  // A 1.1 header over a manifest without generation.
  Built b = model();
  Opened o = open_buf(assemble(b.manifest, b.data, true, 1));
  CHECK(o.st == Status::malformed);
  CHECK(contains(o.msg, "missing key 'generation'"));
}

TEST_CASE("reader: sizes at the caps of §3.8 are accepted") {
  const std::vector<uint8_t> f = with_manifest(model(), [](J& m) {
    m["tokenizer"]["model"]["vocab"]["a"] = J((int64_t(1) << 21) - 1);
    m["tokenizer"]["model"]["merges"] = J::arr();
    m["config"]["vocab_size"] = J(int64_t(1) << 21);
    m["config"]["max_position_embeddings"] = J(int64_t(1) << 24);
    m["config"]["num_experts"] = J(65536);
  });
  Opened o = open_buf(f);
  CHECK_MESSAGE(o.st == Status::ok, o.msg);
}

TEST_CASE("reader: non-canonical manifests and wrong section digests") {
  // A real number in the manifest (must be a string), spliced into the canonical text.
  const Built& b = model();
  std::string ms = dump(b.manifest);
  const std::string from = "\"rms_norm_eps\":\"1e-06\"";
  REQUIRE(contains(ms, from));
  auto reassemble = [&](const std::string& text) {
    std::vector<uint8_t> f(roundup(128 + text.size(), 4096) + b.data.size(), 0);
    std::memcpy(f.data(), kArtifactMagic, 8);
    put_le(f, 8, 1, 2);
    put_le(f, 16, text.size(), 8);
    put_le(f, 24, roundup(128 + text.size(), 4096), 8);
    put_le(f, 32, b.data.size(), 8);
    put_le(f, 40, f.size(), 8);
    const Sha256Digest d = sha256(text.data(), text.size());
    std::memcpy(f.data() + 48, d.data(), 32);
    std::memcpy(f.data() + 128, text.data(), text.size());
    std::memcpy(f.data() + roundup(128 + text.size(), 4096), b.data.data(), b.data.size());
    return f;
  };
  CHECK(open_buf(reassemble(ms)).st == Status::ok);
  std::string t = ms;
  t.replace(t.find(from), from.size(), "\"rms_norm_eps\":1e-06");
  Opened o = open_buf(reassemble(t));
  CHECK(o.st == Status::malformed);
  CHECK(contains(o.msg, "non-integer"));
  t = ms;
  t.replace(t.find(from), from.size(), "\"rms_norm_eps\": \"1e-06\"");
  CHECK(open_buf(reassemble(t)).st == Status::malformed);
  t = ms + " ";
  CHECK(open_buf(reassemble(t)).st == Status::malformed);
  t = "[" + ms + "]";
  o = open_buf(reassemble(t));
  CHECK(o.st == Status::malformed);
  CHECK(contains(o.msg, "object"));
  // Sections not matching their values.
  auto bad_section = [](J& m) { m.o["sections"]["sbom"] = J(std::string(64, 'a')); };
  o = open_buf(with_manifest(model(), bad_section, false));
  CHECK(o.st == Status::digest_mismatch);
  CHECK(contains(o.msg, "section 'sbom'"));
  auto missing_section = [](J& m) { m.o["sections"].o.erase("evidence"); };
  o = open_buf(with_manifest(model(), missing_section, false));
  CHECK(o.st == Status::malformed);
  CHECK(contains(o.msg, "evidence"));
}

// =============================================================================================
// Reader: padding and digests

TEST_CASE("reader: non-zero padding is rejected wherever it is") {
  const Built& b = model();
  const uint64_t doff = data_offset_of(b.file);
  const uint64_t ml = b.file[16] | (uint64_t(b.file[17]) << 8);
  Opened ok = open_buf(b.file);
  REQUIRE(ok.st == Status::ok);
  const Artifact& a = *ok.a;
  const TensorInfo* norm = a.find_tensor("model.layers.0.input_layernorm.weight");  // 32 bytes
  const TensorInfo* up1 = a.find_tensor("model.layers.0.mlp.experts.1.up_proj.weight");
  const ExpertBlockInfo& blk1 = a.expert_blocks()[1];
  REQUIRE(norm);
  REQUIRE(up1);
  // Between the manifest and the data region.
  std::vector<uint8_t> f = b.file;
  f[128 + ml + 3] = 0x10;
  Opened o = open_buf(f);
  CHECK(o.st == Status::nonzero_padding);
  CHECK(contains(o.msg, "between the manifest and the data region"));
  CHECK(open_buf(f, true).st == Status::nonzero_padding);
  // After a non-expert tensor.
  f = b.file;
  f[doff + norm->offset + norm->length + 5] = 1;
  o = open_buf(f);
  CHECK(o.st == Status::nonzero_padding);
  CHECK(contains(o.msg, "after tensor 'model.layers.0.input_layernorm.weight'"));
  CHECK(open_buf(f, true).st == Status::nonzero_padding);
  // At the end of the data region.
  f = b.file;
  f[f.size() - 1] = 0x80;
  o = open_buf(f);
  CHECK((o.st == Status::nonzero_padding || o.st == Status::digest_mismatch));
  // Inside an expert block: full mode at open; lazy mode only when the expert is verified.
  f = b.file;
  f[doff + blk1.offset + blk1.length - 1] = 7;
  o = open_buf(f);
  CHECK(o.st == Status::nonzero_padding);
  CHECK(contains(o.msg, "after tensor 'model.layers.0.mlp.experts.1.down_proj.weight'"));
  Opened l = open_buf(f, true);
  REQUIRE(l.st == Status::ok);
  std::string m;
  CHECK(l.a->verify_expert(0, 0, &m) == Status::ok);
  CHECK(l.a->verify_expert(0, 1, &m) == Status::nonzero_padding);
  TensorView v;
  CHECK(l.a->tensor(up1->name, &v, &m) == Status::nonzero_padding);
  CHECK(v.data == nullptr);
  (void)up1;
}

TEST_CASE("reader: a changed tensor byte is a digest mismatch naming the tensor") {
  const Built& b = model();
  const uint64_t doff = data_offset_of(b.file);
  Opened ok = open_buf(b.file);
  REQUIRE(ok.st == Status::ok);
  for (const TensorInfo& t : ok.a->tensors()) {
    INFO(t.name);
    std::vector<uint8_t> f = b.file;
    f[doff + t.offset + t.length / 2] ^= 0x20;
    Opened o = open_buf(f);
    CHECK(o.st == Status::digest_mismatch);
    CHECK(contains(o.msg, "tensor '" + t.name + "'"));
    CHECK(contains(o.msg, digest_hex(t.sha256)));
    Opened l = open_buf(f, true);
    if (t.expert < 0) {
      CHECK(l.st == Status::digest_mismatch);
      CHECK(l.msg == o.msg);
      continue;
    }
    // Lazy: the artifact opens, every other expert verifies, this one fails when used.
    REQUIRE_MESSAGE(l.st == Status::ok, l.msg);
    Artifact& a = *l.a;
    std::string m;
    for (const TensorInfo& u : a.tensors()) {
      TensorView v;
      const Status st = a.tensor(u.name, &v, &m);
      if (u.block == t.block) {
        CHECK(st == Status::digest_mismatch);
        CHECK(v.data == nullptr);
        CHECK(v.info == nullptr);
        CHECK(contains(m, "tensor '" + t.name + "'"));
      } else {
        CHECK_MESSAGE(st == Status::ok, m);
        CHECK(v.data != nullptr);
      }
    }
    CHECK(!a.block_verified(size_t(t.block)));
    CHECK(a.verify_expert(t.layer, t.expert, &m) == Status::digest_mismatch);  // cached
    CHECK(contains(m, t.name));
  }
}

TEST_CASE("reader: a wrong expert block digest is reported by the block") {
  auto edit = [](J& m) {
    std::string& s = m.o["expert_blocks"].a[2].o["sha256"].s;
    s[0] = s[0] == 'a' ? 'b' : 'a';
  };
  const std::vector<uint8_t> f = with_manifest(model(), edit);
  Opened o = open_buf(f);
  CHECK(o.st == Status::digest_mismatch);
  CHECK(contains(o.msg, "expert block (layer 0, expert 2)"));
  Opened l = open_buf(f, true);
  REQUIRE(l.st == Status::ok);
  std::string m;
  CHECK(l.a->verify_expert(0, 1, &m) == Status::ok);
  CHECK(l.a->verify_expert(0, 2, &m) == Status::digest_mismatch);
  CHECK(contains(m, "expert block (layer 0, expert 2)"));
  // A wrong non-expert tensor digest in the manifest.
  auto edit2 = [](J& m) {
    char& c = tensor_entry(m, "model.norm.weight").o["sha256"].s[5];
    c = c == '0' ? '1' : '0';
  };
  o = open_buf(with_manifest(model(), edit2));
  CHECK(o.st == Status::digest_mismatch);
  CHECK(contains(o.msg, "model.norm.weight"));
}

TEST_CASE("reader: the first failure in offset order is the one reported") {
  const Built& b = model();
  const uint64_t doff = data_offset_of(b.file);
  Opened ok = open_buf(b.file);
  REQUIRE(ok.st == Status::ok);
  const auto& ts = ok.a->tensors();
  std::vector<uint8_t> f = b.file;
  f[doff + ts.back().offset] ^= 1;  // lm_head
  f[doff + ts[2].offset] ^= 1;      // the router
  f[doff + ts[5].offset] ^= 1;      // an expert
  for (int rep = 0; rep < 3; ++rep) {
    Opened o = open_buf(f);
    CHECK(o.st == Status::digest_mismatch);
    CHECK(contains(o.msg, ts[2].name));
  }
}

// =============================================================================================
// Throughput (only with FWA_ARTIFACT_BENCH_MB)

TEST_CASE("bench: sha256 and full verification throughput") {
  const char* env = std::getenv("FWA_ARTIFACT_BENCH_MB");
  if (!env) return;
  const size_t mb = size_t(std::atoi(env));
  const size_t n = mb << 20;
  std::vector<uint8_t> buf(n);
  for (size_t i = 0; i < n; i += 4096) buf[i] = uint8_t(i >> 12);
  auto now = [] { return std::chrono::steady_clock::now(); };
  for (const Sha256Backend* be : backends()) {
    double best = 1e9;
    for (int rep = 0; rep < 3; ++rep) {
      const auto t0 = now();
      const Sha256Digest d = sha256(buf.data(), n, *be);
      const double s = std::chrono::duration<double>(now() - t0).count();
      best = std::min(best, s);
      CHECK(d[0] == sha256(buf.data(), n)[0]);
    }
    MESSAGE("sha256 " << std::string(be->name) << ": " << double(n) / best / 1e9 << " GB/s over " << mb
                      << " MB");
    // Two streams at once (half the buffer each).
    if (be->blocks2) {
      std::vector<Sha256Job> jobs(2);
      jobs[0].data = buf.data();
      jobs[0].size = n / 2;
      jobs[1].data = buf.data() + n / 2;
      jobs[1].size = n / 2;
      const auto t0 = now();
      sha256_verify_batch(jobs.data(), 2, *be);
      const double s = std::chrono::duration<double>(now() - t0).count();
      MESSAGE("sha256 " << std::string(be->name) << " two streams: " << double(n) / s / 1e9 << " GB/s");
    }
  }
  // A full verify of an artifact of about mb MB: one 16 MB embedding, experts of 12.8 MB
  // (three 8-bit 1024 x 4096 projections).
  std::vector<TSpec> specs;
  specs.push_back({"embed", "embed", -1, -1, "f32", {4096, 1024}, {}});
  const int n_experts = mb > 29 ? int((mb - 16) * 10 / 128) : 1;
  for (int e = 0; e < n_experts; ++e) {
    for (const char* r : {"expert_gate", "expert_up", "expert_down"}) {
      specs.push_back({std::string("l0.e") + std::to_string(e) + "." + r, r, 0, e, "packed",
                       {1024, 4096}, qf(8, 128, false, ScaleType::f16)});
    }
  }
  const Built b = build(specs, 3);
  for (bool lazy : {false, true}) {
    const auto t0 = now();
    Opened o = open_buf(b.file, lazy);
    const double s = std::chrono::duration<double>(now() - t0).count();
    REQUIRE(o.st == Status::ok);
    MESSAGE("open " << (lazy ? "lazy" : "full") << " verify of " << b.file.size() / 1e6
                    << " MB (backend " << std::string(sha256_backend().name) << "): " << s * 1e3 << " ms, "
                    << double(b.file.size()) / s / 1e9 << " GB/s");
  }
}
