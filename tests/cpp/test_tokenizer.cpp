// SPDX-License-Identifier: Apache-2.0
#include <doctest/doctest.h>

#include <chrono>
#include <string>

#include "model/tokenizer.h"

using fwa::Status;

namespace {
// "Ġ" is the byte-level char of ' ', "ä" (U+00E4) the one of byte 0xE4.
const char* kJson = R"({
  "version": "1.0", "truncation": null, "padding": null,
  "added_tokens": [{"id": 7, "content": "<s>", "single_word": false, "lstrip": false,
                    "rstrip": false, "normalized": false, "special": true}],
  "normalizer": {"type": "NFC"},
  "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true,
                    "use_regex": true},
  "post_processor": null,
  "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true,
              "use_regex": true},
  "model": {"type": "BPE", "dropout": null, "unk_token": null,
            "continuing_subword_prefix": null, "end_of_word_suffix": null,
            "fuse_unk": false, "byte_fallback": false,
            "vocab": {"a": 0, "b": 1, "\u0120": 2, "ab": 3, "\u0120ab": 4, "\u00e4": 5},
            "merges": ["a b", ["\u0120", "ab"]]}
})";
}  // namespace

TEST_CASE("tokenizer: encode, buffers, decode") {
  fwa::Tokenizer tok;
  std::string msg;
  REQUIRE(tok.load(kJson, &msg) == Status::ok);
  CHECK(tok.vocab_size() == 8);
  int32_t ids[8];
  size_t n = 0;
  REQUIRE(tok.encode("ab ab<s>ab", ids, 8, &n) == Status::ok);
  REQUIRE(n == 4);
  CHECK(ids[0] == 3);
  CHECK(ids[1] == 4);
  CHECK(ids[2] == 7);
  CHECK(ids[3] == 3);
  CHECK(tok.encode("ab ab<s>ab", ids, 2, &n) == Status::buffer_too_small);
  CHECK(n == 4);
  CHECK(tok.encode("a\xff", ids, 8, &n) == Status::invalid_argument);
  CHECK(tok.encode("", ids, 8, &n) == Status::ok);
  CHECK(n == 0);

  char out[16];
  const int32_t d[] = {4, 7, 5, 0};
  REQUIRE(tok.decode(d, 4, true, out, sizeof out, &n) == Status::ok);
  CHECK(std::string(out, n) == " ab\xEF\xBF\xBD" "a");  // lone 0xE4 -> U+FFFD
  REQUIRE(tok.decode(d, 2, false, out, sizeof out, &n) == Status::ok);
  CHECK(std::string(out, n) == " ab<s>");
  CHECK(tok.decode(d, 2, false, out, 2, &n) == Status::buffer_too_small);
  CHECK(n == 6);
  const int32_t bad[] = {6};
  CHECK(tok.decode(bad, 1, true, out, sizeof out, &n) == Status::invalid_argument);
}

TEST_CASE("tokenizer: refusals") {
  fwa::Tokenizer tok;
  std::string msg;
  std::string j = kJson;
  j.replace(j.find("\"dropout\": null"), 15, "\"dropout\": 0.5");
  CHECK(tok.load(j, &msg) == Status::incompatible);
  CHECK(msg.find("BPE dropout") != std::string::npos);
  CHECK(tok.load("{\"model\":", &msg) == Status::malformed);
  int32_t ids[4];
  size_t n;
  CHECK(tok.encode("a", ids, 4, &n) == Status::invalid_argument);  // not loaded
}

namespace {
// s with the first occurrence of `from` replaced by `to`.
std::string sub(std::string s, const std::string& from, const std::string& to) {
  const size_t at = s.find(from);
  REQUIRE(at != std::string::npos);
  return s.replace(at, from.size(), to);
}
}  // namespace

TEST_CASE("tokenizer: declared sizes above the caps are refused before any allocation") {
  fwa::Tokenizer tok;
  std::string msg;
  std::string j = kJson;
  // One id of 1e8 cost a 1e8-entry table (3.2 GB) before the review; now cap_exceeded at once.
  const auto t0 = std::chrono::steady_clock::now();
  std::string big = sub(j, "\"id\": 7", "\"id\": 100000000");
  CHECK(tok.load(big, &msg) == Status::cap_exceeded);
  CHECK(msg.find("100000000") != std::string::npos);
  CHECK(msg.find("2097152") != std::string::npos);
  big = sub(j, "\"a\": 0", "\"a\": 2097152");
  CHECK(tok.load(big, &msg) == Status::cap_exceeded);
  CHECK(msg.find("model.vocab") != std::string::npos);
  CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(1));
  // Nesting beyond the manifest's 64 levels (here under an unused key).
  std::string deep =
      sub(j, "\"1.0\"", std::string(64, '[') + std::string(64, ']'));
  CHECK(tok.load(deep, &msg) == Status::cap_exceeded);
  CHECK(msg.find("nested") != std::string::npos);
  deep = sub(j, "\"1.0\"", std::string(63, '[') + std::string(63, ']'));
  CHECK(tok.load(deep, &msg) == Status::ok);
}

TEST_CASE("tokenizer: the largest id below the cap, and sparse ids, cost only their tokens") {
  fwa::Tokenizer tok;
  std::string msg;
  std::string j = kJson;
  j = sub(j, "\"id\": 7", "\"id\": 2097151");
  REQUIRE(tok.load(j, &msg) == Status::ok);
  CHECK(tok.vocab_size() == 2097152);
  int32_t ids[8];
  size_t n = 0;
  REQUIRE(tok.encode("ab<s>", ids, 8, &n) == Status::ok);
  REQUIRE(n == 2);
  CHECK(ids[1] == 2097151);
  char out[16];
  REQUIRE(tok.decode(ids, 2, false, out, sizeof out, &n) == Status::ok);
  CHECK(std::string(out, n) == "ab<s>");
  const int32_t gap[] = {6, 1000, 2097150};
  for (const int32_t& id : gap) {
    CHECK(tok.decode(&id, 1, false, out, sizeof out, &n) == Status::invalid_argument);
  }
}

TEST_CASE("tokenizer: an added token overrides the model token of the same id") {
  fwa::Tokenizer tok;
  std::string msg;
  std::string j = kJson;
  j = sub(j, "\"id\": 7", "\"id\": 5");
  REQUIRE(tok.load(j, &msg) == Status::ok);
  CHECK(tok.vocab_size() == 6);
  char out[16];
  size_t n = 0;
  const int32_t id = 5;
  REQUIRE(tok.decode(&id, 1, false, out, sizeof out, &n) == Status::ok);
  CHECK(std::string(out, n) == "<s>");
  CHECK(tok.decode(&id, 1, true, out, sizeof out, &n) == Status::ok);
  CHECK(n == 0);
}
