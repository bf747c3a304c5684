/* SPDX-License-Identifier: Apache-2.0 */
// Caps on the sizes an artifact's manifest declares (docs/artifact-format.md §3.8). A reader
// checks them before it allocates anything proportional to a declared number, so a small file
// never costs a large allocation. The artifact reader checks them at open (check_manifest),
// the tokenizer and the model binder again before their own allocations.
#pragma once
#include <cstddef>
#include <cstdint>

namespace fwa {

// Tokenizer (the manifest's `tokenizer`, Hugging Face tokenizer.json content). Token ids lie in
// [0, kMaxTokenId): 2^21 = 2,097,152, eight times the largest vocabularies in use (Qwen
// 151,936; Gemma 262,144), and small enough that an id fits a 21-bit field.
constexpr int64_t kMaxTokenId = int64_t(1) << 21;
constexpr size_t kMaxVocabEntries = size_t(1) << 21;  // members of model.vocab
constexpr size_t kMaxMerges = size_t(1) << 21;        // elements of model.merges
constexpr size_t kMaxAddedTokens = 65536;             // elements of added_tokens

// Config (§3.3): the largest accepted value of each integer hyper-parameter.
struct ConfigCap {
  const char* key;
  int64_t max;
};
constexpr ConfigCap kConfigCaps[] = {
    {"vocab_size", int64_t(1) << 21},
    {"hidden_size", int64_t(1) << 20},
    {"num_hidden_layers", 4096},
    {"num_attention_heads", 4096},
    {"num_key_value_heads", 4096},
    {"head_dim", 4096},
    {"intermediate_size", int64_t(1) << 22},
    {"moe_intermediate_size", int64_t(1) << 22},
    {"num_experts", 65536},
    {"num_experts_per_tok", 65536},
    {"decoder_sparse_step", 4096},
    {"max_position_embeddings", int64_t(1) << 24},
};

// Generation metadata (§3.9, format 1.1): end-of-sequence ids and the chat template.
constexpr size_t kMaxEosIds = 64;                       // elements of eos_token_ids
constexpr size_t kMaxChatTemplate = size_t(256) << 10;  // UTF-8 bytes of chat_template

}  // namespace fwa
