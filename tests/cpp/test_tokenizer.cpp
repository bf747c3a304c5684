#include <doctest/doctest.h>

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
