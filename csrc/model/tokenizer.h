/* SPDX-License-Identifier: Apache-2.0 */
// Byte-level BPE tokenizer built from a Hugging Face tokenizer.json (the artifact stores that
// object verbatim in its manifest under "tokenizer"). Encoding and decoding equal HF
// `tokenizers` (encode(text).ids with add_special_tokens, decode(ids) with
// skip_special_tokens) for the configurations accepted by load(); anything else is refused
// with Status::incompatible and a message naming the feature.
//
// Supported:
//   model        BPE (merges as "a b" strings or [a, b] pairs), ignore_merges, dropout null,
//                unk_token null, no continuing_subword_prefix / end_of_word_suffix, no
//                byte_fallback.
//   normalizer   null or NFC (implemented: tables from csrc/model/unicode_tables.inc).
//   pre_tokenizer ByteLevel (use_regex true: GPT-2 regex; false: no split; add_prefix_space),
//                or Sequence[Split(Regex <Qwen2 or GPT-2 pattern>, Isolated, invert false),
//                ByteLevel(use_regex false)]. The regexes are hand-written scanners.
//   decoder      ByteLevel. post_processor null or ByteLevel (ids unchanged).
//   added_tokens matched before pre-tokenization, leftmost-longest, normalized=false ones on the
//                raw text and normalized=true ones after normalization (as HF); single_word,
//                lstrip and rstrip must be false.
//
// Thread safety: load() once, then encode()/decode() use scratch memory owned by the object:
// one call at a time per Tokenizer (use one Tokenizer per thread). No exceptions escape.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "core/status.h"

namespace fwa {

class Tokenizer {
 public:
  Tokenizer();
  ~Tokenizer();
  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;

  // Parses the tokenizer.json text. malformed: not JSON or a field of the wrong type;
  // incompatible: a feature this implementation does not support (named in *message);
  // cap_exceeded: a size above the caps of docs/artifact-format.md §3.8 (token ids, entries
  // of vocab, merges and added_tokens, nesting), refused before anything is allocated for it.
  // Memory is proportional to the text and the tokens present, never to the largest id.
  Status load(std::string_view json_text, std::string* message);

  // Vocabulary size: the largest id + 1 (model vocab and added tokens).
  int32_t vocab_size() const;

  // Encodes UTF-8 text (invalid_argument if not valid UTF-8) into ids[0..capacity). Sets
  // *n_ids to the number of ids; if that exceeds capacity, returns buffer_too_small (the
  // first `capacity` ids are written, *n_ids is the required size).
  Status encode(std::string_view text, int32_t* ids, size_t capacity, size_t* n_ids);

  // Decodes ids to UTF-8 (invalid byte sequences become U+FFFD as HF's from_utf8_lossy).
  // Special added tokens are skipped when skip_special. invalid_argument for an unknown id.
  // Writes at most capacity bytes; *n_bytes is the required size (buffer_too_small if larger).
  Status decode(const int32_t* ids, size_t n, bool skip_special, char* out, size_t capacity,
                size_t* n_bytes);

  // The raw bytes of one id (the ByteLevel mapping undone, no UTF-8 repair), appended to
  // *out; a special added token appends nothing when skip_special. invalid_argument for an
  // unknown id, cap_exceeded when out of memory.
  Status token_bytes(int32_t id, bool skip_special, std::string* out);

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace fwa
