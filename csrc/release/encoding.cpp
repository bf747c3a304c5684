// SPDX-License-Identifier: Apache-2.0
// Strict base64, the DSSE PAE and the JSON canonicalizer for hand-written trust policies.
#include <algorithm>
#include <cstring>
#include <new>

#include "release/release.h"

namespace fwa {
namespace release {
namespace {

int b64_value(uint8_t c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}

}  // namespace

bool base64_decode(std::string_view in, std::vector<uint8_t>* out) {
  out->clear();
  if (in.size() % 4 != 0) return false;
  out->reserve(in.size() / 4 * 3);
  for (size_t i = 0; i < in.size(); i += 4) {
    const bool last = i + 4 == in.size();
    int v[4];
    int pad = 0;
    for (int j = 0; j < 4; ++j) {
      const uint8_t c = uint8_t(in[i + j]);
      if (c == '=' && last && j >= 2) {
        v[j] = 0;
        ++pad;
        continue;
      }
      if (pad) return false;  // a symbol after '='
      v[j] = b64_value(c);
      if (v[j] < 0) return false;
    }
    const uint32_t w = uint32_t(v[0]) << 18 | uint32_t(v[1]) << 12 | uint32_t(v[2]) << 6 |
                       uint32_t(v[3]);
    out->push_back(uint8_t(w >> 16));
    if (pad == 2) {
      if (v[1] & 0x0F) return false;  // unused bits must be zero (one encoding per value)
      continue;
    }
    out->push_back(uint8_t(w >> 8));
    if (pad == 1) {
      if (v[2] & 0x03) return false;
      continue;
    }
    out->push_back(uint8_t(w));
  }
  return true;
}

std::string pae(std::string_view payload_type, std::string_view payload) {
  std::string s = "DSSEv1 ";
  s += std::to_string(payload_type.size());
  s += ' ';
  s += payload_type;
  s += ' ';
  s += std::to_string(payload.size());
  s += ' ';
  s += payload;
  return s;
}

namespace {

// Length of the valid UTF-8 sequence at p (p[0] >= 0x80), 0 if invalid.
size_t utf8_len(const uint8_t* p, size_t avail) {
  const uint8_t c = p[0];
  auto cont = [&](size_t i, uint8_t lo, uint8_t hi) {
    return i < avail && p[i] >= lo && p[i] <= hi;
  };
  if (c >= 0xC2 && c <= 0xDF) return cont(1, 0x80, 0xBF) ? 2 : 0;
  if (c == 0xE0) return cont(1, 0xA0, 0xBF) && cont(2, 0x80, 0xBF) ? 3 : 0;
  if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF)
    return cont(1, 0x80, 0xBF) && cont(2, 0x80, 0xBF) ? 3 : 0;
  if (c == 0xED) return cont(1, 0x80, 0x9F) && cont(2, 0x80, 0xBF) ? 3 : 0;
  if (c == 0xF0) return cont(1, 0x90, 0xBF) && cont(2, 0x80, 0xBF) && cont(3, 0x80, 0xBF) ? 4 : 0;
  if (c >= 0xF1 && c <= 0xF3)
    return cont(1, 0x80, 0xBF) && cont(2, 0x80, 0xBF) && cont(3, 0x80, 0xBF) ? 4 : 0;
  if (c == 0xF4) return cont(1, 0x80, 0x8F) && cont(2, 0x80, 0xBF) && cont(3, 0x80, 0xBF) ? 4 : 0;
  return 0;
}

void put_utf8(uint32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(char(cp));
  } else if (cp < 0x800) {
    out->push_back(char(0xC0 | (cp >> 6)));
    out->push_back(char(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(char(0xE0 | (cp >> 12)));
    out->push_back(char(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(char(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(char(0xF0 | (cp >> 18)));
    out->push_back(char(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(char(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(char(0x80 | (cp & 0x3F)));
  }
}

// The canonical string literal of the unescaped bytes s.
void put_canonical_string(const std::string& s, std::string* out) {
  static const char hex[] = "0123456789abcdef";
  out->push_back('"');
  for (const char ch : s) {
    const uint8_t c = uint8_t(ch);
    switch (c) {
      case '"': *out += "\\\""; break;
      case '\\': *out += "\\\\"; break;
      case '\b': *out += "\\b"; break;
      case '\f': *out += "\\f"; break;
      case '\n': *out += "\\n"; break;
      case '\r': *out += "\\r"; break;
      case '\t': *out += "\\t"; break;
      default:
        if (c < 0x20) {
          *out += "\\u00";
          out->push_back(hex[c >> 4]);
          out->push_back(hex[c & 15]);
        } else {
          out->push_back(ch);
        }
    }
  }
  out->push_back('"');
}

// Recursive descent (depth bounded by max_depth) that writes the canonical form.
class Canon {
 public:
  Canon(const uint8_t* d, size_t n, int max_depth, size_t max_string, std::string* msg)
      : d_(d), n_(n), max_depth_(max_depth), max_string_(max_string), msg_(msg) {}

  Status run(std::string* out) {
    skip_ws();
    Status st = value(out, 0);
    if (st != Status::ok) return st;
    skip_ws();
    if (p_ != n_) return fail("data after the top-level value");
    return Status::ok;
  }

 private:
  Status fail(const std::string& what) {
    if (msg_) *msg_ = "byte " + std::to_string(p_) + ": " + what;
    return Status::malformed;
  }
  void skip_ws() {
    while (p_ < n_ && (d_[p_] == ' ' || d_[p_] == '\t' || d_[p_] == '\n' || d_[p_] == '\r')) ++p_;
  }
  int hex4(size_t at) const {
    if (at + 4 > n_) return -1;
    int v = 0;
    for (size_t i = 0; i < 4; ++i) {
      const uint8_t c = d_[at + i];
      int h;
      if (c >= '0' && c <= '9') h = c - '0';
      else if (c >= 'a' && c <= 'f') h = c - 'a' + 10;
      else if (c >= 'A' && c <= 'F') h = c - 'A' + 10;
      else return -1;
      v = v * 16 + h;
    }
    return v;
  }

  Status string(std::string* s) {
    ++p_;  // the opening quote
    s->clear();
    for (;;) {
      if (p_ >= n_) return fail("unterminated string");
      const uint8_t c = d_[p_];
      if (c == '"') {
        ++p_;
        return Status::ok;
      }
      if (c == '\\') {
        if (p_ + 1 >= n_) return fail("unterminated string");
        const uint8_t e = d_[p_ + 1];
        p_ += 2;
        switch (e) {
          case '"': s->push_back('"'); break;
          case '\\': s->push_back('\\'); break;
          case '/': s->push_back('/'); break;
          case 'b': s->push_back('\b'); break;
          case 'f': s->push_back('\f'); break;
          case 'n': s->push_back('\n'); break;
          case 'r': s->push_back('\r'); break;
          case 't': s->push_back('\t'); break;
          case 'u': {
            int v = hex4(p_);
            if (v < 0) return fail("\\u escape needs 4 hex digits");
            p_ += 4;
            uint32_t cp = uint32_t(v);
            if (cp >= 0xD800 && cp <= 0xDBFF) {
              const int lo = p_ + 1 < n_ && d_[p_] == '\\' && d_[p_ + 1] == 'u' ? hex4(p_ + 2) : -1;
              if (lo < 0xDC00 || lo > 0xDFFF) return fail("lone surrogate in a \\u escape");
              p_ += 6;
              cp = 0x10000 + ((cp - 0xD800) << 10) + (uint32_t(lo) - 0xDC00);
            } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
              return fail("lone surrogate in a \\u escape");
            }
            put_utf8(cp, s);
            break;
          }
          default: return fail("invalid escape");
        }
      } else if (c < 0x20) {
        return fail("unescaped control character in a string");
      } else if (c < 0x80) {
        s->push_back(char(c));
        ++p_;
      } else {
        const size_t len = utf8_len(d_ + p_, n_ - p_);
        if (!len) return fail("invalid UTF-8 in a string");
        s->append(reinterpret_cast<const char*>(d_ + p_), len);
        p_ += len;
      }
      if (s->size() > max_string_)
        return fail("string longer than the cap of " + std::to_string(max_string_) + " bytes");
    }
  }

  Status number(std::string* out) {
    const size_t start = p_;
    if (d_[p_] == '-') ++p_;
    if (p_ >= n_ || d_[p_] < '0' || d_[p_] > '9') return fail("invalid number");
    if (d_[p_] == '0' && p_ + 1 < n_ && d_[p_ + 1] >= '0' && d_[p_ + 1] <= '9')
      return fail("number with a leading zero");
    uint64_t mag = 0;
    size_t digits = 0;
    while (p_ < n_ && d_[p_] >= '0' && d_[p_] <= '9') {
      if (++digits > 16) return fail("integer outside [-2^53, 2^53]");
      mag = mag * 10 + uint64_t(d_[p_] - '0');
      ++p_;
    }
    if (mag > uint64_t(kMaxVersion)) return fail("integer outside [-2^53, 2^53]");
    if (p_ < n_ && (d_[p_] == '.' || d_[p_] == 'e' || d_[p_] == 'E'))
      return fail("non-integer number (only integers are allowed)");
    const bool neg = d_[start] == '-';
    if (neg && mag == 0) return fail("-0 is not an integer value here");
    if (neg) out->push_back('-');
    *out += std::to_string(mag);
    return Status::ok;
  }

  Status value(std::string* out, int depth) {
    if (p_ >= n_) return fail("unexpected end (expected a value)");
    const uint8_t c = d_[p_];
    if (c == '{' || c == '[') {
      if (depth >= max_depth_)
        return fail("nesting deeper than the cap of " + std::to_string(max_depth_));
      ++p_;
      skip_ws();
      if (c == '[') {
        out->push_back('[');
        if (p_ < n_ && d_[p_] == ']') {
          ++p_;
          out->push_back(']');
          return Status::ok;
        }
        for (bool first = true;; first = false) {
          if (!first) out->push_back(',');
          skip_ws();
          Status st = value(out, depth + 1);
          if (st != Status::ok) return st;
          skip_ws();
          if (p_ < n_ && d_[p_] == ',') {
            ++p_;
            continue;
          }
          if (p_ < n_ && d_[p_] == ']') {
            ++p_;
            out->push_back(']');
            return Status::ok;
          }
          return fail("expected ',' or ']'");
        }
      }
      std::vector<std::pair<std::string, std::string>> members;
      if (p_ < n_ && d_[p_] == '}') {
        ++p_;
      } else {
        for (;;) {
          skip_ws();
          if (p_ >= n_ || d_[p_] != '"') return fail("expected '\"' to start a key");
          std::string key;
          Status st = string(&key);
          if (st != Status::ok) return st;
          skip_ws();
          if (p_ >= n_ || d_[p_] != ':') return fail("expected ':'");
          ++p_;
          skip_ws();
          std::string v;
          st = value(&v, depth + 1);
          if (st != Status::ok) return st;
          members.emplace_back(std::move(key), std::move(v));
          skip_ws();
          if (p_ < n_ && d_[p_] == ',') {
            ++p_;
            continue;
          }
          if (p_ < n_ && d_[p_] == '}') {
            ++p_;
            break;
          }
          return fail("expected ',' or '}'");
        }
      }
      std::sort(members.begin(), members.end(),
                [](const auto& a, const auto& b) { return a.first < b.first; });
      out->push_back('{');
      for (size_t i = 0; i < members.size(); ++i) {
        if (i && members[i].first == members[i - 1].first) {
          std::string k;
          put_canonical_string(members[i].first, &k);
          return fail("duplicate key " + k);
        }
        if (i) out->push_back(',');
        put_canonical_string(members[i].first, out);
        out->push_back(':');
        *out += members[i].second;
      }
      out->push_back('}');
      return Status::ok;
    }
    if (c == '"') {
      std::string s;
      Status st = string(&s);
      if (st != Status::ok) return st;
      put_canonical_string(s, out);
      return Status::ok;
    }
    if (c == '-' || (c >= '0' && c <= '9')) return number(out);
    for (const char* word : {"true", "false", "null"}) {
      const size_t len = std::strlen(word);
      if (n_ - p_ >= len && std::memcmp(d_ + p_, word, len) == 0) {
        p_ += len;
        *out += word;
        return Status::ok;
      }
    }
    return fail("unexpected character");
  }

  const uint8_t* d_;
  size_t n_;
  int max_depth_;
  size_t max_string_;
  std::string* msg_;
  size_t p_ = 0;
};

}  // namespace

Status canonicalize_json(const uint8_t* data, size_t n, size_t max_input, int max_depth,
                         size_t max_string, std::string* out, std::string* message) {
  if (n > max_input) {
    if (message)
      *message = "document of " + std::to_string(n) + " bytes exceeds the cap of " +
                 std::to_string(max_input);
    return Status::cap_exceeded;
  }
  out->clear();
  try {
    Canon c(data, n, max_depth, max_string, message);
    const Status st = c.run(out);
    if (st != Status::ok) out->clear();
    return st;
  } catch (const std::bad_alloc&) {
    if (message) *message = "out of memory";
    out->clear();
    return Status::io_error;
  }
}

}  // namespace release
}  // namespace fwa
