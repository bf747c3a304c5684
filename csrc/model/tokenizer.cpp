// SPDX-License-Identifier: Apache-2.0
// Byte-level BPE tokenizer (see tokenizer.h). Layout of this file: a small lenient JSON reader
// (tokenizer.json is ordinary JSON: whitespace, any key order, floats; the artifact's strict
// canonical parser does not fit), UTF-8 helpers, Unicode classes and NFC from the generated
// tables, the two pre-tokenizer regexes as scanners, BPE, and the Tokenizer itself.
#include "model/tokenizer.h"

#include <algorithm>
#include <cstring>
#include <new>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "artifact/caps.h"

namespace fwa {
namespace {

#include "model/unicode_tables.inc"

// ---------------------------------------------------------------------------------------------
// JSON
//
// The parsed document is one flat array of 16-byte nodes in document order plus one buffer
// holding every unescaped string, so its memory is a small multiple of the text's size (at
// most 8 bytes of nodes per byte of text) whatever the text holds (docs/artifact-format.md
// §3.8). An object's members are a key node followed by the value node.
struct JNode {
  uint8_t t;      // J::T
  bool b;         // Bool: the value; Arr/Obj: non-empty
  uint32_t next;  // the next element or member value of the same container, 0 after the last
  union {
    double num;
    struct {
      uint32_t off, len;
    } str;  // Str: its bytes in JDoc::pool
  };
};

struct JDoc {
  std::vector<JNode> nodes;
  std::string pool;
};

// A value of a JDoc (cheap to copy); a default-constructed J is "absent".
class J {
 public:
  enum T : uint8_t { Null, Bool, Num, Str, Arr, Obj };
  J() = default;
  J(const JDoc* d, uint32_t i) : d_(d), i_(i) {}
  explicit operator bool() const { return d_ != nullptr; }
  T t() const { return T(node().t); }
  bool is(T x) const { return d_ && t() == x; }
  bool b() const { return node().b; }
  double num() const { return node().num; }
  std::string_view sv() const {
    return std::string_view(d_->pool).substr(node().str.off, node().str.len);
  }
  std::string s() const { return std::string(sv()); }
  // The first element (Arr) or member value (Obj); absent if empty or not a container.
  J first() const {
    if (!d_ || !(t() == Arr || t() == Obj) || !b()) return J();
    return J(d_, i_ + (t() == Obj ? 2 : 1));
  }
  J next() const { return node().next ? J(d_, node().next) : J(); }
  std::string_view key() const { return J(d_, i_ - 1).sv(); }  // of a member value
  size_t size() const {
    size_t n = 0;
    for (J v = first(); v; v = v.next()) ++n;
    return n;
  }
  J at(size_t k) const {
    J v = first();
    while (v && k-- > 0) v = v.next();
    return v;
  }
  // Member `key` of an object (the first if repeated); absent otherwise.
  J get(const char* key) const {
    if (!is(Obj)) return J();
    for (J v = first(); v; v = v.next())
      if (v.key() == key) return v;
    return J();
  }

 private:
  const JNode& node() const { return d_->nodes[i_]; }
  const JDoc* d_ = nullptr;
  uint32_t i_ = 0;
};

// Nodes a valid document needs: one per string (keys included), container, number, literal.
size_t count_nodes(std::string_view s) {
  size_t n = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    if (c == '"') {
      ++n;
      for (++i; i < s.size() && s[i] != '"'; ++i)
        if (s[i] == '\\') ++i;
    } else if (c == '{' || c == '[') {
      ++n;
    } else if (c == '-' || (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z')) {
      ++n;
      while (i + 1 < s.size() && (std::strchr("+-.", s[i + 1]) ||
                                  (s[i + 1] >= '0' && s[i + 1] <= '9') ||
                                  (s[i + 1] >= 'a' && s[i + 1] <= 'z') ||
                                  s[i + 1] == 'E'))
        ++i;
    }
  }
  return n;
}

class JsonParser {
 public:
  JsonParser(std::string_view s) : s_(s) {}
  // Nesting deeper than the manifest's cap (64) is cap_exceeded, any other error malformed.
  bool too_deep = false;
  bool parse(JDoc* doc, std::string* err) {
    if (s_.size() >= UINT32_MAX) {
      *err = "tokenizer.json: larger than 4 GiB";
      return false;
    }
    doc_ = doc;
    doc->nodes.reserve(count_nodes(s_));
    doc->pool.reserve(s_.size());  // unescaping never lengthens a string
    ws();
    uint32_t root;
    if (!value(&root, 0)) {
      *err = "tokenizer.json: invalid JSON at byte " + std::to_string(p_) + ": " + err_;
      return false;
    }
    ws();
    if (p_ != s_.size()) {
      *err = "tokenizer.json: trailing data at byte " + std::to_string(p_);
      return false;
    }
    return true;
  }

 private:
  std::string_view s_;
  size_t p_ = 0;
  std::string err_;
  JDoc* doc_ = nullptr;
  uint32_t push(J::T t) {
    JNode n;
    n.t = t;
    n.b = false;
    n.next = 0;
    n.num = 0;
    doc_->nodes.push_back(n);
    return uint32_t(doc_->nodes.size() - 1);
  }
  bool fail(const char* m) {
    err_ = m;
    return false;
  }
  void ws() {
    while (p_ < s_.size() && (s_[p_] == ' ' || s_[p_] == '\t' || s_[p_] == '\n' || s_[p_] == '\r'))
      ++p_;
  }
  bool lit(const char* w) {
    size_t n = std::strlen(w);
    if (s_.substr(p_, n) != w) return fail("unexpected token");
    p_ += n;
    return true;
  }
  bool hex4(uint32_t* v) {
    if (p_ + 4 > s_.size()) return fail("short \\u escape");
    *v = 0;
    for (int i = 0; i < 4; ++i) {
      char c = s_[p_++];
      *v <<= 4;
      if (c >= '0' && c <= '9') *v |= uint32_t(c - '0');
      else if (c >= 'a' && c <= 'f') *v |= uint32_t(c - 'a' + 10);
      else if (c >= 'A' && c <= 'F') *v |= uint32_t(c - 'A' + 10);
      else return fail("bad \\u escape");
    }
    return true;
  }
  static void put_utf8(std::string* o, uint32_t cp) {
    if (cp < 0x80) {
      o->push_back(char(cp));
    } else if (cp < 0x800) {
      o->push_back(char(0xC0 | (cp >> 6)));
      o->push_back(char(0x80 | (cp & 0x3F)));
    } else if (cp < 0x10000) {
      o->push_back(char(0xE0 | (cp >> 12)));
      o->push_back(char(0x80 | ((cp >> 6) & 0x3F)));
      o->push_back(char(0x80 | (cp & 0x3F)));
    } else {
      o->push_back(char(0xF0 | (cp >> 18)));
      o->push_back(char(0x80 | ((cp >> 12) & 0x3F)));
      o->push_back(char(0x80 | ((cp >> 6) & 0x3F)));
      o->push_back(char(0x80 | (cp & 0x3F)));
    }
  }
  // The string at p_ as node `idx` (its bytes appended to the pool).
  bool str(uint32_t idx) {
    std::string* o = &doc_->pool;
    const size_t start = o->size();
    ++p_;  // opening quote
    for (;;) {
      if (p_ >= s_.size()) return fail("unterminated string");
      unsigned char c = static_cast<unsigned char>(s_[p_]);
      if (c == '"') {
        ++p_;
        doc_->nodes[idx].str.off = uint32_t(start);
        doc_->nodes[idx].str.len = uint32_t(o->size() - start);
        return true;
      }
      if (c < 0x20) return fail("control character in string");
      if (c != '\\') {
        o->push_back(char(c));
        ++p_;
        continue;
      }
      if (++p_ >= s_.size()) return fail("unterminated escape");
      char e = s_[p_++];
      switch (e) {
        case '"': o->push_back('"'); break;
        case '\\': o->push_back('\\'); break;
        case '/': o->push_back('/'); break;
        case 'b': o->push_back('\b'); break;
        case 'f': o->push_back('\f'); break;
        case 'n': o->push_back('\n'); break;
        case 'r': o->push_back('\r'); break;
        case 't': o->push_back('\t'); break;
        case 'u': {
          uint32_t v;
          if (!hex4(&v)) return false;
          if (v >= 0xD800 && v < 0xDC00) {
            uint32_t lo;
            if (s_.substr(p_, 2) != "\\u") return fail("lone surrogate");
            p_ += 2;
            if (!hex4(&lo)) return false;
            if (lo < 0xDC00 || lo > 0xDFFF) return fail("lone surrogate");
            v = 0x10000 + ((v - 0xD800) << 10) + (lo - 0xDC00);
          } else if (v >= 0xDC00 && v < 0xE000) {
            return fail("lone surrogate");
          }
          put_utf8(o, v);
          break;
        }
        default: return fail("bad escape");
      }
    }
  }
  bool value(uint32_t* out, int depth) {
    if (p_ >= s_.size()) return fail("unexpected end");
    const char c = s_[p_];
    if (c == '{' || c == '[') {
      if (depth >= 64) {
        too_deep = true;
        return fail("arrays and objects nested deeper than the cap of 64");
      }
      const bool obj = c == '{';
      const uint32_t me = push(obj ? J::Obj : J::Arr);
      *out = me;
      ++p_;
      ws();
      if (p_ < s_.size() && s_[p_] == (obj ? '}' : ']')) {
        ++p_;
        return true;
      }
      uint32_t prev = 0;
      for (;;) {
        ws();
        if (obj) {
          if (p_ >= s_.size() || s_[p_] != '"') return fail("expected key");
          if (!str(push(J::Str))) return false;
          ws();
          if (p_ >= s_.size() || s_[p_] != ':') return fail("expected ':'");
          ++p_;
          ws();
        }
        uint32_t v;
        if (!value(&v, depth + 1)) return false;
        if (prev) doc_->nodes[prev].next = v;
        else doc_->nodes[me].b = true;
        prev = v;
        ws();
        if (p_ < s_.size() && s_[p_] == ',') { ++p_; continue; }
        if (p_ < s_.size() && s_[p_] == (obj ? '}' : ']')) { ++p_; return true; }
        return fail(obj ? "expected ',' or '}'" : "expected ',' or ']'");
      }
    }
    if (c == '"') {
      *out = push(J::Str);
      return str(*out);
    }
    if (c == 't' || c == 'f') {
      *out = push(J::Bool);
      doc_->nodes[*out].b = c == 't';
      return lit(c == 't' ? "true" : "false");
    }
    if (c == 'n') {
      *out = push(J::Null);
      return lit("null");
    }
    if (c == '-' || (c >= '0' && c <= '9')) {
      size_t st = p_;
      while (p_ < s_.size() && (std::strchr("+-.eE", s_[p_]) || (s_[p_] >= '0' && s_[p_] <= '9')))
        ++p_;
      std::string t(s_.substr(st, p_ - st));
      char* end = nullptr;
      *out = push(J::Num);
      doc_->nodes[*out].num = std::strtod(t.c_str(), &end);
      if (end != t.c_str() + t.size()) return fail("bad number");
      return true;
    }
    return fail("unexpected character");
  }
};

// ---------------------------------------------------------------------------------------------
// UTF-8

// Length of the well-formed sequence at s[i] (1..4), or 0 if ill-formed; *bad_len is then the
// length of the maximal subpart to replace by one U+FFFD (as Rust's from_utf8_lossy).
size_t utf8_seq(const unsigned char* s, size_t n, size_t i, uint32_t* cp, size_t* bad_len) {
  const unsigned char b0 = s[i];
  if (b0 < 0x80) {
    *cp = b0;
    return 1;
  }
  size_t need;
  unsigned char lo = 0x80, hi = 0xBF;
  if (b0 >= 0xC2 && b0 <= 0xDF) need = 1;
  else if (b0 == 0xE0) { need = 2; lo = 0xA0; }
  else if ((b0 >= 0xE1 && b0 <= 0xEC) || b0 == 0xEE || b0 == 0xEF) need = 2;
  else if (b0 == 0xED) { need = 2; hi = 0x9F; }
  else if (b0 == 0xF0) { need = 3; lo = 0x90; }
  else if (b0 >= 0xF1 && b0 <= 0xF3) need = 3;
  else if (b0 == 0xF4) { need = 3; hi = 0x8F; }
  else {
    *bad_len = 1;
    return 0;
  }
  uint32_t v = b0 & (need == 1 ? 0x1F : need == 2 ? 0x0F : 0x07);
  for (size_t k = 1; k <= need; ++k) {
    if (i + k >= n) {
      *bad_len = k;
      return 0;
    }
    const unsigned char b = s[i + k];
    const unsigned char l = k == 1 ? lo : 0x80, h = k == 1 ? hi : 0xBF;
    if (b < l || b > h) {
      *bad_len = k;
      return 0;
    }
    v = (v << 6) | (b & 0x3F);
  }
  *cp = v;
  return need + 1;
}

bool valid_utf8(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  size_t i = 0, bad;
  uint32_t cp;
  while (i < s.size()) {
    if (p[i] < 0x80) { ++i; continue; }
    size_t l = utf8_seq(p, s.size(), i, &cp, &bad);
    if (!l) return false;
    i += l;
  }
  return true;
}

// Decodes the (valid) UTF-8 character at s[i].
inline uint32_t dec(std::string_view s, size_t i, size_t* len) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  if (p[i] < 0x80) {
    *len = 1;
    return p[i];
  }
  uint32_t cp = 0xFFFD;
  size_t bad;
  size_t l = utf8_seq(p, s.size(), i, &cp, &bad);
  *len = l ? l : 1;
  return cp;
}

void append_utf8(std::string* o, uint32_t cp) {
  char b[4];
  size_t n;
  if (cp < 0x80) { b[0] = char(cp); n = 1; }
  else if (cp < 0x800) { b[0] = char(0xC0 | (cp >> 6)); b[1] = char(0x80 | (cp & 0x3F)); n = 2; }
  else if (cp < 0x10000) {
    b[0] = char(0xE0 | (cp >> 12)); b[1] = char(0x80 | ((cp >> 6) & 0x3F));
    b[2] = char(0x80 | (cp & 0x3F)); n = 3;
  } else {
    b[0] = char(0xF0 | (cp >> 18)); b[1] = char(0x80 | ((cp >> 12) & 0x3F));
    b[2] = char(0x80 | ((cp >> 6) & 0x3F)); b[3] = char(0x80 | (cp & 0x3F)); n = 4;
  }
  o->append(b, n);
}

// ---------------------------------------------------------------------------------------------
// Unicode classes
enum : uint8_t { kL = 1, kN = 2, kWS = 4 };

struct AsciiClasses {
  uint8_t c[128];
  AsciiClasses() {
    for (int i = 0; i < 128; ++i) {
      c[i] = 0;
      if ((i >= 'a' && i <= 'z') || (i >= 'A' && i <= 'Z')) c[i] = kL;
      if (i >= '0' && i <= '9') c[i] = kN;
      if ((i >= 9 && i <= 13) || i == ' ') c[i] = kWS;
    }
  }
};
const AsciiClasses kAscii;

uint8_t cls(uint32_t cp) {
  if (cp < 128) return kAscii.c[cp];
  for (const auto& r : kWhiteSpace)
    if (cp >= r[0] && cp <= r[1]) return kWS;
  size_t lo = 0, hi = sizeof(kCatRanges) / sizeof(kCatRanges[0]);
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (kCatRanges[mid][1] < cp) lo = mid + 1;
    else hi = mid;
  }
  if (lo < sizeof(kCatRanges) / sizeof(kCatRanges[0]) && kCatRanges[lo][0] <= cp)
    return uint8_t(kCatRanges[lo][2]);
  return 0;
}

// ---------------------------------------------------------------------------------------------
// NFC
constexpr uint32_t kSBase = 0xAC00, kLBase = 0x1100, kVBase = 0x1161, kTBase = 0x11A7;
constexpr uint32_t kLCount = 19, kVCount = 21, kTCount = 28, kNCount = kVCount * kTCount,
                   kSCount = kLCount * kNCount;

uint8_t ccc(uint32_t cp) {
  if (cp < 0x300) return 0;
  size_t lo = 0, hi = sizeof(kCcc) / sizeof(kCcc[0]);
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (kCcc[mid][0] < cp) lo = mid + 1;
    else hi = mid;
  }
  return lo < sizeof(kCcc) / sizeof(kCcc[0]) && kCcc[lo][0] == cp ? uint8_t(kCcc[lo][1]) : 0;
}

void decompose(uint32_t cp, std::vector<uint32_t>* out) {
  if (cp >= kSBase && cp < kSBase + kSCount) {
    const uint32_t s = cp - kSBase;
    out->push_back(kLBase + s / kNCount);
    out->push_back(kVBase + (s % kNCount) / kTCount);
    if (s % kTCount) out->push_back(kTBase + s % kTCount);
    return;
  }
  const size_t n = sizeof(kDecompIndex) / sizeof(kDecompIndex[0]);
  size_t lo = 0, hi = n;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (kDecompIndex[mid][0] < cp) lo = mid + 1;
    else hi = mid;
  }
  if (lo < n && kDecompIndex[lo][0] == cp) {
    for (uint32_t k = 0; k < kDecompIndex[lo][2]; ++k)
      out->push_back(kDecompData[kDecompIndex[lo][1] + k]);
  } else {
    out->push_back(cp);
  }
}

uint32_t compose(uint32_t a, uint32_t b) {
  if (a >= kLBase && a < kLBase + kLCount && b >= kVBase && b < kVBase + kVCount)
    return kSBase + ((a - kLBase) * kVCount + (b - kVBase)) * kTCount;
  if (a >= kSBase && a < kSBase + kSCount && (a - kSBase) % kTCount == 0 && b > kTBase &&
      b < kTBase + kTCount)
    return a + (b - kTBase);
  const size_t n = sizeof(kCompose) / sizeof(kCompose[0]);
  size_t lo = 0, hi = n;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (kCompose[mid][0] < a || (kCompose[mid][0] == a && kCompose[mid][1] < b)) lo = mid + 1;
    else hi = mid;
  }
  if (lo < n && kCompose[lo][0] == a && kCompose[lo][1] == b) return kCompose[lo][2];
  return 0;
}

// NFC of valid UTF-8 s into *out (cps is scratch). Returns false (out untouched) when s has no
// code point >= U+0300, which NFC always leaves unchanged.
bool nfc(std::string_view s, std::vector<uint32_t>* cps, std::string* out) {
  bool any = false;
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  for (size_t i = 0; i < s.size(); ++i)
    if (p[i] >= 0xCC) { any = true; break; }  // lead bytes of U+0300 and above
  if (!any) return false;
  cps->clear();
  for (size_t i = 0, l; i < s.size(); i += l) decompose(dec(s, i, &l), cps);
  // Canonical ordering: stable sort of each run of non-starters by combining class.
  auto& v = *cps;
  for (size_t i = 0; i < v.size();) {
    if (ccc(v[i]) == 0) { ++i; continue; }
    size_t j = i;
    while (j < v.size() && ccc(v[j]) != 0) ++j;
    std::stable_sort(v.begin() + long(i), v.begin() + long(j),
                     [](uint32_t a, uint32_t b) { return ccc(a) < ccc(b); });
    i = j;
  }
  // Canonical composition (UAX #15 sample algorithm).
  if (!v.empty()) {
    size_t starter_pos = 0, comp_pos = 1;
    uint32_t starter = v[0];
    int last_class = ccc(starter) ? 256 : 0;
    for (size_t k = 1; k < v.size(); ++k) {
      const uint32_t ch = v[k];
      const int ch_class = ccc(ch);
      const uint32_t c = compose(starter, ch);
      if (c && (last_class < ch_class || last_class == 0)) {
        v[starter_pos] = c;
        starter = c;
        continue;
      }
      if (ch_class == 0) {
        starter_pos = comp_pos;
        starter = ch;
      }
      last_class = ch_class;
      v[comp_pos++] = ch;
    }
    v.resize(comp_pos);
  }
  out->clear();
  for (uint32_t cp : v) append_utf8(out, cp);
  return true;
}

// ---------------------------------------------------------------------------------------------
// Pre-tokenizer scanners. Each returns the end of the regex match starting at i (< s.size()):
// both regexes match at every position, so the matches tile the input.
enum class Pretok { none, gpt2, qwen2 };

const char* const kGpt2Pattern =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
const char* const kQwen2Pattern =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+"
    "[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

inline bool is_other(uint8_t c) { return c == 0; }

// End of the run of characters whose class satisfies pred, from j.
template <typename P>
size_t run(std::string_view s, size_t j, P pred) {
  size_t l;
  while (j < s.size() && pred(cls(dec(s, j, &l)))) j += l;
  return j;
}

// \s+(?!\S) | \s+ at i (a whitespace character).
size_t ws_tail(std::string_view s, size_t i) {
  size_t j = i, last = i, count = 0, l;
  while (j < s.size()) {
    uint32_t cp = dec(s, j, &l);
    if (!(cls(cp) & kWS)) break;
    last = j;
    j += l;
    ++count;
  }
  if (j == s.size() || count < 2) return j;
  return last;
}

inline uint32_t lower_ascii(uint32_t c) { return c >= 'A' && c <= 'Z' ? c + 32 : c; }

size_t scan_gpt2(std::string_view s, size_t i) {
  size_t l0, l1;
  const uint32_t c0 = dec(s, i, &l0);
  if (c0 == '\'' && i + 1 < s.size()) {
    const char c1 = s[i + 1];
    if (c1 == 's' || c1 == 't' || c1 == 'm' || c1 == 'd') return i + 2;
    if (i + 2 < s.size()) {
      const char c2 = s[i + 2];
      if ((c1 == 'r' && c2 == 'e') || (c1 == 'v' && c2 == 'e') || (c1 == 'l' && c2 == 'l'))
        return i + 3;
    }
  }
  uint8_t k0 = cls(c0);
  size_t j = i;
  if (c0 == ' ' && i + 1 < s.size()) {
    const uint8_t k1 = cls(dec(s, i + 1, &l1));
    if (!(k1 & kWS)) {
      k0 = k1;
      j = i + 1;
    }
  }
  if (k0 & kL) return run(s, j, [](uint8_t c) { return (c & kL) != 0; });
  if (k0 & kN) return run(s, j, [](uint8_t c) { return (c & kN) != 0; });
  if (is_other(k0)) return run(s, j, is_other);
  return ws_tail(s, i);
}

size_t scan_qwen2(std::string_view s, size_t i) {
  size_t l0, l1, l2;
  const uint32_t c0 = dec(s, i, &l0);
  const uint8_t k0 = cls(c0);
  // (?i:'s|'t|'re|'ve|'m|'ll|'d)
  if (c0 == '\'' && i + 1 < s.size()) {
    uint32_t c1 = dec(s, i + 1, &l1);
    if (c1 == 0x17F) c1 = 's';  // LATIN SMALL LETTER LONG S folds to 's'
    c1 = lower_ascii(c1);
    if (c1 == 's' || c1 == 't' || c1 == 'm' || c1 == 'd') return i + 1 + l1;
    if (i + 1 + l1 < s.size()) {
      const uint32_t c2 = lower_ascii(dec(s, i + 1 + l1, &l2));
      if ((c1 == 'r' && c2 == 'e') || (c1 == 'v' && c2 == 'e') || (c1 == 'l' && c2 == 'l'))
        return i + 1 + l1 + l2;
    }
  }
  // [^\r\n\p{L}\p{N}]?\p{L}+
  auto is_l = [](uint8_t c) { return (c & kL) != 0; };
  if (k0 & kL) return run(s, i, is_l);
  if (!(k0 & kN) && c0 != '\r' && c0 != '\n' && i + l0 < s.size() &&
      (cls(dec(s, i + l0, &l1)) & kL))
    return run(s, i + l0, is_l);
  // \p{N}
  if (k0 & kN) return i + l0;
  //  ?[^\s\p{L}\p{N}]+[\r\n]*
  size_t j = s.size();
  if (is_other(k0)) j = i;
  else if (c0 == ' ' && i + 1 < s.size() && is_other(cls(dec(s, i + 1, &l1)))) j = i + 1;
  if (j != s.size()) {
    j = run(s, j, is_other);
    while (j < s.size() && (s[j] == '\r' || s[j] == '\n')) ++j;
    return j;
  }
  // \s*[\r\n]+ : up to the last \r or \n of the whitespace run.
  size_t e = i, last_nl = s.size(), l;
  while (e < s.size()) {
    const uint32_t cp = dec(s, e, &l);
    if (!(cls(cp) & kWS)) break;
    if (cp == '\r' || cp == '\n') last_nl = e;
    e += l;
  }
  if (last_nl != s.size()) return last_nl + 1;
  return ws_tail(s, i);
}

// GPT-2 bytes_to_unicode.
void byte_chars(uint32_t table[256]) {
  int n = 0;
  for (int b = 0; b < 256; ++b) {
    if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255)) table[b] = uint32_t(b);
    else table[b] = uint32_t(256 + n++);
  }
}

struct AddedToken {
  std::string content;
  int32_t id;
  bool special;
  bool normalized;
};

struct Sym {
  int32_t id;
  int32_t prev, next;
  uint32_t len;
};

struct MergeItem {
  int32_t rank;
  int32_t pos;
  int32_t new_id;
  // Heap order: smallest rank first, then leftmost.
  bool operator<(const MergeItem& o) const {
    return rank != o.rank ? rank > o.rank : pos > o.pos;
  }
};

}  // namespace

struct Tokenizer::Impl {
  // Every id with its token (model vocab, overridden by added tokens), sorted by id: memory
  // proportional to the tokens present, not to the largest id (docs/artifact-format.md §3.8).
  std::vector<int32_t> ids;
  std::vector<std::string> id_token;
  std::vector<uint8_t> id_kind;           // 1 model, 2 added, 3 special added
  int32_t n_ids = 0;                      // largest id + 1
  // Position of `id` in `ids`, or -1.
  int64_t find_id(int32_t id) const {
    auto it = std::lower_bound(ids.begin(), ids.end(), id);
    return it != ids.end() && *it == id ? int64_t(it - ids.begin()) : -1;
  }
  // Appends the bytes of `id` to *out (false: unknown id). ByteLevel decoder: every char
  // mapped back to its byte, or the token's own bytes if one char is outside the byte-level
  // alphabet.
  bool append_bytes(int32_t id, bool skip_special, std::string* out) const {
    const int64_t at = find_id(id);
    if (at < 0) return false;
    if (skip_special && id_kind[size_t(at)] == 3) return true;
    const std::string& t = id_token[size_t(at)];
    const size_t start = out->size();
    for (size_t i = 0, l; i < t.size(); i += l) {
      const uint32_t cp = dec(t, i, &l);
      if (cp >= 0x144 || char_byte[cp] < 0) {
        out->resize(start);
        *out += t;
        return true;
      }
      out->push_back(char(char_byte[cp]));
    }
    return true;
  }
  std::vector<std::string> model_tokens;  // owns the keys of `vocab`
  std::unordered_map<std::string_view, int32_t> vocab;
  std::unordered_map<uint64_t, std::pair<int32_t, int32_t>> merges;  // (a,b) -> (rank, new id)
  int32_t byte_id[256];
  std::string byte_str[256];
  int16_t char_byte[0x144];  // byte-level char -> byte, -1 if none
  std::vector<AddedToken> added;
  bool added_raw = false, added_norm = false;  // any normalized=false / normalized=true
  Pretok pretok = Pretok::none;
  bool add_prefix_space = false, nfc = false, ignore_merges = false;

  // Scratch (encode/decode).
  std::string norm, piece, mapped, bytes;
  std::vector<uint32_t> cps;
  std::vector<Sym> syms;
  std::vector<MergeItem> heap;

  int32_t* out = nullptr;
  size_t cap = 0, count = 0;
  void emit(int32_t id) {
    if (count < cap) out[count] = id;
    ++count;
  }

  Status load(J root, std::string* msg);
  void bpe(std::string_view word);
  void pretokenize(std::string_view s);
  void normalized_segment(std::string_view s);
  void raw_segment(std::string_view s);
  // Leftmost-longest added token (of the given normalized flag) at or after i.
  bool find_added(std::string_view s, size_t i, bool normalized, size_t* pos,
                  const AddedToken** tok) const;
};

namespace {

Status incompatible(std::string* msg, const std::string& what) {
  if (msg) *msg = "unsupported tokenizer.json feature: " + what;
  return Status::incompatible;
}
Status cap_exceeded(std::string* msg, const std::string& what) {
  if (msg) *msg = "tokenizer.json exceeds a cap: " + what;
  return Status::cap_exceeded;
}
Status malformed(std::string* msg, const std::string& what) {
  if (msg) *msg = "malformed tokenizer.json: " + what;
  return Status::malformed;
}
bool is_null_or_absent(J v) { return !v || v.t() == J::Null; }
bool get_bool(J obj, const char* key, bool dflt) {
  const J v = obj.get(key);
  return v.is(J::Bool) ? v.b() : dflt;
}
std::string type_of(J v) {
  const J t = v.get("type");
  return t.is(J::Str) ? t.s() : std::string();
}

// A TemplateProcessing that adds nothing to a single sequence ("single": [A], no special
// tokens), as transformers 5 writes for a tokenizer without bos/eos insertion: a no-op.
bool identity_template(J post) {
  if (type_of(post) != "TemplateProcessing") return false;
  const J single = post.get("single");
  const J special = post.get("special_tokens");
  if (!single.is(J::Arr) || single.size() != 1) return false;
  if (!is_null_or_absent(special) && !(special.is(J::Obj) && special.size() == 0)) return false;
  const J seq = single.at(0).get("Sequence");
  return seq.is(J::Obj) && seq.get("id").is(J::Str) && seq.get("id").sv() == "A";
}

}  // namespace

Status Tokenizer::Impl::load(J root, std::string* msg) {
  if (!root.is(J::Obj)) return malformed(msg, "the root is not an object");
  // Model.
  const J model = root.get("model");
  if (!model.is(J::Obj)) return malformed(msg, "no \"model\" object");
  const std::string mtype = type_of(model);
  if (!mtype.empty() && mtype != "BPE") return incompatible(msg, "model type " + mtype);
  if (mtype.empty()) return malformed(msg, "model has no type");
  if (!is_null_or_absent(model.get("dropout"))) return incompatible(msg, "BPE dropout");
  if (!is_null_or_absent(model.get("unk_token"))) return incompatible(msg, "BPE unk_token");
  for (const char* k : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    const J v = model.get(k);
    if (!is_null_or_absent(v) && !(v.is(J::Str) && v.sv().empty()))
      return incompatible(msg, std::string("BPE ") + k);
  }
  if (get_bool(model, "byte_fallback", false)) return incompatible(msg, "BPE byte_fallback");
  ignore_merges = get_bool(model, "ignore_merges", false);
  const J jvocab = model.get("vocab");
  if (!jvocab.is(J::Obj)) return malformed(msg, "model.vocab is not an object");
  // Caps (§3.8) before anything is sized by a declared number.
  const size_t n_vocab = jvocab.size();
  if (n_vocab > kMaxVocabEntries)
    return cap_exceeded(msg, "model.vocab has " + std::to_string(n_vocab) +
                                 " entries, the cap is " + std::to_string(kMaxVocabEntries));
  int64_t max_id = -1;
  for (J v = jvocab.first(); v; v = v.next()) {
    if (!v.is(J::Num) || v.num() < 0 || double(int64_t(v.num())) != v.num())
      return malformed(msg, "vocab id of \"" + std::string(v.key()) +
                                "\" is not a non-negative integer");
    if (v.num() >= double(kMaxTokenId))
      return cap_exceeded(msg, "model.vocab id of \"" + std::string(v.key()) + "\" is " +
                                   std::to_string(int64_t(v.num())) +
                                   ", token ids must be below the cap of " +
                                   std::to_string(kMaxTokenId));
    max_id = std::max(max_id, int64_t(v.num()));
  }
  const J jadded = root.get("added_tokens");
  if (jadded && !jadded.is(J::Arr) && !jadded.is(J::Null))
    return malformed(msg, "added_tokens is not an array");
  if (jadded.is(J::Arr) && jadded.size() > kMaxAddedTokens)
    return cap_exceeded(msg, "added_tokens has " + std::to_string(jadded.size()) +
                                 " entries, the cap is " + std::to_string(kMaxAddedTokens));
  const J jmerges = model.get("merges");
  if (!jmerges.is(J::Arr)) return malformed(msg, "model.merges is not an array");
  const size_t n_merges = jmerges.size();
  if (n_merges > kMaxMerges)
    return cap_exceeded(msg, "model.merges has " + std::to_string(n_merges) +
                                 " entries, the cap is " + std::to_string(kMaxMerges));
  for (J a = jadded.is(J::Arr) ? jadded.first() : J(); a; a = a.next()) {
    const J id = a.get("id");
    const J content = a.get("content");
    if (!id.is(J::Num) || id.num() < 0 || double(int64_t(id.num())) != id.num() ||
        !content.is(J::Str) || content.sv().empty())
      return malformed(msg, "an added token has no integer id or no content");
    if (id.num() >= double(kMaxTokenId))
      return cap_exceeded(msg, "added token \"" + content.s() + "\" has id " +
                                   std::to_string(int64_t(id.num())) +
                                   ", token ids must be below the cap of " +
                                   std::to_string(kMaxTokenId));
    for (const char* k : {"single_word", "lstrip", "rstrip"})
      if (get_bool(a, k, false))
        return incompatible(msg, std::string("added token ") + k + " (\"" + content.s() + "\")");
    if (!valid_utf8(content.sv())) return malformed(msg, "added token is not UTF-8");
    const bool special = get_bool(a, "special", false);
    added.push_back({content.s(), int32_t(id.num()), special, get_bool(a, "normalized", !special)});
    max_id = std::max(max_id, int64_t(id.num()));
  }
  n_ids = int32_t(max_id + 1);
  model_tokens.reserve(n_vocab);
  std::vector<int32_t> model_ids;
  model_ids.reserve(n_vocab);
  for (J v = jvocab.first(); v; v = v.next()) {
    model_tokens.emplace_back(v.key());
    model_ids.push_back(int32_t(v.num()));
  }
  vocab.reserve(model_tokens.size());
  for (size_t k = 0; k < model_tokens.size(); ++k) vocab[model_tokens[k]] = model_ids[k];
  // The id table: model tokens, then added tokens; for one id the last listed wins (an added
  // token overrides the model's), as a dense table written in that order would hold.
  std::vector<uint32_t> order(model_tokens.size() + added.size());
  for (size_t k = 0; k < order.size(); ++k) order[k] = uint32_t(k);
  auto id_of = [&](uint32_t k) {
    return k < model_tokens.size() ? model_ids[k] : added[k - model_tokens.size()].id;
  };
  std::stable_sort(order.begin(), order.end(),
                   [&](uint32_t x, uint32_t y) { return id_of(x) < id_of(y); });
  ids.reserve(order.size());
  id_token.reserve(order.size());
  id_kind.reserve(order.size());
  for (size_t k = 0; k < order.size(); ++k) {
    if (k + 1 < order.size() && id_of(order[k + 1]) == id_of(order[k])) continue;
    const uint32_t src = order[k];
    ids.push_back(id_of(src));
    if (src < model_tokens.size()) {
      id_token.push_back(model_tokens[src]);
      id_kind.push_back(1);
    } else {
      const AddedToken& a = added[src - model_tokens.size()];
      id_token.push_back(a.content);
      id_kind.push_back(a.special ? 3 : 2);
    }
  }
  for (const AddedToken& a : added) (a.normalized ? added_norm : added_raw) = true;
  // Merges.
  merges.reserve(n_merges);
  std::string a, b;
  int32_t rank = 0;
  for (J m = jmerges.first(); m; m = m.next()) {
    if (m.is(J::Str)) {
      const std::string_view ms = m.sv();
      const size_t sp = ms.find(' ');
      if (sp == std::string::npos || ms.find(' ', sp + 1) != std::string::npos)
        return malformed(msg, "merge \"" + m.s() + "\" is not two space-separated tokens");
      a = std::string(ms.substr(0, sp));
      b = std::string(ms.substr(sp + 1));
    } else if (m.is(J::Arr) && m.size() == 2 && m.at(0).is(J::Str) && m.at(1).is(J::Str)) {
      a = m.at(0).s();
      b = m.at(1).s();
    } else {
      return malformed(msg, "a merge is neither \"a b\" nor [a, b]");
    }
    auto ia = vocab.find(a), ib = vocab.find(b), ic = vocab.find(a + b);
    if (ia == vocab.end() || ib == vocab.end() || ic == vocab.end())
      return malformed(msg, "merge \"" + a + " " + b + "\" uses a token missing from the vocab");
    const uint64_t key = (uint64_t(uint32_t(ia->second)) << 32) | uint32_t(ib->second);
    merges.emplace(key, std::make_pair(rank++, ic->second));  // first occurrence wins (as HF)
  }
  // Byte-level alphabet.
  uint32_t chars[256];
  byte_chars(chars);
  std::fill(char_byte, char_byte + 0x144, int16_t(-1));
  for (int k = 0; k < 256; ++k) {
    byte_str[k].clear();
    append_utf8(&byte_str[k], chars[k]);
    char_byte[chars[k]] = int16_t(k);
    auto it = vocab.find(byte_str[k]);
    byte_id[k] = it == vocab.end() ? -1 : it->second;
  }
  // Normalizer.
  const J norm_j = root.get("normalizer");
  if (!is_null_or_absent(norm_j)) {
    const std::string t = type_of(norm_j);
    if (t != "NFC") return incompatible(msg, "normalizer " + (t.empty() ? "(no type)" : t));
    nfc = true;
  }
  // Pre-tokenizer.
  const J pt = root.get("pre_tokenizer");
  const std::string ptype = type_of(pt);
  auto byte_level = [&](J v, bool allow_regex, bool allow_prefix) -> Status {
    if (get_bool(v, "add_prefix_space", false)) {
      if (!allow_prefix) return incompatible(msg, "ByteLevel add_prefix_space after Split");
      add_prefix_space = true;
    }
    if (get_bool(v, "use_regex", true)) {
      if (!allow_regex) return incompatible(msg, "ByteLevel use_regex=true after Split");
      pretok = Pretok::gpt2;
    }
    return Status::ok;
  };
  if (ptype == "ByteLevel") {
    Status st = byte_level(pt, true, true);
    if (st != Status::ok) return st;
  } else if (ptype == "Sequence") {
    const J list = pt.get("pretokenizers");
    if (!list.is(J::Arr) || list.size() != 2 || type_of(list.at(0)) != "Split" ||
        type_of(list.at(1)) != "ByteLevel")
      return incompatible(msg, "pre_tokenizer Sequence other than [Split, ByteLevel]");
    const J split = list.at(0);
    const J regex = split.get("pattern").get("Regex");
    if (!regex.is(J::Str)) return incompatible(msg, "Split pre-tokenizer without a Regex pattern");
    if (regex.sv() == kQwen2Pattern) pretok = Pretok::qwen2;
    else if (regex.sv() == kGpt2Pattern) pretok = Pretok::gpt2;
    else return incompatible(msg, "Split regex " + regex.s());
    const J behavior = split.get("behavior");
    if (!behavior.is(J::Str) || behavior.sv() != "Isolated")
      return incompatible(msg, "Split behavior other than Isolated");
    if (get_bool(split, "invert", false)) return incompatible(msg, "Split invert=true");
    Status st = byte_level(list.at(1), false, false);
    if (st != Status::ok) return st;
  } else {
    return incompatible(msg, "pre_tokenizer " + (ptype.empty() ? std::string("null") : ptype));
  }
  // Decoder and post-processor.
  const std::string dtype = type_of(root.get("decoder"));
  if (dtype != "ByteLevel") return incompatible(msg, "decoder " + (dtype.empty() ? "null" : dtype));
  const J post = root.get("post_processor");
  if (!is_null_or_absent(post) && type_of(post) != "ByteLevel" && !identity_template(post))
    return incompatible(msg, "post_processor " + type_of(post));
  if (!is_null_or_absent(root.get("truncation"))) return incompatible(msg, "truncation");
  if (!is_null_or_absent(root.get("padding"))) return incompatible(msg, "padding");
  // Scratch sized once (grown on demand later).
  syms.reserve(256);
  heap.reserve(256);
  return Status::ok;
}

void Tokenizer::Impl::bpe(std::string_view w) {
  const auto* p = reinterpret_cast<const unsigned char*>(w.data());
  if (ignore_merges) {
    mapped.clear();
    for (size_t k = 0; k < w.size(); ++k) mapped += byte_str[p[k]];
    auto it = vocab.find(mapped);
    if (it != vocab.end()) {
      emit(it->second);
      return;
    }
  }
  syms.clear();
  for (size_t k = 0; k < w.size(); ++k) {
    const int32_t id = byte_id[p[k]];
    if (id < 0) continue;  // not in the vocab and no unk token: dropped (as HF)
    const int32_t n = int32_t(syms.size());
    if (n) syms.back().next = n;
    syms.push_back({id, n - 1, -1, 1});
  }
  if (syms.size() > 1) {
    heap.clear();
    auto push_pair = [&](int32_t pos) {
      const int32_t nx = syms[size_t(pos)].next;
      if (nx < 0) return;
      const uint64_t key = (uint64_t(uint32_t(syms[size_t(pos)].id)) << 32) |
                           uint32_t(syms[size_t(nx)].id);
      auto it = merges.find(key);
      if (it == merges.end()) return;
      heap.push_back({it->second.first, pos, it->second.second});
      std::push_heap(heap.begin(), heap.end());
    };
    for (int32_t k = 0; k + 1 < int32_t(syms.size()); ++k) push_pair(k);
    while (!heap.empty()) {
      std::pop_heap(heap.begin(), heap.end());
      const MergeItem top = heap.back();
      heap.pop_back();
      Sym& left = syms[size_t(top.pos)];
      if (left.len == 0 || left.next < 0) continue;
      Sym& right = syms[size_t(left.next)];
      const uint64_t key = (uint64_t(uint32_t(left.id)) << 32) | uint32_t(right.id);
      auto it = merges.find(key);
      if (it == merges.end() || it->second.second != top.new_id) continue;
      left.id = top.new_id;
      left.len += right.len;
      left.next = right.next;
      right.len = 0;
      if (left.next >= 0) syms[size_t(left.next)].prev = top.pos;
      if (left.prev >= 0) push_pair(left.prev);
      push_pair(top.pos);
    }
  }
  for (int32_t k = syms.empty() ? -1 : 0; k >= 0; k = syms[size_t(k)].next) emit(syms[size_t(k)].id);
}

void Tokenizer::Impl::pretokenize(std::string_view s) {
  if (s.empty()) return;
  if (add_prefix_space && s[0] != ' ') {
    piece.assign(1, ' ');
    piece.append(s);
    s = piece;
  }
  if (pretok == Pretok::none) {
    bpe(s);
    return;
  }
  for (size_t i = 0; i < s.size();) {
    const size_t e = pretok == Pretok::qwen2 ? scan_qwen2(s, i) : scan_gpt2(s, i);
    bpe(s.substr(i, e - i));
    i = e;
  }
}

bool Tokenizer::Impl::find_added(std::string_view s, size_t i, bool normalized, size_t* pos,
                                 const AddedToken** tok) const {
  for (; i < s.size(); ++i) {
    const AddedToken* best = nullptr;
    for (const AddedToken& a : added) {
      if (a.normalized != normalized || a.content[0] != s[i]) continue;
      if (s.compare(i, a.content.size(), a.content) == 0 &&
          (!best || a.content.size() > best->content.size()))
        best = &a;
    }
    if (best) {
      *pos = i;
      *tok = best;
      return true;
    }
  }
  return false;
}

void Tokenizer::Impl::normalized_segment(std::string_view s) {
  if (!added_norm) {
    pretokenize(s);
    return;
  }
  size_t i = 0, pos;
  const AddedToken* tok;
  while (find_added(s, i, true, &pos, &tok)) {
    pretokenize(s.substr(i, pos - i));
    emit(tok->id);
    i = pos + tok->content.size();
  }
  pretokenize(s.substr(i));
}

void Tokenizer::Impl::raw_segment(std::string_view s) {
  if (s.empty()) return;
  if (nfc && ::fwa::nfc(s, &cps, &norm)) s = norm;  // norm is not touched until s is consumed
  normalized_segment(s);
}

Tokenizer::Tokenizer() = default;
Tokenizer::~Tokenizer() = default;

Status Tokenizer::load(std::string_view json_text, std::string* message) {
  impl_.reset();
  try {
    JDoc doc;
    std::string err;
    JsonParser parser(json_text);
    if (!parser.parse(&doc, &err)) {
      if (message) *message = err;
      return parser.too_deep ? Status::cap_exceeded : Status::malformed;
    }
    auto impl = std::make_unique<Impl>();
    Status st = impl->load(J(&doc, 0), message);
    if (st != Status::ok) return st;
    impl_ = std::move(impl);
    return Status::ok;
  } catch (const std::bad_alloc&) {
    if (message) *message = "out of memory while loading the tokenizer";
    return Status::cap_exceeded;
  }
}

int32_t Tokenizer::vocab_size() const { return impl_ ? impl_->n_ids : 0; }

Status Tokenizer::encode(std::string_view text, int32_t* ids, size_t capacity, size_t* n_ids) {
  *n_ids = 0;
  if (!impl_) return Status::invalid_argument;
  if (!valid_utf8(text)) return Status::invalid_argument;
  Impl& m = *impl_;
  m.out = ids;
  m.cap = ids ? capacity : 0;
  m.count = 0;
  try {
    size_t i = 0, pos;
    const AddedToken* tok;
    while (m.added_raw && m.find_added(text, i, false, &pos, &tok)) {
      m.raw_segment(text.substr(i, pos - i));
      m.emit(tok->id);
      i = pos + tok->content.size();
    }
    m.raw_segment(text.substr(i));
  } catch (const std::bad_alloc&) {
    return Status::cap_exceeded;
  }
  *n_ids = m.count;
  return m.count > m.cap ? Status::buffer_too_small : Status::ok;
}

Status Tokenizer::token_bytes(int32_t id, bool skip_special, std::string* out) {
  if (!impl_) return Status::invalid_argument;
  try {
    return impl_->append_bytes(id, skip_special, out) ? Status::ok : Status::invalid_argument;
  } catch (const std::bad_alloc&) {
    return Status::cap_exceeded;
  }
}

Status Tokenizer::decode(const int32_t* ids, size_t n, bool skip_special, char* out,
                         size_t capacity, size_t* n_bytes) {
  *n_bytes = 0;
  if (!impl_) return Status::invalid_argument;
  Impl& m = *impl_;
  try {
    m.bytes.clear();
    for (size_t k = 0; k < n; ++k)
      if (!m.append_bytes(ids[k], skip_special, &m.bytes)) return Status::invalid_argument;
    // from_utf8_lossy.
    const auto* p = reinterpret_cast<const unsigned char*>(m.bytes.data());
    const size_t nb = m.bytes.size();
    size_t w = 0;
    auto put = [&](const char* s, size_t len) {
      for (size_t k = 0; k < len; ++k, ++w)
        if (w < capacity) out[w] = s[k];
    };
    for (size_t i = 0; i < nb;) {
      uint32_t cp;
      size_t bad = 1;
      const size_t l = p[i] < 0x80 ? 1 : utf8_seq(p, nb, i, &cp, &bad);
      if (l) {
        put(m.bytes.data() + i, l);
        i += l;
      } else {
        put("\xEF\xBF\xBD", 3);
        i += bad;
      }
    }
    *n_bytes = w;
    return w > capacity ? Status::buffer_too_small : Status::ok;
  } catch (const std::bad_alloc&) {
    return Status::cap_exceeded;
  }
}

}  // namespace fwa
