/* SPDX-License-Identifier: Apache-2.0 */
// The decode-time code guard (docs/code-policy.md, "Decode-time guard"): the lexical part of a
// code policy compiled into a DFA over bytes, bound to a vocabulary's token bytes.
//
// Patterns:
//   call     an identifier W at identifier boundaries followed by optional whitespace and '(':
//            the byte before W is not an identifier byte ([A-Za-z0-9_] or >= 0x80) or W starts
//            the text, and the bytes after W are [ \t\n\r\v\f]* then '('. "gets (" matches;
//            "my_gets(", "getsx(" and "1gets(" do not. The match completes at the '('.
//   literal  the bytes anywhere.
// The DFA is built by subset construction over the patterns' positions plus one bit (was the
// previous byte an identifier byte), so every state is a set of live partial matches; a
// transition that completes a pattern carries its rule. Matching is purely lexical: comments,
// string literals and macros are not told apart from code.
//
// A Generation with a guard (model/generate.h) keeps the DFA state of its whole context (seeded
// from the prompt's bytes). It samples as without the guard; only when the sampled token's
// bytes would complete a pattern from the current state does it sample again, with the same
// random draw, over the logits with every such token masked (the state's banned set, computed
// on first use and cached). So a generation the guard never intervenes in is bit-identical to
// an unguarded one, and a step costs one walk of the chosen token's bytes.
#pragma once
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "core/status.h"

namespace fwa {

class Model;

enum class GuardPatternKind : int32_t { call = 0, literal = 1 };

struct GuardPattern {
  std::string text;
  GuardPatternKind kind = GuardPatternKind::call;
  int32_t rule = 0;  // index into the rule names
};

// Caps, checked at compile: patterns, bytes per pattern, rules, DFA states.
constexpr size_t kMaxGuardPatterns = 4096;
constexpr size_t kMaxGuardPatternBytes = 256;
constexpr size_t kMaxGuardRules = 4096;
constexpr int32_t kMaxGuardStates = 4096;

class CodeGuard {
 public:
  // Compiles the patterns and binds them to a vocabulary: token_bytes[id] is what token id
  // adds to the text (empty for special tokens). invalid_argument names a bad pattern or rule
  // index; cap_exceeded a cap above (or out of memory).
  static Status create(const std::vector<GuardPattern>& patterns,
                       const std::vector<std::string>& rule_names,
                       const std::vector<std::string>& token_bytes,
                       std::shared_ptr<const CodeGuard>* out, std::string* message);
  // The same over a model's vocabulary (Model::token_bytes for each id < vocab_size).
  static Status create(const std::vector<GuardPattern>& patterns,
                       const std::vector<std::string>& rule_names, const Model& model,
                       std::shared_ptr<const CodeGuard>* out, std::string* message);

  static constexpr int32_t kStart = 0;  // the state of an empty text

  // Walks n bytes from `state`; *rule is the rule of the first pattern completed on the way
  // (-1: none). Returns the state after them (the walk goes on past a match).
  int32_t feed(int32_t state, const uint8_t* bytes, size_t n, int32_t* rule) const {
    *rule = -1;
    for (size_t i = 0; i < n; ++i) {
      const size_t at = size_t(state) * 256 + bytes[i];
      if (*rule < 0) *rule = match_[at];
      state = next_[at];
    }
    return state;
  }
  // The same for a token's bytes (an id outside the vocabulary adds none).
  int32_t feed_token(int32_t state, int32_t token, int32_t* rule) const {
    if (token < 0 || token >= vocab_size_) {
      *rule = -1;
      return state;
    }
    const uint32_t b = offsets_[size_t(token)], e = offsets_[size_t(token) + 1];
    return feed(state, bytes_.data() + b, e - b, rule);
  }
  // The tokens whose bytes complete a pattern from `state`, as a bitmap of vocab_size bits
  // (bit i of word i / 64). Computed on the first call for a state (one walk of every token
  // that holds a byte able to complete a pattern, under a mutex) into memory allocated at create, then read lock-free: allocates nothing.
  const uint64_t* banned(int32_t state) const;

  int32_t vocab_size() const { return vocab_size_; }
  int32_t num_states() const { return num_states_; }
  const std::vector<std::string>& rule_names() const { return rule_names_; }
  size_t mask_words() const { return words_; }

 private:
  CodeGuard() = default;
  Status compile(const std::vector<GuardPattern>& patterns, std::string* message);

  std::vector<std::string> rule_names_;
  std::vector<int32_t> next_;   // [state][byte] -> state
  std::vector<int32_t> match_;  // [state][byte] -> rule completed by this byte, -1 none
  int32_t num_states_ = 0;
  int32_t vocab_size_ = 0;
  std::vector<uint8_t> bytes_;      // every token's bytes, concatenated
  std::vector<uint32_t> offsets_;   // [vocab_size + 1]
  // The tokens holding a byte that can complete a pattern ('(' for calls, a literal's last
  // byte): no other token is ever banned, so only these are walked for a banned set.
  std::vector<int32_t> candidates_;
  size_t words_ = 0;                // uint64 words per bitmap
  std::unique_ptr<uint64_t[]> masks_;            // [num_states][words_], written on first use
  std::unique_ptr<std::atomic<uint8_t>[]> ready_;  // per state: its mask is written
  mutable std::mutex mu_;
};

}  // namespace fwa
