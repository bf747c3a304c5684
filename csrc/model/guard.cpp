// SPDX-License-Identifier: Apache-2.0
#include "model/guard.h"

#include <algorithm>
#include <cstring>
#include <map>
#include <new>
#include <utility>

#include "model/model.h"

namespace fwa {

namespace {

Status fail(std::string* message, Status st, const std::string& text) {
  if (message) *message = text;
  return st;
}

bool ident_byte(uint8_t b) {
  return (b >= 'a' && b <= 'z') || (b >= 'A' && b <= 'Z') || (b >= '0' && b <= '9') ||
         b == '_' || b >= 0x80;
}

bool ident_start(uint8_t b) { return ident_byte(b) && !(b >= '0' && b <= '9') && b < 0x80; }

bool space_byte(uint8_t b) {
  return b == ' ' || b == '\t' || b == '\n' || b == '\r' || b == '\v' || b == '\f';
}

}  // namespace

Status CodeGuard::compile(const std::vector<GuardPattern>& patterns, std::string* message) {
  if (patterns.size() > kMaxGuardPatterns)
    return fail(message, Status::cap_exceeded,
                "policy: " + std::to_string(patterns.size()) + " patterns, the cap is " +
                    std::to_string(kMaxGuardPatterns));
  const size_t np = patterns.size();
  for (size_t p = 0; p < np; ++p) {
    const GuardPattern& g = patterns[p];
    const std::string where = "policy: pattern " + std::to_string(p) + ": ";
    if (g.text.empty()) return fail(message, Status::invalid_argument, where + "empty");
    if (g.text.size() > kMaxGuardPatternBytes)
      return fail(message, Status::cap_exceeded,
                  where + "longer than " + std::to_string(kMaxGuardPatternBytes) + " bytes");
    if (g.rule < 0 || size_t(g.rule) >= rule_names_.size())
      return fail(message, Status::invalid_argument,
                  where + "rule index " + std::to_string(g.rule) + " outside [0, " +
                      std::to_string(rule_names_.size()) + ")");
    if (g.kind == GuardPatternKind::call) {
      const auto* t = reinterpret_cast<const uint8_t*>(g.text.data());
      bool ok = ident_start(t[0]);
      for (size_t i = 1; i < g.text.size(); ++i) ok = ok && ident_byte(t[i]) && t[i] < 0x80;
      if (!ok)
        return fail(message, Status::invalid_argument,
                    where + "a call pattern must be an ASCII C identifier ([A-Za-z_][A-Za-z0-9_]*)");
    } else if (g.kind != GuardPatternKind::literal) {
      return fail(message, Status::invalid_argument, where + "kind must be call or literal");
    }
  }
  // Positions: pattern p, i bytes matched (1..len; a call's len also stands for "the word and
  // maybe whitespace after it"; a literal never rests at len, it matched).
  std::vector<int32_t> base(np + 1, 0);
  for (size_t p = 0; p < np; ++p) base[p + 1] = base[p] + int32_t(patterns[p].text.size());
  const size_t npos = size_t(base[np]);
  std::vector<int32_t> pat_of(npos), len_of(npos);
  for (size_t p = 0; p < np; ++p)
    for (int32_t i = 1; i <= int32_t(patterns[p].text.size()); ++i) {
      pat_of[size_t(base[p] + i - 1)] = int32_t(p);
      len_of[size_t(base[p] + i - 1)] = i;
    }
  // A DFA state: (previous byte was an identifier byte, sorted set of live positions).
  using Key = std::pair<bool, std::vector<int32_t>>;
  std::map<Key, int32_t> index;
  std::vector<Key> states;
  states.push_back(Key(false, {}));
  index[states[0]] = 0;
  std::vector<int32_t> set;
  for (size_t s = 0; s < states.size(); ++s) {
    if (states.size() > size_t(kMaxGuardStates))
      return fail(message, Status::cap_exceeded,
                  "policy: the automaton has more than " + std::to_string(kMaxGuardStates) +
                      " states (fewer or shorter literal patterns)");
    next_.resize(states.size() * 256);
    match_.resize(states.size() * 256);
    for (int b = 0; b < 256; ++b) {
      const uint8_t c = uint8_t(b);
      const bool prev_ident = states[s].first;
      int32_t matched = -1;  // lowest pattern index completed
      set.clear();
      for (int32_t pos : states[s].second) {
        const size_t p = size_t(pat_of[size_t(pos)]);
        const int32_t i = len_of[size_t(pos)];
        const std::string& t = patterns[p].text;
        const int32_t len = int32_t(t.size());
        if (patterns[p].kind == GuardPatternKind::call && i == len) {
          if (space_byte(c)) set.push_back(pos);
          else if (c == '(' && (matched < 0 || int32_t(p) < matched)) matched = int32_t(p);
        } else if (uint8_t(t[size_t(i)]) == c) {
          if (patterns[p].kind == GuardPatternKind::literal && i + 1 == len) {
            if (matched < 0 || int32_t(p) < matched) matched = int32_t(p);
          } else {
            set.push_back(pos + 1);
          }
        }
      }
      for (size_t p = 0; p < np; ++p) {
        const std::string& t = patterns[p].text;
        if (uint8_t(t[0]) != c) continue;
        if (patterns[p].kind == GuardPatternKind::call) {
          if (!prev_ident) set.push_back(base[p]);
        } else if (t.size() == 1) {
          if (matched < 0 || int32_t(p) < matched) matched = int32_t(p);
        } else {
          set.push_back(base[p]);
        }
      }
      std::sort(set.begin(), set.end());
      set.erase(std::unique(set.begin(), set.end()), set.end());
      Key key(ident_byte(c), set);
      auto it = index.find(key);
      int32_t to;
      if (it == index.end()) {
        to = int32_t(states.size());
        index.emplace(key, to);
        states.push_back(std::move(key));
      } else {
        to = it->second;
      }
      next_[s * 256 + size_t(b)] = to;
      match_[s * 256 + size_t(b)] = matched < 0 ? -1 : patterns[size_t(matched)].rule;
    }
  }
  num_states_ = int32_t(states.size());
  return Status::ok;
}

Status CodeGuard::create(const std::vector<GuardPattern>& patterns,
                         const std::vector<std::string>& rule_names,
                         const std::vector<std::string>& token_bytes,
                         std::shared_ptr<const CodeGuard>* out, std::string* message) {
  if (rule_names.size() > kMaxGuardRules)
    return fail(message, Status::cap_exceeded,
                "policy: more than " + std::to_string(kMaxGuardRules) + " rules");
  if (token_bytes.empty() || token_bytes.size() > size_t(INT32_MAX))
    return fail(message, Status::invalid_argument, "policy: the vocabulary is empty");
  try {
    std::shared_ptr<CodeGuard> g(new CodeGuard());
    g->rule_names_ = rule_names;
    Status st = g->compile(patterns, message);
    if (st != Status::ok) return st;
    size_t total = 0;
    for (const std::string& t : token_bytes) total += t.size();
    if (total >= UINT32_MAX)
      return fail(message, Status::cap_exceeded, "policy: the vocabulary's bytes exceed 4 GiB");
    g->vocab_size_ = int32_t(token_bytes.size());
    g->bytes_.reserve(total);
    g->offsets_.reserve(token_bytes.size() + 1);
    g->offsets_.push_back(0);
    for (const std::string& t : token_bytes) {
      g->bytes_.insert(g->bytes_.end(), t.begin(), t.end());
      g->offsets_.push_back(uint32_t(g->bytes_.size()));
    }
    bool completes[256] = {};
    for (const GuardPattern& pat : patterns)
      completes[pat.kind == GuardPatternKind::call ? uint8_t('(') : uint8_t(pat.text.back())] = true;
    for (size_t id = 0; id < token_bytes.size(); ++id)
      for (char c : token_bytes[id])
        if (completes[uint8_t(c)]) {
          g->candidates_.push_back(int32_t(id));
          break;
        }
    g->words_ = (token_bytes.size() + 63) / 64;
    // Left uninitialised: a state's mask is written on its first use, so the pages of states
    // never visited are never touched.
    g->masks_.reset(new uint64_t[size_t(g->num_states_) * g->words_]);
    g->ready_.reset(new std::atomic<uint8_t>[size_t(g->num_states_)]);
    for (int32_t s = 0; s < g->num_states_; ++s) g->ready_[size_t(s)].store(0);
    *out = std::move(g);
    return Status::ok;
  } catch (const std::bad_alloc&) {
    return fail(message, Status::cap_exceeded, "policy: out of memory");
  }
}

Status CodeGuard::create(const std::vector<GuardPattern>& patterns,
                         const std::vector<std::string>& rule_names, const Model& model,
                         std::shared_ptr<const CodeGuard>* out, std::string* message) {
  if (!model.has_tokenizer())
    return fail(message, Status::invalid_argument,
                "policy: the model was exported without a tokenizer: a code policy needs the "
                "bytes of its tokens");
  try {
    std::vector<std::string> tokens(size_t(model.config().vocab_size));
    for (size_t id = 0; id < tokens.size(); ++id) {
      const Status st = model.token_bytes(int32_t(id), &tokens[id], message);
      if (st != Status::ok) return st;
    }
    return create(patterns, rule_names, tokens, out, message);
  } catch (const std::bad_alloc&) {
    return fail(message, Status::cap_exceeded, "policy: out of memory");
  }
}

const uint64_t* CodeGuard::banned(int32_t state) const {
  uint64_t* mask = masks_.get() + size_t(state) * words_;
  if (ready_[size_t(state)].load(std::memory_order_acquire)) return mask;
  std::lock_guard<std::mutex> lock(mu_);
  if (!ready_[size_t(state)].load(std::memory_order_relaxed)) {
    std::memset(mask, 0, words_ * sizeof(uint64_t));
    for (int32_t t : candidates_) {
      int32_t rule;
      feed_token(state, t, &rule);
      if (rule >= 0) mask[size_t(t) >> 6] |= uint64_t(1) << (t & 63);
    }
    ready_[size_t(state)].store(1, std::memory_order_release);
  }
  return mask;
}

}  // namespace fwa
