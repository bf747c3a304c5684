// SPDX-License-Identifier: Apache-2.0
#include "artifact/json.h"

#include <cstring>
#include <new>

namespace fwa {
namespace json {
namespace {

constexpr uint32_t kEscFlag = 0x80000000u;
constexpr uint64_t kMaxMagnitude = uint64_t(1) << 53;

std::string at(size_t pos) { return "manifest byte " + std::to_string(pos) + ": "; }

bool is_digit(uint8_t c) { return c >= '0' && c <= '9'; }

int hex_value(uint8_t c) {  // lowercase only: canonical \u escapes are lowercase
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

// Length of the valid UTF-8 sequence starting at p (p[0] >= 0x80), or 0 if invalid
// (overlong forms, surrogates, code points above U+10FFFF, truncated sequences).
size_t utf8_sequence(const uint8_t* p, size_t avail) {
  const uint8_t c = p[0];
  auto cont = [&](size_t i, uint8_t lo, uint8_t hi) {
    return i < avail && p[i] >= lo && p[i] <= hi;
  };
  if (c >= 0xC2 && c <= 0xDF) return cont(1, 0x80, 0xBF) ? 2 : 0;
  if (c == 0xE0) return cont(1, 0xA0, 0xBF) && cont(2, 0x80, 0xBF) ? 3 : 0;
  if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF) {
    return cont(1, 0x80, 0xBF) && cont(2, 0x80, 0xBF) ? 3 : 0;
  }
  if (c == 0xED) return cont(1, 0x80, 0x9F) && cont(2, 0x80, 0xBF) ? 3 : 0;
  if (c == 0xF0) return cont(1, 0x90, 0xBF) && cont(2, 0x80, 0xBF) && cont(3, 0x80, 0xBF) ? 4 : 0;
  if (c >= 0xF1 && c <= 0xF3) {
    return cont(1, 0x80, 0xBF) && cont(2, 0x80, 0xBF) && cont(3, 0x80, 0xBF) ? 4 : 0;
  }
  if (c == 0xF4) return cont(1, 0x80, 0x8F) && cont(2, 0x80, 0xBF) && cont(3, 0x80, 0xBF) ? 4 : 0;
  return 0;
}

// Reads the unescaped bytes of a validated canonical string literal one at a time.
struct Cursor {
  const uint8_t* d;
  size_t pos, end;  // pos after the opening quote, end at the closing quote
  bool done() const { return pos >= end; }
  uint8_t next() {
    const uint8_t c = d[pos];
    if (c != '\\') {
      ++pos;
      return c;
    }
    const uint8_t e = d[pos + 1];
    pos += 2;
    switch (e) {
      case 'b': return '\b';
      case 'f': return '\f';
      case 'n': return '\n';
      case 'r': return '\r';
      case 't': return '\t';
      case 'u': {
        const int v = hex_value(d[pos + 2]) * 16 + hex_value(d[pos + 3]);
        pos += 4;
        return uint8_t(v);
      }
      default: return e;  // '"' or '\\'
    }
  }
};

// Compares the unescaped contents of two string literals [pos, end) (quotes included).
int compare_strings(const uint8_t* d, uint32_t a_pos, uint32_t a_end, uint32_t b_pos,
                    uint32_t b_end) {
  const bool esc = ((a_end | b_end) & kEscFlag) != 0;
  a_end &= ~kEscFlag;
  b_end &= ~kEscFlag;
  if (!esc) {
    const size_t la = a_end - a_pos - 2, lb = b_end - b_pos - 2;
    const int c = std::memcmp(d + a_pos + 1, d + b_pos + 1, la < lb ? la : lb);
    if (c != 0) return c;
    return la < lb ? -1 : (la > lb ? 1 : 0);
  }
  Cursor a{d, a_pos + 1, a_end - 1}, b{d, b_pos + 1, b_end - 1};
  while (!a.done() && !b.done()) {
    const uint8_t x = a.next(), y = b.next();
    if (x != y) return x < y ? -1 : 1;
  }
  if (a.done() && b.done()) return 0;
  return a.done() ? -1 : 1;
}

struct Frame {
  uint32_t node;      // tape index of the container
  bool object;
  uint32_t last_key;  // tape index of the previous key (objects), UINT32_MAX before the first
};

class Parser {
 public:
  Parser(const uint8_t* d, size_t n, const Limits& lim, std::vector<Document::Node>* tape,
         std::string* msg)
      : d_(d), n_(n), lim_(lim), tape_(tape), msg_(msg) {}

  Status run();

 private:
  Status fail(Status st, size_t pos, const std::string& what) {
    if (msg_) *msg_ = at(pos) + what;
    return st;
  }
  Status string(uint32_t* end_out);
  Status number();
  Status literal(const char* word);
  void push(uint32_t pos, uint32_t end) { tape_->push_back({pos, end, uint32_t(tape_->size() + 1)}); }

  const uint8_t* d_;
  size_t n_;
  const Limits& lim_;
  std::vector<Document::Node>* tape_;
  std::string* msg_;
  size_t pos_ = 0;
};

Status Parser::string(uint32_t* end_out) {
  const size_t start = pos_;
  size_t p = pos_ + 1, decoded = 0;
  bool esc = false;
  for (;;) {
    if (p >= n_) return fail(Status::malformed, start, "unterminated string");
    const uint8_t c = d_[p];
    if (c == '"') {
      ++p;
      break;
    }
    if (c == '\\') {
      esc = true;
      if (p + 1 >= n_) return fail(Status::malformed, start, "unterminated string");
      const uint8_t e = d_[p + 1];
      if (e == '"' || e == '\\' || e == 'b' || e == 'f' || e == 'n' || e == 'r' || e == 't') {
        p += 2;
      } else if (e == 'u') {
        int v = 0;
        for (size_t i = 0; i < 4; ++i) {
          const int h = p + 2 + i < n_ ? hex_value(d_[p + 2 + i]) : -1;
          if (h < 0) {
            return fail(Status::malformed, p,
                        "\\u escape needs 4 lowercase hex digits (canonical form)");
          }
          v = v * 16 + h;
        }
        if (v >= 0x20 || v == '\b' || v == '\f' || v == '\n' || v == '\r' || v == '\t') {
          return fail(Status::malformed, p,
                      "non-canonical \\u escape: only control characters without a short "
                      "escape are written as \\u00xx, everything else as itself");
        }
        p += 6;
      } else {
        return fail(Status::malformed, p,
                    std::string("invalid or non-canonical escape '\\") +
                        (e >= 0x20 && e < 0x7f ? std::string(1, char(e)) : "?") + "'");
      }
      ++decoded;
    } else if (c < 0x20) {
      return fail(Status::malformed, p, "unescaped control character in a string");
    } else if (c < 0x80) {
      ++p;
      ++decoded;
    } else {
      const size_t len = utf8_sequence(d_ + p, n_ - p);
      if (len == 0) return fail(Status::malformed, p, "invalid UTF-8 in a string");
      p += len;
      decoded += len;
    }
    if (decoded > lim_.max_string) {
      return fail(Status::cap_exceeded, start,
                  "string longer than the cap of " + std::to_string(lim_.max_string) + " bytes");
    }
  }
  pos_ = p;
  *end_out = uint32_t(p) | (esc ? kEscFlag : 0);
  return Status::ok;
}

Status Parser::number() {
  const size_t start = pos_;
  size_t p = pos_;
  const bool neg = d_[p] == '-';
  if (neg) ++p;
  if (p >= n_ || !is_digit(d_[p])) return fail(Status::malformed, start, "invalid number");
  uint64_t mag = 0;
  if (d_[p] == '0') {
    ++p;
    if (p < n_ && is_digit(d_[p])) {
      return fail(Status::malformed, start, "number with a leading zero");
    }
    if (neg) return fail(Status::malformed, start, "-0 is not canonical");
  } else {
    size_t digits = 0;
    while (p < n_ && is_digit(d_[p])) {
      if (++digits > 16) break;  // 2^53 has 16 digits
      mag = mag * 10 + uint64_t(d_[p] - '0');
      ++p;
    }
    if (digits > 16 || mag > kMaxMagnitude) {
      return fail(Status::malformed, start, "integer outside [-2^53, 2^53]");
    }
  }
  if (p < n_ && (d_[p] == '.' || d_[p] == 'e' || d_[p] == 'E')) {
    return fail(Status::malformed, start,
                "non-integer number (manifest numbers are integers; reals are strings)");
  }
  pos_ = p;
  push(uint32_t(start), uint32_t(p));
  return Status::ok;
}

Status Parser::literal(const char* word) {
  const size_t len = std::strlen(word);
  if (n_ - pos_ < len || std::memcmp(d_ + pos_, word, len) != 0) {
    return fail(Status::malformed, pos_, "invalid literal");
  }
  push(uint32_t(pos_), uint32_t(pos_ + len));
  pos_ += len;
  return Status::ok;
}

Status Parser::run() {
  if (n_ > lim_.max_input || n_ >= kEscFlag) {
    return fail(Status::cap_exceeded, 0,
                "document of " + std::to_string(n_) + " bytes exceeds the cap of " +
                    std::to_string(lim_.max_input));
  }
  std::vector<Frame> stack;
  stack.reserve(size_t(lim_.max_depth > 0 ? lim_.max_depth : 0));
  enum { kValue, kKey, kAfter } state = kValue;
  Status st;
  for (;;) {
    if (state == kKey) {
      Frame& f = stack.back();
      if (pos_ >= n_) return fail(Status::malformed, pos_, "unexpected end (expected a key)");
      if (d_[pos_] != '"') return fail(Status::malformed, pos_, "expected '\"' to start a key");
      const uint32_t kpos = uint32_t(pos_);
      uint32_t kend;
      if ((st = string(&kend)) != Status::ok) return st;
      push(kpos, kend);
      const uint32_t knode = uint32_t(tape_->size() - 1);
      if (f.last_key != UINT32_MAX) {
        const Document::Node& prev = (*tape_)[f.last_key];
        const int c = compare_strings(d_, prev.pos, prev.end, kpos, kend);
        if (c == 0) {
          return fail(Status::malformed, kpos,
                      "duplicate key " +
                          std::string(reinterpret_cast<const char*>(d_ + kpos),
                                      (kend & ~kEscFlag) - kpos));
        }
        if (c > 0) {
          return fail(Status::malformed, kpos,
                      "object keys not sorted by byte value (canonical form)");
        }
      }
      f.last_key = knode;
      if (pos_ >= n_ || d_[pos_] != ':') return fail(Status::malformed, pos_, "expected ':'");
      ++pos_;
      state = kValue;
      continue;
    }
    if (state == kValue) {
      if (pos_ >= n_) return fail(Status::malformed, pos_, "unexpected end (expected a value)");
      const uint8_t c = d_[pos_];
      if (c == '{' || c == '[') {
        if (stack.size() >= size_t(lim_.max_depth)) {
          return fail(Status::cap_exceeded, pos_,
                      "nesting deeper than the cap of " + std::to_string(lim_.max_depth));
        }
        tape_->push_back({uint32_t(pos_), 0, 0});
        stack.push_back({uint32_t(tape_->size() - 1), c == '{', UINT32_MAX});
        ++pos_;
        if (pos_ < n_ && d_[pos_] == (c == '{' ? '}' : ']')) {
          state = kAfter;  // empty container: closed below
          continue;
        }
        state = c == '{' ? kKey : kValue;
        continue;
      }
      if (c == '"') {
        const uint32_t spos = uint32_t(pos_);
        uint32_t send;
        if ((st = string(&send)) != Status::ok) return st;
        push(spos, send);
      } else if (c == '-' || is_digit(c)) {
        if ((st = number()) != Status::ok) return st;
      } else if (c == 't') {
        if ((st = literal("true")) != Status::ok) return st;
      } else if (c == 'f') {
        if ((st = literal("false")) != Status::ok) return st;
      } else if (c == 'n') {
        if ((st = literal("null")) != Status::ok) return st;
      } else if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
        return fail(Status::malformed, pos_, "whitespace (canonical JSON has none)");
      } else {
        return fail(Status::malformed, pos_, "unexpected character");
      }
      state = kAfter;
      continue;
    }
    // kAfter: a value is complete; close containers or continue with the next element.
    if (stack.empty()) {
      if (pos_ != n_) return fail(Status::malformed, pos_, "data after the top-level value");
      return Status::ok;
    }
    Frame& f = stack.back();
    if (pos_ >= n_) return fail(Status::malformed, pos_, "unexpected end (unclosed container)");
    const uint8_t c = d_[pos_];
    if (c == (f.object ? '}' : ']')) {
      Document::Node& node = (*tape_)[f.node];
      node.end = uint32_t(pos_ + 1);
      node.next = uint32_t(tape_->size());
      stack.pop_back();
      ++pos_;
      continue;
    }
    if (c == ',') {
      ++pos_;
      state = f.object ? kKey : kValue;
      continue;
    }
    return fail(Status::malformed, pos_,
                f.object ? "expected ',' or '}'" : "expected ',' or ']'");
  }
}

}  // namespace

const char* type_name(Type t) {
  switch (t) {
    case Type::null: return "null";
    case Type::boolean: return "boolean";
    case Type::integer: return "integer";
    case Type::string: return "string";
    case Type::array: return "array";
    case Type::object: return "object";
  }
  return "?";
}

void unescape(const uint8_t* data, size_t pos, size_t end, std::string* out) {
  out->clear();
  Cursor c{data, pos + 1, end - 1};
  while (!c.done()) out->push_back(char(c.next()));
}

Status Document::parse(const uint8_t* data, size_t n, const Limits& limits,
                       std::string* message) {
  tape_.clear();
  data_ = data;
  size_ = n;
  Status st;
  try {
    Parser p(data, n, limits, &tape_, message);
    st = p.run();
  } catch (const std::bad_alloc&) {
    if (message) *message = "out of memory while parsing the manifest";
    st = Status::io_error;
  }
  if (st != Status::ok) {
    tape_.clear();
    tape_.shrink_to_fit();
    data_ = nullptr;
    size_ = 0;
  }
  return st;
}

Value Document::root() const {
  if (tape_.empty()) return Value();
  return Value(this, 0, uint32_t(tape_.size()), false);
}

Type Value::type() const {
  switch (doc_->data_[doc_->tape_[idx_].pos]) {
    case '{': return Type::object;
    case '[': return Type::array;
    case '"': return Type::string;
    case 't':
    case 'f': return Type::boolean;
    case 'n': return Type::null;
    default: return Type::integer;
  }
}

bool Value::get_bool(bool* out) const {
  if (!is(Type::boolean)) return false;
  *out = doc_->data_[doc_->tape_[idx_].pos] == 't';
  return true;
}

bool Value::get_int(int64_t* out) const {
  if (!is(Type::integer)) return false;
  const Document::Node& n = doc_->tape_[idx_];
  size_t p = n.pos;
  const bool neg = doc_->data_[p] == '-';
  if (neg) ++p;
  int64_t v = 0;
  for (; p < n.end; ++p) v = v * 10 + (doc_->data_[p] - '0');  // <= 2^53: cannot overflow
  *out = neg ? -v : v;
  return true;
}

bool Value::get_string(std::string* out) const {
  if (!is(Type::string)) return false;
  const Document::Node& n = doc_->tape_[idx_];
  const uint32_t end = n.end & ~kEscFlag;
  if (!(n.end & kEscFlag)) {
    out->assign(reinterpret_cast<const char*>(doc_->data_ + n.pos + 1), end - n.pos - 2);
  } else {
    unescape(doc_->data_, n.pos, end, out);
  }
  return true;
}

bool Value::string_equals(std::string_view s) const {
  if (!is(Type::string)) return false;
  const Document::Node& n = doc_->tape_[idx_];
  const uint32_t end = n.end & ~kEscFlag;
  if (!(n.end & kEscFlag)) {
    return end - n.pos - 2 == s.size() &&
           (s.empty() || std::memcmp(doc_->data_ + n.pos + 1, s.data(), s.size()) == 0);
  }
  Cursor c{doc_->data_, n.pos + 1, end - 1};
  size_t i = 0;
  while (!c.done()) {
    if (i >= s.size() || c.next() != uint8_t(s[i])) return false;
    ++i;
  }
  return i == s.size();
}

Value Value::first() const {
  if (!valid()) return Value();
  const Type t = type();
  const Document::Node& n = doc_->tape_[idx_];
  if (t == Type::array) {
    return idx_ + 1 < n.next ? Value(doc_, idx_ + 1, n.next, false) : Value();
  }
  if (t == Type::object) {
    return idx_ + 2 < n.next ? Value(doc_, idx_ + 2, n.next, true) : Value();
  }
  return Value();
}

Value Value::next() const {
  if (!valid()) return Value();
  const uint32_t after = doc_->tape_[idx_].next;
  if (after >= parent_end_) return Value();
  return member_ ? Value(doc_, after + 1, parent_end_, true)
                 : Value(doc_, after, parent_end_, false);
}

Value Value::key() const {
  if (!valid() || !member_) return Value();
  return Value(doc_, idx_ - 1, idx_, false);
}

size_t Value::size() const {
  size_t count = 0;
  for (Value v = first(); v.valid(); v = v.next()) ++count;
  return count;
}

Value Value::find(std::string_view k) const {
  if (!is(Type::object)) return Value();
  for (Value v = first(); v.valid(); v = v.next()) {
    if (v.key().string_equals(k)) return v;
  }
  return Value();
}

std::string_view Value::raw() const {
  if (!valid()) return {};
  const Document::Node& n = doc_->tape_[idx_];
  const uint32_t end = n.end & ~kEscFlag;
  return std::string_view(reinterpret_cast<const char*>(doc_->data_ + n.pos), end - n.pos);
}

size_t Value::offset() const { return valid() ? doc_->tape_[idx_].pos : 0; }

}  // namespace json
}  // namespace fwa
