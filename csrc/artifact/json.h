/* SPDX-License-Identifier: Apache-2.0 */
// A strict parser for the artifact manifest's canonical JSON (docs/artifact-format.md §3.1).
//
// It accepts exactly the canonical form: no whitespace, object keys unique and sorted by byte
// value (of the unescaped key), strings in valid UTF-8 with only the escapes a canonical writer
// produces, integers only (in [-2^53, 2^53], no "-0", no leading zeros), true/false/null.
// Anything else is rejected with Status::malformed, an exceeded limit with
// Status::cap_exceeded, and a message naming the byte offset and the problem.
//
// The parse is iterative (an explicit stack bounded by max_depth, no recursion) and builds a
// flat tape of 12 bytes per value that points into the input: memory is proportional to the
// input. The input must outlive the Document and the Values taken from it.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"

namespace fwa {
namespace json {

struct Limits {
  size_t max_input = size_t(16) << 20;   // bytes of the whole document
  int max_depth = 64;                    // nesting of arrays and objects
  size_t max_string = size_t(4) << 20;   // UTF-8 bytes of one string (key or value), unescaped
};

enum class Type : uint8_t { null, boolean, integer, string, array, object };
const char* type_name(Type t);

class Document;

// A value of a parsed document (cheap to copy). A default-constructed Value is "absent":
// valid() is false and every accessor returns its empty result.
class Value {
 public:
  Value() = default;
  bool valid() const { return doc_ != nullptr; }
  Type type() const;
  bool is(Type t) const { return valid() && type() == t; }

  // Scalars. Each returns false when the value has another type.
  bool get_bool(bool* out) const;
  bool get_int(int64_t* out) const;
  bool get_string(std::string* out) const;       // unescaped
  bool string_equals(std::string_view s) const;  // unescaped comparison

  // Arrays and objects: number of elements (members for objects).
  size_t size() const;
  // Array element / object member by position (linear walk: iterate with first()/next()).
  Value first() const;  // first element, or the first member's value; absent if empty
  Value next() const;   // the following sibling inside the parent (absent after the last)
  // For a value that is an object member: its key (absent otherwise).
  Value key() const;
  // Object member by key (absent if missing or not an object).
  Value find(std::string_view key) const;

  // The value's exact bytes in the document (canonical JSON of the value).
  std::string_view raw() const;
  // Byte offset of the value in the document.
  size_t offset() const;

 private:
  friend class Document;
  Value(const Document* d, uint32_t i, uint32_t end, bool member)
      : doc_(d), idx_(i), parent_end_(end), member_(member) {}
  const Document* doc_ = nullptr;
  uint32_t idx_ = 0;
  uint32_t parent_end_ = 0;  // tape index one past the parent's subtree (bounds next())
  bool member_ = false;      // an object member's value (its key is the node before it)
};

class Document {
 public:
  // Parses `n` bytes at `data`. On failure returns malformed or cap_exceeded and sets
  // *message (may be null); the document is then empty.
  Status parse(const uint8_t* data, size_t n, const Limits& limits, std::string* message);
  Value root() const;

  // One tape entry (internal to the parser and Value).
  struct Node {
    uint32_t pos;   // offset of the value's first byte (the quote for strings)
    uint32_t end;   // offset one past its last byte; bit 31: a string holding escapes
    uint32_t next;  // tape index one past this value's subtree
  };

 private:
  friend class Value;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  std::vector<Node> tape_;
};

// Unescapes the canonical string literal data[pos..end) (quotes included) into out.
void unescape(const uint8_t* data, size_t pos, size_t end, std::string* out);

}  // namespace json
}  // namespace fwa
